//! Marketplace license sync (contract §5 `POST /admin/marketplace/sync`, §8; protocol §7).
//!
//! One run reads every page of
//! `{MARKETPLACE_URL}/rest/2/vendors/{vendorId}/reporting/licenses?addon={APP_KEY}&hosting=cloud&withDataInsights=true&limit=50`
//! with HTTP basic auth, following `_links.next.href`, and joins each license to an
//! installation in the contract's order (see [`join`]). Pages are staged in the database as
//! they arrive, so memory stays flat whatever the number of licenses; only when the last page
//! has arrived does one transaction make the run live ([`crate::store::marketplace::swap`]).
//! A Marketplace that refuses the credentials, fails, times out or sends garbage therefore
//! leaves every stored row as it was.
//!
//! One run at a time across instances: the run holds the `marketplace_sync` lease (renewed
//! while it works); a second caller gets [`SyncError::InProgress`].
//!
//! Decisions where the contract is silent:
//! * The winner among several rows of one installation: latest `lastUpdated`; on a tie a
//!   non-evaluation row beats an evaluation (the conversion and its trial row are often
//!   updated the same day), then an `active` row beats others, then the later
//!   `maintenanceEndDate`, then the larger license key (only for determinism).
//! * Among several installations matching at the same join level (a site reinstalled under a
//!   new clientKey after an import), an installed one beats an uninstalled one, then the most
//!   recently installed.
//! * `mp_trial_start`/`mp_trial_end` are set for evaluation rows only (`evaluationStartDate`/
//!   `EndDate` when present, else the maintenance dates); other rows carry no trial.
//! * The stored table mirrors the Marketplace: a license no longer reported is removed, and an
//!   installation that no longer matches any row loses its `mp_*` data.
//! * A license without any id is kept under `sha256:<hash of its JSON>`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use chrono::{DateTime, NaiveDate, NaiveDateTime, SubsecRound, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use crate::config::MarketplaceCredentials;
use crate::error::{ApiError, json_error};
use crate::startup::{AppState, SharedState};
use crate::store::marketplace::{self as store, Candidate, JoinValues, StagedLicense};
use crate::store::{self as db_store, leases};

/// Name of the cluster-wide lease that allows one sync at a time.
const LEASE: &str = "marketplace_sync";
/// Lifetime of the lease; renewed every [`LEASE_RENEW`] while pages arrive, so a crashed
/// instance blocks syncs for at most this long.
const LEASE_TTL: Duration = Duration::from_secs(300);
const LEASE_RENEW: Duration = Duration::from_secs(60);
/// Safety stop: 10,000 pages of 50 = 500,000 licenses, far beyond any app.
pub const MAX_PAGES: usize = 10_000;
/// Largest page body accepted (a real page of 50 is ~100 KiB).
const MAX_PAGE_BYTES: usize = 32 << 20;
/// Licenses joined and written together: a few pages per statement and transaction (fewer
/// commits, each an fsync on SQLite) while memory stays small (~1.5 MiB of rows).
const STAGE_BATCH: usize = 500;
/// Licenses per installation lookup query (up to ~8 binds each; see
/// [`crate::store::marketplace::stage_rows`] on why statements stay small).
const LOOKUP_BATCH: usize = 100;
/// Retries of one page after a 5xx, 429, timeout or network error.
const PAGE_RETRIES: u32 = 2;
/// The first background sync after start when none ever succeeded (or the interval, if less).
const FIRST_SYNC_DELAY: Duration = Duration::from_secs(60);

/// The answer of `POST /admin/marketplace/sync` and `sync marketplace`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SyncSummary {
    /// License rows received, over all pages.
    pub fetched: u64,
    /// Distinct licenses stored with an installation.
    pub matched: u64,
    /// Distinct licenses stored without one.
    pub unmatched: u64,
    pub finished_at: DateTime<Utc>,
}

/// Why a Marketplace request failed. Messages are safe for clients and logs (no credentials).
#[derive(Debug, thiserror::Error)]
pub enum MarketplaceError {
    #[error("the Marketplace refused the credentials (HTTP {0})")]
    Refused(u16),
    #[error("the Marketplace answered HTTP {0}")]
    Status(u16),
    #[error("the Marketplace did not answer in time")]
    Timeout,
    #[error("the Marketplace could not be reached")]
    Network,
    #[error("the Marketplace sent an invalid page: {0}")]
    Malformed(String),
    #[error("the Marketplace's next-page links loop")]
    Loop,
    #[error("more than {MAX_PAGES} pages: stopped")]
    TooManyPages,
    #[error("a next-page link leaves MARKETPLACE_URL: not followed")]
    ForeignLink,
}

impl MarketplaceError {
    fn retryable(&self) -> bool {
        match self {
            MarketplaceError::Status(s) => *s >= 500 || *s == 429,
            MarketplaceError::Timeout | MarketplaceError::Network => true,
            _ => false,
        }
    }

    fn from_reqwest(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            MarketplaceError::Timeout
        } else if e.is_decode() || e.is_body() {
            MarketplaceError::Malformed("unreadable body".into())
        } else {
            MarketplaceError::Network
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(
        "Marketplace credentials are not configured (MARKETPLACE_VENDOR_ID, MARKETPLACE_USER, MARKETPLACE_API_TOKEN)"
    )]
    NotConfigured,
    #[error("a Marketplace sync is already running")]
    InProgress,
    #[error("another instance took over the sync lease; this run was abandoned")]
    LeaseLost,
    #[error(transparent)]
    Marketplace(#[from] MarketplaceError),
    #[error("database error during the Marketplace sync")]
    Database(#[from] sqlx::Error),
}

impl SyncError {
    fn outcome(&self) -> &'static str {
        match self {
            SyncError::NotConfigured => "not_configured",
            SyncError::InProgress | SyncError::LeaseLost => "in_progress",
            SyncError::Marketplace(_) => "marketplace_error",
            SyncError::Database(_) => "database_error",
        }
    }
}

impl From<SyncError> for ApiError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::NotConfigured => ApiError::BadRequest {
                code: "marketplace_not_configured",
                message: e.to_string(),
            },
            SyncError::InProgress | SyncError::LeaseLost => ApiError::Conflict(e.to_string()),
            SyncError::Marketplace(m) => ApiError::BadGateway {
                code: "marketplace_unavailable",
                message: m.to_string(),
            },
            SyncError::Database(d) => {
                ApiError::Internal(anyhow::Error::new(d).context("Marketplace sync"))
            }
        }
    }
}

/// `POST /admin/marketplace/sync` (mount behind admin auth): `200` with the summary; `502
/// marketplace_unavailable`; `409 sync_in_progress`; `400 marketplace_not_configured`.
pub async fn sync_route(state: SharedState) -> Result<HttpResponse, ApiError> {
    match sync_once(&state).await {
        Ok(summary) => Ok(HttpResponse::Ok().json(summary)),
        Err(e @ (SyncError::InProgress | SyncError::LeaseLost)) => Ok(json_error(
            StatusCode::CONFLICT,
            "sync_in_progress",
            &e.to_string(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// One full sync. See the module documentation for what it guarantees.
#[tracing::instrument(skip_all)]
pub async fn sync_once(state: &AppState) -> Result<SyncSummary, SyncError> {
    let result = sync_inner(state).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.outcome(),
    };
    state
        .metrics
        .marketplace_syncs
        .with_label_values(&[outcome])
        .inc();
    match &result {
        Ok(s) => tracing::info!(
            fetched = s.fetched,
            matched = s.matched,
            unmatched = s.unmatched,
            "Marketplace sync finished"
        ),
        Err(SyncError::InProgress) => tracing::info!("Marketplace sync already running"),
        Err(e) => tracing::warn!(error = %e, "Marketplace sync failed; stored data unchanged"),
    }
    result
}

async fn sync_inner(state: &AppState) -> Result<SyncSummary, SyncError> {
    let creds = state
        .config
        .marketplace
        .as_ref()
        .ok_or(SyncError::NotConfigured)?;
    let holder = db_store::new_id();
    let now = db_store::now();
    if !leases::try_acquire(
        &state.db,
        LEASE,
        &holder,
        now,
        crate::host_license::later(now, LEASE_TTL),
    )
    .await?
    {
        return Err(SyncError::InProgress);
    }
    let run = Run {
        state,
        creds,
        holder: &holder,
        run_id: db_store::new_id(),
    };
    let result = run.execute().await;
    if result.is_err() {
        if let Err(e) = store::discard(&state.db, &run.run_id).await {
            tracing::warn!(error = %e, "could not discard the failed run's staged rows");
        }
    }
    if let Err(e) = leases::release(&state.db, LEASE, &holder).await {
        tracing::warn!(error = %e, "could not release the sync lease; it expires on its own");
    }
    result
}

struct Run<'a> {
    state: &'a AppState,
    creds: &'a MarketplaceCredentials,
    holder: &'a str,
    run_id: String,
}

impl Run<'_> {
    async fn execute(&self) -> Result<SyncSummary, SyncError> {
        let db = &self.state.db;
        let base = &self.state.config.marketplace_url;
        // Only the lease holder stages, so anything left there is from a run that died.
        let started = std::time::Instant::now();
        store::clear_staging(db).await?;
        let mut url = first_page_url(base, &self.creds.vendor_id, &self.state.app_key);
        let mut seen = HashSet::from([url.clone()]);
        let mut fetched = 0u64;
        let mut batch = Vec::with_capacity(STAGE_BATCH + 50);
        let mut renewed = std::time::Instant::now();
        for page_no in 1.. {
            if page_no > MAX_PAGES {
                return Err(MarketplaceError::TooManyPages.into());
            }
            if renewed.elapsed() >= LEASE_RENEW {
                self.renew().await?;
                renewed = std::time::Instant::now();
            }
            let page = self.fetch_page(&url, page_no).await?;
            fetched += page.licenses.len() as u64;
            batch.extend(page.licenses.iter().map(parse_license));
            if batch.len() >= STAGE_BATCH {
                self.stage(std::mem::take(&mut batch)).await?;
            }
            let Some(next) = page.links.and_then(|l| l.next) else {
                break;
            };
            url = resolve_next(base, &next.href)?;
            if !seen.insert(url.clone()) {
                return Err(MarketplaceError::Loop.into());
            }
        }
        self.stage(batch).await?;
        self.renew().await?;
        let staged = started.elapsed();
        let finished_at = db_store::now();
        let swapped = store::swap(db, &self.run_id, finished_at).await?;
        let swap_done = started.elapsed();
        if let Err(e) = store::discard(db, &self.run_id).await {
            tracing::warn!(error = %e, "could not remove the run's staged rows");
        }
        let changed = store::changed_at(db, finished_at).await?;
        if let Err(e) = crate::registry::license_view::refresh_many(db, &changed).await {
            // The sweeper and the next change of each tenant recompute it; the sync itself
            // (the license data) is done.
            tracing::error!(error = %e, "refreshing the license views after the sync failed");
        }
        tracing::info!(
            pages = seen.len(),
            staged_ms = staged.as_millis() as u64,
            swap_ms = (swap_done - staged).as_millis() as u64,
            changed_installations = changed.len(),
            total_ms = started.elapsed().as_millis() as u64,
            "Marketplace sync phases"
        );
        Ok(SyncSummary {
            fetched,
            matched: swapped.matched,
            unmatched: swapped.unmatched,
            finished_at,
        })
    }

    async fn renew(&self) -> Result<(), SyncError> {
        let until = crate::host_license::later(db_store::now(), LEASE_TTL);
        if leases::renew(&self.state.db, LEASE, self.holder, until).await? {
            Ok(())
        } else {
            Err(SyncError::LeaseLost)
        }
    }

    /// One page, retried on 5xx, 429, timeouts and network errors.
    #[tracing::instrument(skip_all, fields(page = page_no))]
    async fn fetch_page(&self, url: &str, page_no: usize) -> Result<Page, MarketplaceError> {
        let mut delay = self.state.config.marketplace_retry_base;
        let mut attempt = 0;
        loop {
            match self.fetch_once(url).await {
                Err(e) if e.retryable() && attempt < PAGE_RETRIES => {
                    tracing::info!(error = %e, attempt, "Marketplace page failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn fetch_once(&self, url: &str) -> Result<Page, MarketplaceError> {
        let mut res = self
            .state
            .http
            .get(url)
            .basic_auth(&self.creds.user, Some(self.creds.api_token.expose_secret()))
            .header("accept", "application/json")
            .timeout(self.state.config.marketplace_timeout)
            .send()
            .await
            .map_err(|e| MarketplaceError::from_reqwest(&e))?;
        let status = res.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(MarketplaceError::Refused(status.as_u16()));
        }
        if !status.is_success() {
            return Err(MarketplaceError::Status(status.as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| MarketplaceError::from_reqwest(&e))?
        {
            if body.len() + chunk.len() > MAX_PAGE_BYTES {
                return Err(MarketplaceError::Malformed("page too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        parse_page(&body)
    }

    /// Joins and stages a batch of parsed licenses: one lookup query per [`LOOKUP_BATCH`]
    /// rows, one transaction.
    async fn stage(&self, mut rows: Vec<StagedLicense>) -> Result<(), SyncError> {
        let started = std::time::Instant::now();
        for chunk in rows.chunks_mut(LOOKUP_BATCH) {
            let candidates = store::candidates(&self.state.db, &join_values(chunk)).await?;
            for row in chunk.iter_mut() {
                row.client_key = join(row, &candidates).map(|(c, _)| c.client_key.clone());
            }
        }
        let rows = dedup_batch(rows);
        let joined = started.elapsed();
        store::stage_rows(&self.state.db, &self.run_id, db_store::now(), &rows).await?;
        tracing::debug!(
            rows = rows.len(),
            join_us = joined.as_micros() as u64,
            insert_us = (started.elapsed() - joined).as_micros() as u64,
            "staged a batch"
        );
        Ok(())
    }
}

/// The background sync: every `MARKETPLACE_SYNC_INTERVAL_SECS` when all three
/// `MARKETPLACE_*` credentials are set. The schedule follows the last successful sync in the
/// database, so restarts and other instances do not multiply runs; the lease keeps two from
/// overlapping.
pub fn spawn_periodic(state: Arc<AppState>) {
    if state.config.marketplace.is_none() {
        tracing::info!("Marketplace credentials not set: background license sync off");
        return;
    }
    tokio::spawn(async move {
        let interval = state.config.marketplace_sync_interval;
        let mut wait = match store::last_synced_at(&state.db).await {
            Ok(Some(last)) => until_due(last, interval),
            _ => FIRST_SYNC_DELAY.min(interval),
        };
        loop {
            tokio::time::sleep(wait).await;
            if crate::host_license::db_closed(&state.db) {
                return;
            }
            // Another instance may have synced while this one slept: follow its schedule.
            if let Ok(Some(last)) = store::last_synced_at(&state.db).await {
                let left = until_due(last, interval);
                if left > interval / 10 {
                    wait = left;
                    continue;
                }
            }
            // Success or failure (logged and counted by sync_once), try again a period later.
            let _ = sync_once(&state).await;
            wait = interval;
        }
    });
}

/// Time left until `last + interval` (zero when past).
fn until_due(last: DateTime<Utc>, interval: Duration) -> Duration {
    let due = crate::host_license::later(last, interval);
    (due - db_store::now()).to_std().unwrap_or(Duration::ZERO)
}

#[derive(Deserialize)]
struct Page {
    #[serde(rename = "_links", default)]
    links: Option<Links>,
    licenses: Vec<Value>,
}

#[derive(Deserialize)]
struct Links {
    #[serde(default)]
    next: Option<Link>,
}

#[derive(Deserialize)]
struct Link {
    href: String,
}

fn parse_page(body: &[u8]) -> Result<Page, MarketplaceError> {
    let page: Page =
        serde_json::from_slice(body).map_err(|e| MarketplaceError::Malformed(e.to_string()))?;
    if let Some(i) = page.licenses.iter().position(|l| !l.is_object()) {
        return Err(MarketplaceError::Malformed(format!(
            "licenses[{i}] is not an object"
        )));
    }
    Ok(page)
}

/// The first page: the app's cloud licenses with data insights (evaluation dates), 50 a page.
pub fn first_page_url(base: &Url, vendor_id: &str, app_key: &str) -> String {
    format!(
        "{}/rest/2/vendors/{vendor_id}/reporting/licenses?addon={app_key}&hosting=cloud&withDataInsights=true&limit=50",
        base.as_str().trim_end_matches('/')
    )
}

/// Resolves a `_links.next.href`. The Marketplace sends paths relative to its root; they are
/// taken relative to `MARKETPLACE_URL` (which may carry a path prefix, e.g. behind a proxy).
/// An absolute link must stay on the same origin: the credentials go with every request.
pub fn resolve_next(base: &Url, href: &str) -> Result<String, MarketplaceError> {
    let href = href.trim();
    if href.is_empty() {
        return Err(MarketplaceError::Malformed("empty next link".into()));
    }
    if href.starts_with('/') && !href.starts_with("//") {
        return Ok(format!("{}{href}", base.as_str().trim_end_matches('/')));
    }
    let url = base
        .join(href)
        .map_err(|_| MarketplaceError::Malformed("unparsable next link".into()))?;
    if url.origin() != base.origin() {
        return Err(MarketplaceError::ForeignLink);
    }
    Ok(url.to_string())
}

/// A string field; numbers are accepted as text (ids are numeric strings but may arrive as
/// numbers). Blank strings count as absent.
fn text(v: &Value, field: &str) -> Option<String> {
    match v.get(field)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `YYYY-MM-DD` as 00:00 UTC, or an RFC 3339 / naive ISO timestamp (newer data).
pub fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    let t = if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0)?.and_utc()
    } else if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        t.with_timezone(&Utc)
    } else {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()?
            .and_utc()
    };
    // Outside this range it is not a license date, and PostgreSQL could not store it.
    use chrono::Datelike;
    (1900..=9999)
        .contains(&t.year())
        .then(|| t.trunc_subsecs(6))
}

fn date(v: &Value, field: &str) -> Option<DateTime<Utc>> {
    text(v, field).as_deref().and_then(parse_date)
}

/// The number of users in a tier: `"10 Users"` → 10, `"1,000 Users"` → 1000; tiers without a
/// number (`"Unlimited Users"`, `"Evaluation"`, `"Subscription"`) → `None`.
pub fn user_count(tier: &str) -> Option<i64> {
    let first = tier.split_whitespace().next()?;
    let digits: String = first.chars().filter(|c| *c != ',').collect();
    digits.parse::<i64>().ok().filter(|n| *n >= 0)
}

/// A SEN without its `SEN-` prefix, upper-cased: `SEN-123`, `sen-123` and `123` are the same.
pub fn normalize_sen(s: &str) -> Option<String> {
    let t = s.trim();
    let rest = match t.get(..4) {
        Some(p) if p.eq_ignore_ascii_case("SEN-") => &t[4..],
        _ => t,
    };
    let rest = rest.trim();
    (!rest.is_empty()).then(|| rest.to_ascii_uppercase())
}

/// A site host as the installations table keeps it (lower case, no scheme, no dot at the end).
pub fn normalize_host(s: &str) -> Option<String> {
    let s = s.trim();
    let host = if s.contains("://") {
        crate::domain::host_of(s)?
    } else {
        s.split('/').next().unwrap_or_default().to_ascii_lowercase()
    };
    let host = host.trim_end_matches('.').to_owned();
    (!host.is_empty()).then_some(host)
}

/// `{name, email, phone}` of a contact object as JSON text; `None` when absent or empty.
fn contact(v: Option<&Value>) -> Option<String> {
    let c = v.filter(|c| c.is_object())?;
    let (name, email, phone) = (text(c, "name"), text(c, "email"), text(c, "phone"));
    if name.is_none() && email.is_none() && phone.is_none() {
        return None;
    }
    Some(json!({ "name": name, "email": email, "phone": phone }).to_string())
}

fn is_evaluation(license_type: Option<&str>) -> bool {
    license_type.is_some_and(crate::licensing::is_evaluation_type)
}

/// The preference of a row when one installation has several: larger wins. Fixed-width
/// digits, so that the database compares them the same way under every collation.
pub fn rank_key(
    last_updated: Option<DateTime<Utc>>,
    evaluation: bool,
    active: bool,
    maintenance_end: Option<DateTime<Utc>>,
) -> String {
    let micros = |t: Option<DateTime<Utc>>| t.map_or(0, |t| t.timestamp_micros().max(0));
    format!(
        "{:019}{}{}{:019}",
        micros(last_updated),
        u8::from(!evaluation),
        u8::from(active),
        micros(maintenance_end)
    )
}

/// One license object as stored (not yet joined).
pub fn parse_license(v: &Value) -> StagedLicense {
    let raw = v.to_string();
    let app_entitlement_id = text(v, "appEntitlementId");
    let addon_license_id = text(v, "addonLicenseId");
    let license_id = text(v, "licenseId");
    let license_key = app_entitlement_id
        .clone()
        .or_else(|| addon_license_id.clone())
        .or_else(|| license_id.clone())
        .unwrap_or_else(|| format!("sha256:{}", hex::encode(Sha256::digest(raw.as_bytes()))));
    let license_type = text(v, "licenseType");
    let tier = text(v, "tier");
    let status = text(v, "status");
    let maintenance_start = date(v, "maintenanceStartDate");
    let maintenance_end = date(v, "maintenanceEndDate");
    let evaluation_start = date(v, "evaluationStartDate");
    let evaluation_end = date(v, "evaluationEndDate");
    let last_updated = date(v, "lastUpdated");
    let evaluation = is_evaluation(license_type.as_deref());
    let (trial_start, trial_end) = if evaluation {
        (
            evaluation_start.or(maintenance_start),
            evaluation_end.or(maintenance_end),
        )
    } else {
        (None, None)
    };
    let active = status
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("active"));
    let details = v.get("contactDetails");
    let detail = |f: &str| details.and_then(|d| text(d, f));
    StagedLicense {
        rank_key: rank_key(last_updated, evaluation, active, maintenance_end),
        license_key,
        addon_key: text(v, "addonKey"),
        addon_license_id,
        app_entitlement_id,
        app_entitlement_number: text(v, "appEntitlementNumber"),
        license_id,
        host_license_id: text(v, "hostLicenseId"),
        cloud_id: text(v, "cloudId"),
        cloud_site_hostname: text(v, "cloudSiteHostname"),
        hosting: text(v, "hosting"),
        user_count: tier.as_deref().and_then(user_count),
        license_type,
        tier,
        status,
        maintenance_start,
        maintenance_end,
        evaluation_start,
        evaluation_end,
        company: detail("company"),
        country: detail("country"),
        region: detail("region"),
        technical_contact: contact(details.and_then(|d| d.get("technicalContact"))),
        billing_contact: contact(details.and_then(|d| d.get("billingContact"))),
        last_updated,
        client_key: None,
        raw,
        trial_start,
        trial_end,
    }
}

/// Which key joined a license to its installation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKey {
    CloudId,
    EntitlementId,
    EntitlementNumber,
    Sen,
    Hostname,
}

fn same(a: Option<&str>, b: &str) -> bool {
    a.is_some_and(|a| a.trim().eq_ignore_ascii_case(b.trim()))
}

/// One join level: its key and the test a candidate must pass.
type JoinLevel<'a> = (JoinKey, &'a dyn Fn(&Candidate) -> bool);

/// Joins a license to an installation, in the contract's order: (`cloudId`, app key);
/// `appEntitlementId` then `appEntitlementNumber` against the installed payload's or the
/// license endpoint's entitlement; the SEN (`licenseId` or `addonLicenseId`, with or without
/// `SEN-`) against the payload's or the license endpoint's; the site host name. The first
/// level with a match decides; within it an installed site beats an uninstalled one, then the
/// latest install.
pub fn join<'c>(
    lic: &StagedLicense,
    candidates: &'c [Candidate],
) -> Option<(&'c Candidate, JoinKey)> {
    let best = |pred: &dyn Fn(&Candidate) -> bool| {
        candidates.iter().filter(|c| pred(c)).max_by(|a, b| {
            (a.status != "uninstalled", a.installed_at, &a.client_key).cmp(&(
                b.status != "uninstalled",
                b.installed_at,
                &b.client_key,
            ))
        })
    };
    let lic_sens: Vec<String> = [&lic.license_id, &lic.addon_license_id]
        .into_iter()
        .flatten()
        .filter_map(|s| normalize_sen(s))
        .collect();
    let host = lic.cloud_site_hostname.as_deref().and_then(normalize_host);
    let levels: [JoinLevel<'_>; 5] = [
        (JoinKey::CloudId, &|c| {
            lic.cloud_id
                .as_deref()
                .is_some_and(|id| same(c.cloud_id.as_deref(), id))
                && lic.addon_key.as_deref().is_none_or(|k| k == c.app_key)
        }),
        (JoinKey::EntitlementId, &|c| {
            lic.app_entitlement_id.as_deref().is_some_and(|id| {
                same(c.entitlement_id.as_deref(), id)
                    || same(c.host_license_entitlement_id.as_deref(), id)
            })
        }),
        (JoinKey::EntitlementNumber, &|c| {
            lic.app_entitlement_number.as_deref().is_some_and(|n| {
                same(c.entitlement_number.as_deref(), n)
                    || same(c.host_license_entitlement_number.as_deref(), n)
            })
        }),
        (JoinKey::Sen, &|c| {
            [&c.service_entitlement_number, &c.host_license_sen]
                .into_iter()
                .flatten()
                .filter_map(|s| normalize_sen(s))
                .any(|s| lic_sens.contains(&s))
        }),
        (JoinKey::Hostname, &|c| {
            host.as_deref() == Some(c.base_host.as_str())
        }),
    ];
    levels
        .into_iter()
        .find_map(|(key, pred)| best(pred).map(|c| (c, key)))
}

/// The values of a page to look installations up by (SENs in both spellings).
pub fn join_values(rows: &[StagedLicense]) -> JoinValues {
    fn push(list: &mut Vec<String>, v: Option<String>) {
        if let Some(v) = v {
            if !list.contains(&v) {
                list.push(v);
            }
        }
    }
    let mut v = JoinValues::default();
    for r in rows {
        push(&mut v.cloud_ids, r.cloud_id.clone());
        push(&mut v.entitlement_ids, r.app_entitlement_id.clone());
        push(&mut v.entitlement_numbers, r.app_entitlement_number.clone());
        for sen in [&r.license_id, &r.addon_license_id]
            .into_iter()
            .flatten()
            .filter_map(|s| normalize_sen(s))
        {
            push(&mut v.sens, Some(format!("SEN-{sen}")));
            push(&mut v.sens, Some(sen));
        }
        push(
            &mut v.hosts,
            r.cloud_site_hostname.as_deref().and_then(normalize_host),
        );
    }
    v
}

/// One row per license key within a batch (the higher rank wins), as one INSERT needs.
pub fn dedup_batch(mut rows: Vec<StagedLicense>) -> Vec<StagedLicense> {
    rows.sort_by(|a, b| {
        a.license_key
            .cmp(&b.license_key)
            .then_with(|| b.rank_key.cmp(&a.rank_key))
    });
    rows.dedup_by(|later, first| later.license_key == first.license_key);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn day(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
    }

    #[test]
    fn tiers() {
        assert_eq!(user_count("10 Users"), Some(10));
        assert_eq!(user_count("100 Users"), Some(100));
        assert_eq!(user_count("1,000 Users"), Some(1000));
        assert_eq!(user_count("Unlimited Users"), None);
        assert_eq!(user_count("Evaluation"), None);
        assert_eq!(user_count("Subscription"), None);
        assert_eq!(user_count(""), None);
    }

    #[test]
    fn sens() {
        assert_eq!(normalize_sen("SEN-30550987").as_deref(), Some("30550987"));
        assert_eq!(normalize_sen(" sen-30550987 ").as_deref(), Some("30550987"));
        assert_eq!(normalize_sen("30550987").as_deref(), Some("30550987"));
        assert_eq!(normalize_sen("SEN-"), None);
        assert_eq!(normalize_sen("SÉN-1").as_deref(), Some("SÉN-1"));
        assert_eq!(normalize_sen("SE"), Some("SE".into()));
    }

    #[test]
    fn hosts() {
        assert_eq!(
            normalize_host("Acme-Corp.atlassian.net.").as_deref(),
            Some("acme-corp.atlassian.net")
        );
        assert_eq!(
            normalize_host("https://acme.atlassian.net/wiki").as_deref(),
            Some("acme.atlassian.net")
        );
        assert_eq!(normalize_host(" "), None);
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("2025-03-31"), Some(day(2025, 3, 31)));
        assert_eq!(
            parse_date("2025-03-31T10:00:00.5+02:00"),
            Some(
                Utc.with_ymd_and_hms(2025, 3, 31, 8, 0, 0).unwrap()
                    + chrono::Duration::milliseconds(500)
            )
        );
        assert_eq!(
            parse_date("2025-03-31T10:00:00"),
            Some(Utc.with_ymd_and_hms(2025, 3, 31, 10, 0, 0).unwrap())
        );
        assert_eq!(parse_date("NA"), None);
        assert_eq!(parse_date("0001-01-01"), None);
    }

    #[test]
    fn pagination_links() {
        let base = Url::parse("https://marketplace.atlassian.com").unwrap();
        assert_eq!(
            resolve_next(
                &base,
                "/rest/2/vendors/1/reporting/licenses?offset=50&limit=50"
            )
            .unwrap(),
            "https://marketplace.atlassian.com/rest/2/vendors/1/reporting/licenses?offset=50&limit=50"
        );
        let prefixed = Url::parse("http://127.0.0.1:9000/mp/").unwrap();
        assert_eq!(
            resolve_next(&prefixed, "/rest/2/x?offset=2").unwrap(),
            "http://127.0.0.1:9000/mp/rest/2/x?offset=2"
        );
        assert_eq!(
            resolve_next(&base, "https://marketplace.atlassian.com/rest/2/x?offset=2").unwrap(),
            "https://marketplace.atlassian.com/rest/2/x?offset=2"
        );
        assert!(matches!(
            resolve_next(&base, "https://evil.example/steal"),
            Err(MarketplaceError::ForeignLink)
        ));
        assert!(matches!(
            resolve_next(&base, "//evil.example/steal"),
            Err(MarketplaceError::ForeignLink)
        ));
        assert!(matches!(
            resolve_next(&base, " "),
            Err(MarketplaceError::Malformed(_))
        ));
        assert_eq!(
            first_page_url(&base, "1234567", "com.example.acme-reports"),
            "https://marketplace.atlassian.com/rest/2/vendors/1234567/reporting/licenses?addon=com.example.acme-reports&hosting=cloud&withDataInsights=true&limit=50"
        );
    }

    #[test]
    fn pages_must_be_json_with_licenses() {
        assert!(parse_page(b"{\"licenses\": []}").is_ok());
        assert!(matches!(
            parse_page(b"<html>"),
            Err(MarketplaceError::Malformed(_))
        ));
        assert!(matches!(
            parse_page(b"{}"),
            Err(MarketplaceError::Malformed(_))
        ));
        assert!(matches!(
            parse_page(b"{\"licenses\": [1]}"),
            Err(MarketplaceError::Malformed(_))
        ));
        let p = parse_page(br#"{"_links": {"next": {"href": "/x?offset=2"}}, "licenses": [{}]}"#)
            .unwrap();
        assert_eq!(
            p.links.and_then(|l| l.next).map(|n| n.href).as_deref(),
            Some("/x?offset=2")
        );
    }

    /// The first license of protocol §7.5.
    fn evaluation_sample() -> Value {
        json!({
            "addonLicenseId": "30551234",
            "appEntitlementId": "5b1d0c8e-2f4a-4c55-9d61-7a2e9f0b3c11",
            "appEntitlementNumber": "E-4K2-9QJ-7WZ-P3M",
            "hostLicenseId": "30550987",
            "licenseId": "SEN-30550987",
            "cloudId": "0c3130ff-8e2b-4d4f-b1a9-6b6f4d2c8e10",
            "cloudSiteHostname": "acme-corp.atlassian.net",
            "addonKey": "com.example.acme-reports",
            "hosting": "Cloud",
            "lastUpdated": "2025-03-03",
            "licenseType": "EVALUATION",
            "maintenanceStartDate": "2025-03-01",
            "maintenanceEndDate": "2025-03-31",
            "status": "active",
            "tier": "Evaluation",
            "contactDetails": {
                "company": "Acme Corp", "country": "Germany", "region": "EMEA",
                "technicalContact": { "email": "admin@acme-corp.example", "name": "Ada Admin", "phone": "+49 30 1234567", "city": "Berlin" },
                "billingContact": { "email": "billing@acme-corp.example", "name": "Bill Payer" }
            },
            "evaluationStartDate": "2025-03-02",
            "evaluationEndDate": "2025-04-01"
        })
    }

    #[test]
    fn parses_a_license() {
        let l = parse_license(&evaluation_sample());
        assert_eq!(l.license_key, "5b1d0c8e-2f4a-4c55-9d61-7a2e9f0b3c11");
        assert_eq!(l.user_count, None);
        assert_eq!(l.maintenance_end, Some(day(2025, 3, 31)));
        // Evaluation dates win over the maintenance window when present.
        assert_eq!(l.trial_start, Some(day(2025, 3, 2)));
        assert_eq!(l.trial_end, Some(day(2025, 4, 1)));
        assert_eq!(l.company.as_deref(), Some("Acme Corp"));
        let tech: Value = serde_json::from_str(l.technical_contact.as_deref().unwrap()).unwrap();
        assert_eq!(
            tech,
            json!({"name": "Ada Admin", "email": "admin@acme-corp.example", "phone": "+49 30 1234567"})
        );
        let billing: Value = serde_json::from_str(l.billing_contact.as_deref().unwrap()).unwrap();
        assert_eq!(billing["phone"], Value::Null);

        let mut v = evaluation_sample();
        let o = v.as_object_mut().unwrap();
        o.remove("evaluationStartDate");
        o.remove("evaluationEndDate");
        o.insert("licenseType".into(), json!("COMMERCIAL"));
        o.insert("tier".into(), json!("100 Users"));
        let l = parse_license(&v);
        assert_eq!(l.user_count, Some(100));
        assert_eq!((l.trial_start, l.trial_end), (None, None));

        let mut v = evaluation_sample();
        let o = v.as_object_mut().unwrap();
        o.remove("evaluationStartDate");
        o.remove("evaluationEndDate");
        let l = parse_license(&v);
        assert_eq!(l.trial_start, Some(day(2025, 3, 1)));
        assert_eq!(l.trial_end, Some(day(2025, 3, 31)));
    }

    #[test]
    fn license_keys_fall_back() {
        let l = parse_license(&json!({"addonLicenseId": 123, "licenseId": "SEN-9"}));
        assert_eq!(l.license_key, "123");
        let l = parse_license(&json!({"licenseId": "SEN-9"}));
        assert_eq!(l.license_key, "SEN-9");
        let a = parse_license(&json!({"tier": "10 Users"}));
        let b = parse_license(&json!({"tier": "10 Users"}));
        assert!(a.license_key.starts_with("sha256:"));
        assert_eq!(a.license_key, b.license_key);
    }

    fn cand(key: &str) -> Candidate {
        Candidate {
            client_key: key.into(),
            app_key: "com.example.acme-reports".into(),
            base_host: format!("{key}.atlassian.net"),
            status: "enabled".into(),
            installed_at: day(2025, 1, 1),
            ..Candidate::default()
        }
    }

    #[test]
    fn join_order() {
        let lic = parse_license(&evaluation_sample());
        let mut by_host = cand("acme-corp");
        by_host.base_host = "acme-corp.atlassian.net".into();
        let mut by_sen = cand("sen");
        by_sen.service_entitlement_number = Some("30551234".into()); // addonLicenseId
        let mut by_sen_host = cand("sen-host");
        by_sen_host.host_license_sen = Some("sen-30550987".into()); // licenseId
        let mut by_number = cand("number");
        by_number.host_license_entitlement_number = Some("E-4K2-9QJ-7WZ-P3M".into());
        let mut by_id = cand("id");
        by_id.entitlement_id = Some("5B1D0C8E-2F4A-4C55-9D61-7A2E9F0B3C11".into());
        let mut by_cloud = cand("cloud");
        by_cloud.cloud_id = Some("0c3130ff-8e2b-4d4f-b1a9-6b6f4d2c8e10".into());
        let mut other_app = by_cloud.clone();
        other_app.client_key = "other-app".into();
        other_app.app_key = "com.example.other".into();

        let mut all = vec![
            by_host.clone(),
            by_sen.clone(),
            by_number.clone(),
            by_id.clone(),
            other_app.clone(),
        ];
        // Without the cloudId installation (the other app's does not count), the entitlement id wins.
        assert_eq!(
            join(&lic, &all).map(|(c, k)| (c.client_key.as_str(), k)),
            Some(("id", JoinKey::EntitlementId))
        );
        all.push(by_cloud);
        assert_eq!(
            join(&lic, &all).map(|(c, k)| (c.client_key.as_str(), k)),
            Some(("cloud", JoinKey::CloudId))
        );
        let rest = vec![by_host.clone(), by_sen.clone(), by_number];
        assert_eq!(
            join(&lic, &rest).map(|(c, k)| (c.client_key.as_str(), k)),
            Some(("number", JoinKey::EntitlementNumber))
        );
        let rest = vec![by_host.clone(), by_sen];
        assert_eq!(
            join(&lic, &rest).map(|(c, k)| (c.client_key.as_str(), k)),
            Some(("sen", JoinKey::Sen))
        );
        let rest = vec![by_host.clone(), by_sen_host];
        assert_eq!(
            join(&lic, &rest).map(|(c, k)| (c.client_key.as_str(), k)),
            Some(("sen-host", JoinKey::Sen))
        );
        let rest = vec![by_host.clone(), other_app];
        assert_eq!(
            join(&lic, &rest).map(|(c, k)| (c.client_key.as_str(), k)),
            Some(("acme-corp", JoinKey::Hostname))
        );
        assert_eq!(join(&lic, &[cand("nobody")]), None);
    }

    #[test]
    fn installed_beats_uninstalled_then_latest_install() {
        let lic = parse_license(&evaluation_sample());
        let mut old = cand("old");
        old.base_host = "acme-corp.atlassian.net".into();
        old.installed_at = day(2025, 2, 1);
        let mut gone = old.clone();
        gone.client_key = "gone".into();
        gone.status = "uninstalled".into();
        gone.installed_at = day(2025, 3, 1);
        let mut new = old.clone();
        new.client_key = "new".into();
        new.installed_at = day(2025, 2, 15);
        let all = [old, gone, new];
        assert_eq!(
            join(&lic, &all).map(|(c, _)| c.client_key.as_str()),
            Some("new")
        );
    }

    #[test]
    fn winner_ranking() {
        let newer = rank_key(Some(day(2025, 3, 4)), true, false, None);
        let older = rank_key(Some(day(2025, 3, 3)), false, true, Some(day(2030, 1, 1)));
        assert!(newer > older, "later lastUpdated wins");
        let eval = rank_key(Some(day(2025, 3, 3)), true, true, Some(day(2025, 3, 31)));
        let paid = rank_key(Some(day(2025, 3, 3)), false, true, Some(day(2026, 3, 3)));
        assert!(paid > eval, "on a tie a non-evaluation row wins");
        let inactive = rank_key(Some(day(2025, 3, 3)), false, false, Some(day(2027, 1, 1)));
        assert!(paid > inactive, "then an active row");
        let unknown = rank_key(None, false, true, None);
        assert!(older > unknown, "rows without lastUpdated lose");
        assert_eq!(newer.len(), unknown.len());
        assert!(newer.chars().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn dedup_keeps_the_better_row() {
        let mut a = parse_license(&json!({"addonLicenseId": "1", "lastUpdated": "2025-01-01"}));
        a.tier = Some("old".into());
        let mut b = parse_license(&json!({"addonLicenseId": "1", "lastUpdated": "2025-02-01"}));
        b.tier = Some("new".into());
        let c = parse_license(&json!({"addonLicenseId": "2"}));
        let rows = dedup_batch(vec![a, c, b]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].tier.as_deref(), Some("new"));
    }

    #[test]
    fn join_values_carry_both_sen_spellings() {
        let v = join_values(&[parse_license(&evaluation_sample())]);
        assert!(v.sens.contains(&"SEN-30550987".to_string()));
        assert!(v.sens.contains(&"30550987".to_string()));
        assert!(v.sens.contains(&"SEN-30551234".to_string()));
        assert!(v.sens.contains(&"30551234".to_string()));
        assert_eq!(v.hosts, vec!["acme-corp.atlassian.net".to_string()]);
    }
}
