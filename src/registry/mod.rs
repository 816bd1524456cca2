//! The rules of the registry, shared by the HTTP routes and the CLI, one module per job:
//!
//! - [`lifecycle`]: verifying and applying the lifecycle callbacks;
//! - [`forge_events`]: Forge lifecycle events and triggers, and the app system token;
//! - [`grants`]: trial extensions, free grants, access tokens and their redemption;
//! - [`license_view`]: the materialised licence decision per installation;
//! - [`views`]: the JSON shapes the vendor sees, made from rows;
//! - [`list_query`]: the installation list's parameters and cursors;
//! - [`installations`]: listing, detail and summary reads;
//! - [`export`]: the CSV export;
//! - [`forge`]: the installation of a verified Forge Invocation Token, and Forge events;
//! - [`admin_tokens`]: admin API tokens and who presents one;
//! - [`weekly`]: installs and uninstalls per week;
//! - [`tokens`]: how every bearer secret is generated, stored and compared.
//!
//! Nothing here knows about HTTP or the command line: operations return [`Error`], which
//! `crate::error` turns into an HTTP answer and `crate::cli` into a message naming a flag.

pub mod admin_tokens;
pub mod error;
pub mod export;
pub mod forge;
pub mod forge_events;
pub mod grants;
pub mod installations;
pub mod license_view;
pub mod lifecycle;
pub mod list_query;
pub mod tokens;
pub mod views;
pub mod weekly;

pub use error::Error;
