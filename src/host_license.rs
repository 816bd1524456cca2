//! Background reads of each site's license and `cloudId` from the product
//! (docs/licensing.md#the-product-licence-endpoint; docs/protocol.md#product-licence-endpoint
//! and docs/protocol.md#tenant-info-and-cloudid).
//!
//! For every tenant that can be called (installed, enabled or disabled, with a shared secret)
//! the worker reads, right after a verified install and then every `HOST_LICENSE_REFRESH_SECS`:
//! * `GET {baseUrl}/rest/atlassian-connect/1/addons/{APP_KEY}`, signed as the app (HS256,
//!   `iss` = app key, `qsh` relative to `baseUrl`, so a Confluence `/wiki` is not hashed);
//! * `GET {site origin}/_edge/tenant_info`, unauthenticated, for the `cloudId` that joins
//!   Marketplace licenses best. A `404` there is an answer (no cloudId), not a failure.
//!
//! Nothing here ever holds up a request: the lifecycle handler only pokes a bounded channel
//! ([`Trigger::installed`]). A failed read is logged (never the secret or the token), counted
//! in `host_license_checks_total`, and retried after `host_retry_base`, doubling per failure
//! up to the refresh period. With several instances on one database each runs this loop;
//! claims in the database (see [`crate::store::host_license`]) keep two of them from reading
//! the same site at once.
//!
//! A response without a `license` object (a free app, or licensing not enabled) clears the
//! `host_license_*` columns but sets `host_checked_at`: "checked, the product reports no
//! license", which [`crate::licensing`] treats as no observation from the product.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::{Semaphore, mpsc};

use crate::connect::outbound::sign_product_request;
use crate::http_client::{BodyError, read_limited};
use crate::state::AppState;
use crate::store::host_license::{self as store, CheckRecord, HostLicense};
use crate::store::installations::InstallationRow;

/// Reads in flight at once per instance; the rest wait their turn.
const CONCURRENCY: usize = 8;
/// Install notifications waiting for the worker; beyond this they are dropped (logged), and
/// the periodic poll still picks never-checked tenants up.
const QUEUE: usize = 1024;
/// How long a claim protects a tenant from other instances: well over the two reads with the
/// HTTP client's 10 s timeout. A claim left by a crashed process expires after this.
const CLAIM_SECS: i64 = 120;
/// Longest answer body read from the product.
const MAX_BODY: usize = 1 << 20;

/// The lifecycle side of the worker: `state.host_refresh.installed(client_key)` after a
/// verified install. Cheap and never blocks.
pub struct Trigger {
    tx: mpsc::Sender<String>,
    rx: Mutex<Option<mpsc::Receiver<String>>>,
}

impl Default for Trigger {
    fn default() -> Self {
        Self::new()
    }
}

impl Trigger {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Trigger {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// Asks for an immediate read of this tenant's license and cloudId.
    pub fn installed(&self, client_key: &str) {
        if self.tx.try_send(client_key.to_owned()).is_err() {
            tracing::warn!(
                client_key,
                "host license queue full; the periodic poll will read it"
            );
        }
    }

    pub(crate) fn take_receiver(&self) -> Option<mpsc::Receiver<String>> {
        self.rx.lock().ok()?.take()
    }
}

/// Starts the worker for this process (once; later calls do nothing). Called by
/// [`crate::startup::Application`]; CLI commands do not poll.
pub fn start(state: Arc<AppState>) {
    let Some(rx) = state.host_refresh.take_receiver() else {
        return;
    };
    tokio::spawn(run(state, rx));
}

/// How often the database is asked for due tenants: often enough that a retry is not late
/// by more than half its delay, at most every 15 s.
fn poll_period(retry_base: Duration) -> Duration {
    (retry_base / 2).clamp(Duration::from_millis(10), Duration::from_secs(15))
}

async fn run(state: Arc<AppState>, mut rx: mpsc::Receiver<String>) {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tick = tokio::time::interval(poll_period(state.config.host_retry_base));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            key = rx.recv() => {
                let Some(key) = key else { return };
                let (state, permits) = (state.clone(), permits.clone());
                tokio::spawn(async move {
                    let Ok(_permit) = permits.acquire_owned().await else { return };
                    let now = crate::store::now();
                    match store::claim_one(&state.db, &key, now, claim_until(now), true).await {
                        Ok(Some(row)) => check(&state, row).await,
                        Ok(None) => {}
                        Err(e) => tracing::warn!(client_key = %key, error = %e, "host license claim failed"),
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
                let rows = match store::claim_due(&state.db, now, claim_until(now), free as i64).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::warn!(error = %e, "host license poll failed");
                        continue;
                    }
                };
                for row in rows {
                    let (state, permits) = (state.clone(), permits.clone());
                    tokio::spawn(async move {
                        let Ok(_permit) = permits.acquire_owned().await else { return };
                        check(&state, row).await;
                    });
                }
            }
        }
    }
}

fn claim_until(now: DateTime<Utc>) -> DateTime<Utc> {
    now + chrono::Duration::seconds(CLAIM_SECS)
}

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

/// Reads one claimed tenant and records the outcome. Never fails: errors are logged, counted
/// and scheduled for a retry.
#[tracing::instrument(skip_all, fields(client_key = %row.client_key))]
pub async fn check(state: &AppState, mut row: InstallationRow) {
    crate::secrets::open_row_secret(&state.config.secrets, &mut row);
    let Some(secret) = row.shared_secret.as_deref() else {
        return;
    };
    let (license, cloud) = tokio::join!(
        read_license(state, &row.base_url, secret),
        read_cloud_id(state, &row.base_url),
    );
    let metrics = &state.metrics.host_license_checks;
    let mut errors = Vec::new();
    let license = match license {
        Ok(l) => {
            let outcome = if l.is_some() { "ok" } else { "no_license" };
            metrics.with_label_values(&["license", outcome]).inc();
            Some(l)
        }
        Err(e) => {
            metrics.with_label_values(&["license", e.kind()]).inc();
            tracing::warn!(error = %e, "reading the product's license endpoint failed");
            errors.push(format!("license endpoint: {e}"));
            None
        }
    };
    let cloud_id = match cloud {
        Ok(id) => {
            let outcome = if id.is_some() { "ok" } else { "not_found" };
            metrics.with_label_values(&["tenant_info", outcome]).inc();
            id
        }
        Err(e) => {
            metrics.with_label_values(&["tenant_info", e.kind()]).inc();
            tracing::warn!(error = %e, "reading tenant_info failed");
            errors.push(format!("tenant_info: {e}"));
            None
        }
    };
    let now = crate::store::now();
    let cfg = &state.config;
    let (failures, delay, last_error) = if errors.is_empty() {
        (0, cfg.host_license_refresh, None)
    } else {
        let failures = row.host_failures.saturating_add(1);
        let delay = backoff(cfg.host_retry_base, failures, cfg.host_license_refresh);
        (failures, delay, Some(errors.join("; ")))
    };
    let read_license = license.is_some();
    let rec = CheckRecord {
        license,
        cloud_id,
        checked_at: now,
        next_check_at: later(now, delay),
        failures,
        last_error,
    };
    if let Err(e) = store::record(&state.db, &row.client_key, &rec).await {
        tracing::error!(error = %e, "storing host license data failed");
        return;
    }
    if read_license {
        if let Err(e) = crate::registry::license_view::refresh(&state.db, &row.client_key).await {
            tracing::error!(error = %e, "refreshing the license view failed");
        }
    }
}

/// Why a read failed. The text is safe to log and store: no token, no secret.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("HTTP {0}")]
    Status(u16),
    #[error("timed out")]
    Timeout,
    #[error("connection failed")]
    Network,
    #[error("invalid answer: {0}")]
    Invalid(String),
}

impl ReadError {
    fn kind(&self) -> &'static str {
        match self {
            ReadError::Status(_) => "http_error",
            ReadError::Timeout => "timeout",
            ReadError::Network => "network_error",
            ReadError::Invalid(_) => "invalid",
        }
    }

    fn from_reqwest(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            ReadError::Timeout
        } else if e.is_decode() || e.is_body() {
            ReadError::Invalid("unreadable body".into())
        } else {
            ReadError::Network
        }
    }
}

/// The license endpoint URL for a tenant's `baseUrl` (which keeps its `/wiki`).
pub fn license_url(base_url: &str, app_key: &str) -> String {
    format!(
        "{}/rest/atlassian-connect/1/addons/{app_key}",
        base_url.trim_end_matches('/')
    )
}

/// `scheme://host[:port]` of a `baseUrl`: tenant_info lives at the site root, not under `/wiki`.
pub fn site_origin(base_url: &str) -> Option<String> {
    let u = url::Url::parse(base_url).ok()?;
    u.host_str()?;
    Some(u.origin().ascii_serialization())
}

#[derive(Deserialize)]
struct AddonResponse {
    #[serde(default)]
    license: Option<LicenseJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LicenseJson {
    active: Option<bool>,
    #[serde(rename = "type")]
    license_type: Option<String>,
    evaluation: Option<bool>,
    support_entitlement_number: Option<String>,
    entitlement_id: Option<String>,
    entitlement_number: Option<String>,
}

/// `Ok(None)`: the product answered without a `license` object (free app).
async fn read_license(
    state: &AppState,
    base_url: &str,
    secret: &str,
) -> Result<Option<HostLicense>, ReadError> {
    let url = license_url(base_url, &state.app_key);
    let token = sign_product_request(
        "GET",
        &url,
        base_url,
        &state.app_key,
        secret.as_bytes(),
        Utc::now().timestamp(),
    );
    let res = state
        .http
        .get(&url)
        .header("authorization", format!("JWT {token}"))
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| ReadError::from_reqwest(&e))?;
    if !res.status().is_success() {
        return Err(ReadError::Status(res.status().as_u16()));
    }
    let body = read_body(res).await?;
    let parsed: AddonResponse =
        serde_json::from_slice(&body).map_err(|e| ReadError::Invalid(e.to_string()))?;
    Ok(parsed.license.map(|l| HostLicense {
        active: l.active,
        license_type: l.license_type,
        evaluation: l.evaluation,
        entitlement_id: l.entitlement_id,
        entitlement_number: l.entitlement_number,
        sen: l.support_entitlement_number,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TenantInfo {
    cloud_id: Option<String>,
}

/// `Ok(None)`: the site has no tenant_info (404) or it names no cloudId.
async fn read_cloud_id(state: &AppState, base_url: &str) -> Result<Option<String>, ReadError> {
    let origin = site_origin(base_url).ok_or_else(|| ReadError::Invalid("bad baseUrl".into()))?;
    let res = state
        .http
        .get(format!("{origin}/_edge/tenant_info"))
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| ReadError::from_reqwest(&e))?;
    if res.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !res.status().is_success() {
        return Err(ReadError::Status(res.status().as_u16()));
    }
    let body = read_body(res).await?;
    let info: TenantInfo =
        serde_json::from_slice(&body).map_err(|e| ReadError::Invalid(e.to_string()))?;
    Ok(info.cloud_id.filter(|id| !id.trim().is_empty()))
}

async fn read_body(res: reqwest::Response) -> Result<Vec<u8>, ReadError> {
    read_limited(res, MAX_BODY).await.map_err(|e| match e {
        BodyError::TooLarge => ReadError::Invalid("answer too large".into()),
        BodyError::Read(e) => ReadError::from_reqwest(&e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_refresh_period() {
        let base = Duration::from_secs(30);
        let refresh = Duration::from_secs(3600);
        assert_eq!(backoff(base, 1, refresh), Duration::from_secs(30));
        assert_eq!(backoff(base, 2, refresh), Duration::from_secs(60));
        assert_eq!(backoff(base, 4, refresh), Duration::from_secs(240));
        assert_eq!(backoff(base, 8, refresh), Duration::from_secs(3600));
        assert_eq!(backoff(base, i32::MAX, refresh), Duration::from_secs(3600));
        assert_eq!(backoff(base, 0, refresh), Duration::from_secs(30));
    }

    #[test]
    fn urls_keep_wiki_for_the_license_but_not_for_tenant_info() {
        assert_eq!(
            license_url("https://acme.atlassian.net/wiki/", "my-app"),
            "https://acme.atlassian.net/wiki/rest/atlassian-connect/1/addons/my-app"
        );
        assert_eq!(
            site_origin("https://acme.atlassian.net/wiki").as_deref(),
            Some("https://acme.atlassian.net")
        );
        assert_eq!(
            site_origin("http://127.0.0.1:8123/wiki").as_deref(),
            Some("http://127.0.0.1:8123")
        );
        assert_eq!(site_origin("not a url"), None);
    }

    #[test]
    fn poll_period_is_bounded() {
        assert_eq!(
            poll_period(Duration::from_secs(30)),
            Duration::from_secs(15)
        );
        assert_eq!(
            poll_period(Duration::from_millis(50)),
            Duration::from_millis(25)
        );
        assert_eq!(poll_period(Duration::ZERO), Duration::from_millis(10));
    }

    #[test]
    fn free_app_answer_has_no_license() {
        let body = br#"{"key":"k","version":"1","state":"ENABLED","host":{"product":"Jira","contacts":[]}}"#;
        let parsed: AddonResponse = serde_json::from_slice(body).unwrap();
        assert!(parsed.license.is_none());
    }
}
