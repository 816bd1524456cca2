//! Keeps the materialised license view (`installations.license_state`, `license_source`,
//! `effective_trial_end`) equal to [`licensing::view`] of the current data.
//!
//! Call [`refresh`] after any change to a tenant's grants or license data; [`sweep`] runs in
//! the background for changes that come from time passing (a grant or trial running out).

use chrono::{DateTime, Utc};

use crate::licensing;
use crate::store::grants::{self, GrantRow};
use crate::store::{Db, installations};

/// Tenants recomputed per round: one write transaction that reads their rows and grants and
/// writes their views.
const REFRESH_BATCH: usize = 500;

/// Recomputes one tenant's view. Unknown tenants are ignored (a grant cannot exist for one).
pub async fn refresh(db: &Db, client_key: &str) -> sqlx::Result<()> {
    refresh_many(db, &[client_key.to_owned()]).await
}

/// Recomputes the views of many tenants (after a Marketplace sync, or when grants ran out),
/// in rounds of `REFRESH_BATCH`: one transaction per round rather than three statements
/// and a commit per tenant. Unknown tenants are ignored.
pub async fn refresh_many(db: &Db, client_keys: &[String]) -> sqlx::Result<()> {
    let now = crate::store::now();
    for chunk in client_keys.chunks(REFRESH_BATCH) {
        installations::refresh_license_views(db, chunk, |row, grants| {
            let facts: Vec<_> = grants.iter().filter_map(GrantRow::facts).collect();
            licensing::view(&row.observations(), &facts, now)
        })
        .await?;
    }
    Ok(())
}

/// Refreshes every tenant whose grant or trial ended in `(after, until]`.
pub async fn sweep(db: &Db, after: DateTime<Utc>, until: DateTime<Utc>) -> sqlx::Result<usize> {
    let keys = grants::ended_between(db, after, until).await?;
    refresh_many(db, &keys).await?;
    Ok(keys.len())
}

/// Runs [`sweep`] every `period` for as long as the process lives. The first pass covers all
/// of history, catching grants and trials that ran out while no instance was running.
pub fn spawn_sweeper(db: Db, period: std::time::Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut after = DateTime::<Utc>::UNIX_EPOCH;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let until = crate::store::now();
            match sweep(&db, after, until).await {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(
                            tenants = n,
                            "license views refreshed after grants or trials ended"
                        );
                    }
                    after = until;
                }
                Err(e) => tracing::warn!(error = %e, "license view sweep failed; will retry"),
            }
        }
    })
}
