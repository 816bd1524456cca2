//! SQL of the app system token and of the background reader of the Forge License API
//! ([`crate::forge_license`]): the `forge_system_token*` and `forge_api_*` columns of
//! `installations`.
//!
//! Scheduling lives in `forge_api_retry_after`, the earliest time the License API may be read
//! for the installation again. Taking work ([`super::license_reads`]) is an `UPDATE … WHERE
//! forge_api_retry_after <= now` that moves the column at least [`crate::forge::license_api::MIN_INTERVAL`] ahead *before*
//! the read, so Atlassian's limit (one read per 5 minutes per installation) holds across
//! instances and crashes: a read that never records its outcome still counts as a read.

use chrono::{DateTime, Utc};

use super::license_reads::{self as reads, Record, Schedule};
use super::{Db, WritePool};

/// The License API reader's schedule. Installations whose licence can be read: a system token
/// that has not expired, and a Forge installation id (the token's row key). A claim is taken
/// only when due, never earlier: the 5-minute limit holds for reads asked for by a fresh token
/// too.
pub(crate) const SCHEDULE: Schedule = Schedule {
    next_at: "forge_api_retry_after",
    failures: "forge_api_failures",
    last_error: "forge_api_last_error",
    readable: "forge_system_token IS NOT NULL
     AND forge_installation_id IS NOT NULL
     AND forge_system_token_expires_at > $1",
    returning: "client_key, forge_installation_id, forge_app_id, forge_system_token, forge_api_failures",
};

/// What the reader needs of a row; the token still sealed.
#[derive(Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub client_key: String,
    pub forge_installation_id: String,
    pub forge_app_id: Option<String>,
    pub forge_system_token: String,
    pub forge_api_failures: i32,
}

impl std::fmt::Debug for TokenRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRow")
            .field("client_key", &self.client_key)
            .field("forge_installation_id", &self.forge_installation_id)
            .field("forge_system_token", &"***")
            .finish_non_exhaustive()
    }
}

/// Stores the latest app system token (already sealed) and its expiry. `false`: no such row.
pub async fn store_token(
    db: &Db,
    client_key: &str,
    sealed: &str,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    crate::on_db!(db, |p| {
        let done = sqlx::query(
            "UPDATE installations SET forge_system_token = $2, forge_system_token_expires_at = $3
             WHERE client_key = $1",
        )
        .bind(client_key)
        .bind(sealed)
        .bind(expires_at)
        .execute(p)
        .await?;
        Ok(done.rows_affected() > 0)
    })
}

/// What the License API said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiLicense {
    pub active: Option<bool>,
    pub evaluation: Option<bool>,
    pub license_type: Option<String>,
    pub trial_end: Option<DateTime<Utc>>,
    pub entitlement_id: Option<String>,
    pub entitlement_number: Option<String>,
}

/// Writes one read's outcome. `changed_at` is bumped when licence data was read, so the tenant
/// caches of every instance pick the new licence up.
pub async fn record(db: &Db, client_key: &str, rec: &Record<ApiLicense>) -> sqlx::Result<()> {
    crate::on_db!(db, |p| {
        let mut tx = p.begin_write().await?;
        if let Some(license) = &rec.license {
            let l = license.clone().unwrap_or_default();
            sqlx::query(
                "UPDATE installations SET forge_api_license_active = $2,
                     forge_api_license_evaluation = $3, forge_api_license_type = $4,
                     forge_api_trial_end = $5, forge_api_entitlement_id = $6,
                     forge_api_entitlement_number = $7, forge_api_checked_at = $8,
                     changed_at = $8
                 WHERE client_key = $1",
            )
            .bind(client_key)
            .bind(l.active)
            .bind(l.evaluation)
            .bind(&l.license_type)
            .bind(l.trial_end)
            .bind(&l.entitlement_id)
            .bind(&l.entitlement_number)
            .bind(rec.checked_at)
            .execute(&mut *tx)
            .await?;
        }
        reads::set_schedule!(tx, &SCHEDULE, client_key, rec)?;
        tx.commit().await
    })
}

/// Replaces a token only if it is still `old` (a newer token written meanwhile wins).
pub async fn replace_token(db: &Db, client_key: &str, old: &str, new: &str) -> sqlx::Result<bool> {
    replace_token_or_drop(db, client_key, old, Some(new)).await
}

/// As [`replace_token`]; `None` removes the token (and its expiry).
pub async fn replace_token_or_drop(
    db: &Db,
    client_key: &str,
    old: &str,
    new: Option<&str>,
) -> sqlx::Result<bool> {
    crate::on_db!(db, |p| {
        let done = sqlx::query(
            "UPDATE installations SET forge_system_token = $3,
                 forge_system_token_expires_at = CASE WHEN $3 IS NULL THEN NULL
                                                      ELSE forge_system_token_expires_at END
             WHERE client_key = $1 AND forge_system_token = $2",
        )
        .bind(client_key)
        .bind(old)
        .bind(new)
        .execute(p)
        .await?;
        Ok(done.rows_affected() > 0)
    })
}
