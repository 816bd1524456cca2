//! Helper of `scripts/load.sh` (loopback only):
//!
//! * `load_setup keys PORT_FILE` — serves the test RSA public key (tests/fixtures) at
//!   `/kid-1` on 127.0.0.1, and the same key as a Forge key set (JWKS) at `/jwks.json`; writes
//!   its port to PORT_FILE, and runs until killed. The server under test gets
//!   `INSTALL_KEYS_URL=http://127.0.0.1:<port>` and `FORGE_JWKS_URL=http://127.0.0.1:<port>/jwks.json`
//!   (with `FORGE_APP_ID` = [`testing::APP_UUID`]).
//! * `load_setup install APP_URL DATABASE_URL` — sends a correctly signed `installed` to the
//!   server at APP_URL (which must be its APP_BASE_URL), grants the tenant free use through a
//!   second database connection (as the CLI would), waits until `GET /api/whoami` answers 200,
//!   and prints a context token valid for one hour on stdout.
//! * `load_setup tokens N` — prints N distinct context tokens of that tenant (valid for one
//!   hour; they differ by `jti`), one per line: the load of iframes that each present a token
//!   the server has not seen yet.
//! * `load_setup fit APP_URL` — mints a Forge Invocation Token with the test key, valid for one
//!   hour and carrying an active licence (as a paid app's Forge Remote call does), presents it
//!   to `GET /api/whoami` until it answers 200 (its first sight registers the installation),
//!   and prints it on stdout.

use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::{Context, bail};
use chrono::Utc;
use connect_keeper::config::DatabaseUrl;
use connect_keeper::connect::jwt::sign_hs256;
use connect_keeper::connect::qsh;
use connect_keeper::forge::testing;
use connect_keeper::store::Db;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const PUBLIC_PEM: &str = include_str!("../tests/fixtures/rsa_public.pem");
const PRIVATE_PEM: &str = include_str!("../tests/fixtures/rsa_private.pem");
const KID: &str = "kid-1";
const CLIENT_KEY: &str = "load-test-tenant";
const SECRET: &str = "load-test-shared-secret-0123456789abcdef";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["keys", port_file] => keys(port_file).await,
        ["install", app_url, database_url] => install(app_url, database_url).await,
        ["tokens", count] => tokens(count.parse().context("N must be a number")?),
        ["fit", app_url] => fit(app_url).await,
        _ => bail!(
            "usage: load_setup keys PORT_FILE | load_setup install APP_URL DATABASE_URL | load_setup tokens N | load_setup fit APP_URL"
        ),
    }
}

async fn keys(port_file: &str) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let jwks = testing::jwks(&[(testing::KID, testing::PUBLIC_PEM)]).to_string();
    std::fs::write(port_file, port.to_string())?;
    HttpServer::new(move || {
        let jwks = jwks.clone();
        App::new()
            .route(
                &format!("/{KID}"),
                web::get().to(|| async { HttpResponse::Ok().body(PUBLIC_PEM) }),
            )
            .route(
                "/jwks.json",
                web::get().to(move || {
                    let jwks = jwks.clone();
                    async move {
                        HttpResponse::Ok()
                            .content_type("application/json")
                            .body(jwks)
                    }
                }),
            )
    })
    .workers(1)
    .listen(listener)?
    .run()
    .await?;
    Ok(())
}

async fn install(app_url: &str, database_url: &str) -> anyhow::Result<()> {
    let app_url = app_url.trim_end_matches('/');
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let now = Utc::now().timestamp();
    let claims = json!({
        "iss": CLIENT_KEY, "aud": [app_url], "qsh": qsh::qsh("POST", "/installed", "", ""),
        "iat": now, "exp": now + 180, "context": {},
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.into());
    let install_jwt = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(PRIVATE_PEM.as_bytes())?,
    )?;
    // The product's baseUrl is a closed loopback port: the background license read fails
    // at once and nothing leaves the machine.
    let body = json!({
        "key": "connect-keeper-app", "clientKey": CLIENT_KEY, "sharedSecret": SECRET,
        "baseUrl": "http://127.0.0.1:9", "productType": "jira", "eventType": "installed",
    });
    let res = http
        .post(format!("{app_url}/installed"))
        .header("authorization", format!("JWT {install_jwt}"))
        .json(&body)
        .send()
        .await?;
    if res.status() != 204 {
        bail!("install answered {}: {}", res.status(), res.text().await?);
    }

    let db = Db::connect(&DatabaseUrl::parse(database_url).map_err(anyhow::Error::msg)?).await?;
    connect_keeper::registry::grants::grant_free(
        &db,
        CLIENT_KEY,
        None,
        Some("load test"),
        "cli",
        connect_keeper::store::now(),
    )
    .await
    .context("granting free use")?;
    db.close().await;

    let token = sign_hs256(
        &json!({"iss": CLIENT_KEY, "sub": "load-test-user", "qsh": "context-qsh",
                "iat": now, "exp": now + 3600, "context": {}}),
        SECRET.as_bytes(),
    );
    // The grant reaches the server through its poller (another process wrote it).
    whoami_until_ok(&http, app_url, &format!("JWT {token}")).await?;
    println!("{token}");
    Ok(())
}

/// Asks `GET /api/whoami` with `authorization` every 100 ms until it answers 200 (10 s at most).
async fn whoami_until_ok(
    http: &reqwest::Client,
    app_url: &str,
    authorization: &str,
) -> anyhow::Result<()> {
    for _ in 0..100 {
        let res = http
            .get(format!("{app_url}/api/whoami"))
            .header("authorization", authorization)
            .send()
            .await?;
        if res.status() == 200 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("GET /api/whoami never answered 200")
}

fn tokens(count: usize) -> anyhow::Result<()> {
    use std::io::Write;
    let now = Utc::now().timestamp();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for n in 0..count {
        let token = sign_hs256(
            &json!({"iss": CLIENT_KEY, "sub": "load-test-user", "qsh": "context-qsh",
                    "iat": now, "exp": now + 3600, "jti": format!("load-{n}"), "context": {}}),
            SECRET.as_bytes(),
        );
        writeln!(out, "{token}")?;
    }
    out.flush()?;
    Ok(())
}

async fn fit(app_url: &str) -> anyhow::Result<()> {
    let app_url = app_url.trim_end_matches('/');
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut claims = testing::claims(Utc::now().timestamp());
    claims["exp"] = json!(Utc::now().timestamp() + 3600);
    claims["app"]["license"] = json!({"active": true, "type": "commercial"});
    let token = testing::mint(&claims, testing::KID);
    // The server fetches the key set at start-up, in the background: the first FIT may come
    // before it has it.
    whoami_until_ok(&http, app_url, &format!("Bearer {token}")).await?;
    println!("{token}");
    Ok(())
}
