//! SQL of the background reader of each site's license endpoint and `cloudId`
//! (`crate::host_license`): the `host_*` and `cloud_id` columns of `installations`.
//!
//! Scheduling lives in `host_next_check_at`, claimed like every licence source's schedule
//! ([`super::license_reads`]): two instances polling the same database never read the same
//! site at the same moment; a claim that is never completed (the process died) simply becomes
//! due again at the deadline.

use super::license_reads::{self as reads, Record, Schedule};
use super::{Db, WritePool};

/// The product reader's schedule. Only tenants that can be called are read: not uninstalled,
/// and holding a secret to sign with. Claims return the whole row.
pub(crate) const SCHEDULE: Schedule = Schedule {
    next_at: "host_next_check_at",
    failures: "host_failures",
    last_error: "host_last_error",
    readable: "status IN ('installed', 'enabled', 'disabled') AND shared_secret IS NOT NULL",
    returning: "*",
};

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

/// Writes one check's outcome. `changed_at` is bumped when license data was read: which of
/// the license sources is newest (and so the request decision) depends on `host_checked_at`.
/// `cloud_id`: one read from tenant_info; `None` keeps the stored value (404 or failure).
pub async fn record(
    db: &Db,
    client_key: &str,
    rec: &Record<HostLicense>,
    cloud_id: Option<&str>,
) -> sqlx::Result<()> {
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
        if let Some(cloud_id) = cloud_id {
            sqlx::query("UPDATE installations SET cloud_id = $2 WHERE client_key = $1")
                .bind(client_key)
                .bind(cloud_id)
                .execute(&mut *tx)
                .await?;
        }
        reads::set_schedule!(tx, &SCHEDULE, client_key, rec)?;
        tx.commit().await
    })
}
