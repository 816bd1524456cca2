//! A vendor's own actix-web app using connect-keeper as a library: the verified lifecycle
//! callbacks and descriptor, the Forge lifecycle routes, plus the vendor's pages and API behind
//! the same verification and licensing guards — for Connect and Forge Remote alike.
//! Configured by the same environment variables as the server (docs/configuration.md; set
//! `FORGE_APP_ID` for Forge). Run: `cargo run --example vendor_app`.

use actix_web::{App, HttpResponse, HttpServer, web};
use connect_keeper::config::Config;
use connect_keeper::connect::jwt::QshPolicy;
use connect_keeper::guard::{self, Licensed, Verified};
use connect_keeper::state::AppState;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    connect_keeper::telemetry::init(config.log_format);
    let bind = config.bind_addr;
    // Connects and migrates the database; builds the tenant cache and the "seen" writer.
    let state = web::Data::new(AppState::new(config).await?);
    // Cache refresh from other processes, last-seen/`lic` writer, license reads, sweeps.
    connect_keeper::startup::spawn_background(&state);

    HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            // POST /installed, /uninstalled, /enabled, /disabled and GET /atlassian-connect.json
            .configure(connect_keeper::routes::lifecycle::configure)
            // POST /forge/lifecycle, /forge/pre-uninstall, /forge/heartbeat (Forge triggers)
            .configure(connect_keeper::routes::forge::configure)
            // Iframe pages: query-bound JWT, license required (HTML 403 otherwise).
            .service(
                web::scope("/pages")
                    .wrap(guard::licensed_page())
                    .route("/report", web::get().to(report)),
            )
            // Front-end API: query-bound or context JWT, license required (JSON 403 otherwise).
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
            // Webhooks: verified (query-bound JWT), no license needed.
            .service(
                web::scope("/webhooks")
                    .wrap(guard::verified(QshPolicy::RequestOnly))
                    .route("/issue-updated", web::post().to(issue_updated)),
            )
    })
    .bind(bind)?
    .run()
    .await?;
    Ok(())
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
        "product": tenant.product_type(),
        "base_url": tenant.base_url(),
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
