//! The Atlassian Connect protocol, kept free of HTTP framework and database concerns so that every
//! rule can be unit-tested against the published vectors.

pub mod descriptor;
pub mod install_keys;
pub mod jwt;
pub mod outbound;
pub mod qsh;
pub mod request;

pub use request::RequestParts;
