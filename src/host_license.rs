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
//! the same site at once. The trigger, the poll, the claims and the back-off are the shared
//! [`crate::license_reader`]'s; this module is its product licence source.
//!
//! A response without a `license` object (a free app, or licensing not enabled) clears the
//! `host_license_*` columns but sets `host_checked_at`: "checked, the product reports no
//! license", which [`crate::licensing`] treats as no observation from the product.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::connect::outbound::sign_product_request;
use crate::http_client::{BodyError, read_limited};
pub use crate::license_reader::Trigger;
use crate::license_reader::{self as reader, Failure, Pace, Source};
use crate::state::AppState;
use crate::store::host_license::{self as store, HostLicense};
use crate::store::installations::InstallationRow;
use crate::store::license_reads::Schedule;

/// How long a claim protects a tenant from other instances: well over the two reads with the
/// HTTP client's 10 s timeout. A claim left by a crashed process expires after this.
const CLAIM_SECS: i64 = 120;
/// Longest answer body read from the product.
const MAX_BODY: usize = 1 << 20;

/// Starts the worker for this process (once; later calls do nothing). Called by
/// [`crate::startup::Application`]; CLI commands do not poll.
pub fn start(state: Arc<AppState>) {
    reader::start::<ProductLicence>(state);
}

/// The product's licence endpoint and tenant_info as a [`Source`] of the shared reader.
struct ProductLicence;

/// The request side of this reader, for the app state.
pub fn trigger() -> Trigger {
    Trigger::new(ProductLicence::NAME)
}

impl Source for ProductLicence {
    type Row = InstallationRow;
    const NAME: &'static str = "host license";
    const SCHEDULE: &'static Schedule = &store::SCHEDULE;
    /// Right after a verified install the tenant is read even when not due yet.
    const TRIGGER_FORCES: bool = true;

    fn trigger(state: &AppState) -> &Trigger {
        &state.host_refresh
    }

    /// A retry is then not late by more than half its delay.
    fn poll_base(state: &AppState) -> Duration {
        state.config.host_retry_base
    }

    fn claim_until(_: &AppState, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::seconds(CLAIM_SECS)
    }

    async fn read(state: &AppState, row: InstallationRow, _: DateTime<Utc>) {
        check(state, row).await;
    }
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
        read_license(state, &row.site.base_url, secret),
        read_cloud_id(state, &row.site.base_url),
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
    let result = if errors.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            error: errors.join("; "),
            retry_after: None,
        })
    };
    let pace = Pace {
        min: Duration::ZERO,
        refresh: cfg.host_license_refresh,
        retry_base: cfg.host_retry_base,
    };
    let read_license = license.is_some();
    let rec = reader::record(license, now, now, result, row.host_failures, pace);
    let written = store::record(&state.db, &row.client_key, &rec, cloud_id.as_deref()).await;
    reader::store_outcome(
        state,
        &row.client_key,
        written,
        read_license,
        "host license data",
    )
    .await;
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

/// A body that is not the expected JSON, said in fixed words and a position: serde's own message
/// quotes the offending value, which is the site's text and may be as long as the body.
fn not_json(e: serde_json::Error) -> ReadError {
    ReadError::Invalid(format!(
        "not the expected JSON (line {}, column {})",
        e.line(),
        e.column()
    ))
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
    let parsed: AddonResponse = serde_json::from_slice(&body).map_err(not_json)?;
    // The text fields are the site's: kept short, as they are stored and shown.
    let field = |v: Option<String>| v.map(crate::sanitize::cut_owned);
    Ok(parsed.license.map(|l| HostLicense {
        active: l.active,
        license_type: field(l.license_type),
        evaluation: l.evaluation,
        entitlement_id: field(l.entitlement_id),
        entitlement_number: field(l.entitlement_number),
        sen: field(l.support_entitlement_number),
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
    let info: TenantInfo = serde_json::from_slice(&body).map_err(not_json)?;
    Ok(info
        .cloud_id
        .filter(|id| !id.trim().is_empty())
        .map(crate::sanitize::cut_owned))
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
    use crate::license_reader::{backoff, poll_period};

    #[test]
    fn an_answer_that_is_not_the_expected_json_is_not_quoted() {
        let hostile = format!(
            r#"{{"license": {{"active": "{}\u001b[2J"}}}}"#,
            "x".repeat(100_000)
        );
        let Err(e) = serde_json::from_str::<AddonResponse>(&hostile).map_err(not_json) else {
            panic!("a string is not a boolean");
        };
        let said = e.to_string();
        assert!(
            said.starts_with("invalid answer: not the expected JSON (line 1, column "),
            "{said}"
        );
        assert!(said.len() < 80 && !said.contains("xxx"), "{said}");
    }

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
