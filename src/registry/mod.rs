//! The rules of the registry, shared by the HTTP routes and the CLI: lifecycle callbacks and
//! the vendor's operations.
//!
//! Nothing here knows about HTTP or the command line: operations return [`Error`], which
//! `crate::error` turns into an HTTP answer and `crate::cli` into a message naming a flag.

pub mod error;
pub mod grants;
pub mod license_view;
pub mod lifecycle;
pub mod vendor;
pub mod weekly;

pub use error::Error;
