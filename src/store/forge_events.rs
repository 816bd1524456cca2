//! SQL of the Forge lifecycle and trigger routes ([`crate::registry::forge_events`]): status
//! changes with their history entry, in one write transaction, and the heartbeat's
//! `last_seen_at`.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Db, WritePool};

/// What a Forge event does to the installation's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// `avi:forge:installed:app`: status `installed` again (a reinstall after a pre-uninstall
    /// starts a new `installed_at`), `uninstalled_at` cleared.
    Installed,
    /// `avi:forge:upgraded:app`: nothing but the history and `last_seen_at`.
    Upgraded,
    /// The pre-uninstall trigger: status `uninstalled`, `uninstalled_at` set (the first time).
    PreUninstall,
}

/// A redelivery within this long of an identical entry adds no second one (Forge retries 4
/// times, 60 s apart, and a delivery may be 3 minutes late).
pub const DUPLICATE_WINDOW_SECS: i64 = 15 * 60;

/// What happened to the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// A new history entry.
    New,
    /// The same event was recorded moments ago (a Forge retry): the row change was applied
    /// again (it is idempotent), the history kept one entry.
    Duplicate,
    /// No installation with that key.
    Unknown,
}

/// Applies `transition` to `client_key` and appends `record` (as event `event_type`) unless
/// the installation's latest entry is the same event (ignoring `retryContext`) and younger
/// than [`DUPLICATE_WINDOW_SECS`]. Only the latest: `installed`, pre-uninstall, `installed`
/// again is a reinstall, not a duplicate.
pub async fn apply(
    db: &Db,
    client_key: &str,
    transition: Transition,
    event_type: &str,
    record: &Value,
    now: DateTime<Utc>,
) -> sqlx::Result<Recorded> {
    let update = match transition {
        Transition::Installed => {
            "UPDATE installations SET
                 status = CASE WHEN status IN ('enabled', 'disabled') THEN status
                               ELSE 'installed' END,
                 installed_at = CASE WHEN status = 'uninstalled' THEN $2 ELSE installed_at END,
                 uninstalled_at = NULL, updated_at = $2, last_seen_at = $2, changed_at = $2
             WHERE client_key = $1"
        }
        Transition::Upgraded => {
            "UPDATE installations SET updated_at = $2, last_seen_at = $2, changed_at = $2
             WHERE client_key = $1"
        }
        Transition::PreUninstall => {
            "UPDATE installations SET
                 uninstalled_at = CASE WHEN status = 'uninstalled' AND uninstalled_at IS NOT NULL
                                       THEN uninstalled_at ELSE $2 END,
                 status = 'uninstalled', updated_at = $2, last_seen_at = $2, changed_at = $2
             WHERE client_key = $1"
        }
    };
    let since = now - chrono::Duration::seconds(DUPLICATE_WINDOW_SECS);
    let wanted = without_retry(record);
    crate::on_db!(db, |p| {
        let mut tx = p.begin_write().await?;
        let changed = sqlx::query(update)
            .bind(client_key)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed == 0 {
            return Ok(Recorded::Unknown);
        }
        let last: Option<(String, String)> = sqlx::query_as(
            "SELECT event_type, payload FROM lifecycle_events
             WHERE client_key = $1 AND received_at >= $2
             ORDER BY id DESC LIMIT 1",
        )
        .bind(client_key)
        .bind(since)
        .fetch_optional(&mut *tx)
        .await?;
        let duplicate = last.is_some_and(|(t, stored)| {
            t == event_type
                && serde_json::from_str::<Value>(&stored).is_ok_and(|v| without_retry(&v) == wanted)
        });
        if !duplicate {
            // Written out rather than through `events::insert`: that one is generic over the
            // executor, and its higher-ranked bounds do not hold in a future that must be
            // `Send` (this runs in a task of its own).
            sqlx::query(
                "INSERT INTO lifecycle_events
                     (id, client_key, event_type, received_at, token_iat, payload)
                 VALUES ($1, $2, $3, $4, NULL, $5)",
            )
            .bind(super::new_id())
            .bind(client_key)
            .bind(event_type)
            .bind(now)
            .bind(record.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(if duplicate {
            Recorded::Duplicate
        } else {
            Recorded::New
        })
    })
}

fn without_retry(record: &Value) -> Value {
    let mut v = record.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("retryContext");
    }
    v
}

/// The hourly trigger: `last_seen_at` only. `false` when no such installation.
pub async fn heartbeat(db: &Db, client_key: &str, now: DateTime<Utc>) -> sqlx::Result<bool> {
    crate::on_db!(db, |p| {
        let done = sqlx::query(
            "UPDATE installations SET last_seen_at = $2
             WHERE client_key = $1 AND (last_seen_at IS NULL OR last_seen_at < $2)",
        )
        .bind(client_key)
        .bind(now)
        .execute(p)
        .await?;
        Ok(done.rows_affected() > 0)
    })
}
