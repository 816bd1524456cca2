//! The `installations` table: one row per tenant, written by verified lifecycle callbacks.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::lifecycle_tokens::{Claim, TokenUse, claim};
use super::{Db, WritePool, events};

/// Every column of `installations`. `shared_secret` is here because the middleware and the
/// outbound signer need it; it must never be serialised into a response or log line, which is
/// why this type does not implement `Serialize` and its `Debug` hides the secret.
#[derive(Clone, sqlx::FromRow)]
pub struct InstallationRow {
    pub client_key: String,
    #[sqlx(flatten)]
    pub site: Site,
    pub shared_secret: Option<String>,
    pub installation_id: Option<String>,
    pub service_entitlement_number: Option<String>,
    pub entitlement_id: Option<String>,
    pub entitlement_number: Option<String>,
    pub cloud_id: Option<String>,
    pub status: String,
    pub installed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub uninstalled_at: Option<DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub last_install_iat: Option<i64>,
    pub lic_last_seen: Option<String>,
    pub lic_seen_at: Option<DateTime<Utc>>,
    pub host_license_active: Option<bool>,
    pub host_license_type: Option<String>,
    pub host_license_evaluation: Option<bool>,
    pub host_license_entitlement_id: Option<String>,
    pub host_license_entitlement_number: Option<String>,
    pub host_license_sen: Option<String>,
    pub host_checked_at: Option<DateTime<Utc>>,
    pub host_next_check_at: Option<DateTime<Utc>>,
    pub host_failures: i32,
    pub host_last_error: Option<String>,
    pub mp_license_id: Option<String>,
    pub mp_license_type: Option<String>,
    pub mp_tier: Option<String>,
    pub mp_user_count: Option<i64>,
    pub mp_status: Option<String>,
    pub mp_maintenance_start: Option<DateTime<Utc>>,
    pub mp_maintenance_end: Option<DateTime<Utc>>,
    pub mp_trial_start: Option<DateTime<Utc>>,
    pub mp_trial_end: Option<DateTime<Utc>>,
    pub mp_company: Option<String>,
    pub mp_country: Option<String>,
    pub mp_region: Option<String>,
    pub mp_technical_contact: Option<String>,
    pub mp_billing_contact: Option<String>,
    pub mp_last_updated: Option<DateTime<Utc>>,
    pub mp_synced_at: Option<DateTime<Utc>>,
    pub changed_at: DateTime<Utc>,
    /// Materialised [`crate::licensing::view`], kept current by
    /// [`crate::registry::license_view`] so the admin filters and sorts are plain SQL.
    pub license_state: String,
    pub license_source: Option<String>,
    pub effective_trial_end: Option<DateTime<Utc>>,
    /// `connect`, `connect_on_forge` or `forge` ([`crate::domain::Flavour`]).
    pub flavour: String,
    /// The Forge installation id, lower-case bare uuid; unique when set.
    pub forge_installation_id: Option<String>,
    pub forge_app_id: Option<String>,
    pub forge_environment_type: Option<String>,
    pub forge_environment_id: Option<String>,
    pub forge_api_base_url: Option<String>,
    /// The licence the last Forge Invocation Token carried.
    pub fit_license_active: Option<bool>,
    pub fit_license_evaluation: Option<bool>,
    pub fit_trial_end: Option<DateTime<Utc>>,
    pub fit_license_type: Option<String>,
    pub fit_entitlement_id: Option<String>,
    pub fit_entitlement_number: Option<String>,
    pub fit_license_seen_at: Option<DateTime<Utc>>,
    /// The app system token (sealed like the shared secret); never shown or logged.
    pub forge_system_token: Option<String>,
    pub forge_system_token_expires_at: Option<DateTime<Utc>>,
    /// The Forge License API's last answer, when it was read, and when it may be read again.
    pub forge_api_license_active: Option<bool>,
    pub forge_api_license_evaluation: Option<bool>,
    pub forge_api_license_type: Option<String>,
    pub forge_api_trial_end: Option<DateTime<Utc>>,
    pub forge_api_entitlement_id: Option<String>,
    pub forge_api_entitlement_number: Option<String>,
    pub forge_api_checked_at: Option<DateTime<Utc>>,
    pub forge_api_retry_after: Option<DateTime<Utc>>,
    pub forge_api_failures: i32,
    pub forge_api_last_error: Option<String>,
    /// Materialised [`crate::licensing::LicenseView::corroborated`].
    pub license_corroborated: bool,
}

impl std::fmt::Debug for InstallationRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallationRow")
            .field("client_key", &self.client_key)
            .field("base_url", &self.site.base_url)
            .field("status", &self.status)
            .field("shared_secret", &self.shared_secret.as_ref().map(|_| "***"))
            .field("flavour", &self.flavour)
            .field("forge_installation_id", &self.forge_installation_id)
            .field(
                "forge_system_token",
                &self.forge_system_token.as_ref().map(|_| "***"),
            )
            .finish_non_exhaustive()
    }
}

impl InstallationRow {
    /// What the row records of the tenant's license, as the rules in [`crate::licensing`]
    /// take it: the last `lic`, the product's license, the Marketplace's, the trial end.
    pub fn observations(&self) -> crate::licensing::Observations {
        crate::licensing::Observations {
            lic: self.lic_last_seen.clone(),
            lic_seen_at: self.lic_seen_at,
            host_active: self.host_license_active,
            host_evaluation: self.host_license_evaluation,
            host_checked_at: self.host_checked_at,
            mp_status: self.mp_status.clone(),
            mp_license_type: self.mp_license_type.clone(),
            mp_last_updated: self.mp_last_updated,
            mp_synced_at: self.mp_synced_at,
            mp_trial_end: self.mp_trial_end,
            fit_active: self.fit_license_active,
            fit_evaluation: self.fit_license_evaluation,
            fit_trial_end: self.fit_trial_end,
            fit_seen_at: self.fit_license_seen_at,
            forge_api_active: self.forge_api_license_active,
            forge_api_evaluation: self.forge_api_license_evaluation,
            forge_api_trial_end: self.forge_api_trial_end,
            forge_api_checked_at: self.forge_api_checked_at,
        }
    }

    /// The installation's flavour; an unknown stored value reads as Connect.
    pub fn flavour(&self) -> crate::domain::Flavour {
        crate::domain::Flavour::parse(&self.flavour).unwrap_or(crate::domain::Flavour::Connect)
    }

    /// The Connect clientKey, `None` for an installation only Forge knows (whose key is
    /// internal).
    pub fn connect_client_key(&self) -> Option<&str> {
        (self.flavour() != crate::domain::Flavour::Forge).then_some(self.client_key.as_str())
    }
}

/// What an `installed` callback says of the site and of the app on it; every install writes it
/// again. A Forge-only installation has the site's URL and product from its FIT, and an empty
/// app key.
#[derive(Clone, Debug, Default, sqlx::FromRow)]
pub struct Site {
    pub app_key: String,
    pub base_url: String,
    /// `base_url`'s host, lower case: what search and the frame policy match.
    pub base_host: String,
    pub display_url: Option<String>,
    pub product_type: String,
    pub description: Option<String>,
    pub server_version: Option<String>,
    pub plugins_version: Option<String>,
    pub oauth_client_id: Option<String>,
}

/// The fields a verified `installed` callback writes.
#[derive(Clone)]
pub struct InstallRecord {
    pub client_key: String,
    pub site: Site,
    pub shared_secret: String,
    pub installation_id: Option<String>,
    /// `installation_id` parsed: the lower-case bare uuid of the Forge installation.
    pub forge_installation_id: Option<String>,
    pub service_entitlement_number: Option<String>,
    pub entitlement_id: Option<String>,
    pub entitlement_number: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The change was written (with its event).
    Written,
    /// The token was issued before the last accepted install: a replay or a late duplicate.
    /// Nothing is written, so it cannot roll back a rotated secret.
    Stale,
    /// No such tenant.
    Unknown,
    /// The same signed token was applied before with the same body: a retry, applied once.
    Retry,
    /// The same signed token was applied before with another body: refused, nothing written.
    Replayed,
}

impl From<Claim> for Option<Applied> {
    /// What a token's claim means for the callback: `None` to go on and apply it.
    fn from(c: Claim) -> Self {
        match c {
            Claim::Fresh => None,
            Claim::Retry => Some(Applied::Retry),
            Claim::OtherBody => Some(Applied::Replayed),
        }
    }
}

/// A verified lifecycle callback as the store records it: its token (so that a second
/// presentation is recognised), the token's `iat` (so that an older token cannot undo a newer
/// change), the payload kept in the history, and when it arrived.
#[derive(Debug)]
pub struct Callback<'a> {
    pub token: &'a TokenUse,
    pub iat: i64,
    pub payload: &'a Value,
    pub now: DateTime<Utc>,
}

/// `begin_fresh!(pool, callback)`: opens the write transaction of a lifecycle change and records
/// the callback's token in it. A token seen before returns from the calling function with how it
/// was seen ([`Applied::Retry`] or [`Applied::Replayed`]) and writes nothing else.
macro_rules! begin_fresh {
    ($pool:expr, $cb:expr) => {{
        let mut tx = $pool.begin_write().await?;
        if let Some(seen) = Option::<Applied>::from(claim!(tx, $cb.token, $cb.now)?) {
            return Ok(seen);
        }
        tx
    }};
}

pub async fn get(db: &Db, client_key: &str) -> sqlx::Result<Option<InstallationRow>> {
    super::row_by_key::<InstallationRow>(
        db,
        "SELECT * FROM installations WHERE client_key = $1",
        client_key,
    )
    .await
}

/// Whether a row has this key.
pub async fn exists(db: &Db, client_key: &str) -> sqlx::Result<bool> {
    crate::on_db!(db, |p| {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM installations WHERE client_key = $1")
            .bind(client_key)
            .fetch_one(p)
            .await
            .map(|n| n > 0)
    })
}

/// `$1, $2, …, $n`: the placeholders of an `IN` list of `n` values.
pub(crate) fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Recomputes and stores the materialised license view of these tenants in one write
/// transaction: their rows and grants are read inside it, with the rows locked (`FOR UPDATE`
/// on PostgreSQL; SQLite's write transaction holds the database lock), so a view is never
/// computed from data that a concurrent change has already replaced. Unknown keys are skipped.
/// Keep `client_keys` to a few hundred: each is one bound parameter.
pub async fn refresh_license_views(
    db: &Db,
    client_keys: &[String],
    view: impl Fn(&InstallationRow, &[super::grants::GrantRow]) -> crate::licensing::LicenseView,
) -> sqlx::Result<()> {
    if client_keys.is_empty() {
        return Ok(());
    }
    let list = placeholders(client_keys.len());
    let lock = match db {
        Db::Postgres(_) => " FOR UPDATE",
        Db::Sqlite(_) => "",
    };
    let read_rows = format!("SELECT * FROM installations WHERE client_key IN ({list}){lock}");
    let read_grants =
        format!("SELECT * FROM grants WHERE client_key IN ({list}) ORDER BY created_at, id");
    crate::on_db!(db, |p| {
        let mut tx = p.begin_write().await?;
        let mut q = sqlx::query_as::<_, InstallationRow>(sqlx::AssertSqlSafe(read_rows.as_str()));
        for key in client_keys {
            q = q.bind(key);
        }
        let rows = q.fetch_all(&mut *tx).await?;
        let mut q =
            sqlx::query_as::<_, super::grants::GrantRow>(sqlx::AssertSqlSafe(read_grants.as_str()));
        for key in client_keys {
            q = q.bind(key);
        }
        let mut grants = q.fetch_all(&mut *tx).await?;
        // Each tenant's grants as one run, in creation order within it. Sorted here (stable)
        // rather than by SQL, whose collation need not be byte order.
        grants.sort_by(|a, b| a.client_key.cmp(&b.client_key));
        for row in &rows {
            let start = grants.partition_point(|g| g.client_key < row.client_key);
            let end = start
                + grants[start..]
                    .iter()
                    .take_while(|g| g.client_key == row.client_key)
                    .count();
            let v = view(row, &grants[start..end]);
            sqlx::query(
                "UPDATE installations SET license_state = $2, license_source = $3,
                     effective_trial_end = $4, license_corroborated = $5
                 WHERE client_key = $1",
            )
            .bind(&row.client_key)
            .bind(v.state.as_str())
            .bind(v.source.map(|s| s.as_str()))
            .bind(v.effective_trial_end)
            .bind(v.corroborated)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    })
}

pub async fn count(db: &Db) -> sqlx::Result<i64> {
    crate::on_db!(db, |p| {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM installations")
            .fetch_one(p)
            .await
    })
}

const UPSERT_INSTALL: &str = r#"
INSERT INTO installations (
    client_key, app_key, base_url, base_host, display_url, product_type, description,
    shared_secret, server_version, plugins_version, oauth_client_id, installation_id,
    service_entitlement_number, entitlement_id, entitlement_number, status,
    installed_at, updated_at, uninstalled_at, last_install_iat, changed_at,
    forge_installation_id, flavour)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 'installed',
        $16, $16, NULL, $17, $16,
        $18, CASE WHEN $18 IS NULL THEN 'connect' ELSE 'connect_on_forge' END)
ON CONFLICT (client_key) DO UPDATE SET
    app_key = excluded.app_key,
    base_url = excluded.base_url,
    base_host = excluded.base_host,
    display_url = excluded.display_url,
    product_type = excluded.product_type,
    description = excluded.description,
    shared_secret = excluded.shared_secret,
    server_version = excluded.server_version,
    plugins_version = excluded.plugins_version,
    oauth_client_id = excluded.oauth_client_id,
    -- an `installed` without installationId does not forget the Forge installation
    installation_id = COALESCE(excluded.installation_id, installations.installation_id),
    forge_installation_id = COALESCE(excluded.forge_installation_id,
                                     installations.forge_installation_id),
    flavour = CASE WHEN excluded.forge_installation_id IS NOT NULL
                        OR installations.forge_installation_id IS NOT NULL
                   THEN 'connect_on_forge' ELSE 'connect' END,
    service_entitlement_number = excluded.service_entitlement_number,
    entitlement_id = excluded.entitlement_id,
    entitlement_number = excluded.entitlement_number,
    -- a reinstall keeps enabled/disabled (a site rename sends no `enabled`)
    status = CASE WHEN installations.status IN ('enabled', 'disabled')
                  THEN installations.status ELSE 'installed' END,
    installed_at = CASE WHEN installations.status = 'uninstalled'
                        THEN excluded.installed_at ELSE installations.installed_at END,
    updated_at = excluded.updated_at,
    uninstalled_at = NULL,
    last_install_iat = excluded.last_install_iat,
    changed_at = excluded.changed_at
"#;

/// Upserts the tenant from a verified `installed` and appends the event, atomically. `token`
/// is recorded in the same transaction: a second presentation of it is a retry or a replay
/// (docs/operations.md#lifecycle-replay) and writes nothing.
pub async fn record_install(
    db: &Db,
    rec: &InstallRecord,
    cb: &Callback<'_>,
) -> sqlx::Result<Applied> {
    let now = cb.now;
    crate::on_db!(db, |p| {
        let mut tx = begin_fresh!(p, cb);
        let last: Option<Option<i64>> =
            sqlx::query_scalar("SELECT last_install_iat FROM installations WHERE client_key = $1")
                .bind(&rec.client_key)
                .fetch_optional(&mut *tx)
                .await?;
        if matches!(last, Some(Some(last)) if cb.iat < last) {
            tx.commit().await?; // the token stays recorded
            return Ok(Applied::Stale);
        }
        if let Some(installation_key) = &rec.forge_installation_id {
            // Two installs naming one installation id must take turns (SQLite's write
            // transaction already serialises them; PostgreSQL's BEGIN does not).
            sqlx::query(crate::store::forge::lock_installation_sql(db))
                .bind(installation_key)
                .execute(&mut *tx)
                .await?;
            crate::store::forge::claim_installation_in_tx!(
                tx,
                installation_key,
                &rec.client_key,
                last.is_some(),
                now
            );
        }
        sqlx::query(UPSERT_INSTALL)
            .bind(&rec.client_key)
            .bind(&rec.site.app_key)
            .bind(&rec.site.base_url)
            .bind(&rec.site.base_host)
            .bind(&rec.site.display_url)
            .bind(&rec.site.product_type)
            .bind(&rec.site.description)
            .bind(&rec.shared_secret)
            .bind(&rec.site.server_version)
            .bind(&rec.site.plugins_version)
            .bind(&rec.site.oauth_client_id)
            .bind(&rec.installation_id)
            .bind(&rec.service_entitlement_number)
            .bind(&rec.entitlement_id)
            .bind(&rec.entitlement_number)
            .bind(now)
            .bind(cb.iat)
            .bind(&rec.forge_installation_id)
            .execute(&mut *tx)
            .await?;
        let key = rec.client_key.as_str();
        events::insert(&mut *tx, key, "installed", Some(cb.iat), cb.payload, now).await?;
        tx.commit().await?;
        Ok(Applied::Written)
    })
}

/// Applies `uninstalled`, `enabled` or `disabled` to a known tenant and appends the event.
///
/// `uninstalled` keeps the record and history but erases the shared secret. An `enabled` or
/// `disabled` for an uninstalled tenant is recorded in the history but does not revive it.
/// A signed token older than the last accepted install is stale and changes nothing; so is an
/// `enabled`/`disabled` older than the last one applied (which would otherwise undo a newer
/// change when it is replayed or arrives late). The token is recorded as by [`record_install`].
pub async fn record_transition(
    db: &Db,
    client_key: &str,
    event_type: &str,
    cb: &Callback<'_>,
) -> sqlx::Result<Applied> {
    let now = cb.now;
    let update = match event_type {
        "uninstalled" => {
            "UPDATE installations SET status = 'uninstalled', shared_secret = NULL,
                 uninstalled_at = $2, updated_at = $2, changed_at = $2
             WHERE client_key = $1"
        }
        "enabled" => {
            "UPDATE installations SET status = 'enabled', updated_at = $2, changed_at = $2,
                 last_toggle_iat = $3
             WHERE client_key = $1 AND status <> 'uninstalled'"
        }
        "disabled" => {
            "UPDATE installations SET status = 'disabled', updated_at = $2, changed_at = $2,
                 last_toggle_iat = $3
             WHERE client_key = $1 AND status <> 'uninstalled'"
        }
        other => return Err(sqlx::Error::Protocol(format!("not a transition: {other}"))),
    };
    crate::on_db!(db, |p| {
        let mut tx = begin_fresh!(p, cb);
        let last: Option<(Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT last_install_iat, last_toggle_iat FROM installations WHERE client_key = $1",
        )
        .bind(client_key)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((last_install, last_toggle)) = last else {
            tx.commit().await?; // the token stays recorded
            return Ok(Applied::Unknown);
        };
        let older_than = |last: Option<i64>| matches!(last, Some(last) if cb.iat < last);
        let stale = match event_type {
            "uninstalled" => older_than(last_install),
            _ => older_than(last_toggle),
        };
        if stale {
            tx.commit().await?;
            return Ok(Applied::Stale);
        }
        let mut q = sqlx::query(update).bind(client_key).bind(now);
        if event_type != "uninstalled" {
            q = q.bind(cb.iat); // last_toggle_iat
        }
        q.execute(&mut *tx).await?;
        events::insert(
            &mut *tx,
            client_key,
            event_type,
            Some(cb.iat),
            cb.payload,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Applied::Written)
    })
}

/// The columns of `installations` that hold a secret, encrypted when `SECRETS_KEY` is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretColumn {
    SharedSecret,
    ForgeSystemToken,
}

impl SecretColumn {
    pub const ALL: [SecretColumn; 2] = [SecretColumn::SharedSecret, SecretColumn::ForgeSystemToken];

    /// What a value of the column is, for messages.
    pub fn what(self) -> &'static str {
        match self {
            SecretColumn::SharedSecret => "shared secret",
            SecretColumn::ForgeSystemToken => "Forge system token",
        }
    }
}

/// One stored secret, as `secrets rotate` reads it.
#[derive(Debug, sqlx::FromRow)]
pub struct StoredSecret {
    pub client_key: String,
    /// The key the value is sealed under: the client key, or a system token's Forge
    /// installation id (which stays with the token when the row's client key changes).
    pub row_key: String,
    pub stored: String,
}

/// One page of stored values of `column`, by client key after `after` ("" for the first
/// page): the batches of `secrets rotate`.
pub async fn secrets_page(
    db: &Db,
    column: SecretColumn,
    after: &str,
    limit: usize,
) -> sqlx::Result<Vec<StoredSecret>> {
    let sql = match column {
        SecretColumn::SharedSecret => {
            "SELECT client_key, client_key AS row_key, shared_secret AS stored FROM installations
             WHERE shared_secret IS NOT NULL AND client_key > $1
             ORDER BY client_key LIMIT $2"
        }
        SecretColumn::ForgeSystemToken => {
            "SELECT client_key, forge_installation_id AS row_key, forge_system_token AS stored
             FROM installations
             WHERE client_key > $1 AND forge_system_token IS NOT NULL
               AND forge_installation_id IS NOT NULL
             ORDER BY client_key LIMIT $2"
        }
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    crate::on_db!(db, |p| {
        sqlx::query_as::<_, StoredSecret>(sql)
            .bind(after)
            .bind(limit)
            .fetch_all(p)
            .await
    })
}

/// Replaces a stored value of `column` only if it still is `old` (a compare-and-set, so a
/// rotation never overwrites a value that an install or Forge wrote meanwhile). `changed_at`
/// is not bumped: the plain value is the same, so no cache needs reloading. True when replaced.
pub async fn replace_secret(
    db: &Db,
    column: SecretColumn,
    client_key: &str,
    old: &str,
    new: &str,
) -> sqlx::Result<bool> {
    if column == SecretColumn::ForgeSystemToken {
        return super::forge_license::replace_token(db, client_key, old, new).await;
    }
    crate::on_db!(db, |p| {
        sqlx::query(
            "UPDATE installations SET shared_secret = $3
             WHERE client_key = $1 AND shared_secret = $2",
        )
        .bind(client_key)
        .bind(old)
        .bind(new)
        .execute(p)
        .await
        .map(|r| r.rows_affected() == 1)
    })
}

/// How many stored values of `column` are not encrypted (written while `SECRETS_KEY` was
/// unset): the start-up warning.
pub async fn count_plain(db: &Db, column: SecretColumn) -> sqlx::Result<i64> {
    let sql = match column {
        SecretColumn::SharedSecret => {
            "SELECT COUNT(*) FROM installations
             WHERE shared_secret IS NOT NULL AND shared_secret NOT LIKE 'ck1:%'"
        }
        SecretColumn::ForgeSystemToken => {
            "SELECT COUNT(*) FROM installations
             WHERE forge_system_token IS NOT NULL AND forge_system_token NOT LIKE 'ck1:%'"
        }
    };
    crate::on_db!(db, |p| sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await)
}

/// Client keys whose decision-relevant data changed at or after `since` (cache refresh).
pub async fn changed_since(db: &Db, since: DateTime<Utc>) -> sqlx::Result<Vec<String>> {
    crate::on_db!(db, |p| {
        sqlx::query_scalar::<_, String>(
            "SELECT client_key FROM installations WHERE changed_at >= $1
             UNION SELECT client_key FROM grants WHERE changed_at >= $1
             UNION SELECT redeemed_by FROM access_tokens
                   WHERE changed_at >= $1 AND redeemed_by IS NOT NULL",
        )
        .bind(since)
        .fetch_all(p)
        .await
    })
}

/// Background write of what the middleware saw: last request time and, when the token bound
/// one, the `lic` value. A changed `lic` bumps `changed_at` so that other instances reload
/// the tenant (it is their "last known license" for requests without a bound `lic`); a mere
/// "seen" does not, or every request would churn every cache.
pub async fn record_seen(
    db: &Db,
    client_key: &str,
    seen_at: DateTime<Utc>,
    lic: Option<&str>,
) -> sqlx::Result<()> {
    crate::on_db!(db, |p| {
        sqlx::query(
            "UPDATE installations SET
                 last_seen_at = CASE WHEN last_seen_at IS NULL OR last_seen_at < $2
                                     THEN $2 ELSE last_seen_at END,
                 lic_last_seen = COALESCE($3, lic_last_seen),
                 lic_seen_at = CASE WHEN $3 IS NULL THEN lic_seen_at ELSE $2 END,
                 changed_at = CASE WHEN $3 IS NOT NULL AND $3 <> COALESCE(lic_last_seen, '')
                                   THEN $4 ELSE changed_at END
             WHERE client_key = $1",
        )
        .bind(client_key)
        .bind(seen_at)
        .bind(lic)
        .bind(super::now())
        .execute(p)
        .await
        .map(|_| ())
    })?;
    Ok(())
}

/// A row for the crate's unit tests of views built from the whole row (no database needed).
/// Code that needs only license data or a tenant builds [`crate::licensing::Observations`] or
/// a [`crate::tenants::TenantSnapshot`] instead.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::InstallationRow;
    use chrono::{TimeZone, Utc};

    pub fn blank_row(client_key: &str) -> InstallationRow {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        InstallationRow {
            client_key: client_key.into(),
            site: super::Site {
                app_key: "app".into(),
                base_url: "https://example.atlassian.net".into(),
                base_host: "example.atlassian.net".into(),
                product_type: "jira".into(),
                ..Default::default()
            },
            shared_secret: Some("secret".into()),
            installation_id: None,
            service_entitlement_number: None,
            entitlement_id: None,
            entitlement_number: None,
            cloud_id: None,
            status: "enabled".into(),
            installed_at: t0,
            updated_at: t0,
            uninstalled_at: None,
            last_seen_at: None,
            last_install_iat: None,
            lic_last_seen: None,
            lic_seen_at: None,
            host_license_active: None,
            host_license_type: None,
            host_license_evaluation: None,
            host_license_entitlement_id: None,
            host_license_entitlement_number: None,
            host_license_sen: None,
            host_checked_at: None,
            host_next_check_at: None,
            host_failures: 0,
            host_last_error: None,
            mp_license_id: None,
            mp_license_type: None,
            mp_tier: None,
            mp_user_count: None,
            mp_status: None,
            mp_maintenance_start: None,
            mp_maintenance_end: None,
            mp_trial_start: None,
            mp_trial_end: None,
            mp_company: None,
            mp_country: None,
            mp_region: None,
            mp_technical_contact: None,
            mp_billing_contact: None,
            mp_last_updated: None,
            mp_synced_at: None,
            changed_at: t0,
            license_state: "unlicensed".into(),
            license_source: None,
            effective_trial_end: None,
            flavour: "connect".into(),
            forge_installation_id: None,
            forge_app_id: None,
            forge_environment_type: None,
            forge_environment_id: None,
            forge_api_base_url: None,
            fit_license_active: None,
            fit_license_evaluation: None,
            fit_trial_end: None,
            fit_license_type: None,
            fit_entitlement_id: None,
            fit_entitlement_number: None,
            fit_license_seen_at: None,
            forge_system_token: None,
            forge_system_token_expires_at: None,
            forge_api_license_active: None,
            forge_api_license_evaluation: None,
            forge_api_license_type: None,
            forge_api_trial_end: None,
            forge_api_entitlement_id: None,
            forge_api_entitlement_number: None,
            forge_api_checked_at: None,
            forge_api_retry_after: None,
            forge_api_failures: 0,
            forge_api_last_error: None,
            license_corroborated: false,
        }
    }
}
