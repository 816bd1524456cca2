//! The append-only `audit_log`: who changed what, and why (grants, trial extensions,
//! revocations, access and admin tokens). Shown in an installation's detail view.
//!
//! One way in: [`Entry::write`] inside the caller's transaction, so a change and its audit entry
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

/// One entry to append: `action` by `actor` on the grant or token `target_id`. Built where the
/// change is made and [`written`](Entry::write) inside the change's transaction.
#[derive(Debug)]
pub struct Entry<'a> {
    actor: &'a str,
    action: &'a str,
    target_id: &'a str,
    client_key: Option<&'a str>,
    reason: Option<&'a str>,
    details: Option<Value>,
}

impl<'a> Entry<'a> {
    pub fn new(actor: &'a str, action: &'a str, target_id: &'a str) -> Self {
        Entry {
            actor,
            action,
            target_id,
            client_key: None,
            reason: None,
            details: None,
        }
    }

    /// The tenant the change concerns; none for admin tokens and unbound access tokens.
    pub fn tenant(self, client_key: Option<&'a str>) -> Self {
        Entry { client_key, ..self }
    }

    /// The reason or note the person gave.
    pub fn reason(self, reason: Option<&'a str>) -> Self {
        Entry { reason, ..self }
    }

    /// Extra, non-secret facts (e.g. the new end date).
    pub fn details(self, details: Value) -> Self {
        Entry {
            details: Some(details),
            ..self
        }
    }

    /// Appends the entry with any executor; give it the change's transaction (`&mut *tx`).
    pub async fn write<'c, E>(self, exec: E, now: DateTime<Utc>) -> sqlx::Result<()>
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
        .bind(self.client_key)
        .bind(self.actor)
        .bind(self.action)
        .bind(self.target_id)
        .bind(self.reason)
        .bind(self.details.map(|d| d.to_string()))
        .bind(now)
        .execute(exec)
        .await?;
        Ok(())
    }
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
