//! Building and running the server: [`Application::build`] connects, migrates, binds its own
//! listener (so tests bind port 0 and ask which port they got) and starts background tasks.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use tracing_actix_web::TracingLogger;

use crate::config::Config;
use crate::connect::descriptor::{self, Descriptor};
use crate::connect::install_keys::InstallKeys;
use crate::metrics::Metrics;
use crate::store::Db;
use crate::telemetry::KeeperRootSpan;

/// Everything a handler needs, shared by reference.
pub struct AppState {
    pub config: Config,
    pub app_key: String,
    pub db: Db,
    pub descriptor: Descriptor,
    pub install_keys: InstallKeys,
    /// The one outbound HTTP client (timeouts set), for the product and the Marketplace.
    pub http: reqwest::Client,
    pub metrics: Metrics,
    /// Asks the background reader of the product's license endpoint to read a site now.
    pub host_refresh: crate::host_license::Trigger,
    /// The path of `APP_BASE_URL` ("" for none), stripped before computing a request's qsh.
    pub base_path: String,
    /// Tenants and their grant facts for the request path (no database round trip).
    pub tenants: crate::tenants::TenantCache,
    /// Last-seen time and `lic`, written in the background.
    pub seen: crate::tenants::SeenWriter,
    /// Context tokens whose signature was already checked, with the snapshot that checked it.
    pub verified_tokens: crate::verified_tokens::VerifiedTokens,
}

pub type SharedState = web::Data<AppState>;

impl AppState {
    /// Connects and migrates the database and builds the clients, without binding anything.
    pub async fn new(config: Config) -> anyhow::Result<AppState> {
        // reqwest is built without a bundled TLS provider; use ring's (pure build, no cmake).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let template = match &config.descriptor_path {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("DESCRIPTOR_PATH={path:?}: cannot read the file"))?,
            None => descriptor::BUILTIN_TEMPLATE.to_owned(),
        };
        let app_key = match &config.app_key {
            Some(k) => k.clone(),
            None => crate::config::descriptor_key(&template)
                .context("the descriptor template has no \"key\" and APP_KEY is unset")?,
        };
        let descriptor = Descriptor::new(&template, config.app_base_url.as_str(), &app_key)
            .context("DESCRIPTOR_PATH: invalid descriptor template")?;
        let db = Db::connect(&config.database_url).await?;
        db.migrate().await.context("applying migrations")?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("connect-keeper/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        let install_keys = InstallKeys::new(config.install_keys_url.clone(), http.clone());
        let base_path = config.app_base_url.path().trim_end_matches('/').to_owned();
        let tenants = crate::tenants::TenantCache::new(db.clone(), config.secrets.clone());
        warn_about_secrets(&config, &db).await;
        Ok(AppState {
            app_key,
            db,
            descriptor,
            install_keys,
            http,
            metrics: Metrics::new(),
            host_refresh: crate::host_license::Trigger::new(),
            base_path,
            tenants,
            seen: crate::tenants::SeenWriter::new(),
            verified_tokens: crate::verified_tokens::VerifiedTokens::default(),
            config,
        })
    }
}

/// Contract §10: without `SECRETS_KEY` secrets are stored as they are, which is said once at
/// start-up; with it, rows still in plain text (written before) are counted, so the operator
/// knows to run `connect-keeper secrets rotate`.
async fn warn_about_secrets(config: &Config, db: &Db) {
    if !config.secrets.is_enabled() {
        tracing::warn!(
            "SECRETS_KEY is unset: tenants' shared secrets are stored unencrypted in the database"
        );
        return;
    }
    match crate::store::installations::count_plain_secrets(db).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            rows = n,
            "shared secrets stored unencrypted: they are encrypted on the next install, or now by `connect-keeper secrets rotate`"
        ),
        Err(e) => tracing::warn!(error = %e, "counting unencrypted shared secrets failed"),
    }
}

/// Starts every background task of the service: the tenant-cache poller and the last-seen
/// writer, the reader of each site's license endpoint, the periodic Marketplace sync (when
/// configured) and the license-view sweeper. A vendor's own actix-web app that builds an
/// [`AppState`] calls this once, as [`Application::build`] does.
pub fn spawn_background(state: &SharedState) {
    crate::tenants::spawn_background(state);
    crate::host_license::start(state.clone().into_inner());
    crate::marketplace::spawn_periodic(state.clone().into_inner());
    crate::registry::license_view::spawn_sweeper(state.db.clone(), Duration::from_secs(30));
}

pub struct Application {
    port: u16,
    server: Server,
    state: SharedState,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(config.bind_addr)
            .with_context(|| format!("BIND_ADDR={}: cannot listen", config.bind_addr))?;
        let state = web::Data::new(AppState::new(config).await?);
        spawn_background(&state);
        Self::with_listener(state, listener)
    }

    pub fn with_listener(state: SharedState, listener: TcpListener) -> anyhow::Result<Application> {
        let port = listener.local_addr()?.port();
        let app_state = state.clone();
        let base_path = state.base_path.clone();
        let server = HttpServer::new(move || {
            let base_path = base_path.clone();
            App::new()
                .wrap(crate::routes::json_errors())
                .wrap(crate::routes::ops::RequestMetrics)
                .wrap(TracingLogger::<KeeperRootSpan>::new())
                .app_data(app_state.clone())
                .configure(move |cfg| crate::routes::mount(cfg, &base_path))
        })
        .listen(listener)?
        .shutdown_timeout(30)
        .run();
        Ok(Application {
            port,
            server,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone().into_inner()
    }

    /// Runs until SIGTERM/SIGINT; in-flight requests finish first (actix's graceful stop).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let state = self.state.clone();
        let result = self.server.await;
        state.db.close().await;
        result
    }
}
