//! Reads behind the dashboard's charts and `GET /admin/summary/weekly`.

use chrono::{DateTime, Utc};

use super::Db;

/// One change of an installation between installed and uninstalled.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Transition {
    /// `installed` (first install, or reinstall after an uninstall) or `uninstalled`.
    pub event_type: String,
    pub received_at: DateTime<Utc>,
}

/// Every transition received at or after `since`, oldest first.
///
/// A transition is an `installed` event with no earlier `installed`/`uninstalled` event of
/// that site, or one whose previous such event differs from it: a retried or re-sent
/// `installed` (secret rotation, site rename) is not a new install, and a retried
/// `uninstalled` is not a second uninstall. `enabled`/`disabled` do not count. The previous
/// event is found with `LAG` over each site's history (both backends have window
/// functions), ordered by arrival.
pub async fn transitions_since(db: &Db, since: DateTime<Utc>) -> sqlx::Result<Vec<Transition>> {
    crate::on_db!(db, |p| {
        sqlx::query_as::<_, Transition>(
            "SELECT event_type, received_at FROM (
                 SELECT event_type, received_at,
                        LAG(event_type) OVER (PARTITION BY client_key ORDER BY received_at, id)
                            AS previous
                 FROM lifecycle_events
                 WHERE event_type IN ('installed', 'uninstalled')
             ) e
             WHERE received_at >= $1
               AND ((previous IS NULL AND event_type = 'installed') OR previous <> event_type)
             ORDER BY received_at",
        )
        .bind(since)
        .fetch_all(p)
        .await
    })
}

/// The effective trial ends in `[from, until)` of installations in trial, soonest first.
pub async fn trial_ends(
    db: &Db,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> sqlx::Result<Vec<DateTime<Utc>>> {
    crate::on_db!(db, |p| {
        sqlx::query_scalar::<_, DateTime<Utc>>(
            "SELECT effective_trial_end FROM installations
             WHERE license_state = 'trial' AND effective_trial_end >= $1
               AND effective_trial_end < $2
             ORDER BY effective_trial_end",
        )
        .bind(from)
        .bind(until)
        .fetch_all(p)
        .await
    })
}
