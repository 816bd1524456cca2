//! The state of a running service: configuration, database, clients, caches and metrics,
//! built once by [`AppState::new`] and shared by reference with every handler and background
//! task (as [`SharedState`] in actix's `app_data`).

use actix_web::web;
use anyhow::Context;

use crate::config::Config;
use crate::connect::descriptor::Descriptor;
use crate::connect::install_keys::InstallKeys;
use crate::metrics::Metrics;
use crate::store::Db;

/// Everything a handler needs, shared by reference.
pub struct AppState {
    pub config: Config,
    pub app_key: String,
    pub db: Db,
    pub descriptor: Descriptor,
    pub install_keys: InstallKeys,
    /// The one outbound HTTP client (timeouts set, no redirect to another origin:
    /// `http_client`), for the product, the Marketplace and the key servers.
    pub http: reqwest::Client,
    /// The Marketplace reporting API of this app (credentials from `MARKETPLACE_*`).
    pub marketplace: crate::marketplace::Client,
    pub metrics: Metrics,
    /// Asks the background reader of the product's license endpoint to read a site now.
    pub host_refresh: crate::host_license::Trigger,
    /// The Forge License API client, with its own bounds and redirect rule.
    pub forge_license_api: crate::forge::license_api::LicenseApi,
    /// Asks the background reader of the Forge License API to read an installation when due.
    pub forge_license: crate::forge_license::Trigger,
    /// The path of `APP_BASE_URL` ("" for none), stripped before computing a request's qsh.
    pub base_path: String,
    /// Tenants and their grant facts for the request path (no database round trip).
    pub tenants: crate::tenants::TenantCache,
    /// Last-seen time and `lic`, written in the background.
    pub seen: crate::tenants::SeenWriter,
    /// Context tokens whose signature was already checked, with the snapshot that checked it.
    pub verified_tokens: crate::verified_tokens::VerifiedTokens,
    /// Forge Invocation Tokens whose signature was already checked, with the key that checked it.
    pub verified_fits: crate::verified_tokens::VerifiedFits,
    /// The Forge key set, cached; `None` when `FORGE_APP_ID` is unset (the Forge path is off).
    pub forge_keys: Option<crate::forge::keys::ForgeKeys>,
    /// What a FIT must satisfy (`FORGE_APP_ID`, `FORGE_ENVIRONMENTS`, `JWT_LEEWAY_SECS`).
    pub fit_policy: crate::forge::fit::FitPolicy,
    /// Failed admin authentications per client address (admin API and dashboard sign-in).
    pub admin_throttle: crate::routes::auth_throttle::AuthThrottle,
}

pub type SharedState = web::Data<AppState>;

impl AppState {
    /// Connects and migrates the database and builds the clients, without binding anything.
    pub async fn new(config: Config) -> anyhow::Result<AppState> {
        // First: it also installs the TLS provider that database connections may use.
        let http = http_client()?;
        let template = config.descriptor_template()?;
        let app_key = config.resolve_app_key(&template)?;
        let descriptor = Descriptor::new(&template, config.app_base_url.as_str(), &app_key)
            .context("DESCRIPTOR_PATH: invalid descriptor template")?;
        let db = Db::connect(&config.database_url).await?;
        db.migrate().await.context("applying migrations")?;
        let install_keys = InstallKeys::new(config.install_keys_url.clone(), http.clone());
        let marketplace = crate::marketplace::Client::new(&config, &app_key, http.clone());
        let base_path = config.app_base_url.path().trim_end_matches('/').to_owned();
        let tenants = crate::tenants::TenantCache::new(db.clone(), config.secrets.clone());
        let forge_license_api = crate::forge::license_api::LicenseApi::new(&config.forge_api_url)
            .context("building the Forge License API client")?;
        warn_about_secrets(&config, &db).await;
        let forge_keys = config.forge_enabled().then(|| {
            crate::forge::keys::ForgeKeys::with_cooldown(
                config.forge_jwks_url.clone(),
                http.clone(),
                config.forge_jwks_cooldown,
            )
        });
        Ok(AppState {
            forge_keys,
            fit_policy: config.fit_policy(),
            app_key,
            db,
            descriptor,
            install_keys,
            http,
            marketplace,
            metrics: Metrics::new(),
            host_refresh: crate::host_license::trigger(),
            forge_license_api,
            forge_license: crate::forge_license::trigger(),
            base_path,
            tenants,
            seen: Default::default(),
            verified_tokens: crate::verified_tokens::VerifiedTokens::default(),
            verified_fits: crate::verified_tokens::VerifiedFits::default(),
            admin_throttle: crate::routes::auth_throttle::AuthThrottle::new(
                config.admin_auth_max_failures,
                config.admin_auth_window,
            ),
            config,
        })
    }
}

/// The one outbound HTTP client: 5 s to connect, 10 s per request unless a caller sets its
/// own, a `connect-keeper/<version>` user agent, rustls with ring, redirects only within the
/// origin (`http_client`).
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    crate::http_client::default_client().context("building the HTTP client")
}

/// Without `SECRETS_KEY` (docs/configuration.md#secrets_key) secrets are stored as they are,
/// which is said once at start-up; with it, rows still in plain text (written before) are
/// counted, so the operator knows to run `connect-keeper secrets rotate`.
async fn warn_about_secrets(config: &Config, db: &Db) {
    if !config.secrets.is_enabled() {
        tracing::warn!(
            "SECRETS_KEY is unset: tenants' shared secrets are stored unencrypted in the database"
        );
        return;
    }
    use crate::store::installations::{SecretColumn, count_plain};
    let columns = [
        (
            SecretColumn::SharedSecret,
            "shared secrets",
            "on the next install",
        ),
        (
            SecretColumn::ForgeSystemToken,
            "Forge app system tokens",
            "when Forge sends the next one",
        ),
    ];
    for (column, what, when) in columns {
        match count_plain(db, column).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                rows = n,
                "{what} stored unencrypted: they are encrypted {when}, or now by `connect-keeper secrets rotate`"
            ),
            Err(e) => tracing::warn!(error = %e, "counting unencrypted {what} failed"),
        }
    }
}
