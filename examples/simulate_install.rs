//! Plays an Atlassian site installing the app, against a connect-keeper server you started, so
//! the README's quick start can be followed on one machine with no Atlassian account.
//!
//! ```sh
//! # terminal 1: the server, told to fetch signed-install keys from this example
//! INSTALL_KEYS_URL=http://127.0.0.1:8089 cargo run --release
//! # terminal 2
//! cargo run --release --example simulate_install
//! ```
//!
//! What it does, in the order a real install happens (see `docs/protocol.md`):
//! 1. Listens on `127.0.0.1:8089` (`--port`) as two Atlassian services at once: the
//!    signed-install key server (`GET /{kid}` answers a PEM public key) and the product site
//!    (`GET /rest/atlassian-connect/1/addons/{app key}` answers the site's licence for the app,
//!    `GET /_edge/tenant_info` its `cloudId`).
//! 2. Reads the server's descriptor (`GET /atlassian-connect.json`) for the app key and
//!    `baseUrl`, the audience of a signed install.
//! 3. Sends `POST /installed` signed with RS256 by the key it serves, exactly as Atlassian signs
//!    it: `kid` in the header; `iss` = the site's clientKey, `aud` = the app's `baseUrl`, `qsh` of
//!    the request. The server fetches the public key from step 1 by `kid`, verifies, and stores
//!    the tenant with its shared secret.
//! 4. Waits until the server has read the site's licence and `cloudId` in the background (signed
//!    as the app with HS256 and the shared secret: checked here), then prints what to look at.
//!
//! The signing key is the test key pair in `tests/fixtures/`: public, so never point a real
//! server's `INSTALL_KEYS_URL` at this example. Options: `--server URL` (default
//! `http://localhost:8080`), `--port N` (8089), `--client-key K` (`quickstart-site`),
//! `--product jira|confluence`, `--license trial|active|none` (what the product says; `trial`).

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

const PUBLIC_PEM: &str = include_str!("../tests/fixtures/rsa_public.pem");
const PRIVATE_PEM: &str = include_str!("../tests/fixtures/rsa_private.pem");
const KID: &str = "simulate-install-1";
const CLOUD_ID: &str = "0c3130ff-8e2b-4d4f-b1a9-6b6f4d2c8e10";

/// Plays an Atlassian site installing the app (see the top of this file).
#[derive(clap::Parser)]
struct Options {
    /// The connect-keeper server.
    #[arg(long, value_name = "URL", default_value = "http://localhost:8080")]
    server: String,
    /// Where this example listens, as the key server and as the site.
    #[arg(long, value_name = "N", default_value_t = 8089)]
    port: u16,
    /// The site's clientKey.
    #[arg(long, value_name = "K", default_value = "quickstart-site")]
    client_key: String,
    /// The product the site runs.
    #[arg(long, value_parser = ["jira", "confluence"], default_value = "jira")]
    product: String,
    /// What the product's licence endpoint says of the app.
    #[arg(long, value_parser = ["trial", "active", "none"], default_value = "trial")]
    license: String,
}

/// What the fake site saw of the server's background reads.
#[derive(Default)]
struct Seen {
    license_read: Notify,
    tenant_info_read: Notify,
}

struct Site {
    app_key: String,
    shared_secret: String,
    license: Value,
    seen: Seen,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a bundled TLS provider (as in the server).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut o = <Options as clap::Parser>::parse();
    o.server = o.server.trim_end_matches('/').to_owned();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;

    // 2. The descriptor says which app this is and which `aud` the server expects.
    let descriptor: Value = http
        .get(format!("{}/atlassian-connect.json", o.server))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| {
            format!(
                "cannot read {}/atlassian-connect.json: is the server running? \
                 (INSTALL_KEYS_URL=http://127.0.0.1:{} cargo run --release)",
                o.server, o.port
            )
        })?
        .json()
        .await?;
    let app_key = descriptor["key"]
        .as_str()
        .context("descriptor without key")?;
    let base_url = descriptor["baseUrl"]
        .as_str()
        .context("descriptor without baseUrl")?;
    println!("app {app_key:?}, baseUrl {base_url}");

    // 1. The key server and the product site, on one loopback port.
    let shared_secret = format!("simulated-secret-{}", uuid::Uuid::new_v4());
    let site = Arc::new(Site {
        app_key: app_key.to_owned(),
        shared_secret: shared_secret.clone(),
        license: match o.license.as_str() {
            "trial" => json!({"active": true, "type": "COMMERCIAL", "evaluation": true}),
            "active" => json!({"active": true, "type": "COMMERCIAL", "evaluation": false}),
            _ => json!({"active": false, "type": "COMMERCIAL", "evaluation": false}),
        },
        seen: Seen::default(),
    });
    let listener = std::net::TcpListener::bind(("127.0.0.1", o.port))
        .with_context(|| format!("cannot listen on 127.0.0.1:{} (--port)", o.port))?;
    let data = web::Data::from(site.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/_edge/tenant_info", web::get().to(tenant_info))
            .route(
                "/rest/atlassian-connect/1/addons/{key}",
                web::get().to(addon_license),
            )
            // Confluence's baseUrl ends in /wiki.
            .route(
                "/wiki/rest/atlassian-connect/1/addons/{key}",
                web::get().to(addon_license),
            )
            .route("/{kid}", web::get().to(public_key))
    })
    .workers(1)
    .listen(listener)?
    .run();
    let server_handle = server.handle();
    tokio::spawn(server);

    // 3. The signed `installed` callback.
    let site_url = match o.product.as_str() {
        "confluence" => format!("http://127.0.0.1:{}/wiki", o.port),
        _ => format!("http://127.0.0.1:{}", o.port),
    };
    let installed_path = descriptor["lifecycle"]["installed"]
        .as_str()
        .unwrap_or("/installed");
    let now = chrono::Utc::now().timestamp();
    // qsh: SHA-256 of "METHOD&path&canonical query"; this request has no query. The path is
    // the one relative to the app's baseUrl, which is what the server checks.
    let qsh = hex::encode(Sha256::digest(format!("POST&{installed_path}&")));
    let claims = json!({
        "iss": o.client_key, "aud": [base_url], "qsh": qsh,
        "iat": now, "exp": now + 180, "context": {},
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.into());
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(PRIVATE_PEM.as_bytes())?,
    )?;
    let body = json!({
        "key": app_key,
        "clientKey": o.client_key,
        "sharedSecret": shared_secret,
        "baseUrl": site_url,
        "displayUrl": site_url,
        "productType": o.product,
        "description": format!("Simulated {} site", o.product),
        "eventType": "installed",
    });
    let res = http
        .post(format!("{}{installed_path}", o.server))
        .header("authorization", format!("JWT {token}"))
        .json(&body)
        .send()
        .await?;
    if res.status() != 204 {
        bail!(
            "POST {installed_path} answered {}: {}\n(was the server started with \
             INSTALL_KEYS_URL=http://127.0.0.1:{}?)",
            res.status(),
            res.text().await.unwrap_or_default(),
            o.port
        );
    }
    println!(
        "installed: site {site_url} ({}) with clientKey {:?} — the server verified the RS256 \
         signature with the key it fetched from http://127.0.0.1:{}/{KID}",
        o.product, o.client_key, o.port
    );

    // 4. The server reads the licence and cloudId in the background, right after the install.
    let waited = tokio::time::timeout(Duration::from_secs(15), async {
        tokio::join!(
            site.seen.license_read.notified(),
            site.seen.tenant_info_read.notified()
        )
    })
    .await;
    match waited {
        Ok(_) => {
            // Give the server a moment to store what it read.
            tokio::time::sleep(Duration::from_millis(500)).await;
            println!(
                "the server read the site's licence for {app_key} (product says: {}) and its \
                 cloudId {CLOUD_ID}",
                o.license
            );
        }
        Err(_) => println!("the server has not read the site's licence within 15 s (see its log)"),
    }
    server_handle.stop(true).await;

    // A context token as the app's iframe would get from AP.context.getToken(), to try the guard.
    let context_token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"iss": o.client_key, "sub": "557058:simulated-user", "qsh": "context-qsh",
                "iat": now, "exp": now + 900, "context": {}}),
        &EncodingKey::from_secret(shared_secret.as_bytes())?,
    )?;
    println!();
    println!("Next:");
    println!(
        "  curl -s -H \"Authorization: Bearer $ADMIN_TOKEN\" {}/admin/installations/{}",
        o.server, o.client_key
    );
    println!(
        "  curl -s -H 'Authorization: JWT {context_token}' {}/api/whoami",
        o.server
    );
    Ok(())
}

async fn public_key(path: web::Path<String>) -> HttpResponse {
    if path.as_str() == KID {
        HttpResponse::Ok()
            .content_type("application/x-pem-file")
            .body(PUBLIC_PEM)
    } else {
        HttpResponse::NotFound().finish()
    }
}

async fn tenant_info(site: web::Data<Site>) -> HttpResponse {
    site.seen.tenant_info_read.notify_one();
    HttpResponse::Ok().json(json!({ "cloudId": CLOUD_ID }))
}

/// The product's licence endpoint. The server signs this call as the app: HS256 with the
/// shared secret from the install, `iss` = the app key. A real product refuses anything else,
/// and so does this one.
async fn addon_license(
    site: web::Data<Site>,
    path: web::Path<String>,
    req: HttpRequest,
) -> HttpResponse {
    let key = path.into_inner();
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("JWT "));
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_aud = false;
    let signed_by_app = match (
        token,
        DecodingKey::from_secret(site.shared_secret.as_bytes()),
    ) {
        (Some(t), Ok(secret)) => jsonwebtoken::decode::<Value>(t, &secret, &validation)
            .is_ok_and(|d| d.claims["iss"] == site.app_key.as_str()),
        _ => false,
    };
    if !signed_by_app {
        return HttpResponse::Unauthorized().finish();
    }
    if key != site.app_key {
        return HttpResponse::NotFound().finish();
    }
    site.seen.license_read.notify_one();
    HttpResponse::Ok().json(json!({
        "key": key,
        "version": "1.0.0",
        "state": "ENABLED",
        "license": site.license,
    }))
}
