//! Building and running the server: [`Application::build`] builds the [`AppState`] (connects,
//! migrates), binds its own listener (so tests bind port 0 and ask which port they got) and
//! starts background tasks.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use tracing_actix_web::TracingLogger;

use crate::config::Config;
use crate::state::{AppState, SharedState};
use crate::telemetry::KeeperRootSpan;

/// Starts every background task of the service: the tenant-cache poller and the last-seen
/// writer, the reader of each site's license endpoint, the periodic Marketplace sync (when
/// configured) and the license-view sweeper. A vendor's own actix-web app that builds an
/// [`AppState`] calls this once, as [`Application::build`] does.
pub fn spawn_background(state: &SharedState) {
    crate::tenants::spawn_background(state);
    // The Forge key set is fetched now, and then hourly, off the request path.
    if let Some(keys) = &state.forge_keys {
        keys.spawn_refresher(crate::forge::keys::PERIODIC_REFRESH);
    }
    crate::host_license::start(state.clone().into_inner());
    crate::forge_license::start(state.clone().into_inner());
    crate::marketplace::spawn_periodic(
        state.db.clone(),
        state.marketplace.clone(),
        state.metrics.clone(),
        state.config.marketplace_sync_interval,
    );
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
        let limits = crate::routes::limits::RequestLimits {
            body_timeout: state.config.body_timeout,
        };
        let server = HttpServer::new(move || {
            let base_path = base_path.clone();
            App::new()
                .wrap(limits)
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
