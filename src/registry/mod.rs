//! The rules of the registry, shared by the HTTP routes and the CLI: lifecycle callbacks and
//! the vendor's operations.

pub mod grants;
pub mod license_view;
pub mod lifecycle;
pub mod vendor;
pub mod weekly;
