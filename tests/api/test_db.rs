//! The harness's own promise (CONTRIBUTING.md, "Tests"): each PostgreSQL test schema is dropped
//! when its test ends, also when the test fails, so `cargo test` can run any number of times on
//! one database without leaving `t_*` schemas behind.

use sqlx::Connection;

use crate::helpers::*;

/// The schema of a test database (its URL names it as the connections' application_name).
fn schema_of(db: &TestDb) -> String {
    url::Url::parse(&db.url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "application_name")
        .map(|(_, v)| v.into_owned())
        .expect("application_name in the test URL")
}

async fn schema_exists(name: &str) -> bool {
    let base = std::env::var("TEST_DATABASE_URL").unwrap();
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
    let found: Option<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname = $1")
            .bind(name)
            .fetch_optional(&mut conn)
            .await
            .unwrap();
    found.is_some()
}

#[tokio::test]
#[cfg_attr(
    no_postgres,
    ignore = "TEST_DATABASE_URL is unset: PostgreSQL variant skipped"
)]
async fn a_test_schema_is_dropped_when_the_test_ends_also_on_failure() {
    // Ends normally, with an app still holding connections and an open transaction on it.
    let app = TestApp::spawn(Backend::Postgres).await;
    let schema = schema_of(&app.db);
    assert!(schema.starts_with("t_") && schema_exists(&schema).await);
    let mut open = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut open).await.unwrap();
    sqlx::query("SELECT count(*) FROM installations")
        .execute(&mut open)
        .await
        .unwrap();
    drop(app);
    assert!(!schema_exists(&schema).await, "{schema} left behind");

    // Fails: the test panics while its database is alive; unwinding drops it.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let failed = tokio::spawn(async move {
        let db = TestDb::new(Backend::Postgres).await;
        tx.send(schema_of(&db)).unwrap();
        panic!("a failing test");
    })
    .await;
    assert!(failed.is_err_and(|e| e.is_panic()));
    let schema = rx.await.unwrap();
    assert!(
        !schema_exists(&schema).await,
        "{schema} left behind by a failed test"
    );
}
