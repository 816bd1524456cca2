//! Background reads of each Forge installation's licence from the Forge License API, with the
//! app system token the installation's last Forge delivery carried: the Forge counterpart of
//! `host_license`, which reads a Connect site's product licence endpoint, and built the
//! same way (a trigger channel, a periodic poll, claims in the database).
//!
//! * A Forge route that received a token asks for a read at once (`Trigger::installed`).
//! * The poll picks up every installation whose next read is due, every
//!   `HOST_LICENSE_REFRESH_SECS` after the last success.
//! * Atlassian allows one read per 5 minutes per installation: a claim moves the next read at
//!   least that far ahead *before* the read (see [`crate::store::forge_license`]), so no
//!   trigger, poll, instance or crash makes two reads closer than that. A `429` moves it to
//!   the `Retry-After` Atlassian gave, when that is later; other failures back off like the
//!   product reads.
//! * An installation without a token, or whose token expired, is not read: Forge refreshes the
//!   token with its next delivery (the hourly heartbeat).
//!
//! The trigger, the poll, the claims and the back-off are the shared
//! `crate::license_reader`'s; this module is its Forge License API source.
//!
//! Nothing here ever holds up a request or an event, and nothing here logs the token: errors
//! are [`LicenseApiError`]s, which carry no body and no token.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::forge::ids::AppId;
use crate::forge::license_api::{LicenseAnswer, LicenseApiError};
use crate::license_reader::{self as reader, Failure, Pace, Source, later};
use crate::secrets::Field;
use crate::state::AppState;
use crate::store::forge_license::{self as store, ApiLicense, TokenRow};
use crate::store::license_reads::Schedule;

/// The same client-key queue as the product licence reader's: a route pokes it, the worker
/// takes it. Cheap and never blocks.
pub type Trigger = crate::license_reader::Trigger;

/// Starts the worker for this process when Forge is configured (once; later calls do
/// nothing).
pub fn start(state: Arc<AppState>) {
    if !state.config.forge_enabled() {
        return;
    }
    reader::start::<ForgeLicenceApi>(state);
}

/// The Forge License API as a [`Source`] of the shared reader.
struct ForgeLicenceApi;

/// The request side of this reader, for the app state.
pub fn trigger() -> Trigger {
    Trigger::new(ForgeLicenceApi::NAME)
}

impl Source for ForgeLicenceApi {
    type Row = TokenRow;
    const NAME: &'static str = "Forge licence";
    const SCHEDULE: &'static Schedule = &store::SCHEDULE;
    /// Never before the next read is due: Atlassian's limit holds for a fresh token too.
    const TRIGGER_FORCES: bool = false;

    fn trigger(state: &AppState) -> &Trigger {
        &state.forge_license
    }

    fn poll_base(state: &AppState) -> Duration {
        state.config.forge_license_min_interval
    }

    /// The claim is the read's slot: the next read moves at least the minimum interval ahead.
    fn claim_until(state: &AppState, now: DateTime<Utc>) -> DateTime<Utc> {
        later(now, state.config.forge_license_min_interval)
    }

    async fn read(state: &AppState, row: TokenRow, claimed_at: DateTime<Utc>) {
        read(state, row, claimed_at).await;
    }
}

/// What a failed read tells the scheduler: its text, and the server's `Retry-After` (a `429`'s
/// wait is honoured when it is later than the minimum interval).
fn failure(e: &LicenseApiError) -> Failure {
    Failure {
        error: e.to_string(),
        retry_after: e.retry_after(),
    }
}

/// Reads one claimed installation and records the outcome. Never fails: errors are logged
/// (without the token), counted and scheduled.
#[tracing::instrument(skip_all, fields(client_key = %row.client_key))]
async fn read(state: &AppState, row: TokenRow, started: DateTime<Utc>) {
    let cfg = &state.config;
    let token = match cfg.secrets.open(
        Field::FORGE_SYSTEM_TOKEN,
        &row.forge_installation_id,
        &row.forge_system_token,
    ) {
        Ok(t) => SecretString::from(t),
        Err(e) => {
            // Sealed under another installation id (the site reinstalled and the row was
            // linked to the new one) or a key SECRETS_KEY lacks: useless either way, and Forge
            // sends a fresh token with the next delivery.
            tracing::error!(error = %e, "the installation's app system token cannot be read; dropped");
            if let Err(e) = store::replace_token_or_drop(
                &state.db,
                &row.client_key,
                &row.forge_system_token,
                None,
            )
            .await
            {
                tracing::error!(error = %e, "dropping an unreadable system token failed");
            }
            return;
        }
    };
    let app_id = row
        .forge_app_id
        .as_deref()
        .and_then(AppId::parse)
        .or_else(|| cfg.forge_app_ids.first().copied());
    let Some(app_id) = app_id else {
        return;
    };
    let api = &state.forge_license_api;
    let result = api.read(&token, app_id).await;
    drop(token);
    let outcome = match &result {
        Ok(LicenseAnswer::License(_)) => "ok",
        Ok(LicenseAnswer::NoLicense) => "no_license",
        Err(e) => e.kind(),
    };
    state
        .metrics
        .forge_license_reads
        .with_label_values(&[outcome])
        .inc();
    let now = crate::store::now();
    let (license, result) = match &result {
        Ok(answer) => (Some(api_license(answer)), Ok(())),
        Err(e) => {
            tracing::warn!(error = %e, "reading the Forge License API failed");
            (None, Err(failure(e)))
        }
    };
    // Never sooner than the minimum interval: Atlassian's limit holds after a failure too.
    let pace = Pace {
        min: cfg.forge_license_min_interval,
        refresh: cfg.host_license_refresh,
        retry_base: cfg.host_retry_base,
    };
    let read_license = license.is_some();
    let rec = reader::record(license, now, started, result, row.forge_api_failures, pace);
    let written = store::record(&state.db, &row.client_key, &rec).await;
    reader::store_outcome(
        state,
        &row.client_key,
        written,
        read_license,
        "the Forge licence",
    )
    .await;
}

fn api_license(answer: &LicenseAnswer) -> Option<ApiLicense> {
    match answer {
        LicenseAnswer::NoLicense => None,
        LicenseAnswer::License(l) => Some(ApiLicense {
            active: l.active,
            evaluation: Some(l.evaluation),
            license_type: l.license_type.clone(),
            trial_end: l.trial_end,
            entitlement_id: l.entitlement_id.clone(),
            entitlement_number: l.entitlement_number.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// The next read after a read at `t0`, as the reader records it.
    fn next(
        t0: DateTime<Utc>,
        result: Result<(), &LicenseApiError>,
        failures: i32,
        refresh: u64,
    ) -> DateTime<Utc> {
        let pace = Pace {
            min: Duration::from_secs(300),
            refresh: Duration::from_secs(refresh),
            retry_base: Duration::from_secs(30),
        };
        let result = result.map_err(failure);
        reader::record::<()>(None, t0, t0, result, failures - 1, pace).next_at
    }

    #[test]
    fn never_sooner_than_the_minimum() {
        let t0 = at("2026-12-03T08:00:00Z");
        assert_eq!(next(t0, Ok(()), 1, 3600), at("2026-12-03T09:00:00Z"));
        // A 429 asking for 60 s still waits the 5 minutes; one asking for 2 hours, 2 hours.
        let short = LicenseApiError::RateLimited {
            retry_after: Some(Duration::from_secs(60)),
        };
        assert_eq!(next(t0, Err(&short), 1, 3600), at("2026-12-03T08:05:00Z"));
        let long = LicenseApiError::RateLimited {
            retry_after: Some(Duration::from_secs(7200)),
        };
        assert_eq!(next(t0, Err(&long), 1, 3600), at("2026-12-03T10:00:00Z"));
        // A 429 without Retry-After, and other failures: back-off, floored at the minimum.
        let none = LicenseApiError::RateLimited { retry_after: None };
        assert_eq!(next(t0, Err(&none), 1, 3600), at("2026-12-03T08:05:00Z"));
        let server = LicenseApiError::Status(500);
        assert_eq!(next(t0, Err(&server), 6, 3600), at("2026-12-03T08:16:00Z"));
        // A refresh period shorter than the minimum is raised to it.
        assert_eq!(next(t0, Ok(()), 1, 10), at("2026-12-03T08:05:00Z"));
    }
}
