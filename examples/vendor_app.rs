//! A vendor's own actix-web app using connect-keeper as a library: the verified lifecycle
//! callbacks and descriptor, plus the vendor's pages and API behind the same verification
//! and licensing guards. Configured by the same environment variables as the server
//! (docs/configuration.md). Run: `cargo run --example vendor_app`.

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

async fn issue_updated(verified: Verified, body: web::Bytes) -> HttpResponse {
    tracing::info!(
        client_key = verified.client_key(),
        bytes = body.len(),
        "issue updated"
    );
    HttpResponse::NoContent().finish()
}
