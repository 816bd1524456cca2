//! Keeps the materialised license view (`installations.license_state`, `license_source`,
//! `effective_trial_end`) equal to [`licensing::view`] of the current data.
//!
//! Call [`refresh`] after any change to a tenant's grants or license data; [`sweep`] runs in
//! the background for changes that come from time passing (a grant or trial running out).

use chrono::{DateTime, Utc};

use crate::licensing;
use crate::store::{Db, grants, installations};

/// Recomputes one tenant's view. Unknown tenants are ignored (a grant cannot exist for one).
pub async fn refresh(db: &Db, client_key: &str) -> sqlx::Result<()> {
    let Some(row) = installations::get(db, client_key).await? else {
        return Ok(());
    };
    let facts: Vec<_> = grants::for_client(db, client_key)
        .await?
        .iter()
        .filter_map(grants::GrantRow::facts)
        .collect();
    let v = licensing::view(&row, &facts, crate::store::now());
    crate::on_db!(db, |p| {
        sqlx::query(
            "UPDATE installations SET license_state = $2, license_source = $3,
                 effective_trial_end = $4
             WHERE client_key = $1",
        )
        .bind(client_key)
        .bind(v.state.as_str())
        .bind(v.source.map(|s| s.as_str()))
        .bind(v.effective_trial_end)
        .execute(p)
        .await
        .map(|_| ())
    })
}

/// Refreshes every tenant whose grant or trial ended in `(after, until]`.
pub async fn sweep(db: &Db, after: DateTime<Utc>, until: DateTime<Utc>) -> sqlx::Result<usize> {
    let keys = grants::ended_between(db, after, until).await?;
    for key in &keys {
        refresh(db, key).await?;
    }
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
