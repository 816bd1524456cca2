//! A vendor's own actix-web app using connect-keeper as a library: the verified lifecycle
//! callbacks and a descriptor whose page points at this app's own route, the Forge lifecycle
//! routes, plus the vendor's pages and API behind the same verification and licensing guards —
//! for Connect and Forge Remote alike. Configured by the same environment variables as the
//! server (docs/configuration.md; set `FORGE_APP_ID` for Forge). Run it from the repository:
//! `cargo run --example vendor_app`.
//!
//! docs/library.md shows this file from its first `use` on, and `tests/api/vendor_app.rs` keeps
//! the two identical; that test also compiles this file and calls every page its descriptor
//! declares.

use actix_web::{App, HttpResponse, HttpServer, web};
use connect_keeper::config::Config;
use connect_keeper::connect::jwt::QshPolicy;
use connect_keeper::guard::{self, Licensed, Verified};
use connect_keeper::state::AppState;

/// This app's descriptor template (`DESCRIPTOR_PATH`, when set, wins): its page module points
/// at `/pages/report` below. The built-in template points at the shipped server's `/panel`,
/// which this app does not serve.
pub const DESCRIPTOR: &str = "examples/vendor_app.json";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::from_env()?;
    config
        .descriptor_path
        .get_or_insert_with(|| DESCRIPTOR.to_owned());
    connect_keeper::telemetry::init(config.log_format);
    let bind = config.bind_addr;
    // Connects and migrates the database; builds the tenant cache and the "seen" writer.
    let state = web::Data::new(AppState::new(config).await?);
    // Cache refresh from other processes, last-seen/`lic` writer, licence reads, sweeps.
    connect_keeper::startup::spawn_background(&state);

    HttpServer::new(move || App::new().app_data(state.clone()).configure(routes))
        .bind(bind)?
        .run()
        .await?;
    Ok(())
}

/// Every route of the app.
pub fn routes(cfg: &mut web::ServiceConfig) {
    // POST /installed, /uninstalled, /enabled, /disabled and GET /atlassian-connect.json
    cfg.configure(connect_keeper::routes::lifecycle::configure)
        // POST /forge/lifecycle, /forge/pre-uninstall, /forge/heartbeat (Forge triggers)
        .configure(connect_keeper::routes::forge::configure)
        // Iframe pages: query-bound JWT, licence required (HTML 403 otherwise).
        .service(
            web::scope("/pages")
                .wrap(guard::licensed_page())
                .route("/report", web::get().to(report)),
        )
        // Front-end API: query-bound or context JWT, licence required (JSON 403 otherwise).
        .service(
            web::scope("/api")
                .wrap(guard::licensed_api())
                .route("/stats", web::get().to(stats)),
        )
        // Forge Remote: the endpoint a Forge UI module calls with `invokeRemote`. The same
        // guard: a Forge Invocation Token (Bearer) or a Connect JWT, licence required.
        .service(
            web::scope("/remote")
                .wrap(guard::licensed_api())
                .route("/summary", web::post().to(remote_summary)),
        )
        // Webhooks: verified (query-bound JWT), no licence needed.
        .service(
            web::scope("/webhooks")
                .wrap(guard::verified(QshPolicy::RequestOnly))
                .route("/issue-updated", web::post().to(issue_updated)),
        );
}

async fn report(licensed: Licensed) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!DOCTYPE html><title>Report</title><p>Licensed via {}.</p>",
            licensed.source.as_str()
        ))
}

async fn stats(licensed: Licensed) -> HttpResponse {
    let tenant = &licensed.verified.tenant;
    HttpResponse::Ok().json(serde_json::json!({
        "client_key": licensed.verified.client_key(),
        "user": licensed.verified.account_id(),
        "product": tenant.product_type(),
    }))
}

/// The same `Licensed` value whether Forge or Connect called: key the app's own data by
/// `client_key()` (stable when a Connect site moves to Forge), and authorise by the user the
/// token names, never by ids in the body (a Forge token binds nothing about the request).
async fn remote_summary(licensed: Licensed) -> HttpResponse {
    let v = &licensed.verified;
    HttpResponse::Ok().json(serde_json::json!({
        "installation": v.client_key(),
        "connect_client_key": v.connect_client_key(),
        "forge_installation_id": v.installation_id().map(|id| id.to_string()),
        "account_id": v.account_id(),
        "licensed_via": licensed.source.as_str(),
    }))
}

async fn issue_updated(verified: Verified, body: web::Bytes) -> HttpResponse {
    tracing::info!(
        client_key = verified.client_key(),
        bytes = body.len(),
        "issue updated"
    );
    HttpResponse::NoContent().finish()
}
