//! Marks PostgreSQL tests as ignored (with a reason `cargo test` prints) when
//! TEST_DATABASE_URL is unset at build time, so a bare `cargo test` says what it skipped.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(no_postgres)");
    println!("cargo::rerun-if-env-changed=TEST_DATABASE_URL");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=migrations");
    if std::env::var("TEST_DATABASE_URL").map_or(true, |v| v.is_empty()) {
        println!("cargo::rustc-cfg=no_postgres");
    }
}
