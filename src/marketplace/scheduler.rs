//! The periodic background sync.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Client;
use crate::metrics::Metrics;
use crate::store::{self as db_store, Db, marketplace as store};

/// The first background sync after start when none ever succeeded (or the interval, if less).
const FIRST_SYNC_DELAY: Duration = Duration::from_secs(60);

/// The background sync: every `MARKETPLACE_SYNC_INTERVAL_SECS` when all three
/// `MARKETPLACE_*` credentials are set. The schedule follows the last successful sync in the
/// database, so restarts and other instances do not multiply runs; the lease keeps two from
/// overlapping.
pub fn spawn_periodic(db: Db, client: Client, metrics: Metrics, interval: Duration) {
    if client.credentials().is_none() {
        tracing::info!("Marketplace credentials not set: background license sync off");
        return;
    }
    tokio::spawn(async move {
        let mut wait = match store::last_synced_at(&db).await {
            Ok(Some(last)) => until_due(last, interval),
            _ => FIRST_SYNC_DELAY.min(interval),
        };
        loop {
            tokio::time::sleep(wait).await;
            if db.is_closed() {
                return;
            }
            // Another instance may have synced while this one slept: follow its schedule.
            if let Ok(Some(last)) = store::last_synced_at(&db).await {
                let left = until_due(last, interval);
                if left > interval / 10 {
                    wait = left;
                    continue;
                }
            }
            // Success or failure (counted by sync_once), try again a period later.
            if let Err(e) = super::sync_once(&db, &client, &metrics).await
                && !matches!(e, super::SyncError::InProgress)
            {
                tracing::warn!(error = %e, "Marketplace sync failed; stored data unchanged");
            }
            wait = interval;
        }
    });
}

/// Time left until `last + interval` (zero when past).
fn until_due(last: DateTime<Utc>, interval: Duration) -> Duration {
    let due = crate::license_reader::later(last, interval);
    (due - db_store::now()).to_std().unwrap_or(Duration::ZERO)
}
