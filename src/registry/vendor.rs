//! The vendor's view of the registry, shared by the admin API and the CLI: the Installation
//! JSON (contract §5), list parameters and their validation, cursors, the detail view, CSV
//! export, the summary, and admin tokens.
//!
//! Response types are separate from row types on purpose: [`InstallationRow`] holds the shared
//! secret and has no `Serialize`, so the only way to put a tenant into a response is through
//! [`Installation::from_row`], which has no field for it.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::LicenseState;
use crate::domain::Status;
use crate::registry::error::{Entity, Error};
use crate::store::access_tokens::{self, AccessTokenRow};
use crate::store::admin_tokens::{self, AdminTokenRow};
use crate::store::events::EventRow;
use crate::store::grants::GrantRow;
use crate::store::installations::InstallationRow;
use crate::store::listing::{self, After, Filter, GroupColumn, KeyValue, Sort};
use crate::store::{Db, audit, events, grants, installations};

/// Default and largest page size of `GET /admin/installations`.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;
/// Rows per database round trip while exporting CSV: large enough to amortise the query,
/// small enough that memory stays flat however many rows there are.
pub const EXPORT_BATCH: u32 = 1000;
/// Products the `product` filter accepts (the `productType` values of Connect cloud apps).
pub const PRODUCTS: [&str; 2] = ["jira", "confluence"];

// ---------------------------------------------------------------------------------------
// Response types
// ---------------------------------------------------------------------------------------

/// One installation (tenant) as the vendor sees it. Never carries the shared secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Installation {
    pub client_key: String,
    pub app_key: String,
    pub base_url: String,
    pub display_url: Option<String>,
    /// `jira`, `confluence`, …
    pub product_type: String,
    pub description: Option<String>,
    pub cloud_id: Option<String>,
    pub installation_id: Option<String>,
    pub service_entitlement_number: Option<String>,
    pub entitlement_id: Option<String>,
    pub entitlement_number: Option<String>,
    /// `installed`, `enabled`, `disabled` or `uninstalled`.
    #[schema(example = "enabled")]
    pub status: String,
    pub installed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub uninstalled_at: Option<DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub license: License,
    /// Marketplace contact data; `null` until a Marketplace sync matched a license.
    pub customer: Option<Customer>,
    pub grants: Vec<GrantItem>,
}

/// License data of an installation.
///
/// `state`, `source` and `effective_trial_end` are the registry's decision (contract §5).
/// `license_type` and `evaluation` come from the Marketplace license when one is matched,
/// otherwise from the product's license endpoint (`host`); the other fields exist only in
/// Marketplace data and are `null` without it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct License {
    /// `active`, `trial`, `free` or `unlicensed`.
    #[schema(example = "trial")]
    pub state: String,
    /// What decided `state`: `lic`, `host`, `marketplace`, `grant`, or `null` (no data).
    pub source: Option<String>,
    /// The last `lic` parameter seen on a verified request: `active` or `none`.
    pub lic_last_seen: Option<String>,
    pub lic_seen_at: Option<DateTime<Utc>>,
    /// Marketplace `licenseType` (e.g. `EVALUATION`, `COMMERCIAL`), else the product's type.
    pub license_type: Option<String>,
    pub evaluation: Option<bool>,
    /// e.g. `10 Users`.
    pub tier: Option<String>,
    /// The number in `tier`; `null` for `Unlimited Users`, `Evaluation`, …
    pub user_count: Option<i64>,
    pub maintenance_start: Option<DateTime<Utc>>,
    pub maintenance_end: Option<DateTime<Utc>>,
    pub trial_start: Option<DateTime<Utc>>,
    pub trial_end: Option<DateTime<Utc>>,
    /// The later of `trial_end` and the end of the latest trial extension.
    pub effective_trial_end: Option<DateTime<Utc>>,
    pub marketplace_status: Option<String>,
    pub synced_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Contact {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Customer {
    pub company: Option<String>,
    pub country: Option<String>,
    pub region: Option<String>,
    pub technical_contact: Option<Contact>,
    pub billing_contact: Option<Contact>,
}

/// A grant as listed inside an Installation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GrantItem {
    pub id: String,
    /// `free`, `trial_extension` or `access_token`.
    #[schema(example = "trial_extension")]
    pub kind: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A grant on its own (the answer of the grant and trial-extension routes): the Installation's
/// grant fields plus whose it is and who made or revoked it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Grant {
    pub id: String,
    pub client_key: String,
    #[schema(example = "free")]
    pub kind: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
}

impl From<&GrantRow> for GrantItem {
    fn from(g: &GrantRow) -> Self {
        GrantItem {
            id: g.id.clone(),
            kind: g.kind.clone(),
            starts_at: g.starts_at,
            ends_at: g.ends_at,
            reason: g.reason.clone(),
            created_at: g.created_at,
            revoked_at: g.revoked_at,
        }
    }
}

impl From<&GrantRow> for Grant {
    fn from(g: &GrantRow) -> Self {
        Grant {
            id: g.id.clone(),
            client_key: g.client_key.clone(),
            kind: g.kind.clone(),
            starts_at: g.starts_at,
            ends_at: g.ends_at,
            reason: g.reason.clone(),
            created_by: g.created_by.clone(),
            created_at: g.created_at,
            revoked_at: g.revoked_at,
            revoked_by: g.revoked_by.clone(),
        }
    }
}

/// One lifecycle callback in an installation's history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Event {
    /// `installed`, `uninstalled`, `enabled` or `disabled`.
    pub event_type: String,
    pub received_at: DateTime<Utc>,
    /// The callback's payload as received, without the shared secret.
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// One entry of the audit trail: who changed what, and why.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: String,
    /// The admin token's name, `env` for `ADMIN_TOKEN`, or `cli`.
    pub actor: String,
    /// e.g. `trial_extension.create`, `grant.revoke`, `access_token.create`.
    pub action: String,
    pub target_id: Option<String>,
    pub reason: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
    pub created_at: DateTime<Utc>,
}

/// `GET /admin/installations/{client_key}`: the Installation plus its history and audit trail.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstallationDetail {
    #[serde(flatten)]
    pub installation: Installation,
    /// Lifecycle callbacks, oldest first.
    pub events: Vec<Event>,
    /// Vendor changes (grants, extensions, revocations, tokens), oldest first.
    pub audit: Vec<AuditEntry>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstallationPage {
    pub items: Vec<Installation>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// How many installations match the filters (all pages).
    pub total: i64,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct StatusCounts {
    pub installed: i64,
    pub enabled: i64,
    pub disabled: i64,
    pub uninstalled: i64,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct LicenseCounts {
    pub active: i64,
    pub trial: i64,
    pub free: i64,
    pub unlicensed: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Summary {
    pub total: i64,
    pub by_status: StatusCounts,
    pub by_license: LicenseCounts,
    /// Installations in trial whose effective trial end is within the next 7 days.
    pub trials_ending_in_7_days: i64,
    pub generated_at: DateTime<Utc>,
}

/// An admin token as listed (never the token itself).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AdminToken {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<AdminTokenRow> for AdminToken {
    fn from(r: AdminTokenRow) -> Self {
        AdminToken {
            id: r.id,
            name: r.name,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
            last_used_at: r.last_used_at,
        }
    }
}

/// A newly made admin token: the only time `token` is shown.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedAdminToken {
    pub id: String,
    pub token: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A vendor access token as listed: never the token (only its hash is stored).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccessToken {
    pub id: String,
    pub note: Option<String>,
    /// The site it was bound to in advance, if any.
    pub client_key: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The site that redeemed it.
    pub redeemed_by: Option<String>,
    pub redeemed_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&AccessTokenRow> for AccessToken {
    fn from(r: &AccessTokenRow) -> Self {
        AccessToken {
            id: r.id.clone(),
            note: r.note.clone(),
            client_key: r.client_key.clone(),
            created_by: r.created_by.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            redeemed_by: r.redeemed_by.clone(),
            redeemed_at: r.redeemed_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// A newly made access token: the only time `token` is shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedAccessToken {
    pub id: String,
    pub token: String,
    /// The descriptor URL carrying the token, for installing from it.
    pub install_url: String,
    pub note: Option<String>,
    pub client_key: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl CreatedAccessToken {
    pub fn new(row: &AccessTokenRow, token: String, app_base_url: &url::Url) -> Self {
        CreatedAccessToken {
            id: row.id.clone(),
            install_url: install_url(app_base_url, &token),
            token,
            note: row.note.clone(),
            client_key: row.client_key.clone(),
            expires_at: row.expires_at,
            created_at: row.created_at,
        }
    }
}

/// `{APP_BASE_URL}/atlassian-connect.json?access-token=T`: the served descriptor carries the
/// token into its `installed` URL, so a site installing from here redeems it.
pub fn install_url(app_base_url: &url::Url, token: &str) -> String {
    let token: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    format!(
        "{}/atlassian-connect.json?access-token={token}",
        app_base_url.as_str().trim_end_matches('/')
    )
}

/// Every access token, newest first.
pub async fn list_access_tokens(db: &Db) -> Result<Vec<AccessToken>, Error> {
    Ok(access_tokens::list(db)
        .await?
        .iter()
        .map(AccessToken::from)
        .collect())
}

// ---------------------------------------------------------------------------------------
// From rows
// ---------------------------------------------------------------------------------------

/// The number at the start of a Marketplace tier ("10 Users" → 10); `None` for "Unlimited
/// Users", "Evaluation", "Subscription", …
pub fn user_count_from_tier(tier: &str) -> Option<i64> {
    let digits: String = tier
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn contact(json: Option<&str>) -> Option<Contact> {
    let text = json?;
    match serde_json::from_str::<Contact>(text) {
        Ok(c) if c.name.is_some() || c.email.is_some() || c.phone.is_some() => Some(c),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "stored Marketplace contact is not the expected JSON");
            None
        }
    }
}

impl Installation {
    /// The response shape of a row and its grants. The shared secret is not read.
    pub fn from_row(row: &InstallationRow, grants: &[GrantRow]) -> Installation {
        let has_marketplace =
            row.mp_license_id.is_some() || row.mp_status.is_some() || row.mp_license_type.is_some();
        let (license_type, evaluation) = if has_marketplace {
            let t = row.mp_license_type.clone();
            let eval = t.as_deref().map(crate::licensing::is_evaluation_type);
            (t, eval)
        } else {
            (row.host_license_type.clone(), row.host_license_evaluation)
        };
        let user_count = row
            .mp_user_count
            .or_else(|| row.mp_tier.as_deref().and_then(user_count_from_tier));
        let license = License {
            state: row.license_state.clone(),
            source: row.license_source.clone(),
            lic_last_seen: row.lic_last_seen.clone(),
            lic_seen_at: row.lic_seen_at,
            license_type,
            evaluation,
            tier: row.mp_tier.clone(),
            user_count,
            maintenance_start: row.mp_maintenance_start,
            maintenance_end: row.mp_maintenance_end,
            trial_start: row.mp_trial_start,
            trial_end: row.mp_trial_end,
            effective_trial_end: row.effective_trial_end,
            marketplace_status: row.mp_status.clone(),
            synced_at: row.mp_synced_at,
        };
        let technical_contact = contact(row.mp_technical_contact.as_deref());
        let billing_contact = contact(row.mp_billing_contact.as_deref());
        let any_customer = row.mp_company.is_some()
            || row.mp_country.is_some()
            || row.mp_region.is_some()
            || technical_contact.is_some()
            || billing_contact.is_some();
        let customer = any_customer.then(|| Customer {
            company: row.mp_company.clone(),
            country: row.mp_country.clone(),
            region: row.mp_region.clone(),
            technical_contact,
            billing_contact,
        });
        Installation {
            client_key: row.client_key.clone(),
            app_key: row.app_key.clone(),
            base_url: row.base_url.clone(),
            display_url: row.display_url.clone(),
            product_type: row.product_type.clone(),
            description: row.description.clone(),
            cloud_id: row.cloud_id.clone(),
            installation_id: row.installation_id.clone(),
            service_entitlement_number: row.service_entitlement_number.clone(),
            entitlement_id: row.entitlement_id.clone(),
            entitlement_number: row.entitlement_number.clone(),
            status: row.status.clone(),
            installed_at: row.installed_at,
            updated_at: row.updated_at,
            uninstalled_at: row.uninstalled_at,
            last_seen_at: row.last_seen_at,
            license,
            customer,
            grants: grants.iter().map(GrantItem::from).collect(),
        }
    }
}

/// Keys that must never leave the process, whatever a payload holds.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("secret") || k.contains("password")
}

fn event(e: &EventRow) -> Event {
    let mut payload = serde_json::from_str::<Value>(&e.payload).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut payload {
        map.retain(|k, _| !is_secret_key(k));
    }
    Event {
        event_type: e.event_type.clone(),
        received_at: e.received_at,
        payload,
    }
}

fn audit_entry(a: &audit::AuditRow) -> AuditEntry {
    AuditEntry {
        id: a.id.clone(),
        actor: a.actor.clone(),
        action: a.action.clone(),
        target_id: a.target_id.clone(),
        reason: a.reason.clone(),
        details: a
            .details
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok()),
        created_at: a.created_at,
    }
}

// ---------------------------------------------------------------------------------------
// List parameters
// ---------------------------------------------------------------------------------------

/// What to answer for `GET /admin/installations`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Json,
    Csv,
}

/// A validated list request.
#[derive(Clone, Debug, PartialEq)]
pub struct ListRequest {
    pub filter: Filter,
    pub sort: Sort,
    pub limit: u32,
    pub after: Option<After>,
    pub format: Format,
}

impl Default for ListRequest {
    fn default() -> Self {
        ListRequest {
            filter: Filter::default(),
            sort: Sort::default(),
            limit: DEFAULT_LIMIT,
            after: None,
            format: Format::Json,
        }
    }
}

fn comma_values(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|v| !v.is_empty())
}

/// `installed,enabled` → statuses; an unknown value is a 400 naming `status`.
pub fn parse_statuses(raw: &str) -> Result<Vec<Status>, Error> {
    comma_values(raw)
        .map(|v| {
            Status::parse(v).ok_or_else(|| {
                Error::invalid(
                    "status",
                    format!(
                        "unknown value {v:?}; expected installed, enabled, disabled or uninstalled"
                    ),
                )
            })
        })
        .collect()
}

/// `active,trial` → license states; an unknown value is a 400 naming `license`.
pub fn parse_licenses(raw: &str) -> Result<Vec<LicenseState>, Error> {
    comma_values(raw)
        .map(|v| {
            LicenseState::parse(v).ok_or_else(|| {
                Error::invalid(
                    "license",
                    format!("unknown value {v:?}; expected active, trial, free or unlicensed"),
                )
            })
        })
        .collect()
}

pub fn parse_products(raw: &str) -> Result<Vec<String>, Error> {
    comma_values(raw)
        .map(|v| {
            PRODUCTS
                .iter()
                .find(|p| **p == v)
                .map(|p| (*p).to_owned())
                .ok_or_else(|| {
                    Error::invalid(
                        "product",
                        format!(
                            "unknown value {v:?}; expected one of {}",
                            PRODUCTS.join(", ")
                        ),
                    )
                })
        })
        .collect()
}

pub fn parse_sort(raw: &str) -> Result<Sort, Error> {
    Sort::parse(raw.trim()).ok_or_else(|| {
        Error::invalid(
            "sort",
            format!(
                "unknown value {raw:?}; expected installed_at, -installed_at, trial_end or base_url"
            ),
        )
    })
}

pub fn parse_limit(raw: &str) -> Result<u32, Error> {
    match raw.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(Error::invalid(
            "limit",
            format!("must be a whole number from 1 to {MAX_LIMIT}, got {raw:?}"),
        )),
    }
}

/// A date (`2026-05-01`, meaning its midnight UTC) or an RFC 3339 instant.
pub fn parse_date_param(field: &'static str, raw: &str) -> Result<DateTime<Utc>, Error> {
    let raw = raw.trim();
    if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| Error::invalid(field, format!("expected a date (YYYY-MM-DD), got {raw:?}")))
}

/// An RFC 3339 instant (request bodies and CLI `--until`).
pub fn parse_rfc3339(field: &'static str, raw: &str) -> Result<DateTime<Utc>, Error> {
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            Error::invalid(
                field,
                format!("expected an RFC 3339 timestamp such as 2026-12-31T00:00:00Z, got {raw:?}"),
            )
        })
}

/// Parses the query string of `GET /admin/installations`. `accepts_csv` is true when the
/// `Accept` header asks for `text/csv` (an explicit `format` wins).
pub fn parse_list_query(query: &str, accepts_csv: bool) -> Result<ListRequest, Error> {
    let mut multi: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        multi
            .entry(k.into_owned())
            .or_default()
            .push(v.into_owned());
    }
    let joined = |k: &str| multi.get(k).map(|vs| vs.join(","));
    let last = |k: &str| multi.get(k).and_then(|vs| vs.last().cloned());

    let mut req = ListRequest::default();
    if let Some(v) = joined("status") {
        req.filter.statuses = parse_statuses(&v)?;
    }
    if let Some(v) = joined("license") {
        req.filter.licenses = parse_licenses(&v)?;
    }
    if let Some(v) = joined("product") {
        req.filter.products = parse_products(&v)?;
    }
    if let Some(v) = last("q") {
        let v = v.trim().to_owned();
        if v.chars().count() > 200 {
            return Err(Error::invalid("q", "longer than 200 characters"));
        }
        req.filter.q = (!v.is_empty()).then_some(v);
    }
    if let Some(v) = last("trial_ends_before") {
        req.filter.trial_ends_before = Some(parse_date_param("trial_ends_before", &v)?);
    }
    if let Some(v) = last("sort") {
        req.sort = parse_sort(&v)?;
    }
    if let Some(v) = last("limit") {
        req.limit = parse_limit(&v)?;
    }
    if let Some(v) = last("cursor").filter(|c| !c.is_empty()) {
        req.after = Some(decode_cursor(req.sort, &v)?);
    }
    req.format = match last("format").as_deref() {
        Some("csv") => Format::Csv,
        Some("json") => Format::Json,
        Some(other) => {
            return Err(Error::invalid(
                "format",
                format!("unknown value {other:?}; expected json or csv"),
            ));
        }
        None if accepts_csv => Format::Csv,
        None => Format::Json,
    };
    Ok(req)
}

// ---------------------------------------------------------------------------------------
// Cursors
// ---------------------------------------------------------------------------------------

/// The decoded form of a cursor: the sort it was made for, the last row's sort value and
/// client key. Opaque to clients (base64url of this JSON).
#[derive(Serialize, Deserialize)]
struct CursorBody {
    s: String,
    v: Option<String>,
    k: String,
}

pub fn encode_cursor(sort: Sort, after: &After) -> String {
    let v = match &after.value {
        // Full precision: the next page starts strictly after this exact value, so a rounded
        // one could return the same row again.
        KeyValue::Time(t) => Some(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        KeyValue::Text(s) => Some(s.clone()),
        KeyValue::Null => None,
    };
    let body = CursorBody {
        s: sort.as_str().to_owned(),
        v,
        k: after.client_key.clone(),
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

pub fn decode_cursor(sort: Sort, raw: &str) -> Result<After, Error> {
    let bad = |why: &str| Error::invalid("cursor", why);
    let bytes = URL_SAFE_NO_PAD
        .decode(raw.trim().trim_end_matches('='))
        .map_err(|_| bad("not a cursor from a previous page"))?;
    let body: CursorBody =
        serde_json::from_slice(&bytes).map_err(|_| bad("not a cursor from a previous page"))?;
    if body.s != sort.as_str() {
        return Err(bad(&format!(
            "made for sort={}, not sort={}",
            body.s,
            sort.as_str()
        )));
    }
    let value = match (sort, body.v) {
        (Sort::InstalledAt | Sort::InstalledAtDesc | Sort::TrialEnd, Some(v)) => {
            let t = DateTime::parse_from_rfc3339(&v)
                .map_err(|_| bad("not a cursor from a previous page"))?;
            KeyValue::Time(t.with_timezone(&Utc))
        }
        (Sort::TrialEnd, None) => KeyValue::Null,
        (Sort::BaseUrl, Some(v)) => KeyValue::Text(v),
        _ => return Err(bad("not a cursor from a previous page")),
    };
    Ok(After {
        value,
        client_key: body.k,
    })
}

// ---------------------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------------------

async fn with_grants(db: &Db, rows: &[InstallationRow]) -> Result<Vec<Installation>, Error> {
    let keys: Vec<String> = rows.iter().map(|r| r.client_key.clone()).collect();
    let mut by_key: HashMap<String, Vec<GrantRow>> = HashMap::new();
    for g in listing::grants_for(db, &keys).await? {
        by_key.entry(g.client_key.clone()).or_default().push(g);
    }
    Ok(rows
        .iter()
        .map(|r| {
            let g = by_key.get(&r.client_key).map(Vec::as_slice).unwrap_or(&[]);
            Installation::from_row(r, g)
        })
        .collect())
}

/// One page of installations, with the cursor of the next one and the total.
pub async fn list(db: &Db, req: &ListRequest) -> Result<InstallationPage, Error> {
    // The page and the total are independent: run them side by side (separate pool
    // connections), so a filter that scans costs one scan of latency, not two.
    let (rows, total) = tokio::try_join!(
        listing::page(db, &req.filter, req.sort, req.after.as_ref(), req.limit + 1),
        listing::count(db, &req.filter),
    )?;
    let mut rows = rows;
    let more = rows.len() > req.limit as usize;
    rows.truncate(req.limit as usize);
    let next_cursor = match rows.last() {
        Some(last) if more => Some(encode_cursor(req.sort, &req.sort.key_of(last))),
        _ => None,
    };
    let items = with_grants(db, &rows).await?;
    Ok(InstallationPage {
        items,
        next_cursor,
        total,
    })
}

/// Every installation matching `filter` in `sort` order, fetched [`EXPORT_BATCH`] rows at a
/// time by keyset, so the caller can stream any number of them in constant memory.
pub fn all_matching(
    db: Db,
    filter: Filter,
    sort: Sort,
) -> impl Stream<Item = Result<Vec<Installation>, Error>> {
    async_stream::try_stream! {
        let mut after: Option<After> = None;
        loop {
            let rows = listing::page(&db, &filter, sort, after.as_ref(), EXPORT_BATCH).await?;
            let Some(last) = rows.last() else { break };
            after = Some(sort.key_of(last));
            let done = rows.len() < EXPORT_BATCH as usize;
            yield with_grants(&db, &rows).await?;
            if done {
                break;
            }
        }
    }
}

/// One installation with its history and audit trail; 404 when unknown.
pub async fn detail(db: &Db, client_key: &str) -> Result<InstallationDetail, Error> {
    let row = installations::get(db, client_key)
        .await?
        .ok_or_else(|| Error::not_found(Entity::Installation, client_key))?;
    let grants = grants::for_client(db, client_key).await?;
    let events = events::for_client(db, client_key).await?;
    let audit = audit::for_client(db, client_key).await?;
    Ok(InstallationDetail {
        installation: Installation::from_row(&row, &grants),
        events: events.iter().map(event).collect(),
        audit: audit.iter().map(audit_entry).collect(),
    })
}

/// Counts by status and license state, and trials ending within 7 days of `now`.
pub async fn summary(db: &Db, now: DateTime<Utc>) -> Result<Summary, Error> {
    let mut by_status = StatusCounts::default();
    let mut total = 0;
    for (status, n) in listing::counts_by(db, GroupColumn::Status).await? {
        total += n;
        match status.as_str() {
            "installed" => by_status.installed += n,
            "enabled" => by_status.enabled += n,
            "disabled" => by_status.disabled += n,
            "uninstalled" => by_status.uninstalled += n,
            _ => {}
        }
    }
    let mut by_license = LicenseCounts::default();
    for (state, n) in listing::counts_by(db, GroupColumn::LicenseState).await? {
        match state.as_str() {
            "active" => by_license.active += n,
            "trial" => by_license.trial += n,
            "free" => by_license.free += n,
            "unlicensed" => by_license.unlicensed += n,
            _ => {}
        }
    }
    let trials_ending_in_7_days = listing::trials_ending(db, now, now + Duration::days(7)).await?;
    Ok(Summary {
        total,
        by_status,
        by_license,
        trials_ending_in_7_days,
        generated_at: now,
    })
}

// ---------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------

/// The CSV columns: the Installation's fields with nested ones flattened by `_`
/// (`license.state` → `license_state`, `customer.company` → `customer_company`,
/// `customer.technical_contact.email` → `technical_contact_email`). Grants are a list and
/// are left out; `license_state` shows their effect.
pub const CSV_HEADER: [&str; 41] = [
    "client_key",
    "app_key",
    "base_url",
    "display_url",
    "product_type",
    "description",
    "cloud_id",
    "installation_id",
    "service_entitlement_number",
    "entitlement_id",
    "entitlement_number",
    "status",
    "installed_at",
    "updated_at",
    "uninstalled_at",
    "last_seen_at",
    "license_state",
    "license_source",
    "license_lic_last_seen",
    "license_lic_seen_at",
    "license_type",
    "license_evaluation",
    "license_tier",
    "license_user_count",
    "license_maintenance_start",
    "license_maintenance_end",
    "license_trial_start",
    "license_trial_end",
    "license_effective_trial_end",
    "license_marketplace_status",
    "license_synced_at",
    "customer_company",
    "customer_country",
    "customer_region",
    "technical_contact_name",
    "technical_contact_email",
    "technical_contact_phone",
    "billing_contact_name",
    "billing_contact_email",
    "billing_contact_phone",
    "active_grants",
];

fn ts(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

/// One CSV record in [`CSV_HEADER`] order.
pub fn csv_record(i: &Installation, now: DateTime<Utc>) -> Vec<String> {
    let l = &i.license;
    let c = i.customer.as_ref();
    let tc = c.and_then(|c| c.technical_contact.as_ref());
    let bc = c.and_then(|c| c.billing_contact.as_ref());
    let active_grants = i
        .grants
        .iter()
        .filter(|g| {
            g.revoked_at.is_none() && g.starts_at <= now && g.ends_at.is_none_or(|e| e > now)
        })
        .count();
    vec![
        i.client_key.clone(),
        i.app_key.clone(),
        i.base_url.clone(),
        opt(&i.display_url),
        i.product_type.clone(),
        opt(&i.description),
        opt(&i.cloud_id),
        opt(&i.installation_id),
        opt(&i.service_entitlement_number),
        opt(&i.entitlement_id),
        opt(&i.entitlement_number),
        i.status.clone(),
        ts(Some(i.installed_at)),
        ts(Some(i.updated_at)),
        ts(i.uninstalled_at),
        ts(i.last_seen_at),
        l.state.clone(),
        opt(&l.source),
        opt(&l.lic_last_seen),
        ts(l.lic_seen_at),
        opt(&l.license_type),
        l.evaluation.map(|b| b.to_string()).unwrap_or_default(),
        opt(&l.tier),
        l.user_count.map(|n| n.to_string()).unwrap_or_default(),
        ts(l.maintenance_start),
        ts(l.maintenance_end),
        ts(l.trial_start),
        ts(l.trial_end),
        ts(l.effective_trial_end),
        opt(&l.marketplace_status),
        ts(l.synced_at),
        c.map(|c| opt(&c.company)).unwrap_or_default(),
        c.map(|c| opt(&c.country)).unwrap_or_default(),
        c.map(|c| opt(&c.region)).unwrap_or_default(),
        tc.map(|c| opt(&c.name)).unwrap_or_default(),
        tc.map(|c| opt(&c.email)).unwrap_or_default(),
        tc.map(|c| opt(&c.phone)).unwrap_or_default(),
        bc.map(|c| opt(&c.name)).unwrap_or_default(),
        bc.map(|c| opt(&c.email)).unwrap_or_default(),
        bc.map(|c| opt(&c.phone)).unwrap_or_default(),
        active_grants.to_string(),
    ]
}

fn csv_bytes(records: impl IntoIterator<Item = Vec<String>>) -> Result<Bytes, Error> {
    let mut w = csv::Writer::from_writer(Vec::with_capacity(64 * 1024));
    for r in records {
        w.write_record(&r).map_err(|e| Error::Internal(e.into()))?;
    }
    let buf = w
        .into_inner()
        .map_err(|e| Error::Internal(anyhow::anyhow!("{e}")))?;
    Ok(Bytes::from(buf))
}

/// The whole export as a stream of CSV chunks: the header row, then one chunk per batch.
pub fn csv_stream(db: Db, filter: Filter, sort: Sort) -> impl Stream<Item = Result<Bytes, Error>> {
    use futures::StreamExt;
    let header = futures::stream::once(async {
        csv_bytes([CSV_HEADER.iter().map(|s| (*s).to_owned()).collect()])
    });
    let now = crate::store::now();
    let body = all_matching(db, filter, sort).map(move |batch| {
        let batch = batch?;
        csv_bytes(batch.iter().map(|i| csv_record(i, now)))
    });
    header.chain(body)
}

// ---------------------------------------------------------------------------------------
// Admin tokens
// ---------------------------------------------------------------------------------------

/// Makes an admin token named `name` and records who made it. The plaintext is returned once.
pub async fn create_admin_token(
    db: &Db,
    name: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<CreatedAdminToken, Error> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Error::invalid("name", "must be 1 to 100 characters"));
    }
    let (row, token) = admin_tokens::create(db, name, now).await?;
    audit::record(
        db,
        None,
        actor,
        "admin_token.create",
        Some(&row.id),
        None,
        Some(serde_json::json!({"name": row.name})),
        now,
    )
    .await?;
    Ok(CreatedAdminToken {
        id: row.id,
        token,
        name: row.name,
        created_at: row.created_at,
    })
}

pub async fn list_admin_tokens(db: &Db) -> Result<Vec<AdminToken>, Error> {
    Ok(admin_tokens::list(db)
        .await?
        .into_iter()
        .map(AdminToken::from)
        .collect())
}

/// Revokes an admin token (effective on the next request to any instance); 404 when unknown.
pub async fn revoke_admin_token(
    db: &Db,
    id: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<AdminToken, Error> {
    let row = admin_tokens::revoke(db, id, now)
        .await?
        .ok_or_else(|| Error::not_found(Entity::AdminToken, id))?;
    audit::record(
        db,
        None,
        actor,
        "admin_token.revoke",
        Some(&row.id),
        None,
        Some(serde_json::json!({"name": row.name})),
        now,
    )
    .await?;
    Ok(row.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_count_is_the_leading_number_of_the_tier() {
        assert_eq!(user_count_from_tier("10 Users"), Some(10));
        assert_eq!(user_count_from_tier("1,000 Users"), Some(1000));
        assert_eq!(user_count_from_tier("Unlimited Users"), None);
        assert_eq!(user_count_from_tier("Evaluation"), None);
        assert_eq!(user_count_from_tier(""), None);
    }

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_sort() {
        // nanoseconds included: a rounded cursor would repeat the row it ends on
        let t = Utc::now();
        for (sort, value) in [
            (Sort::InstalledAt, KeyValue::Time(t)),
            (Sort::InstalledAtDesc, KeyValue::Time(t)),
            (Sort::TrialEnd, KeyValue::Time(t)),
            (Sort::TrialEnd, KeyValue::Null),
            (
                Sort::BaseUrl,
                KeyValue::Text("https://a.example/wiki".into()),
            ),
        ] {
            let after = After {
                value,
                client_key: "ck-1".into(),
            };
            let c = encode_cursor(sort, &after);
            assert_eq!(decode_cursor(sort, &c).unwrap(), after);
        }
        let c = encode_cursor(
            Sort::BaseUrl,
            &After {
                value: KeyValue::Text("x".into()),
                client_key: "k".into(),
            },
        );
        assert!(decode_cursor(Sort::InstalledAt, &c).is_err());
        for garbage in ["", "!!!", "bm90IGpzb24", "eyJzIjoiaW5zdGFsbGVkX2F0In0"] {
            let e = decode_cursor(Sort::InstalledAt, garbage).unwrap_err();
            assert!(e.to_string().starts_with("cursor:"), "{e}");
        }
    }

    #[test]
    fn list_query_errors_name_the_parameter() {
        for (q, field) in [
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("limit=ten", "limit"),
            ("status=enabled,gone", "status"),
            ("license=paid", "license"),
            ("sort=name", "sort"),
            ("product=bamboo", "product"),
            ("cursor=garbage", "cursor"),
            ("trial_ends_before=next-week", "trial_ends_before"),
            ("format=xml", "format"),
        ] {
            let e = parse_list_query(q, false).unwrap_err();
            assert!(e.to_string().starts_with(&format!("{field}:")), "{q}: {e}");
        }
    }

    #[test]
    fn list_query_reads_every_parameter() {
        let r = parse_list_query(
            "status=enabled,disabled&status=installed&license=trial&product=jira&q=Acme\
             &trial_ends_before=2026-05-01&sort=-installed_at&limit=500&format=csv",
            false,
        )
        .unwrap();
        assert_eq!(
            r.filter.statuses,
            vec![Status::Enabled, Status::Disabled, Status::Installed]
        );
        assert_eq!(r.filter.licenses, vec![LicenseState::Trial]);
        assert_eq!(r.filter.products, vec!["jira".to_owned()]);
        assert_eq!(r.filter.q.as_deref(), Some("Acme"));
        assert_eq!(
            r.filter.trial_ends_before.unwrap().to_rfc3339(),
            "2026-05-01T00:00:00+00:00"
        );
        assert_eq!(r.sort, Sort::InstalledAtDesc);
        assert_eq!(r.limit, 500);
        assert_eq!(r.format, Format::Csv);
        assert_eq!(parse_list_query("", true).unwrap().format, Format::Csv);
        assert_eq!(
            parse_list_query("format=json", true).unwrap().format,
            Format::Json
        );
        assert_eq!(parse_list_query("", false).unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn installation_json_has_no_secret_and_falls_back_to_host_data() {
        let mut row = crate::store::installations::tests_support::blank_row("ck");
        row.shared_secret = Some("very-secret-value".into());
        row.host_license_type = Some("COMMERCIAL".into());
        row.host_license_evaluation = Some(false);
        let json = serde_json::to_string(&Installation::from_row(&row, &[])).unwrap();
        assert!(!json.contains("very-secret-value"));
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["license"]["license_type"], "COMMERCIAL");
        assert_eq!(v["customer"], Value::Null);

        row.mp_license_type = Some("EVALUATION".into());
        row.mp_tier = Some("25 Users".into());
        row.mp_company = Some("Acme".into());
        row.mp_technical_contact = Some(r#"{"name":"Ada","email":"ada@acme.example"}"#.into());
        let v = serde_json::to_value(Installation::from_row(&row, &[])).unwrap();
        assert_eq!(v["license"]["license_type"], "EVALUATION");
        assert_eq!(v["license"]["evaluation"], true);
        assert_eq!(v["license"]["user_count"], 25);
        assert_eq!(v["customer"]["company"], "Acme");
        assert_eq!(
            v["customer"]["technical_contact"]["email"],
            "ada@acme.example"
        );
        assert_eq!(v["customer"]["billing_contact"], Value::Null);
        let rec = csv_record(&Installation::from_row(&row, &[]), Utc::now());
        assert_eq!(rec.len(), CSV_HEADER.len());
    }
}
