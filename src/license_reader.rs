//! The background licence reader both licence sources run on: the product's licence endpoint
//! of a Connect site ([`crate::host_license`]) and the Forge License API
//! ([`crate::forge_license`]). A [`Source`] says how to claim, read and record one
//! installation; the scheduling is written once here:
//!
//! * a bounded trigger queue ([`Trigger`]): a route or lifecycle handler asks for a read at once
//!   and never blocks (a full queue is logged; the poll picks the installation up later);
//! * a periodic poll of the database for due installations, at most [`CONCURRENCY`] reads in
//!   flight per instance;
//! * claims in the database ([`crate::store::license_reads`]): taking work moves the next read
//!   time ahead before the read, so several instances on one database never read the same
//!   installation at once, and a claim left by a crash expires by itself;
//! * after a read, the next one: the refresh period after a success, the server's
//!   `Retry-After` when it gave one, otherwise a back-off doubling per failure
//!   ([`next_read`]), never sooner than the source's minimum interval.
//!
//! Nothing here ever holds up a request, and a failed read is only logged, counted and retried.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, mpsc};

use crate::handoff::Handoff;
use crate::state::AppState;
use crate::store::license_reads::{self as reads, Claim, ClaimedRow, Record, Schedule};

/// Reads in flight at once per instance and source; the rest wait their turn.
const CONCURRENCY: usize = 8;
/// Read requests waiting for the worker; beyond this they are dropped (logged), and the
/// periodic poll still picks the installations up.
const QUEUE: usize = 1024;

/// One licence source: where its schedule lives, and how to read and record one installation.
pub(crate) trait Source: Send + Sync + 'static {
    /// What a claim returns: the columns one read needs.
    type Row: ClaimedRow + 'static;
    /// The source in log lines ("host license", "Forge licence").
    const NAME: &'static str;
    /// Where the source keeps its schedule, and which installations it can read.
    const SCHEDULE: &'static Schedule;
    /// Whether a trigger reads the installation at once even when its next read is not due.
    const TRIGGER_FORCES: bool;

    /// This source's queue in the state.
    fn trigger(state: &AppState) -> &Trigger;
    /// The interval the poll period derives from (half of it, within 10 ms..15 s).
    fn poll_base(state: &AppState) -> Duration;
    /// Until when a claim taken at `now` keeps other instances (and triggers) away.
    fn claim_until(state: &AppState, now: DateTime<Utc>) -> DateTime<Utc>;
    /// Reads one claimed installation (claimed at `claimed_at`) and records the outcome.
    /// Never fails: errors are logged, counted and scheduled.
    fn read(
        state: &AppState,
        row: Self::Row,
        claimed_at: DateTime<Utc>,
    ) -> impl Future<Output = ()> + Send;
}

/// The request side of a reader: `installed(client_key)` asks for a read at once. Cheap and
/// never blocks.
pub struct Trigger {
    queue: Handoff<String, QUEUE>,
    /// The source's name, for the log line of a full queue.
    name: &'static str,
}

impl Trigger {
    pub fn new(name: &'static str) -> Trigger {
        Trigger {
            queue: Handoff::default(),
            name,
        }
    }

    /// Asks for an immediate read of this installation's licence.
    pub fn installed(&self, client_key: &str) {
        if !self.queue.send(client_key.to_owned()) {
            tracing::warn!(
                client_key,
                "{} queue full; the periodic poll will read it",
                self.name
            );
        }
    }

    fn take_receiver(&self) -> Option<mpsc::Receiver<String>> {
        self.queue.take_receiver()
    }
}

/// Starts the source's worker for this process (once; later calls do nothing).
pub(crate) fn start<S: Source>(state: Arc<AppState>) {
    let Some(rx) = S::trigger(&state).take_receiver() else {
        return;
    };
    tokio::spawn(run::<S>(state, rx));
}

/// How often the database is asked for due installations: often enough that a read is not
/// late by more than half of `base`, at most every 15 s.
pub(crate) fn poll_period(base: Duration) -> Duration {
    (base / 2).clamp(Duration::from_millis(10), Duration::from_secs(15))
}

async fn run<S: Source>(state: Arc<AppState>, mut rx: mpsc::Receiver<String>) {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tick = tokio::time::interval(poll_period(S::poll_base(&state)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            key = rx.recv() => {
                let Some(key) = key else { return };
                // The permit is taken before the task starts: while every read is busy the
                // queue fills (and `installed` says so) instead of tasks piling up.
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let state = state.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let now = crate::store::now();
                    let until = S::claim_until(&state, now);
                    let which = Claim::One { client_key: &key, force: S::TRIGGER_FORCES };
                    match reads::claim(&state.db, S::SCHEDULE, which, now, until).await {
                        // At most one row: the client key is the table's key.
                        Ok(rows) => {
                            for row in rows {
                                S::read(&state, row, now).await;
                            }
                        }
                        Err(e) => tracing::warn!(client_key = %key, error = %e, "{} claim failed", S::NAME),
                    }
                });
            }
            _ = tick.tick() => {
                if state.db.is_closed() {
                    return;
                }
                let free = permits.available_permits();
                if free == 0 {
                    continue;
                }
                let now = crate::store::now();
                let until = S::claim_until(&state, now);
                let which = Claim::Due(free as i64);
                let rows = match reads::claim(&state.db, S::SCHEDULE, which, now, until).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::warn!(error = %e, "{} poll failed", S::NAME);
                        continue;
                    }
                };
                for row in rows {
                    // Claimed rows are read now, not queued behind triggers past their claim.
                    let Ok(permit) = permits.clone().acquire_owned().await else { return };
                    let state = state.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        S::read(&state, row, now).await;
                    });
                }
            }
        }
    }
}

/// The longest failure text kept with an installation.
const MAX_ERROR_CHARS: usize = 200;

/// `now + d`, capped at 100 years so that a huge configured period cannot overflow the
/// database's timestamp range.
pub(crate) fn later(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    let d = d.min(Duration::from_secs(100 * 365 * 24 * 3600));
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(now)
}

/// Delay before the next try after `failures` consecutive failures (1 = first failure):
/// `base · 2^(failures-1)`, capped at the refresh period.
pub fn backoff(base: Duration, failures: i32, refresh: Duration) -> Duration {
    let exp = failures.saturating_sub(1).clamp(0, 30) as u32;
    base.saturating_mul(1u32 << exp).min(refresh)
}

/// How a source paces its reads of one installation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pace {
    /// Never read again sooner than this after `from` (zero: no minimum).
    pub min: Duration,
    /// After a success.
    pub refresh: Duration,
    /// After the first failure; doubled per further failure up to `refresh`.
    pub retry_base: Duration,
}

/// The outcome of one read, as the schedule sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Outcome {
    Success,
    /// A failure, with the wait the server asked for (`Retry-After`), if any.
    Failure {
        retry_after: Option<Duration>,
    },
}

/// When to read again, counting from `from`: after a success the refresh period; after a
/// failure (the `failures`-th in a row) the server's `Retry-After` when it gave one, else the
/// back-off; never sooner than `pace.min`.
pub(crate) fn next_read(
    from: DateTime<Utc>,
    outcome: Outcome,
    failures: i32,
    pace: Pace,
) -> DateTime<Utc> {
    let wait = match outcome {
        Outcome::Success => pace.refresh,
        Outcome::Failure { retry_after } => {
            retry_after.unwrap_or_else(|| backoff(pace.retry_base, failures, pace.refresh))
        }
    };
    later(from, wait.max(pace.min))
}

/// Why a read failed: the text to store (safe to log: no token, no secret) and the wait the
/// server asked for (`Retry-After`), if any.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub error: String,
    pub retry_after: Option<Duration>,
}

/// The record of one read: what was read (`license`: `None` after a failure), checked at
/// `checked_at`, the failure count after `prior_failures` (reset by a success) and the next
/// read counted from `from` ([`next_read`]).
pub(crate) fn record<L>(
    license: Option<Option<L>>,
    checked_at: DateTime<Utc>,
    from: DateTime<Utc>,
    result: Result<(), Failure>,
    prior_failures: i32,
    pace: Pace,
) -> Record<L> {
    let (outcome, failures, last_error) = match result {
        Ok(()) => (Outcome::Success, 0, None),
        Err(Failure { error, retry_after }) => (
            Outcome::Failure { retry_after },
            prior_failures.saturating_add(1),
            // Stored and shown: whatever a source put in it, at most this many characters.
            Some(error.chars().take(MAX_ERROR_CHARS).collect()),
        ),
    };
    Record {
        license,
        checked_at,
        next_at: next_read(from, outcome, failures, pace),
        failures,
        last_error,
    }
}

/// What every read does once its record is built: write it, and when licence data was read,
/// refresh the registry's licence view. Errors are logged: the next read tries again.
pub(crate) async fn store_outcome(
    state: &AppState,
    client_key: &str,
    written: sqlx::Result<()>,
    license_read: bool,
    what: &str,
) {
    if let Err(e) = written {
        tracing::error!(error = %e, "storing {what} failed");
        return;
    }
    if license_read
        && let Err(e) = crate::registry::license_view::refresh(&state.db, client_key).await
    {
        tracing::error!(error = %e, "refreshing the license view failed");
    }
}

/// `backoff` and `poll_period` are tested where the sources used to define them
/// (`host_license`, `forge_license`); the minimum interval and `Retry-After` in
/// `forge_license::tests`.
#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn without_a_minimum_the_next_read_follows_success_or_backoff() {
        let t0 = at("2026-12-03T08:00:00Z");
        let pace = Pace {
            min: Duration::ZERO,
            refresh: Duration::from_secs(3600),
            retry_base: Duration::from_secs(30),
        };
        assert_eq!(
            next_read(t0, Outcome::Success, 0, pace),
            at("2026-12-03T09:00:00Z")
        );
        let failed = Outcome::Failure { retry_after: None };
        assert_eq!(next_read(t0, failed, 1, pace), at("2026-12-03T08:00:30Z"));
        assert_eq!(next_read(t0, failed, 3, pace), at("2026-12-03T08:02:00Z"));
    }
}
