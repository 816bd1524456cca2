//! SQL of the background reader of each site's license endpoint and `cloudId`
//! (`crate::host_license`): the `host_*` and `cloud_id` columns of `installations`.
//!
//! Scheduling lives in `host_next_check_at`. Taking work is an `UPDATE … WHERE
//! host_next_check_at <= now` that moves the column to a claim deadline, so two instances
//! polling the same database never read the same site at the same moment; a claim that is
//! never completed (the process died) simply becomes due again at the deadline.

use chrono::{DateTime, Utc};

use super::installations::InstallationRow;
use super::{Db, WritePool};

/// Only tenants that can be called: not uninstalled, and holding a secret to sign with.
const POLLABLE: &str =
    "status IN ('installed', 'enabled', 'disabled') AND shared_secret IS NOT NULL";

/// Claims up to `limit` due tenants (never checked, or `host_next_check_at <= now`) until
/// `until`, oldest due first, and returns their rows.
pub async fn claim_due(
    db: &Db,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<InstallationRow>> {
    // The due test is repeated in the outer WHERE: on PostgreSQL a concurrent claimer's
    // UPDATE re-checks it against the row it waited for, so each row is claimed once.
    let sql = format!(
        "UPDATE installations SET host_next_check_at = $2
         WHERE client_key IN (
             SELECT client_key FROM installations
             WHERE {POLLABLE} AND (host_next_check_at IS NULL OR host_next_check_at <= $1)
             ORDER BY host_next_check_at IS NOT NULL, host_next_check_at, client_key
             LIMIT $3)
           AND {POLLABLE} AND (host_next_check_at IS NULL OR host_next_check_at <= $1)
         RETURNING *"
    );
    crate::on_db!(db, |p| {
        sqlx::query_as::<_, InstallationRow>(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(now)
            .bind(until)
            .bind(limit)
            .fetch_all(p)
            .await
    })
}

/// Claims one tenant until `until`. With `force` (right after a verified install) it is taken
/// even when not due yet; otherwise only when due. `None`: not pollable, or claimed elsewhere.
pub async fn claim_one(
    db: &Db,
    client_key: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    force: bool,
) -> sqlx::Result<Option<InstallationRow>> {
    let sql = format!(
        "UPDATE installations SET host_next_check_at = $3
         WHERE client_key = $1 AND {POLLABLE}
           AND ($4 OR host_next_check_at IS NULL OR host_next_check_at <= $2)
         RETURNING *"
    );
    crate::on_db!(db, |p| {
        sqlx::query_as::<_, InstallationRow>(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(client_key)
            .bind(now)
            .bind(until)
            .bind(force)
            .fetch_optional(p)
            .await
    })
}

/// What the product's license endpoint said (`license` object of the response).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostLicense {
    pub active: Option<bool>,
    pub license_type: Option<String>,
    pub evaluation: Option<bool>,
    pub entitlement_id: Option<String>,
    pub entitlement_number: Option<String>,
    pub sen: Option<String>,
}

/// The result of one check, written at once.
#[derive(Clone, Debug)]
pub struct CheckRecord {
    /// `None`: the license endpoint could not be read (columns kept). `Some(None)`: it
    /// answered without a `license` object (a free app): the license columns are cleared.
    pub license: Option<Option<HostLicense>>,
    /// A `cloudId` read from tenant_info; `None` keeps the stored value (404 or failure).
    pub cloud_id: Option<String>,
    pub checked_at: DateTime<Utc>,
    pub next_check_at: DateTime<Utc>,
    pub failures: i32,
    pub last_error: Option<String>,
}

/// Writes one check's outcome. `changed_at` is bumped when license data was read: which of
/// the license sources is newest (and so the request decision) depends on `host_checked_at`.
pub async fn record(db: &Db, client_key: &str, rec: &CheckRecord) -> sqlx::Result<()> {
    crate::on_db!(db, |p| {
        let mut tx = p.begin_write().await?;
        if let Some(license) = &rec.license {
            let l = license.clone().unwrap_or_default();
            sqlx::query(
                "UPDATE installations SET host_license_active = $2, host_license_type = $3,
                     host_license_evaluation = $4, host_license_entitlement_id = $5,
                     host_license_entitlement_number = $6, host_license_sen = $7,
                     host_checked_at = $8, changed_at = $8
                 WHERE client_key = $1",
            )
            .bind(client_key)
            .bind(l.active)
            .bind(&l.license_type)
            .bind(l.evaluation)
            .bind(&l.entitlement_id)
            .bind(&l.entitlement_number)
            .bind(&l.sen)
            .bind(rec.checked_at)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(cloud_id) = &rec.cloud_id {
            sqlx::query("UPDATE installations SET cloud_id = $2 WHERE client_key = $1")
                .bind(client_key)
                .bind(cloud_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE installations SET host_next_check_at = $2, host_failures = $3,
                 host_last_error = $4
             WHERE client_key = $1",
        )
        .bind(client_key)
        .bind(rec.next_check_at)
        .bind(rec.failures)
        .bind(&rec.last_error)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    })
}
