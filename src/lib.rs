//! connect-keeper: the backend of an Atlassian Connect cloud app with licensing enforcement,
//! and the vendor's registry of every installation.
//!
//! Where things live:
//! * [`config`] — configuration from the environment (contract §3).
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
pub mod sanitize;
pub mod secrets;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tenants;
pub mod verified_tokens;
