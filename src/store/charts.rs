//! Reads behind the dashboard's charts and `GET /admin/summary/weekly`.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};

use super::{Db, forge};
use crate::domain::LifecycleEvent;
use crate::forge::events as forge_events;

/// One change of an installation between installed and uninstalled.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Transition {
    /// `installed` (first install, or reinstall after an uninstall) or `uninstalled`.
    pub event_type: String,
    pub received_at: DateTime<Utc>,
}

/// History entries after which an installation is installed: a Connect `installed`, Forge's
/// `avi:forge:installed:app`, and a FIT registering an installation at first sight or linking
/// a new installation id to an existing installation (which re-installs one that was
/// uninstalled, and is a take-over of an installed one).
pub const BECOMES_INSTALLED: [&str; 4] = [
    LifecycleEvent::Installed.as_str(),
    forge_events::INSTALLED,
    forge::REGISTERED_EVENT,
    forge::LINKED_EVENT,
];

/// History entries after which an installation is uninstalled: a Connect `uninstalled` and
/// Forge's pre-uninstall trigger.
pub const BECOMES_UNINSTALLED: [&str; 2] = [
    LifecycleEvent::Uninstalled.as_str(),
    forge_events::PRE_UNINSTALL,
];

/// The SQL of [`transitions_since`], its lists of event types written in from the constants
/// above (compile-time names, no quote in any of them).
static TRANSITIONS_SQL: LazyLock<String> = LazyLock::new(|| {
    let list = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (up, down) = (list(&BECOMES_INSTALLED), list(&BECOMES_UNINSTALLED));
    format!(
        "SELECT state AS event_type, received_at FROM (
             SELECT state, received_at,
                    LAG(state) OVER (PARTITION BY client_key ORDER BY received_at, id) AS previous
             FROM (
                 SELECT client_key, id, received_at,
                        CASE WHEN event_type IN ({up}) THEN 'installed' ELSE 'uninstalled' END
                            AS state
                 FROM lifecycle_events
                 WHERE event_type IN ({up}, {down})
             ) s
         ) e
         WHERE received_at >= $1
           AND ((previous IS NULL AND state = 'installed') OR previous <> state)
         ORDER BY received_at"
    )
});

/// Every transition received at or after `since`, oldest first.
///
/// Each entry of [`BECOMES_INSTALLED`] or [`BECOMES_UNINSTALLED`] in an installation's history
/// puts it in that state; a transition is an entry whose state differs from the previous
/// entry's, or a first entry that installs. So a retried or re-sent `installed` (secret
/// rotation, site rename), Forge's `installed` event right after the FIT that registered the
/// installation, and a Connect tenant taken over by Forge (`forge_linked` after `installed`)
/// are not new installs, and a retried uninstall is not a second one; `enabled`/`disabled`
/// do not count. The previous entry is found with `LAG` over each installation's history
/// (both backends have window functions), ordered by arrival. Histories merged when a Connect
/// `installed` takes over a Forge-only row become one installation's, counted once.
pub async fn transitions_since(db: &Db, since: DateTime<Utc>) -> sqlx::Result<Vec<Transition>> {
    let sql: &'static str = TRANSITIONS_SQL.as_str();
    crate::on_db!(db, |p| {
        sqlx::query_as::<_, Transition>(sql)
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
