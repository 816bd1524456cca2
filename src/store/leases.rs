//! The `leases` table: cluster-wide, expiring locks by name.
//!
//! Used where only one instance behind the load balancer may do a job at a time (one
//! Marketplace sync). A lease expires on its own, so a crashed holder never blocks the job
//! for longer than the lease's lifetime; a live holder renews it while it works.

use chrono::{DateTime, Utc};

use super::Db;

/// Takes the lease `name` for `holder` until `expires_at`, when it is free or expired.
/// Returns false when another holder has it. Atomic on both backends (one upsert whose
/// update only applies to an expired row).
pub async fn try_acquire(
    db: &Db,
    name: &str,
    holder: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let done = crate::on_db!(db, |p| {
        sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                 expires_at = excluded.expires_at
             WHERE leases.expires_at <= $4",
        )
        .bind(name)
        .bind(holder)
        .bind(expires_at)
        .bind(now)
        .execute(p)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(done == 1)
}

/// Extends a lease this holder still has. False when it was lost (expired and taken).
pub async fn renew(
    db: &Db,
    name: &str,
    holder: &str,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let done = crate::on_db!(db, |p| {
        sqlx::query("UPDATE leases SET expires_at = $3 WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .bind(expires_at)
            .execute(p)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(done == 1)
}

/// Gives a lease back (only if this holder still has it).
pub async fn release(db: &Db, name: &str, holder: &str) -> sqlx::Result<()> {
    crate::on_db!(db, |p| {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(p)
            .await
            .map(|_| ())
    })
}
