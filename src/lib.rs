//! connect-keeper: the backend of an Atlassian Connect cloud app with licensing enforcement,
//! and the vendor's registry of every installation.
//!
//! As a library (docs/library.md), what an app of your own needs is re-exported here:
//! [`Config`], the [`AppState`] its handlers share, [`guard`] (the guards and the
//! [`Verified`]/[`Licensed`] extractors), the lifecycle routes
//! ([`routes::lifecycle::configure`]), the errors ([`ApiError`], [`registry::Error`]) and the
//! whole server ([`Application`]).
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
//! * [`config`] — configuration from the environment (docs/configuration.md).
//! * [`state`] — [`AppState`]: configuration, database, clients, caches and metrics, shared by
//!   every handler and background task.
//! * [`startup`] — [`Application::build`] (state, listener, server) and the background tasks.
//! * [`guard`] — Connect verification and licence enforcement in front of the app's routes, and
//!   the extractors handlers take.
//! * [`routes`] — thin HTTP handlers: lifecycle callbacks, the shipped product routes, the
//!   admin API, operations endpoints.
//! * [`connect`] — the protocol, pure: qsh, JWT, signed-install keys, outbound signing,
//!   descriptor, the request parts verification reads.
//! * [`forge`] — the Forge Invocation Token, pure, and the Forge key set.
//! * [`licensing`] — the request decision and the registry's licence state, pure.
//! * [`tenants`] — what the request path knows about each tenant, without a database round
//!   trip.
//! * [`registry`] — lifecycle rules and vendor operations shared by the admin API and the CLI.
//! * [`marketplace`] — the Marketplace licence sync.
//! * [`store`] — all SQL, over SQLite or PostgreSQL (not a stable API: reachable for the
//!   repository's own tests and benches).
//! * [`error`] — the one HTTP error type and its JSON shape.
//!
//! Inside the crate only: the dashboard, the product licence reader, the metrics registry.

pub mod cli;
pub mod config;
pub mod connect;
pub(crate) mod dashboard;
pub mod domain;
pub mod error;
pub mod forge;
pub mod forge_license;
pub mod guard;
pub(crate) mod handoff;
pub(crate) mod host_license;
pub(crate) mod http_client;
pub(crate) mod license_reader;
pub mod licensing;
pub mod marketplace;
pub(crate) mod metrics;
pub mod registry;
pub mod routes;
pub mod sanitize;
pub mod secrets;
pub mod startup;
pub mod state;
#[doc(hidden)]
pub mod store;
pub mod telemetry;
pub mod tenants;
#[doc(hidden)]
pub mod verified_tokens;

pub use config::Config;
pub use error::ApiError;
pub use guard::{Licensed, Verified};
pub use startup::Application;
pub use state::{AppState, SharedState};

pub(crate) use store::on_db;

/// docs/library.md, whose Rust blocks `cargo test` compiles as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/library.md")]
pub struct LibraryGuide;
