//! SQL of Forge installations: finding a row by Forge installation id, registering or linking
//! an installation at first sight, re-keying a Forge-only row when a Connect `installed` names
//! it, the licence a FIT carried, and events of Forge installations (docs/forge.md).
//!
//! Rows stay keyed by `client_key`, the key of everything that hangs off an installation
//! (grants, events, audit entries, access tokens, Marketplace rows). A row only Forge knows has
//! the internal key [`internal_key`] (`forge:<installation uuid>`) that no response shows.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Db, WritePool, events};

/// The history entry of an installation registered at first sight by a FIT.
pub const REGISTERED_EVENT: &str = "forge_registered";
/// The history entry of an existing installation that a FIT's new installation id was linked to
/// (a Connect tenant moving to Forge, a site reinstalling the Forge app).
pub const LINKED_EVENT: &str = "forge_linked";

/// The prefix of the internal key of an installation that has no Connect clientKey.
pub const INTERNAL_KEY_PREFIX: &str = "forge:";

/// The internal key of a Forge-only installation first seen with this installation id (the
/// lower-case bare uuid). It stays the row's key when the site reinstalls.
pub fn internal_key(installation_key: &str) -> String {
    format!("{INTERNAL_KEY_PREFIX}{installation_key}")
}

/// What a verified FIT says about its installation: the input of [`register`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sighting {
    /// Lower-case bare uuid.
    pub installation_key: String,
    /// The ARI form, shown as `installation_id`.
    pub installation_ari: String,
    pub app_id: String,
    pub environment_type: String,
    pub environment_id: Option<String>,
    pub cloud_id: Option<String>,
    /// `jira`, `confluence`, … (the installation context's `name`).
    pub product: Option<String>,
    pub site_url: Option<String>,
    pub api_base_url: Option<String>,
    /// The app key Marketplace rows carry (`APP_KEY`): a Forge row joins them by
    /// (`cloudId`, app key) like a Connect tenant.
    pub app_key: String,
}

/// What [`register`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Registered {
    /// Another request registered it first.
    Known(String),
    /// An existing installation of the same site and product now carries this installation id.
    Linked {
        client_key: String,
        previous_installation_id: Option<String>,
    },
    /// A new Forge-only installation.
    Created(String),
}

impl Registered {
    pub fn client_key(&self) -> &str {
        match self {
            Registered::Known(k) | Registered::Created(k) => k,
            Registered::Linked { client_key, .. } => client_key,
        }
    }
}

/// The row holding this Forge installation id (lower-case bare uuid).
pub async fn client_key_by_installation(
    db: &Db,
    installation_key: &str,
) -> sqlx::Result<Option<String>> {
    crate::on_db!(db, |p| {
        sqlx::query_scalar::<_, String>(
            "SELECT client_key FROM installations WHERE forge_installation_id = $1",
        )
        .bind(installation_key)
        .fetch_optional(p)
        .await
    })
}

/// The candidate row of a site: same `cloud_id` and product (or a row whose product is not
/// known), installed ones first, then the most recently updated.
const SAME_SITE: &str = "SELECT client_key, forge_installation_id FROM installations
    WHERE cloud_id = $1 AND ($2 = '' OR lower(product_type) = $2 OR product_type = '')
    ORDER BY CASE WHEN status = 'uninstalled' THEN 1 ELSE 0 END, updated_at DESC, client_key
    LIMIT 1";

const LINK: &str = "UPDATE installations SET
        forge_installation_id = $2,
        installation_id = $3,
        forge_app_id = $4,
        forge_environment_type = $5,
        forge_environment_id = $6,
        forge_api_base_url = COALESCE($7, forge_api_base_url),
        flavour = CASE WHEN flavour = 'connect' THEN 'connect_on_forge' ELSE flavour END,
        -- a new installation id on a site whose app was uninstalled is a reinstall
        status = CASE WHEN status = 'uninstalled' THEN 'installed' ELSE status END,
        uninstalled_at = CASE WHEN status = 'uninstalled' THEN NULL ELSE uninstalled_at END,
        updated_at = $8,
        changed_at = $8
    WHERE client_key = $1";

const CREATE: &str = "INSERT INTO installations (
        client_key, app_key, base_url, base_host, product_type, installation_id, cloud_id,
        status, installed_at, updated_at, changed_at, flavour, forge_installation_id,
        forge_app_id, forge_environment_type, forge_environment_id, forge_api_base_url)
    VALUES ($1, $2, $3, $4, $5, $6, $7, 'installed', $8, $8, $8, 'forge', $9, $10, $11, $12, $13)";

/// Registers the installation of a verified FIT seen for the first time, in one write
/// transaction: linked to the installation of the same site (`cloud_id`) and product when
/// there is one — a Connect tenant moving to Forge, or a Forge site that reinstalled (new
/// installation id) — so that its grants, tokens, trial extensions, audit trail and
/// Marketplace data stay; otherwise a new Forge-only row (status `installed`). The event is
/// appended to the installation's history.
pub async fn register(db: &Db, s: &Sighting, now: DateTime<Utc>) -> sqlx::Result<Registered> {
    let result = register_once(db, s, now).await;
    match result {
        // Another instance inserted it between our look-up and our insert (PostgreSQL's
        // BEGIN does not serialise writers the way SQLite's BEGIN IMMEDIATE does).
        Err(e) if super::is_unique_violation(&e) => {
            match client_key_by_installation(db, &s.installation_key).await? {
                Some(k) => Ok(Registered::Known(k)),
                None => Err(e),
            }
        }
        other => other,
    }
}

async fn register_once(db: &Db, s: &Sighting, now: DateTime<Utc>) -> sqlx::Result<Registered> {
    let product = s.product.as_deref().unwrap_or("").to_ascii_lowercase();
    let base_url = s
        .site_url
        .as_deref()
        .map(|u| u.trim_end_matches('/').to_owned())
        .unwrap_or_default();
    let base_host = crate::domain::host_of(&base_url).unwrap_or_default();
    let lock = lock_installation_sql(db);
    crate::on_db!(db, |p| {
        let mut tx = p.begin_write().await?;
        sqlx::query(lock)
            .bind(&s.installation_key)
            .execute(&mut *tx)
            .await?;
        let known: Option<String> = sqlx::query_scalar(
            "SELECT client_key FROM installations WHERE forge_installation_id = $1",
        )
        .bind(&s.installation_key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(k) = known {
            return Ok(Registered::Known(k));
        }
        let site: Option<(String, Option<String>)> = match &s.cloud_id {
            Some(cloud_id) => {
                sqlx::query_as(SAME_SITE)
                    .bind(cloud_id)
                    .bind(&product)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            None => None,
        };
        let registered = match site {
            Some((client_key, previous)) => {
                sqlx::query(LINK)
                    .bind(&client_key)
                    .bind(&s.installation_key)
                    .bind(&s.installation_ari)
                    .bind(&s.app_id)
                    .bind(&s.environment_type)
                    .bind(&s.environment_id)
                    .bind(&s.api_base_url)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                Registered::Linked {
                    client_key,
                    previous_installation_id: previous,
                }
            }
            None => {
                let client_key = internal_key(&s.installation_key);
                sqlx::query(CREATE)
                    .bind(&client_key)
                    .bind(&s.app_key)
                    .bind(&base_url)
                    .bind(&base_host)
                    .bind(&product)
                    .bind(&s.installation_ari)
                    .bind(&s.cloud_id)
                    .bind(now)
                    .bind(&s.installation_key)
                    .bind(&s.app_id)
                    .bind(&s.environment_type)
                    .bind(&s.environment_id)
                    .bind(&s.api_base_url)
                    .execute(&mut *tx)
                    .await?;
                Registered::Created(client_key)
            }
        };
        let (event, previous) = match &registered {
            Registered::Linked {
                previous_installation_id,
                ..
            } => (LINKED_EVENT, previous_installation_id.clone()),
            _ => (REGISTERED_EVENT, None),
        };
        let payload = serde_json::json!({
            "installationId": s.installation_ari,
            "previousInstallationId": previous,
            "cloudId": s.cloud_id,
            "product": s.product,
            "environment": {"type": s.environment_type, "id": s.environment_id},
        });
        events::insert(
            &mut *tx,
            registered.client_key(),
            event,
            None,
            &payload,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(registered)
    })
}

/// Statements that move everything hanging off installation `$1` to `$2` (`$3` = now).
/// Grants and tokens bump `changed_at` so other instances reload the tenant that got them.
pub(crate) const MOVE_CHILDREN: [&str; 7] = [
    "UPDATE lifecycle_events SET client_key = $2 WHERE client_key = $1 AND $3 IS NOT NULL",
    "UPDATE grants SET client_key = $2, changed_at = $3 WHERE client_key = $1",
    "UPDATE access_tokens SET client_key = $2, changed_at = $3 WHERE client_key = $1",
    "UPDATE access_tokens SET redeemed_by = $2, changed_at = $3 WHERE redeemed_by = $1",
    "UPDATE audit_log SET client_key = $2 WHERE client_key = $1 AND $3 IS NOT NULL",
    "UPDATE marketplace_licenses SET client_key = $2 WHERE client_key = $1 AND $3 IS NOT NULL",
    "UPDATE marketplace_licenses_staging SET client_key = $2
     WHERE client_key = $1 AND $3 IS NOT NULL",
];

/// The Forge columns a Forge-only row hands over when it is merged into a Connect tenant
/// (only where the tenant has none of its own).
pub(crate) const ABSORB: &str = "UPDATE installations SET
        forge_installation_id = $2,
        installation_id = COALESCE(installation_id, $3),
        forge_app_id = COALESCE(forge_app_id, $4),
        forge_environment_type = COALESCE(forge_environment_type, $5),
        forge_environment_id = COALESCE(forge_environment_id, $6),
        forge_api_base_url = COALESCE(forge_api_base_url, $7),
        cloud_id = COALESCE(cloud_id, $8),
        fit_license_active = COALESCE(fit_license_active, $9),
        fit_license_evaluation = COALESCE(fit_license_evaluation, $10),
        fit_trial_end = COALESCE(fit_trial_end, $11),
        fit_license_type = COALESCE(fit_license_type, $12),
        fit_entitlement_id = COALESCE(fit_entitlement_id, $13),
        fit_entitlement_number = COALESCE(fit_entitlement_number, $14),
        fit_license_seen_at = COALESCE(fit_license_seen_at, $15),
        forge_system_token = COALESCE(forge_system_token, $16),
        forge_system_token_expires_at = COALESCE(forge_system_token_expires_at, $17),
        changed_at = $18
    WHERE client_key = $1";

pub(crate) type Absorbed = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<bool>,
    Option<bool>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<DateTime<Utc>>,
);

pub(crate) const READ_ABSORBED: &str =
    "SELECT forge_installation_id, installation_id, forge_app_id,
        forge_environment_type, forge_environment_id, forge_api_base_url, cloud_id,
        fit_license_active, fit_license_evaluation, fit_trial_end, fit_license_type,
        fit_entitlement_id, fit_entitlement_number, fit_license_seen_at, forge_system_token,
        forge_system_token_expires_at
    FROM installations WHERE client_key = $1";

/// Inside [`super::installations::record_install`]'s transaction, before its upsert: a Connect
/// `installed` names Forge installation `installation_key` for `client_key`. A Forge-only row
/// holding that id becomes this tenant — renamed to `client_key` when the tenant is new,
/// merged into it (history, grants, tokens, audit and Marketplace rows moved, Forge columns
/// carried over, the Forge-only row deleted) when it exists. Another Connect tenant holding the
/// id loses it: the newest signed install says whose it is. Returns the key that went away.
macro_rules! claim_installation_in_tx {
    ($tx:expr, $installation_key:expr, $client_key:expr, $tenant_exists:expr, $now:expr) => {{
        let holder: Option<(String, String)> = sqlx::query_as(
            "SELECT client_key, flavour FROM installations
             WHERE forge_installation_id = $1 AND client_key <> $2",
        )
        .bind($installation_key)
        .bind($client_key)
        .fetch_optional(&mut *$tx)
        .await?;
        match holder {
            Some((old_key, flavour)) if flavour == "forge" => {
                // Merged: the Forge columns are read before the Forge-only row goes, and
                // written onto the tenant once everything hanging off the row has moved.
                // Renamed: the row itself takes the new key.
                let absorbed = if $tenant_exists {
                    let a: $crate::store::forge::Absorbed =
                        sqlx::query_as($crate::store::forge::READ_ABSORBED)
                            .bind(&old_key)
                            .fetch_one(&mut *$tx)
                            .await?;
                    sqlx::query("DELETE FROM installations WHERE client_key = $1")
                        .bind(&old_key)
                        .execute(&mut *$tx)
                        .await?;
                    Some(a)
                } else {
                    sqlx::query(
                        "UPDATE installations SET client_key = $2, changed_at = $3
                         WHERE client_key = $1",
                    )
                    .bind(&old_key)
                    .bind($client_key)
                    .bind($now)
                    .execute(&mut *$tx)
                    .await?;
                    None
                };
                for sql in $crate::store::forge::MOVE_CHILDREN {
                    sqlx::query(sql)
                        .bind(&old_key)
                        .bind($client_key)
                        .bind($now)
                        .execute(&mut *$tx)
                        .await?;
                }
                if let Some(a) = absorbed {
                    sqlx::query($crate::store::forge::ABSORB)
                        .bind($client_key)
                        .bind(a.0)
                        .bind(a.1)
                        .bind(a.2)
                        .bind(a.3)
                        .bind(a.4)
                        .bind(a.5)
                        .bind(a.6)
                        .bind(a.7)
                        .bind(a.8)
                        .bind(a.9)
                        .bind(a.10)
                        .bind(a.11)
                        .bind(a.12)
                        .bind(a.13)
                        .bind(a.14)
                        .bind(a.15)
                        .bind($now)
                        .execute(&mut *$tx)
                        .await?;
                }
                Some(old_key)
            }
            Some((old_key, _)) => {
                sqlx::query(
                    "UPDATE installations SET forge_installation_id = NULL, changed_at = $2
                     WHERE client_key = $1",
                )
                .bind(&old_key)
                .bind($now)
                .execute(&mut *$tx)
                .await?;
                Some(old_key)
            }
            None => None,
        }
    }};
}
pub(crate) use claim_installation_in_tx;

/// Inside a write transaction, waits for any other one working on installation id `$1`:
/// a transaction-scoped advisory lock on PostgreSQL; on SQLite the write transaction already
/// holds the database lock, so the statement only reads its argument.
pub(crate) fn lock_installation_sql(db: &Db) -> &'static str {
    match db {
        Db::Postgres(_) => "SELECT pg_advisory_xact_lock(hashtext($1))",
        Db::Sqlite(_) => "SELECT length($1)",
    }
}

/// Background write of the licence the FITs of an installation carry (never on the request
/// path): the `fit_*` columns, and the entitlement id/number the Marketplace join uses. A
/// changed licence bumps `changed_at` (`changed`) so other instances reload the tenant.
pub async fn record_fit_license(
    db: &Db,
    client_key: &str,
    seen_at: DateTime<Utc>,
    license: &crate::forge::fit::FitLicense,
    changed: bool,
) -> sqlx::Result<()> {
    crate::on_db!(db, |p| {
        sqlx::query(
            "UPDATE installations SET
                 fit_license_active = $2, fit_license_evaluation = $3, fit_license_type = $5,
                 fit_trial_end = $4,
                 fit_entitlement_id = $6, fit_entitlement_number = $7,
                 fit_license_seen_at = $8,
                 entitlement_id = COALESCE($6, entitlement_id),
                 entitlement_number = COALESCE($7, entitlement_number),
                 last_seen_at = CASE WHEN last_seen_at IS NULL OR last_seen_at < $8
                                     THEN $8 ELSE last_seen_at END,
                 changed_at = CASE WHEN $9 THEN $10 ELSE changed_at END
             WHERE client_key = $1",
        )
        .bind(client_key)
        .bind(license.active)
        .bind(license.evaluation)
        .bind(license.trial_end)
        .bind(&license.license_type)
        .bind(&license.entitlement_id)
        .bind(&license.entitlement_number)
        .bind(seen_at)
        .bind(changed)
        .bind(super::now())
        .execute(p)
        .await
        .map(|_| ())
    })
}

/// A status change that a Forge event brings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusChange {
    /// `installed` again (and `uninstalled_at` cleared): `avi:forge:installed:app`.
    Installed,
    /// `uninstalled`, `uninstalled_at` set: the admin started an uninstall.
    Uninstalled,
}

/// Appends a Forge event to an installation's history and applies its status change, in one
/// write transaction; `last_seen_at` moves to `now`. False when there is no such installation.
pub async fn record_event(
    db: &Db,
    client_key: &str,
    event_type: &str,
    change: Option<StatusChange>,
    payload: &Value,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let update = match change {
        None => {
            "UPDATE installations SET
                 last_seen_at = CASE WHEN last_seen_at IS NULL OR last_seen_at < $2
                                     THEN $2 ELSE last_seen_at END
             WHERE client_key = $1"
        }
        Some(StatusChange::Installed) => {
            "UPDATE installations SET
                 status = CASE WHEN status IN ('enabled', 'disabled') THEN status
                               ELSE 'installed' END,
                 installed_at = CASE WHEN status = 'uninstalled' THEN $2 ELSE installed_at END,
                 uninstalled_at = NULL, last_seen_at = $2, updated_at = $2, changed_at = $2
             WHERE client_key = $1"
        }
        Some(StatusChange::Uninstalled) => {
            "UPDATE installations SET status = 'uninstalled', uninstalled_at = $2,
                 last_seen_at = $2, updated_at = $2, changed_at = $2
             WHERE client_key = $1"
        }
    };
    crate::on_db!(db, |p| {
        let mut tx = p.begin_write().await?;
        let n = sqlx::query(update)
            .bind(client_key)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        events::insert(&mut *tx, client_key, event_type, None, payload, now).await?;
        tx.commit().await?;
        Ok(true)
    })
}
