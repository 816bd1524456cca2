//! Installs and uninstalls per week: the data of `GET /admin/summary/weekly` and of the dashboard's
//! weekly chart (docs/admin-api.md#summary: 26 weeks, oldest first, the last one the current week;
//! weeks start on Monday, UTC).
//!
//! Connect and Forge installations alike: which history entries install and uninstall, and why
//! a Connect tenant moving to Forge is not a new install, is [`charts::transitions_since`].

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::registry::Error;
use crate::store::{Db, charts};

/// How many weeks the summary covers, the current one included.
pub const WEEKS: usize = 26;

/// One week's counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Week {
    /// The Monday (UTC) the week starts on.
    #[schema(value_type = String, format = Date, example = "2026-11-30")]
    pub week_start: NaiveDate,
    /// Installations that became installed this week: a first install (Connect `installed`, or
    /// a Forge installation first seen), or a reinstall after an uninstall (a repeated
    /// `installed` of an installed site, or its move to Forge, is not counted).
    pub installs: i64,
    /// Installations that became uninstalled this week (Connect `uninstalled`, Forge
    /// pre-uninstall).
    pub uninstalls: i64,
}

/// `{"weeks": […]}`
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WeeklySummary {
    pub weeks: Vec<Week>,
}

/// The Monday of `t`'s week (UTC).
pub fn week_start(t: DateTime<Utc>) -> NaiveDate {
    let d = t.date_naive();
    d - Duration::days(i64::from(d.weekday().num_days_from_monday()))
}

/// Counts `transitions` (event type and time) into the [`WEEKS`] weeks ending with `now`'s.
/// Anything outside those weeks is ignored. Pure, so the week arithmetic is unit-tested.
pub fn bucket<'a>(
    transitions: impl IntoIterator<Item = (&'a str, DateTime<Utc>)>,
    now: DateTime<Utc>,
) -> Vec<Week> {
    let last = week_start(now);
    let first = last - Duration::weeks(WEEKS as i64 - 1);
    let mut weeks: Vec<Week> = (0..WEEKS)
        .map(|i| Week {
            week_start: first + Duration::weeks(i as i64),
            installs: 0,
            uninstalls: 0,
        })
        .collect();
    for (kind, at) in transitions {
        let start = week_start(at);
        if start < first || start > last {
            continue;
        }
        let i = ((start - first).num_days() / 7) as usize;
        match kind {
            "installed" => weeks[i].installs += 1,
            "uninstalled" => weeks[i].uninstalls += 1,
            _ => {}
        }
    }
    weeks
}

/// The weekly summary as of `now`.
pub async fn weekly(db: &Db, now: DateTime<Utc>) -> Result<WeeklySummary, Error> {
    let first = week_start(now) - Duration::weeks(WEEKS as i64 - 1);
    let since = first
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(now);
    let rows = charts::transitions_since(db, since).await?;
    Ok(WeeklySummary {
        weeks: bucket(
            rows.iter().map(|r| (r.event_type.as_str(), r.received_at)),
            now,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn weeks_start_on_monday_utc() {
        // 2026-12-03 is a Thursday
        assert_eq!(
            week_start(at("2026-12-03T10:00:00Z")).to_string(),
            "2026-11-30"
        );
        assert_eq!(
            week_start(at("2026-11-30T00:00:00Z")).to_string(),
            "2026-11-30"
        );
        assert_eq!(
            week_start(at("2026-11-29T23:59:59Z")).to_string(),
            "2026-11-23"
        );
        // a Sunday evening west of UTC is already Monday in UTC
        assert_eq!(
            week_start(at("2026-11-29T20:00:00-05:00")).to_string(),
            "2026-11-30"
        );
    }

    #[test]
    fn twenty_six_weeks_oldest_first_ending_this_week() {
        let now = at("2026-12-03T10:00:00Z");
        let w = bucket(
            [
                ("installed", at("2026-12-01T09:00:00Z")),
                ("installed", at("2026-11-30T00:00:00Z")),
                ("uninstalled", at("2026-11-29T23:59:59Z")),
                ("installed", at("2026-06-08T00:00:00Z")), // the first week's Monday
                ("installed", at("2026-06-07T23:59:59Z")), // before it: ignored
                ("enabled", at("2026-12-01T09:00:00Z")),   // not a transition kind
            ],
            now,
        );
        assert_eq!(w.len(), WEEKS);
        assert_eq!(w[0].week_start.to_string(), "2026-06-08");
        assert_eq!(w[WEEKS - 1].week_start.to_string(), "2026-11-30");
        assert_eq!((w[WEEKS - 1].installs, w[WEEKS - 1].uninstalls), (2, 0));
        assert_eq!((w[WEEKS - 2].installs, w[WEEKS - 2].uninstalls), (0, 1));
        assert_eq!(w[0].installs, 1);
        let total: i64 = w.iter().map(|w| w.installs + w.uninstalls).sum();
        assert_eq!(total, 4);
    }
}
