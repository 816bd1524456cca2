//! Black-box tests: each starts the real application on port 0 with its own database (a SQLite
//! file, or a PostgreSQL schema from TEST_DATABASE_URL) and talks HTTP to it. Outside services
//! (the install-keys server, the product, the Marketplace) are wiremock servers.

#[macro_use]
mod helpers;

mod admin;
mod browser;
mod cli;
mod cli_ops;
mod cli_words;
mod dashboard;
mod forge;
mod forge_events;
mod hardening;
mod hostile_text;
mod lic_trust;
mod license_data;
mod lifecycle;
mod log_levels;
mod log_policy;
mod net_hardening;
mod process;
mod product;
mod replay;
mod search;
mod test_db;
mod vendor_app;
