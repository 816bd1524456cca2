//! `LIC_TRUST` and `license.corroborated` (docs/licensing.md#lic_trust): with
//! `LIC_TRUST=corroborated` a query-bound `lic=active` licenses only when an outside source —
//! the product's licence endpoint or the Marketplace (both wiremock here) — says active too;
//! the registry shows `license.corroborated` and filters on it, in the admin API and the CLI.

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::admin::{ADMIN, admin_get, admin_json};
use crate::helpers::*;
use crate::hostile_text::{license_for, serve_licenses, spawn_with_marketplace, sync};

/// `GET /panel?lic=…` as the product loads the iframe: the token covers the query.
async fn panel(app: &TestApp, client_key: &str, secret: &str, lic: &str) -> u16 {
    let p = format!("/panel?lic={lic}&xdm_e=https%3A%2F%2Facme.atlassian.net");
    let token = hs256_query_bound("GET", &p, client_key, secret, json!({}));
    app.get(&format!("{p}&jwt={token}")).await.status().as_u16()
}

/// `GET /api/whoami?lic=active` with a query-bound token in the header.
async fn whoami_lic(app: &TestApp, client_key: &str, secret: &str) -> (u16, Value) {
    let p = "/api/whoami?lic=active";
    let token = hs256_query_bound("GET", p, client_key, secret, json!({}));
    let res = app.get_with_jwt_header(p, &token).await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A product site whose licence endpoint says active.
async fn licensed_site() -> MockServer {
    let site = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/rest/atlassian-connect/1/addons/{APP_KEY}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "key": APP_KEY, "state": "ENABLED",
            "license": {"active": true, "type": "COMMERCIAL", "evaluation": false}
        })))
        .mount(&site)
        .await;
    site
}

fn keys(list: &Value) -> Vec<String> {
    let mut k: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["client_key"].as_str().unwrap().to_owned())
        .collect();
    k.sort();
    k
}

async fn corroborated(app: &TestApp, client_key: &str) -> bool {
    admin_json(app, &format!("/admin/installations/{client_key}")).await["license"]["corroborated"]
        .as_bool()
        .expect("license.corroborated is a boolean")
}

async fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let url = app.db.url.clone();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_connect-keeper"))
            .args(&args)
            .env_clear()
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run the CLI")
    })
    .await
    .unwrap()
}

both_backends! {
    /// A site whose product only claims `lic=active` (a staging install, a spoofed iframe URL)
    /// gets no licence from it under `LIC_TRUST=corroborated`; the product's licence endpoint
    /// or the Marketplace saying active makes the same request licensed.
    async fn corroborated_trust_needs_an_outside_source(backend) {
        let mp = MockServer::start().await;
        let app = spawn_with_marketplace(backend, &mp, &[("LIC_TRUST", "corroborated")]).await;
        // ck-spoof: its product's licence endpoint does not answer (the harness's fake: 404).
        let mut spoof = app.installed_payload("ck-spoof", "spoof-secret");
        spoof["entitlementId"] = json!("ent-spoof");
        app.install_payload(&spoof).await;
        // ck-host: its product says active.
        let site = licensed_site().await;
        app.install_payload(&installed_payload("ck-host", "host-secret", &site.uri())).await;
        assert!(eventually(10, || async { corroborated(&app, "ck-host").await }).await,
            "the product's licence makes ck-host corroborated");

        assert_eq!(panel(&app, "ck-spoof", "spoof-secret", "active").await, 403);
        let (status, body) = whoami_lic(&app, "ck-spoof", "spoof-secret").await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"], "unlicensed");
        assert_eq!(panel(&app, "ck-host", "host-secret", "active").await, 200);
        assert_eq!(whoami_lic(&app, "ck-host", "host-secret").await.0, 200);
        // lic=none still refuses, corroborated or not
        assert_eq!(panel(&app, "ck-host", "host-secret", "none").await, 403);
        // a context token (no bound lic) of ck-spoof: its earlier lic=active is no evidence
        let ctx = hs256_context("ck-spoof", "spoof-secret", json!({}));
        assert_eq!(app.get_with_jwt_header("/api/whoami", &ctx).await.status(), 403);

        assert!(!corroborated(&app, "ck-spoof").await);
        assert_eq!(keys(&admin_json(&app, "/admin/installations?corroborated=false").await), ["ck-spoof"]);
        assert_eq!(keys(&admin_json(&app, "/admin/installations?corroborated=true").await), ["ck-host"]);
        let (status, body) = admin_get(&app, "/admin/installations?corroborated=maybe").await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("corroborated"), "{body}");

        // The Marketplace says ck-spoof's site is licensed after all: corroborated, licensed.
        serve_licenses(&mp, vec![license_for("ent-spoof", "active", json!({"company": "Spoof Ltd"}))]).await;
        assert_eq!(sync(&app).await["matched"], 1);
        assert!(corroborated(&app, "ck-spoof").await);
        assert!(eventually(5, || async { panel(&app, "ck-spoof", "spoof-secret", "active").await == 200 }).await,
            "a Marketplace licence corroborates lic=active");
        assert_eq!(keys(&admin_json(&app, "/admin/installations?corroborated=false").await), Vec::<String>::new());
    }
}

both_backends! {
    /// The default trust (`request`) keeps Atlassian's rule: `lic=active` licenses. The
    /// registry still tells such sites apart (`corroborated: false`), in the API, the CSV and
    /// the CLI.
    async fn request_trust_licenses_by_lic_and_shows_it_uncorroborated(backend) {
        let app = TestApp::spawn_with(backend, &[("ADMIN_TOKEN", ADMIN)]).await;
        app.install("ck-lic-only", "lic-secret").await;
        let site = licensed_site().await;
        app.install_payload(&installed_payload("ck-paid", "paid-secret", &site.uri())).await;
        assert!(eventually(10, || async { corroborated(&app, "ck-paid").await }).await);

        assert_eq!(panel(&app, "ck-lic-only", "lic-secret", "active").await, 200);
        assert_eq!(whoami_lic(&app, "ck-lic-only", "lic-secret").await.0, 200);
        // The lic seen is recorded in the background: the registry then says active, by lic.
        assert!(eventually(10, || async {
            admin_json(&app, "/admin/installations/ck-lic-only").await["license"]["state"] == "active"
        }).await);
        let d = admin_json(&app, "/admin/installations/ck-lic-only").await;
        assert_eq!(d["license"]["source"], "lic");
        assert_eq!(d["license"]["corroborated"], false);
        assert_eq!(keys(&admin_json(&app, "/admin/installations?corroborated=false&license=active").await), ["ck-lic-only"]);
        assert_eq!(keys(&admin_json(&app, "/admin/installations?corroborated=true").await), ["ck-paid"]);

        let (_, csv_text) = admin_get(&app, "/admin/installations?format=csv&sort=base_url").await;
        let mut r = csv::Reader::from_reader(csv_text.as_bytes());
        let col = r.headers().unwrap().iter().position(|h| h == "license_corroborated").expect("a license_corroborated column");
        let mut by_key: Vec<(String, String)> = r.records().map(|x| { let x = x.unwrap(); (x[0].to_owned(), x[col].to_owned()) }).collect();
        by_key.sort();
        assert_eq!(by_key, [("ck-lic-only".to_owned(), "false".to_owned()), ("ck-paid".to_owned(), "true".to_owned())]);

        let out = cli(&app, &["installations", "list", "--corroborated", "false", "--format", "json"]).await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(keys(&list), ["ck-lic-only"]);
        assert_eq!(list["items"][0]["license"]["corroborated"], false);
        let out = cli(&app, &["installations", "list", "--corroborated", "true"]).await;
        let table = String::from_utf8(out.stdout).unwrap();
        assert!(table.lines().next().unwrap().contains("CORROBORATED"), "{table}");
        assert!(table.contains("ck-paid") && !table.contains("ck-lic-only"), "{table}");
        let out = cli(&app, &["installations", "show", "ck-lic-only"]).await;
        let shown = String::from_utf8(out.stdout).unwrap();
        assert!(shown.lines().any(|l| l.starts_with("corroborated") && l.trim_end().ends_with("no")), "{shown}");
        let out = cli(&app, &["installations", "list", "--corroborated", "perhaps"]).await;
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("--corroborated"));
    }
}

#[test]
fn an_unknown_lic_trust_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_connect-keeper"))
        .env_clear()
        .env("LIC_TRUST", "corroborate")
        .env("BIND_ADDR", "127.0.0.1:0")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/k.db", dir.path().display()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A server that ignored the variable would run on: give it 20 s, then stop it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("LIC_TRUST") && stderr.contains("corroborate"),
        "{stderr}"
    );
}
