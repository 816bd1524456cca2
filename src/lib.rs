//! connect-keeper: the backend of an Atlassian Connect cloud app with licensing enforcement,
//! and the vendor's registry of every installation.
//!
//! As a library it puts the verified lifecycle callbacks and the same verification and licence
//! guard in front of your own actix-web routes (docs/library.md; `examples/vendor_app.rs` is a
//! whole app):
//!
//! ```no_run
//! use actix_web::{App, HttpResponse, HttpServer, web};
//! use connect_keeper::config::Config;
//! use connect_keeper::guard::{self, Licensed};
//! use connect_keeper::state::AppState;
//!
//! async fn report(licensed: Licensed) -> HttpResponse {
//!     HttpResponse::Ok().body(format!("licensed via {}", licensed.source.as_str()))
//! }
//!
//! #[tokio::main]
//! async fn main() -> anyhow::Result<()> {
//!     let config = Config::from_env()?;
//!     let bind = config.bind_addr;
//!     let state = web::Data::new(AppState::new(config).await?);
//!     connect_keeper::startup::spawn_background(&state);
//!     HttpServer::new(move || {
//!         App::new()
//!             .app_data(state.clone())
//!             .configure(connect_keeper::routes::lifecycle::configure)
//!             .service(
//!                 web::scope("/pages")
//!                     .wrap(guard::licensed_page())
//!                     .route("/report", web::get().to(report)),
//!             )
//!     })
//!     .bind(bind)?
//!     .run()
//!     .await?;
//!     Ok(())
//! }
//! ```
//!
//! Where things live:
//! * [`guard`] — the library's entry point: the verification and licence middleware
//!   ([`guard::verified`], [`guard::licensed_api`], [`guard::licensed_page`]) and the extractors
//!   handlers take ([`guard::Verified`], [`guard::Licensed`]).
//! * [`config`] — configuration from the environment (docs/configuration.md).
//! * [`connect`] — the protocol, pure: qsh, JWT, signed-install keys, outbound signing, descriptor.
//! * [`forge`] — the Forge Invocation Token, pure, and the Forge key set.
//! * [`store`] — all SQL, over SQLite or PostgreSQL.
//! * [`registry`] — lifecycle rules and vendor operations shared by the admin API and the CLI.
//! * [`routes`] — thin HTTP handlers; [`startup`] wires them into an [`startup::Application`].

pub mod cli;
pub mod config;
pub mod connect;
pub mod dashboard;
pub mod domain;
pub mod error;
pub mod forge;
pub mod guard;
pub mod host_license;
pub mod licensing;
pub mod marketplace;
pub mod metrics;
pub mod registry;
pub mod routes;
pub mod secrets;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tenants;
pub mod verified_tokens;

/// docs/library.md, whose Rust blocks `cargo test` compiles as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/library.md")]
pub struct LibraryGuide;
