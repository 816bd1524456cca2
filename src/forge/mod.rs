//! Forge: the Forge Invocation Token (FIT) that Forge Remote and Connect-on-Forge apps receive,
//! kept free of HTTP framework and database concerns like [`crate::connect`] beside it.
//!
//! * [`events`] — the bodies of Forge lifecycle events and triggers delivered to a remote.
//! * [`ids`] — app and installation ids, accepted as ARI or bare uuid and compared in one form.
//! * [`fit`] — verifying a FIT, one pure function per step, each refusal with a `reason()`.
//! * [`keys`] — the key set that signs FITs, fetched at start-up and on an unknown `kid` at
//!   most once per cool-down, whatever the number of requests.
//! * [`license_api`] — the Forge License API client (an installation's licence, read with its
//!   app system token).
//! * [`testing`] — minting FITs and key sets for tests and benchmarks (no network, no clock).
//!
//! The facts this follows are Atlassian's Forge remote invocation contract
//! (developer.atlassian.com/platform/forge/remote/essentials/).

pub mod events;
pub mod fit;
pub mod ids;
pub mod keys;
pub mod license_api;
pub mod testing;
