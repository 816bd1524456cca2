//! Configuration from environment variables (docs/configuration.md).
//!
//! `Config::from_lookup` takes a lookup function so tests never touch the process
//! environment. Every bad value stops start-up with an error naming the variable and value.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;
use url::Url;

use crate::forge::ids::{AppId, EnvironmentType};

/// The key of the built-in descriptor, used when `APP_KEY` is unset.
pub fn descriptor_key(template: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(template)
        .ok()?
        .get("key")?
        .as_str()
        .map(str::to_owned)
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Where the database lives. The password of a PostgreSQL URL is redacted in `Debug`.
#[derive(Clone)]
pub enum DatabaseUrl {
    Sqlite(String),
    Postgres(SecretString),
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseUrl::Sqlite(u) => write!(f, "{u}"),
            DatabaseUrl::Postgres(s) => {
                use secrecy::ExposeSecret;
                match Url::parse(s.expose_secret()) {
                    Ok(mut u) => {
                        if u.password().is_some() {
                            let _ = u.set_password(Some("***"));
                        }
                        write!(f, "{u}")
                    }
                    Err(_) => write!(f, "postgres://***"),
                }
            }
        }
    }
}

impl DatabaseUrl {
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.starts_with("sqlite:") {
            Ok(DatabaseUrl::Sqlite(value.to_owned()))
        } else if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            Url::parse(value).map_err(|e| e.to_string())?;
            Ok(DatabaseUrl::Postgres(SecretString::from(value.to_owned())))
        } else {
            Err("unknown scheme: expected sqlite:// or postgres://".into())
        }
    }
}

#[derive(Clone, Debug)]
pub struct MarketplaceCredentials {
    pub vendor_id: String,
    pub user: String,
    pub api_token: SecretString,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: DatabaseUrl,
    pub bind_addr: SocketAddr,
    pub app_base_url: Url,
    /// `None` means "the key of the descriptor template".
    pub app_key: Option<String>,
    pub install_keys_url: Url,
    pub admin_token: Option<SecretString>,
    pub jwt_leeway_secs: u64,
    pub host_license_refresh: Duration,
    pub license_enforcement: bool,
    /// `LIC_TRUST`: `request` (default) or `corroborated` (docs/licensing.md#lic_trust).
    pub lic_trust: crate::licensing::LicTrust,
    pub marketplace_url: Url,
    pub marketplace: Option<MarketplaceCredentials>,
    pub marketplace_sync_interval: Duration,
    pub log_format: LogFormat,
    pub descriptor_path: Option<String>,
    /// `SECRETS_KEY`: the keys that encrypt secrets at rest (empty: stored as they are).
    pub secrets: std::sync::Arc<crate::secrets::Keyring>,
    /// `FORGE_APP_ID`: the Forge app ids whose FITs are accepted; empty turns the Forge path
    /// off (a `Bearer` token is then refused).
    pub forge_app_ids: Vec<AppId>,
    /// `FORGE_JWKS_URL`: the key set that signs FITs.
    pub forge_jwks_url: Url,
    /// `FORGE_ENVIRONMENTS`: the `app.environment.type` values accepted.
    pub forge_environments: Vec<EnvironmentType>,
    /// `FORGE_API_URL`: where the Forge License API lives.
    pub forge_api_url: Url,
    /// How often another process's changes are picked up (within 5 s: docs/configuration.md#fixed-timings). Not an
    /// environment variable; tests may shorten it.
    pub cache_refresh: Duration,
    /// First retry delay after a failed read of a product's license endpoint or tenant_info;
    /// it doubles per failure up to `host_license_refresh`. Not an environment variable;
    /// tests shorten it.
    pub host_retry_base: Duration,
    /// Timeout of one Marketplace page request. Not an environment variable; tests shorten it.
    pub marketplace_timeout: Duration,
    /// First retry delay of a Marketplace page that failed with a 5xx or a network error
    /// (two retries, doubling). Not an environment variable; tests shorten it.
    pub marketplace_retry_base: Duration,
    /// The least time between two fetches of the Forge key set (30 s). Not an environment
    /// variable; tests shorten it.
    pub forge_jwks_cooldown: Duration,
    /// The least time between two reads of the Forge License API for one installation:
    /// Atlassian's limit, 5 minutes. Not an environment variable; tests shorten it.
    pub forge_license_min_interval: Duration,
    /// How long a request body may take to arrive before it is dropped with `408`
    /// (docs/security.md#request-bodies). Not an environment variable; tests shorten it.
    pub body_timeout: Duration,
    /// Failed admin authentications allowed per client address within
    /// [`Config::admin_auth_window`] before further attempts get `429`. Not an environment
    /// variable.
    pub admin_auth_max_failures: u32,
    /// The window of [`Config::admin_auth_max_failures`]. Not an environment variable; tests
    /// shorten it.
    pub admin_auth_window: Duration,
}

/// The shortest `ADMIN_TOKEN` accepted at start-up.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

impl Config {
    /// The descriptor template: the file at `DESCRIPTOR_PATH`, else the built-in one.
    pub fn descriptor_template(&self) -> anyhow::Result<String> {
        match &self.descriptor_path {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("DESCRIPTOR_PATH={path:?}: cannot read the file")),
            None => Ok(crate::connect::descriptor::BUILTIN_TEMPLATE.to_owned()),
        }
    }

    /// The app key: `APP_KEY`, else the `"key"` of the descriptor `template`.
    pub fn resolve_app_key(&self, template: &str) -> anyhow::Result<String> {
        match &self.app_key {
            Some(k) => Ok(k.clone()),
            None => descriptor_key(template)
                .context("the descriptor template has no \"key\" and APP_KEY is unset"),
        }
    }

    /// Whether FITs are accepted at all (`FORGE_APP_ID` set).
    pub fn forge_enabled(&self) -> bool {
        !self.forge_app_ids.is_empty()
    }

    /// What a FIT must satisfy, from the Forge variables and `JWT_LEEWAY_SECS`.
    pub fn fit_policy(&self) -> crate::forge::fit::FitPolicy {
        crate::forge::fit::FitPolicy {
            app_ids: self.forge_app_ids.clone(),
            environments: self.forge_environments.clone(),
            leeway_secs: self.jwt_leeway_secs,
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &'static str| get(name).filter(|v| !v.is_empty());
        let err = |var: &'static str, value: &str, reason: String| ConfigError {
            var,
            value: value.to_owned(),
            reason,
        };
        let url = |name: &'static str, default: &str| -> Result<Url, ConfigError> {
            let v = var(name).unwrap_or_else(|| default.to_owned());
            let u = Url::parse(&v).map_err(|e| err(name, &v, e.to_string()))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(err(name, &v, "expected an http(s) URL".into()));
            }
            Ok(u)
        };
        let secs = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match var(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| err(name, &v, "expected a whole number of seconds >= 0".into())),
            }
        };
        let positive = |name: &'static str, default: u64| -> Result<Duration, ConfigError> {
            let n = secs(name, default)?;
            if n == 0 {
                return Err(err(name, "0", "must be at least 1".into()));
            }
            Ok(Duration::from_secs(n))
        };

        let database_url = {
            let v = var("DATABASE_URL").unwrap_or_else(|| "sqlite://data/connect-keeper.db".into());
            DatabaseUrl::parse(&v).map_err(|reason| {
                // Never echo a PostgreSQL URL: it may hold a password.
                let shown = if v.starts_with("sqlite:") {
                    v.clone()
                } else {
                    redact(&v)
                };
                err("DATABASE_URL", &shown, reason)
            })?
        };
        let bind_addr = {
            let v = var("BIND_ADDR").unwrap_or_else(|| "127.0.0.1:8080".into());
            v.parse::<SocketAddr>()
                .map_err(|e| err("BIND_ADDR", &v, e.to_string()))?
        };
        let app_base_url = url("APP_BASE_URL", "http://localhost:8080")?;
        let app_key = match var("APP_KEY") {
            None => None,
            Some(k) => {
                let ok = !k.is_empty()
                    && k.len() <= 64
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
                if !ok {
                    return Err(err(
                        "APP_KEY",
                        &k,
                        "expected 1..=64 of [A-Za-z0-9-._]".into(),
                    ));
                }
                Some(k)
            }
        };
        let install_keys_url = url(
            "INSTALL_KEYS_URL",
            "https://connect-install-keys.atlassian.com",
        )?;
        let admin_token = match var("ADMIN_TOKEN") {
            None => None,
            // A short token can be guessed; never echo the value.
            Some(v) if v.chars().count() < MIN_ADMIN_TOKEN_CHARS => {
                return Err(err(
                    "ADMIN_TOKEN",
                    "***",
                    format!(
                        "must be at least {MIN_ADMIN_TOKEN_CHARS} characters (got {}); \
                         `openssl rand -hex 32` makes one, or leave it unset and use \
                         `connect-keeper admin-token create`",
                        v.chars().count()
                    ),
                ));
            }
            Some(v) => Some(SecretString::from(v)),
        };
        let jwt_leeway_secs = secs("JWT_LEEWAY_SECS", 30)?;
        let host_license_refresh = positive("HOST_LICENSE_REFRESH_SECS", 3600)?;
        let license_enforcement = match var("LICENSE_ENFORCEMENT").as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(v) => return Err(err("LICENSE_ENFORCEMENT", v, "expected on or off".into())),
        };
        let lic_trust = match var("LIC_TRUST") {
            None => crate::licensing::LicTrust::default(),
            Some(v) => crate::licensing::LicTrust::parse(&v)
                .ok_or_else(|| err("LIC_TRUST", &v, "expected request or corroborated".into()))?,
        };
        let marketplace_url = url("MARKETPLACE_URL", "https://marketplace.atlassian.com")?;
        let marketplace = match (
            var("MARKETPLACE_VENDOR_ID"),
            var("MARKETPLACE_USER"),
            var("MARKETPLACE_API_TOKEN"),
        ) {
            (Some(vendor_id), Some(user), Some(token)) => {
                if !vendor_id.chars().all(|c| c.is_ascii_digit()) {
                    return Err(err(
                        "MARKETPLACE_VENDOR_ID",
                        &vendor_id,
                        "expected the numeric vendor id".into(),
                    ));
                }
                Some(MarketplaceCredentials {
                    vendor_id,
                    user,
                    api_token: SecretString::from(token),
                })
            }
            _ => None,
        };
        let marketplace_sync_interval = positive("MARKETPLACE_SYNC_INTERVAL_SECS", 3600)?;
        let log_format = match var("LOG_FORMAT").as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(v) => return Err(err("LOG_FORMAT", v, "expected pretty or json".into())),
        };
        let descriptor_path = var("DESCRIPTOR_PATH");
        let secrets = match var("SECRETS_KEY") {
            None => crate::secrets::Keyring::empty(),
            // Never echo the value: it is the key.
            Some(v) => crate::secrets::Keyring::parse(&v)
                .map_err(|reason| err("SECRETS_KEY", "***", reason))?,
        };
        // A comma-separated list of at least one item, each parsed by `item` (or refused as not
        // `expected`), duplicates dropped; `default` when the variable is unset.
        fn list_of<T: PartialEq>(
            var: &'static str,
            value: Option<String>,
            default: Vec<T>,
            item: impl Fn(&str) -> Option<T>,
            expected: &str,
            what: &str,
        ) -> Result<Vec<T>, ConfigError> {
            let Some(value) = value else {
                return Ok(default);
            };
            let refuse = |reason| ConfigError {
                var,
                value: value.clone(),
                reason,
            };
            let mut items = Vec::new();
            for raw in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let parsed =
                    item(raw).ok_or_else(|| refuse(format!("{raw:?} is not {expected}")))?;
                if !items.contains(&parsed) {
                    items.push(parsed);
                }
            }
            if items.is_empty() {
                return Err(refuse(format!("no {what} in the list")));
            }
            Ok(items)
        }
        let forge_app_ids = list_of(
            "FORGE_APP_ID",
            var("FORGE_APP_ID"),
            Vec::new(),
            AppId::parse,
            "ari:cloud:ecosystem::app/<uuid> or a bare uuid",
            "app id",
        )?;
        let forge_jwks_url = url(
            "FORGE_JWKS_URL",
            "https://forge.cdn.prod.atlassian-dev.net/.well-known/jwks.json",
        )?;
        let forge_environments = list_of(
            "FORGE_ENVIRONMENTS",
            var("FORGE_ENVIRONMENTS"),
            vec![EnvironmentType::Production],
            EnvironmentType::parse,
            "DEVELOPMENT, STAGING or PRODUCTION",
            "environment",
        )?;
        let forge_api_url = url("FORGE_API_URL", "https://api.atlassian.com")?;
        Ok(Config {
            forge_app_ids,
            forge_jwks_url,
            forge_environments,
            forge_api_url,
            database_url,
            bind_addr,
            app_base_url,
            app_key,
            install_keys_url,
            admin_token,
            jwt_leeway_secs,
            host_license_refresh,
            license_enforcement,
            lic_trust,
            marketplace_url,
            marketplace,
            marketplace_sync_interval,
            log_format,
            descriptor_path,
            secrets: std::sync::Arc::new(secrets),
            cache_refresh: Duration::from_secs(2),
            host_retry_base: Duration::from_secs(30),
            marketplace_timeout: Duration::from_secs(30),
            marketplace_retry_base: Duration::from_secs(1),
            forge_jwks_cooldown: crate::forge::keys::REFETCH_COOLDOWN,
            forge_license_min_interval: crate::forge::license_api::MIN_INTERVAL,
            body_timeout: Duration::from_secs(10),
            admin_auth_max_failures: 100,
            admin_auth_window: Duration::from_secs(60),
        })
    }
}

/// A database URL fit for an error message: no password, even when the URL does not parse.
fn redact(v: &str) -> String {
    match Url::parse(v) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => match (v.find("://"), v.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}://***{}", &v[..s], &v[at..]),
            _ => v.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_documentation() {
        let c = cfg(&[]).unwrap();
        assert!(
            matches!(c.database_url, DatabaseUrl::Sqlite(ref u) if u == "sqlite://data/connect-keeper.db")
        );
        assert_eq!(c.bind_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.app_base_url.as_str(), "http://localhost:8080/");
        assert_eq!(c.jwt_leeway_secs, 30);
        assert_eq!(c.host_license_refresh, Duration::from_secs(3600));
        assert!(c.license_enforcement);
        assert_eq!(c.lic_trust, crate::licensing::LicTrust::Request);
        assert!(c.marketplace.is_none());
        assert_eq!(c.log_format, LogFormat::Pretty);
        assert_eq!(c.body_timeout, Duration::from_secs(10));
        assert_eq!(c.admin_auth_max_failures, 100);
        assert_eq!(c.admin_auth_window, Duration::from_secs(60));
    }

    #[test]
    fn a_short_admin_token_is_refused_without_echoing_it() {
        let short = "a".repeat(MIN_ADMIN_TOKEN_CHARS - 1);
        assert_eq!(cfg(&[("ADMIN_TOKEN", "a")]).unwrap_err().var, "ADMIN_TOKEN");
        for value in ["change-me", short.as_str()] {
            let e = cfg(&[("ADMIN_TOKEN", value)]).unwrap_err();
            assert_eq!(e.var, "ADMIN_TOKEN");
            let text = e.to_string();
            assert!(
                text.contains("ADMIN_TOKEN") && text.contains("32"),
                "{text}"
            );
            assert!(!text.contains(value), "{text}");
        }
        let long = "b".repeat(MIN_ADMIN_TOKEN_CHARS);
        let c = cfg(&[("ADMIN_TOKEN", long.as_str())]).unwrap();
        assert!(c.admin_token.is_some());
        assert!(!format!("{c:?}").contains(&long));
        // Unset (or empty) is fine: admin tokens are then made with the CLI.
        assert!(cfg(&[("ADMIN_TOKEN", "")]).unwrap().admin_token.is_none());
    }

    #[test]
    fn bad_values_name_the_variable_and_value() {
        for (var, value) in [
            ("DATABASE_URL", "mysql://x"),
            ("BIND_ADDR", "nowhere"),
            ("APP_BASE_URL", "not a url"),
            ("INSTALL_KEYS_URL", "ftp://keys"),
            ("JWT_LEEWAY_SECS", "-5"),
            ("HOST_LICENSE_REFRESH_SECS", "soon"),
            ("LICENSE_ENFORCEMENT", "maybe"),
            ("LIC_TRUST", "corroborate"),
            ("LOG_FORMAT", "xml"),
            ("MARKETPLACE_SYNC_INTERVAL_SECS", "0"),
            ("APP_KEY", "has space"),
            ("SECRETS_KEY", "c2hvcnQ="),
            ("FORGE_APP_ID", "my-app"),
            ("FORGE_APP_ID", "6f0d9f4c-3c59-4a4e-9b52-2f9c8a1e7d10,nope"),
            ("FORGE_APP_ID", " , "),
            ("FORGE_JWKS_URL", "file:///etc/keys"),
            ("FORGE_ENVIRONMENTS", "PRODUCTON"),
            ("FORGE_ENVIRONMENTS", ","),
            ("FORGE_API_URL", "not a url"),
        ] {
            let e = cfg(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, var);
            let text = e.to_string();
            assert!(text.contains(var), "{text}");
        }
    }

    #[test]
    fn forge_settings() {
        let c = cfg(&[]).unwrap();
        assert!(!c.forge_enabled());
        assert_eq!(
            c.forge_jwks_url.as_str(),
            "https://forge.cdn.prod.atlassian-dev.net/.well-known/jwks.json"
        );
        assert_eq!(c.forge_environments, vec![EnvironmentType::Production]);
        assert_eq!(c.forge_api_url.as_str(), "https://api.atlassian.com/");

        let uuid = "6f0d9f4c-3c59-4a4e-9b52-2f9c8a1e7d10";
        let other = "11111111-2222-4333-8444-555555555555";
        let c = cfg(&[
            (
                "FORGE_APP_ID",
                &format!("ari:cloud:ecosystem::app/{uuid}, {other},{uuid}"),
            ),
            ("FORGE_ENVIRONMENTS", "development,STAGING, PRODUCTION"),
        ])
        .unwrap();
        assert!(c.forge_enabled());
        assert_eq!(
            c.forge_app_ids,
            vec![AppId::parse(uuid).unwrap(), AppId::parse(other).unwrap()]
        );
        assert_eq!(c.forge_environments.len(), 3);
    }

    #[test]
    fn postgres_password_is_never_shown() {
        let c = cfg(&[("DATABASE_URL", "postgres://u:hunter2@db/x")]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let e = cfg(&[("DATABASE_URL", "postgresql://u:hunter2@[bad")]).unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn marketplace_needs_all_three() {
        let c = cfg(&[
            ("MARKETPLACE_VENDOR_ID", "123"),
            ("MARKETPLACE_USER", "a@b"),
        ])
        .unwrap();
        assert!(c.marketplace.is_none());
        let c = cfg(&[
            ("MARKETPLACE_VENDOR_ID", "123"),
            ("MARKETPLACE_USER", "a@b"),
            ("MARKETPLACE_API_TOKEN", "tok"),
        ])
        .unwrap();
        assert!(c.marketplace.is_some());
        assert!(!format!("{c:?}").contains("\"tok\""));
    }
}
