//! The Overview's charts, drawn as SVG by the server: no script, no outside library, and they
//! print and scale with the page. Colours come from the stylesheet (classes, not inline
//! styles, which the Content-Security-Policy forbids). Each chart carries a `<title>` per bar
//! (the browser's tooltip) and its numbers in a table beneath, for screen readers and for
//! copying.
//!
//! The drawing functions are pure (data in, markup out) and unit-tested; only
//! [`overview_charts`] reads the database.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use maud::{Markup, html};

use crate::error::ApiError;
use crate::registry::views;
use crate::registry::weekly::{self, Week};
use crate::store::{Db, charts};

/// Days ahead covered by the "trials ending" chart.
pub const TRIAL_DAYS: i64 = 30;

/// Every chart of the Overview.
pub async fn overview_charts(
    db: &Db,
    summary: &views::Summary,
    now: DateTime<Utc>,
) -> Result<Markup, ApiError> {
    let weeks = weekly::weekly(db, now).await?.weeks;
    let ends = charts::trial_ends(db, now, now + Duration::days(TRIAL_DAYS)).await?;
    let today = now.date_naive();
    let per_day = trial_days(today, &ends);
    let l = &summary.by_license;
    let states = [
        ("active", l.active),
        ("trial", l.trial),
        ("free", l.free),
        ("unlicensed", l.unlicensed),
    ];
    Ok(html! {
        section.charts {
            div.card.wide {
                h2 { "Installs and uninstalls per week (26 weeks)" }
                p.legend {
                    span { span.swatch.installs {} "installs" }
                    span { span.swatch.uninstalls {} "uninstalls" }
                }
                // on a phone the chart scrolls sideways, starting at the latest weeks
                div.chartscroll.latest { (weekly_chart(&weeks)) }
                details {
                    summary { "Numbers" }
                    div.tablewrap { table {
                        thead { tr { th { "Week of" } th { "Installs" } th { "Uninstalls" } } }
                        tbody { @for w in weeks.iter().rev() { tr {
                            td data-label="Week of" { (w.week_start) }
                            td data-label="Installs" { (w.installs) }
                            td data-label="Uninstalls" { (w.uninstalls) }
                        } } }
                    } }
                }
            }
            div.card {
                h2 { "Installations by licence state" }
                (states_chart(&states))
            }
            div.card {
                h2 { "Trials ending in the next 30 days" }
                p.sub { (ends.len()) " in total" }
                div.chartscroll { (trials_chart(today, &per_day)) }
            }
        }
    })
}

/// How many of `ends` fall on each of the [`TRIAL_DAYS`] days from `today`.
pub fn trial_days(today: NaiveDate, ends: &[DateTime<Utc>]) -> Vec<i64> {
    let mut days = vec![0i64; TRIAL_DAYS as usize + 1];
    for e in ends {
        let i = (e.date_naive() - today).num_days();
        if (0..=TRIAL_DAYS).contains(&i) {
            days[i as usize] += 1;
        }
    }
    days
}

/// A round number at or above `max` (1, 2, 5 × 10ⁿ) for the top of an axis.
fn nice_max(max: i64) -> i64 {
    let mut step = 1;
    loop {
        for m in [1, 2, 5] {
            if m * step >= max.max(1) {
                return m * step;
            }
        }
        step *= 10;
    }
}

const W: f64 = 760.0;
const LEFT: f64 = 40.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 26.0;

/// The y axis: gridlines and labels at 0, half and the top.
fn y_axis(top: i64, h: f64) -> Markup {
    let plot_h = h - TOP - BOTTOM;
    html! {
        @for v in [0, top / 2, top] {
            @let y = TOP + plot_h - plot_h * v as f64 / top as f64;
            line.axis x1=(LEFT) x2=(W - RIGHT) y1=(y) y2=(y) {}
            text x=(LEFT - 6.0) y=(y + 4.0) text-anchor="end" { (v) }
        }
    }
}

/// Installs and uninstalls side by side for each week.
pub fn weekly_chart(weeks: &[Week]) -> Markup {
    let h = 240.0;
    let plot_h = h - TOP - BOTTOM;
    let top = nice_max(
        weeks
            .iter()
            .map(|w| w.installs.max(w.uninstalls))
            .max()
            .unwrap_or(0),
    );
    let slot = (W - LEFT - RIGHT) / weeks.len().max(1) as f64;
    let bar = (slot * 0.38).max(1.0);
    let height = |v: i64| plot_h * v as f64 / top as f64;
    html! {
        svg.chart #weekly-chart viewBox={ "0 0 " (W) " " (h) } role="img"
            aria-label="Installs and uninstalls per week over the last 26 weeks" {
            (y_axis(top, h))
            @for (i, w) in weeks.iter().enumerate() {
                @let x = LEFT + slot * i as f64 + slot * 0.1;
                rect.installs x=(x) y=(TOP + plot_h - height(w.installs)) width=(bar) height=(height(w.installs)) {
                    title { "week of " (w.week_start) ": " (w.installs) " installs" }
                }
                rect.uninstalls x=(x + bar) y=(TOP + plot_h - height(w.uninstalls)) width=(bar) height=(height(w.uninstalls)) {
                    title { "week of " (w.week_start) ": " (w.uninstalls) " uninstalls" }
                }
                @if i % 4 == 1 || i + 1 == weeks.len() {
                    text x=(x + bar) y=(h - 8.0) text-anchor="middle" { (w.week_start.format("%b %-d")) }
                }
            }
        }
    }
}

/// One horizontal bar per licence state.
pub fn states_chart(states: &[(&str, i64)]) -> Markup {
    let row = 30.0;
    let h = row * states.len() as f64 + 4.0;
    let w = 360.0;
    let label_w = 80.0;
    let value_w = 50.0;
    let top = states.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    html! {
        svg.chart #states-chart viewBox={ "0 0 " (w) " " (h) } role="img" aria-label="Installations by licence state" {
            @for (i, (state, n)) in states.iter().enumerate() {
                @let y = 4.0 + row * i as f64;
                @let len = (w - label_w - value_w) * *n as f64 / top as f64;
                text x=(label_w - 8.0) y=(y + 16.0) text-anchor="end" { (state) }
                rect class={ "state " (state) } x=(label_w) y=(y + 4.0) width=(len) height="16" {
                    title { (state) ": " (n) }
                }
                text x=(label_w + len + 6.0) y=(y + 16.0) { (n) }
            }
        }
    }
}

/// Trials ending on each of the next days, from today.
pub fn trials_chart(today: NaiveDate, per_day: &[i64]) -> Markup {
    let h = 180.0;
    let plot_h = h - TOP - BOTTOM;
    let top = nice_max(per_day.iter().copied().max().unwrap_or(0));
    let slot = (W - LEFT - RIGHT) / per_day.len().max(1) as f64;
    html! {
        svg.chart #trials-chart viewBox={ "0 0 " (W) " " (h) } role="img"
            aria-label="Trials ending on each of the next 30 days" {
            (y_axis(top, h))
            @for (i, n) in per_day.iter().enumerate() {
                @let day = today + Duration::days(i as i64);
                @let x = LEFT + slot * i as f64 + slot * 0.15;
                @let bh = plot_h * *n as f64 / top as f64;
                rect.trial x=(x) y=(TOP + plot_h - bh) width=(slot * 0.7) height=(bh) {
                    title { (day) ": " (n) " trial" @if *n != 1 { "s" } " ending" }
                }
                @if i % 5 == 0 {
                    text x=(x + slot * 0.35) y=(h - 8.0) text-anchor="middle" { (day.format("%b %-d")) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axis_tops() {
        assert_eq!(nice_max(0), 1);
        assert_eq!(nice_max(1), 1);
        assert_eq!(nice_max(3), 5);
        assert_eq!(nice_max(7), 10);
        assert_eq!(nice_max(11), 20);
        assert_eq!(nice_max(260), 500);
    }

    #[test]
    fn trial_ends_are_counted_per_day_from_today() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let ends = [
            now + Duration::hours(1),
            now + Duration::days(2),
            now + Duration::days(2),
            now + Duration::days(45),
        ];
        let days = trial_days(now.date_naive(), &ends);
        assert_eq!(days.len(), 31);
        assert_eq!((days[0], days[1], days[2]), (1, 0, 2));
        assert_eq!(days.iter().sum::<i64>(), 3);
    }

    #[test]
    fn bars_scale_to_the_largest_value() {
        let weeks: Vec<Week> = (0..26)
            .map(|i| Week {
                week_start: NaiveDate::from_ymd_opt(2026, 6, 8).unwrap() + Duration::weeks(i),
                installs: i,
                uninstalls: 0,
            })
            .collect();
        let svg = weekly_chart(&weeks).into_string();
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<rect").count(), 52);
        assert!(svg.contains("25 installs"));
        // the tallest bar (25 of an axis to 50) is half the plot height
        assert!(svg.contains(&format!("height=\"{}\"", (240.0 - TOP - BOTTOM) / 2.0)));
    }
}
