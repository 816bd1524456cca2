//! The append-only `audit_log`: who changed what, and why (grants, trial extensions,
//! revocations, access and admin tokens). Shown in an installation's detail view.
//!
//! One way in: [`insert`] inside the caller's transaction, so a change and its audit entry
//! commit (or fail) together.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::Db;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: String,
    pub client_key: Option<String>,
    /// The admin token's name, `env` for `ADMIN_TOKEN`, or `cli`.
    pub actor: String,
    /// A short verb, e.g. `trial_extension.create`, `grant.revoke`, `access_token.create`.
    pub action: String,
    /// The id of the grant or token acted on.
    pub target_id: Option<String>,
    pub reason: Option<String>,
    /// JSON text of extra, non-secret facts (e.g. the new end date).
    pub details: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Appends one entry with any executor; give it the change's transaction (`&mut *tx`).
#[allow(clippy::too_many_arguments)]
pub async fn insert<'c, E>(
    exec: E,
    client_key: Option<&str>,
    actor: &str,
    action: &str,
    target_id: Option<&str>,
    reason: Option<&str>,
    details: Option<Value>,
    now: DateTime<Utc>,
) -> sqlx::Result<()>
where
    E: sqlx::Executor<'c>,
    for<'q> <E::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<E::Database>,
    for<'q> String: sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
    for<'q> &'q str: sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
    for<'q> Option<String>: sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
    for<'q> DateTime<Utc>: sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
{
    sqlx::query(
        "INSERT INTO audit_log (id, client_key, actor, action, target_id, reason, details,
                                created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(super::new_id())
    .bind(client_key)
    .bind(actor)
    .bind(action)
    .bind(target_id)
    .bind(reason)
    .bind(details.map(|d| d.to_string()))
    .bind(now)
    .execute(exec)
    .await?;
    Ok(())
}

/// A tenant's audit trail, oldest first (ids are UUIDv7, so they sort by time).
pub async fn for_client(db: &Db, client_key: &str) -> sqlx::Result<Vec<AuditRow>> {
    crate::on_db!(db, |p| {
        sqlx::query_as::<_, AuditRow>("SELECT * FROM audit_log WHERE client_key = $1 ORDER BY id")
            .bind(client_key)
            .fetch_all(p)
            .await
    })
}
