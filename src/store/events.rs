//! The append-only `lifecycle_events` history.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::Db;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: String,
    pub client_key: String,
    pub event_type: String,
    pub received_at: DateTime<Utc>,
    pub token_iat: Option<i64>,
    /// JSON text of the payload with the shared secret removed.
    pub payload: String,
}

/// Appends one event inside the caller's transaction.
pub async fn insert<'c, E>(
    exec: E,
    client_key: &str,
    event_type: &str,
    token_iat: Option<i64>,
    payload: &Value,
    now: DateTime<Utc>,
) -> sqlx::Result<()>
where
    E: sqlx::Executor<'c>,
    for<'q> <E::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<E::Database>,
    for<'q> &'q str: sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
    for<'q> String: sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
    for<'q> Option<i64>: sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
    for<'q> DateTime<Utc>: sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
{
    sqlx::query(
        "INSERT INTO lifecycle_events (id, client_key, event_type, received_at, token_iat, payload)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(super::new_id())
    .bind(client_key)
    .bind(event_type)
    .bind(now)
    .bind(token_iat)
    .bind(payload.to_string())
    .execute(exec)
    .await?;
    Ok(())
}

/// A tenant's history, oldest first.
pub async fn for_client(db: &Db, client_key: &str) -> sqlx::Result<Vec<EventRow>> {
    crate::on_db!(db, |p| {
        sqlx::query_as::<_, EventRow>(
            "SELECT * FROM lifecycle_events WHERE client_key = $1 ORDER BY id",
        )
        .bind(client_key)
        .fetch_all(p)
        .await
    })
}
