//! The vendor's view of the registry: the JSON shapes the admin API answers and the CLI prints
//! (installations, licences, customers, grants, events, the audit trail, access tokens), and
//! how they are made from rows. Documented for users in the generated OpenAPI document.
//!
//! Response types are separate from row types on purpose: [`InstallationRow`] holds the shared
//! secret and has no `Serialize`, so the only way to put a tenant into a response is through
//! [`Installation::from_row`], which has no field for it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::store::access_tokens::AccessTokenRow;
use crate::store::audit::AuditRow;
use crate::store::events::EventRow;
use crate::store::grants::GrantRow;
use crate::store::installations::InstallationRow;

/// One installation (tenant) as the vendor sees it. Never carries the shared secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Installation {
    /// The Connect clientKey; `null` for an installation only Forge knows.
    pub client_key: Option<String>,
    /// `connect`, `connect_on_forge` or `forge`.
    #[schema(example = "connect_on_forge")]
    pub flavour: String,
    /// The Forge environment of the installation's FITs; `null` when Forge never called.
    pub forge_environment: Option<ForgeEnvironment>,
    /// What names this installation in admin routes and CLI commands: the clientKey, else the
    /// Forge installation id (bare uuid).
    #[serde(skip)]
    pub key: String,
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

/// The Forge environment an installation's FITs come from.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct ForgeEnvironment {
    /// `PRODUCTION`, `STAGING` or `DEVELOPMENT`.
    #[serde(rename = "type")]
    #[schema(example = "PRODUCTION")]
    pub kind: String,
    /// The environment's ARI.
    pub id: Option<String>,
}

/// License data of an installation.
///
/// `state`, `source` and `effective_trial_end` are the registry's decision
/// (docs/licensing.md#the-registrys-licence-state).
/// `license_type` and `evaluation` come from the Marketplace license when one is matched,
/// otherwise from the product's license endpoint (`host`); the other fields exist only in
/// Marketplace data and are `null` without it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct License {
    /// `active`, `trial`, `free` or `unlicensed`.
    #[schema(example = "trial")]
    pub state: String,
    /// What decided `state`: `lic`, `host`, `marketplace`, `grant`, `fit`,
    /// `forge_license_api`, or `null` (no data).
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
    /// True when an outside source — the product's licence endpoint or the Marketplace —
    /// says the site is licensed; false for a site licensed only by the `lic` its requests
    /// carried (docs/licensing.md#lic_trust).
    pub corroborated: bool,
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
    #[serde(flatten)]
    pub grant: GrantItem,
    pub client_key: String,
    pub created_by: String,
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
            grant: GrantItem::from(g),
            client_key: g.client_key.clone(),
            created_by: g.created_by.clone(),
            revoked_by: g.revoked_by.clone(),
        }
    }
}

/// One lifecycle callback in an installation's history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Event {
    /// `installed`, `uninstalled`, `enabled` or `disabled` (Connect); `avi:forge:installed:app`,
    /// `avi:forge:upgraded:app` or `forge:pre_uninstall` (Forge).
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
        let observations = row.observations();
        let forge_seen = row.fit_license_seen_at.is_some() || row.forge_api_checked_at.is_some();
        let (license_type, evaluation) = if has_marketplace {
            let t = row.mp_license_type.clone();
            let eval = t.as_deref().map(crate::licensing::is_evaluation_type);
            (t, eval)
        } else if forge_seen {
            // What Forge said last: the FIT's `type`/`isEvaluation`, else the License API's.
            let fit_newer = row.fit_license_seen_at >= row.forge_api_checked_at;
            if fit_newer {
                (row.fit_license_type.clone(), row.fit_license_evaluation)
            } else {
                (
                    row.forge_api_license_type.clone(),
                    row.forge_api_license_evaluation,
                )
            }
        } else {
            (row.host_license_type.clone(), row.host_license_evaluation)
        };
        let user_count = row.mp_user_count.or_else(|| {
            row.mp_tier
                .as_deref()
                .and_then(crate::domain::tier_user_count)
        });
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
            // Forge's trialEndDate is the site's own trial end; the Marketplace one lags it.
            trial_end: observations.forge_trial_end().or(row.mp_trial_end),
            effective_trial_end: row.effective_trial_end,
            marketplace_status: row.mp_status.clone(),
            synced_at: row.mp_synced_at,
            corroborated: row.license_corroborated,
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
        let forge_environment = row
            .forge_environment_type
            .as_ref()
            .map(|kind| ForgeEnvironment {
                kind: kind.clone(),
                id: row.forge_environment_id.clone(),
            });
        let client_key = row.connect_client_key().map(str::to_owned);
        let key = client_key
            .clone()
            .or_else(|| row.forge_installation_id.clone())
            .unwrap_or_else(|| row.client_key.clone());
        Installation {
            client_key,
            flavour: row.flavour().as_str().to_owned(),
            forge_environment,
            key,
            app_key: row.site.app_key.clone(),
            base_url: row.site.base_url.clone(),
            display_url: row.site.display_url.clone(),
            product_type: row.site.product_type.clone(),
            description: row.site.description.clone(),
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

pub(crate) fn event(e: &EventRow) -> Event {
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

pub(crate) fn audit_entry(a: &AuditRow) -> AuditEntry {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
