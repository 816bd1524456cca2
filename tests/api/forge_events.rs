//! Forge lifecycle events and triggers (`POST /forge/lifecycle`, `/forge/pre-uninstall`,
//! `/forge/heartbeat`), the app system token they carry, and the background reads of the Forge
//! License API it enables. FITs are minted here with the test keys, the key set and the Forge
//! API are wiremock servers.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use connect_keeper::config::Config;
use connect_keeper::forge::testing::{self as fit, KID, PUBLIC_PEM};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

const INSTALLED: &str = include_str!("../fixtures/forge/installed.json");
const UPGRADED: &str = include_str!("../fixtures/forge/upgraded.json");
const WRAPPED_RETRY: &str = include_str!("../fixtures/forge/installed-wrapped-retry.json");
const PRE_UNINSTALL: &str = include_str!("../fixtures/forge/pre-uninstall.json");
const SCHEDULED: &str = include_str!("../fixtures/forge/scheduled.json");

const INST_A: &str = "0a0a0a0a-1111-4111-8111-aaaaaaaaaaaa";
const CLOUD_A: &str = "c1c1c1c1-0000-4000-8000-00000000000a";
const INST_B: &str = "0b0b0b0b-2222-4222-8222-bbbbbbbbbbbb";
const CLOUD_B: &str = "c2c2c2c2-0000-4000-8000-00000000000b";
/// A system token as Forge would send it (made up, long enough to be found in any output).
const SYSTEM_TOKEN: &str = "forge-system-token-7f3a9c1e5b2d4086a1f0e9d8c7b6a5f4";

const LICENSE_PATH: &str = "/forge/app/v1/license";

struct Forge {
    app: TestApp,
    api: MockServer,
    _jwks: MockServer,
}

async fn jwks_server() -> MockServer {
    let jwks = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fit::jwks(&[(KID, PUBLIC_PEM)])))
        .mount(&jwks)
        .await;
    jwks
}

async fn spawn(backend: Backend, extra: &[(&str, &str)], tune: fn(&mut Config)) -> Forge {
    let jwks = jwks_server().await;
    let api = MockServer::start().await;
    let jwks_url = format!("{}/jwks.json", jwks.uri());
    let api_url = api.uri();
    let mut env = vec![
        ("FORGE_APP_ID", fit::APP_UUID),
        ("FORGE_JWKS_URL", jwks_url.as_str()),
        ("FORGE_API_URL", api_url.as_str()),
    ];
    env.extend_from_slice(extra);
    let app = TestApp::spawn_tuned(backend, &env, tune).await;
    Forge {
        app,
        api,
        _jwks: jwks,
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A FIT of installation `inst` on site `cloud`, as Forge sends with events (no user).
fn fit_for(inst: &str, cloud: &str) -> String {
    let mut c = fit::claims_for(now(), inst, Some(cloud));
    c.as_object_mut().unwrap().remove("principal");
    fit::mint(&c, KID)
}

async fn deliver(
    app: &TestApp,
    route: &str,
    fit: Option<&str>,
    system_token: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url(route))
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(4))
        .body(body.to_owned());
    if let Some(t) = fit {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(t) = system_token {
        req = req.header("x-forge-oauth-system", t);
    }
    req.send().await.expect("request sent")
}

async fn deliver_ok(
    app: &TestApp,
    route: &str,
    inst: &str,
    cloud: &str,
    token: Option<&str>,
    body: &str,
) {
    let res = deliver(app, route, Some(&fit_for(inst, cloud)), token, body).await;
    let status = res.status();
    assert_eq!(
        status,
        204,
        "{route}: {}",
        res.text().await.unwrap_or_default()
    );
}

/// The row key of a Forge installation.
async fn key_of(app: &TestApp, inst: &str) -> String {
    connect_keeper::store::forge::client_key_by_installation(&app.state.db, inst)
        .await
        .expect("query")
        .unwrap_or_else(|| panic!("installation {inst} is not registered"))
}

async fn row(app: &TestApp, inst: &str) -> connect_keeper::store::installations::InstallationRow {
    let key = key_of(app, inst).await;
    app.installation(&key).await.expect("row")
}

async fn history(app: &TestApp, inst: &str) -> Vec<(String, Value)> {
    let key = key_of(app, inst).await;
    app.events(&key)
        .await
        .into_iter()
        .map(|e| (e.event_type, serde_json::from_str(&e.payload).unwrap()))
        .collect()
}

fn count_of(history: &[(String, Value)], event_type: &str) -> usize {
    history.iter().filter(|(t, _)| t == event_type).count()
}

async fn license_reads(api: &MockServer) -> usize {
    api.received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == LICENSE_PATH)
        .count()
}

fn license_answer(active: bool, trial_end: Option<&str>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"results": [{
        "appId": fit::APP_UUID,
        "data": {
            "active": active,
            "type": "commercial",
            "isEvaluation": trial_end.is_some(),
            "trialEndDate": trial_end,
            "ccpEntitlementId": "ent-forge-1",
            "ccpEntitlementSlug": "E-1AB-2CD-3EF-4GH",
        }
    }]}))
}

both_backends! {
    /// `avi:forge:installed:app`: registered, status installed, the event in the history; the
    /// same event redelivered by Forge (wrapped, with `retryContext`) changes nothing and adds
    /// no second entry; `upgraded` is recorded.
    async fn installed_registers_and_a_retried_event_is_harmless(backend) {
        let f = spawn(backend, &[], |_| {}).await;
        let app = &f.app;
        deliver_ok(app, "/forge/lifecycle", INST_A, CLOUD_A, None, INSTALLED).await;
        let r = row(app, INST_A).await;
        assert_eq!(r.status, "installed");
        assert!(r.uninstalled_at.is_none());
        let h = history(app, INST_A).await;
        assert_eq!(count_of(&h, "avi:forge:installed:app"), 1, "{h:?}");
        let (_, entry) = h.iter().find(|(t, _)| t == "avi:forge:installed:app").unwrap();
        assert_eq!(entry["appVersion"], "9.0.0");
        assert_eq!(entry["installerAccountId"], "4ad9aa0c52dc1b420a791d12");

        // Forge redelivers the same event in the {payload} envelope with retryContext.
        deliver_ok(app, "/forge/lifecycle", INST_A, CLOUD_A, None, WRAPPED_RETRY).await;
        deliver_ok(app, "/forge/lifecycle", INST_A, CLOUD_A, None, WRAPPED_RETRY).await;
        let h = history(app, INST_A).await;
        assert_eq!(count_of(&h, "avi:forge:installed:app"), 1, "{h:?}");
        assert_eq!(row(app, INST_A).await.status, "installed");

        deliver_ok(app, "/forge/lifecycle", INST_A, CLOUD_A, None, UPGRADED).await;
        let h = history(app, INST_A).await;
        assert_eq!(count_of(&h, "avi:forge:upgraded:app"), 1, "{h:?}");
        let (_, up) = h.iter().find(|(t, _)| t == "avi:forge:upgraded:app").unwrap();
        assert_eq!(up["appVersion"], "10.0.0");

        // The history is in the admin detail view, reached by the installation id as every
        // `{client_key}` admin route is.
        let admin = admin_token(app).await;
        let detail = admin_get(app, &admin, &format!("/admin/installations/{INST_A}")).await;
        assert_eq!(detail["installation_id"], fit::installation_ari(INST_A), "{detail}");
        let shown = detail.to_string();
        assert!(shown.contains("avi:forge:installed:app"), "{shown}");
        assert!(shown.contains("avi:forge:upgraded:app"), "{shown}");
    }
}

both_backends! {
    /// Pre-uninstall: status uninstalled, `uninstalled_at` set, the event recorded. The
    /// installation's FITs are still served (Forge keeps the app running), a heartbeat does not
    /// revive it, and only `installed` does.
    async fn pre_uninstall_then_installed_again(backend) {
        // Enforcement off: a 200 from the guarded route then means "authenticated".
        let f = spawn(backend, &[("LICENSE_ENFORCEMENT", "off")], |_| {}).await;
        let app = &f.app;
        deliver_ok(app, "/forge/lifecycle", INST_A, CLOUD_A, None, INSTALLED).await;
        deliver_ok(app, "/forge/pre-uninstall", INST_A, CLOUD_A, None, PRE_UNINSTALL).await;
        let r = row(app, INST_A).await;
        assert_eq!(r.status, "uninstalled");
        let first = r.uninstalled_at.expect("uninstalled_at set");
        let h = history(app, INST_A).await;
        assert_eq!(count_of(&h, "forge:pre_uninstall"), 1, "{h:?}");
        assert!(!serde_json::to_string(&h).unwrap().contains("eyJhbGciOiJSUzI1NiIsImtpZCI6ImZvcmdl"),
            "the contextToken is not kept");

        // Redelivered: the same, once.
        deliver_ok(app, "/forge/pre-uninstall", INST_A, CLOUD_A, None, PRE_UNINSTALL).await;
        let r = row(app, INST_A).await;
        assert_eq!((r.status.as_str(), r.uninstalled_at), ("uninstalled", Some(first)));
        assert_eq!(count_of(&history(app, INST_A).await, "forge:pre_uninstall"), 1);

        // Still served with a FIT.
        let res = app
            .client
            .get(app.url("/api/whoami"))
            .bearer_auth(fit_for(INST_A, CLOUD_A))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
        // The heartbeat keeps it alive but does not reinstall it.
        deliver_ok(app, "/forge/heartbeat", INST_A, CLOUD_A, None, SCHEDULED).await;
        assert_eq!(row(app, INST_A).await.status, "uninstalled");

        deliver_ok(app, "/forge/lifecycle", INST_A, CLOUD_A, None, INSTALLED).await;
        let r = row(app, INST_A).await;
        assert_eq!(r.status, "installed");
        assert!(r.uninstalled_at.is_none());
        // A reinstall after an uninstall is a new entry, not a duplicate of the first one.
        assert_eq!(count_of(&history(app, INST_A).await, "avi:forge:installed:app"), 2);
    }
}

both_backends! {
    /// The hourly trigger: `last_seen_at` moves, nothing is added to the history; an empty
    /// body is fine.
    async fn heartbeat_updates_last_seen(backend) {
        let f = spawn(backend, &[], |_| {}).await;
        let app = &f.app;
        deliver_ok(app, "/forge/heartbeat", INST_A, CLOUD_A, None, SCHEDULED).await;
        let first = row(app, INST_A).await.last_seen_at.expect("last_seen_at");
        tokio::time::sleep(Duration::from_millis(20)).await;
        deliver_ok(app, "/forge/heartbeat", INST_A, CLOUD_A, None, "").await;
        let second = row(app, INST_A).await.last_seen_at.expect("last_seen_at");
        assert!(second > first, "{first} then {second}");
        let h = history(app, INST_A).await;
        assert_eq!(count_of(&h, "forge:scheduled"), 0, "{h:?}");
    }
}

both_backends! {
    /// Identity comes from the FIT only: a body naming another installation (its id, its site)
    /// changes nothing for that one.
    async fn the_body_never_names_the_installation(backend) {
        let f = spawn(backend, &[], |_| {}).await;
        let app = &f.app;
        deliver_ok(app, "/forge/lifecycle", INST_B, CLOUD_B, None, INSTALLED).await;
        let b_before = row(app, INST_B).await;
        let b_history = history(app, INST_B).await;

        // A's token, B's ids in the body.
        let naming_b = json!({
            "payload": {"eventType": "avi:forge:installed:app", "id": INST_B,
                        "installerAccountId": "x", "app": {"id": fit::APP_UUID, "version": "1.0.0"},
                        "context": {"cloudId": CLOUD_B}}
        })
        .to_string();
        deliver_ok(app, "/forge/lifecycle", INST_A, CLOUD_A, None, &naming_b).await;
        let pre_b = json!({"context": {"cloudId": CLOUD_B, "moduleKey": "pre"},
                           "installationId": format!("ari:cloud:ecosystem::installation/{INST_B}")})
            .to_string();
        deliver_ok(app, "/forge/pre-uninstall", INST_A, CLOUD_A, Some(SYSTEM_TOKEN), &pre_b).await;

        let b_after = row(app, INST_B).await;
        assert_eq!(b_after.status, "installed");
        assert_eq!(b_after.uninstalled_at, b_before.uninstalled_at);
        assert!(b_after.forge_system_token.is_none(), "B got no token");
        assert_eq!(history(app, INST_B).await.len(), b_history.len());
        // A took it all.
        let a = row(app, INST_A).await;
        assert_eq!(a.status, "uninstalled");
        assert!(a.forge_system_token.is_some());
        assert_ne!(key_of(app, INST_A).await, key_of(app, INST_B).await);
    }
}

both_backends! {
    /// No FIT, a Connect JWT, or a bad FIT: 401; a bad body: 400 with the JSON error shape —
    /// and nothing is written either way.
    async fn refusals_change_nothing(backend) {
        let f = spawn(backend, &[], |_| {}).await;
        let app = &f.app;
        deliver_ok(app, "/forge/lifecycle", INST_A, CLOUD_A, None, INSTALLED).await;
        let before = history(app, INST_A).await.len();

        for route in ["/forge/lifecycle", "/forge/pre-uninstall", "/forge/heartbeat"] {
            let res = deliver(app, route, None, Some(SYSTEM_TOKEN), INSTALLED).await;
            assert_eq!(res.status(), 401, "{route}");
            let body: Value = res.json().await.unwrap();
            assert!(body["error"].is_string() && body["message"].is_string(), "{body}");
        }
        // A Connect context token is not a Forge token.
        app.install("connect-site", "s3cret").await;
        let connect = hs256_context("connect-site", "s3cret", json!({}));
        let res = app
            .client
            .post(app.url("/forge/pre-uninstall"))
            .header("authorization", format!("JWT {connect}"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(app.installation("connect-site").await.unwrap().status, "installed");
        // A FIT signed by another key.
        let forged = fit::mint_other(&fit::claims_for(now(), INST_A, Some(CLOUD_A)), KID);
        let res = deliver(app, "/forge/pre-uninstall", Some(&forged), None, "{}").await;
        assert_eq!(res.status(), 401);

        for bad in [
            "{not json",
            "[1,2]",
            r#"{"eventType":"avi:jira:created:issue"}"#,
            r#"{"payload":"installed"}"#,
            "{}",
        ] {
            let res = deliver(app, "/forge/lifecycle", Some(&fit_for(INST_A, CLOUD_A)), Some(SYSTEM_TOKEN), bad).await;
            assert_eq!(res.status(), 400, "{bad}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"], "invalid_request", "{body}");
        }
        let r = row(app, INST_A).await;
        assert_eq!(r.status, "installed");
        assert!(r.forge_system_token.is_none(), "no token kept from a refused delivery");
        assert_eq!(history(app, INST_A).await.len(), before);
    }
}

both_backends! {
    /// The app system token is stored encrypted when SECRETS_KEY is set (bound to its
    /// installation), with an expiry, and never appears in an answer; with it the Forge
    /// License API is read and its licence feeds the registry (source forge_license_api, the
    /// trial end) — once, however many deliveries arrive within 5 minutes.
    async fn the_system_token_is_kept_encrypted_and_reads_the_license_api(backend) {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let f = spawn(backend, &[("SECRETS_KEY", key.as_str())], |_| {}).await;
        let app = &f.app;
        Mock::given(method("GET"))
            .and(path(LICENSE_PATH))
            .and(header("authorization", format!("Bearer {SYSTEM_TOKEN}").as_str()))
            .respond_with(license_answer(true, Some("2027-01-20T00:00:00.000Z")))
            .mount(&f.api)
            .await;

        let res = deliver(app, "/forge/lifecycle", Some(&fit_for(INST_A, CLOUD_A)), Some(SYSTEM_TOKEN), INSTALLED).await;
        assert_eq!(res.status(), 204);
        assert!(!res.text().await.unwrap().contains(SYSTEM_TOKEN));
        for _ in 0..3 {
            deliver_ok(app, "/forge/heartbeat", INST_A, CLOUD_A, Some(SYSTEM_TOKEN), SCHEDULED).await;
        }

        let r = row(app, INST_A).await;
        let stored = r.forge_system_token.clone().expect("token stored");
        assert!(stored.starts_with("ck1:"), "sealed: {stored}");
        assert!(!stored.contains(SYSTEM_TOKEN));
        let expires = r.forge_system_token_expires_at.expect("expiry");
        let in_2h = chrono::Utc::now() + chrono::Duration::hours(2);
        assert!((expires - in_2h).num_seconds().abs() < 60, "an opaque token: 2 h, got {expires}");
        // Bound to the installation: it opens with the installation id, not with another row.
        let ring = connect_keeper::secrets::Keyring::parse(&key).unwrap();
        let field = connect_keeper::secrets::Field::FORGE_SYSTEM_TOKEN;
        assert_eq!(ring.open(field, INST_A, &stored).unwrap(), SYSTEM_TOKEN);
        assert!(ring.open(field, INST_B, &stored).is_err());

        // The licence read in the background, once.
        assert!(
            eventually(10, || async {
                row(app, INST_A).await.forge_api_checked_at.is_some()
            })
            .await,
            "the License API was read"
        );
        let r = row(app, INST_A).await;
        assert_eq!(r.forge_api_license_active, Some(true));
        assert_eq!(r.forge_api_license_evaluation, Some(true));
        assert_eq!(r.forge_api_entitlement_id.as_deref(), Some("ent-forge-1"));
        assert!(
            eventually(10, || async {
                row(app, INST_A).await.license_source.as_deref() == Some("forge_license_api")
            })
            .await,
            "the licence view comes from the License API: {:?}",
            row(app, INST_A).await.license_source
        );
        let r = row(app, INST_A).await;
        assert_eq!(r.license_state, "trial");
        assert_eq!(
            r.effective_trial_end,
            Some("2027-01-20T00:00:00Z".parse().unwrap())
        );
        // More deliveries within 5 minutes: still one read.
        deliver_ok(app, "/forge/heartbeat", INST_A, CLOUD_A, Some(SYSTEM_TOKEN), SCHEDULED).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(license_reads(&f.api).await, 1);

        // Nothing an admin sees holds the token (the installation reached by its ARI).
        let admin = admin_token(app).await;
        let ari = crate::forge::urlencoding(&fit::installation_ari(INST_A));
        for route in [
            format!("/admin/installations/{ari}"),
            "/admin/installations".to_owned(),
            "/admin/installations?format=csv".to_owned(),
        ] {
            let body = app.client.get(app.url(&route)).bearer_auth(&admin).send().await.unwrap().text().await.unwrap();
            assert!(!body.contains(SYSTEM_TOKEN), "{route}");
            assert!(!body.contains(&stored), "{route}");
        }
    }
}

both_backends! {
    /// A 429 is honoured: no read before its Retry-After, then a read. (The 5-minute minimum is
    /// shortened to 200 ms here so that the Retry-After is what holds the reads back.)
    async fn a_429_retry_after_is_honoured(backend) {
        let f = spawn(backend, &[], |c| {
            c.forge_license_min_interval = Duration::from_millis(200);
        })
        .await;
        let app = &f.app;
        Mock::given(method("GET"))
            .and(path(LICENSE_PATH))
            .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "3"))
            .up_to_n_times(1)
            .mount(&f.api)
            .await;
        Mock::given(method("GET"))
            .and(path(LICENSE_PATH))
            .respond_with(license_answer(false, None))
            .mount(&f.api)
            .await;

        deliver_ok(app, "/forge/heartbeat", INST_A, CLOUD_A, Some(SYSTEM_TOKEN), SCHEDULED).await;
        assert!(eventually(5, || async { license_reads(&f.api).await == 1 }).await);
        let asked = std::time::Instant::now();
        assert!(
            eventually(5, || async {
                row(app, INST_A).await.forge_api_last_error.is_some()
            })
            .await
        );
        let r = row(app, INST_A).await;
        assert!(r.forge_api_last_error.unwrap().contains("429"));
        let retry_at = r.forge_api_retry_after.expect("next read scheduled");
        let wait = (retry_at - chrono::Utc::now()).num_milliseconds();
        assert!((1_500..=3_100).contains(&wait), "Retry-After: 3 s, next read in {wait} ms");

        // Deliveries with the token during the wait do not make the server read.
        for _ in 0..3 {
            deliver_ok(app, "/forge/heartbeat", INST_A, CLOUD_A, Some(SYSTEM_TOKEN), SCHEDULED).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        if asked.elapsed() < Duration::from_millis(2_500) {
            assert_eq!(license_reads(&f.api).await, 1, "no read before Retry-After");
        }
        // After it, the poll reads again and records the answer.
        assert!(eventually(10, || async { license_reads(&f.api).await == 2 }).await);
        assert!(asked.elapsed() >= Duration::from_millis(2_500), "read again too early");
        assert!(
            eventually(5, || async {
                row(app, INST_A).await.forge_api_license_active == Some(false)
            })
            .await
        );
        assert_eq!(row(app, INST_A).await.forge_api_failures, 0);
    }
}

both_backends! {
    /// The answer does not wait for the Forge License API: with an API that hangs, every
    /// delivery still gets its 204 (the client gives up after 4 s; Forge after 5).
    async fn a_hanging_license_api_holds_nothing_up(backend) {
        let f = spawn(backend, &[], |_| {}).await;
        let app = &f.app;
        Mock::given(method("GET"))
            .respond_with(license_answer(true, None).set_delay(Duration::from_secs(30)))
            .mount(&f.api)
            .await;
        deliver_ok(app, "/forge/lifecycle", INST_A, CLOUD_A, Some(SYSTEM_TOKEN), INSTALLED).await;
        assert!(eventually(5, || async { license_reads(&f.api).await == 1 }).await);
        deliver_ok(app, "/forge/heartbeat", INST_A, CLOUD_A, Some(SYSTEM_TOKEN), SCHEDULED).await;
        deliver_ok(app, "/forge/pre-uninstall", INST_A, CLOUD_A, Some(SYSTEM_TOKEN), PRE_UNINSTALL).await;
        assert_eq!(row(app, INST_A).await.status, "uninstalled");
    }
}

both_backends! {
    /// `secrets rotate` re-encrypts the system tokens too.
    async fn secrets_rotate_covers_system_tokens(backend) {
        let k1 = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let k2 = base64::engine::general_purpose::STANDARD.encode([2u8; 32]);
        let f = spawn(backend, &[("SECRETS_KEY", k1.as_str())], |_| {}).await;
        let app = &f.app;
        deliver_ok(app, "/forge/heartbeat", INST_A, CLOUD_A, Some(SYSTEM_TOKEN), SCHEDULED).await;
        let before = row(app, INST_A).await.forge_system_token.unwrap();
        let k1_id = connect_keeper::secrets::key_id(&[1u8; 32]);
        assert!(before.starts_with(&format!("ck1:{k1_id}:")), "{before}");

        let both = format!("{k2},{k1}");
        let o = tokio::task::spawn_blocking({
            let url = app.db.url.clone();
            let both = both.clone();
            move || {
                Command::new(env!("CARGO_BIN_EXE_connect-keeper"))
                    .args(["secrets", "rotate"])
                    .env_clear()
                    .env("DATABASE_URL", url)
                    .env("SECRETS_KEY", both)
                    .env("RUST_LOG", "warn")
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let after = row(app, INST_A).await.forge_system_token.unwrap();
        let k2_id = connect_keeper::secrets::key_id(&[2u8; 32]);
        assert!(after.starts_with(&format!("ck1:{k2_id}:")), "{after}");
        let ring = connect_keeper::secrets::Keyring::parse(&k2).unwrap();
        assert_eq!(
            ring.open(connect_keeper::secrets::Field::FORGE_SYSTEM_TOKEN, INST_A, &after).unwrap(),
            SYSTEM_TOKEN
        );
    }
}

both_backends! {
    /// The weekly summary counts Forge installations by the same rule as Connect ones: an
    /// installation that became installed (first seen, or reinstalled after an uninstall) or
    /// uninstalled this week — not Forge's `installed` event after the FIT that registered
    /// it, not a retried pre-uninstall, not a Connect tenant moving to Forge.
    async fn the_weekly_summary_counts_forge_installs_and_uninstalls(backend) {
        let app = crate::forge::spawn_forge(backend, &[]).await;
        // A: first install (+1), uninstall retried (+1 uninstall), reinstall (+1).
        deliver_ok(&app, "/forge/lifecycle", INST_A, CLOUD_A, None, INSTALLED).await;
        deliver_ok(&app, "/forge/lifecycle", INST_A, CLOUD_A, None, WRAPPED_RETRY).await;
        deliver_ok(&app, "/forge/pre-uninstall", INST_A, CLOUD_A, None, PRE_UNINSTALL).await;
        deliver_ok(&app, "/forge/pre-uninstall", INST_A, CLOUD_A, None, PRE_UNINSTALL).await;
        deliver_ok(&app, "/forge/lifecycle", INST_A, CLOUD_A, None, INSTALLED).await;
        // B: first seen by its heartbeat (+1), uninstalled (+1 uninstall), then its site
        // reinstalls the app under a new installation id, linked to the same row (+1).
        deliver_ok(&app, "/forge/heartbeat", INST_B, CLOUD_B, None, SCHEDULED).await;
        deliver_ok(&app, "/forge/pre-uninstall", INST_B, CLOUD_B, None, PRE_UNINSTALL).await;
        let inst_b2 = "0b0b0b0b-3333-4333-8333-bbbbbbbbbbbb";
        deliver_ok(&app, "/forge/lifecycle", inst_b2, CLOUD_B, None, INSTALLED).await;
        assert_eq!(key_of(&app, inst_b2).await, format!("forge:{INST_B}"));
        // C: a Connect tenant (+1) moving to Forge on the same site: linked, not a new install.
        // (Before D: the fake product's tenant_info names this site for any tenant after it.)
        let cloud_c = "c3c3c3c3-0000-4000-8000-00000000000c";
        crate::forge::connect_tenant_with_cloud_id(&app, "ck-weekly-c", cloud_c).await;
        let inst_c = "0c0c0c0c-5555-4555-8555-cccccccccccc";
        deliver_ok(&app, "/forge/lifecycle", inst_c, cloud_c, None, INSTALLED).await;
        assert_eq!(key_of(&app, inst_c).await, "ck-weekly-c");

        // D: a Forge-only installation (+1) that a Connect `installed` then takes over (+0).
        let inst_d = "0d0d0d0d-4444-4444-8444-dddddddddddd";
        deliver_ok(&app, "/forge/lifecycle", inst_d, "c4c4c4c4-0000-4000-8000-00000000000d", None, INSTALLED).await;
        let mut payload = app.installed_payload("ck-weekly-d", "shared-secret-weekly-d");
        payload["installationId"] = json!(fit::installation_ari(inst_d));
        app.install_payload(&payload).await;
        assert_eq!(key_of(&app, inst_d).await, "ck-weekly-d");
        let admin = admin_token(&app).await;
        let weekly = admin_get(&app, &admin, "/admin/summary/weekly").await;
        let week = &weekly["weeks"][25];
        assert_eq!(
            (week["installs"].as_i64(), week["uninstalls"].as_i64()),
            (Some(6), Some(2)),
            "A twice, B and its reinstall, C, D; A and B uninstalled: {week}"
        );
        let earlier: i64 = weekly["weeks"].as_array().unwrap()[..25]
            .iter()
            .map(|w| w["installs"].as_i64().unwrap() + w["uninstalls"].as_i64().unwrap())
            .sum();
        assert_eq!(earlier, 0);
    }
}

/// `GET path` of the admin API with the bearer token `admin`: the JSON answer.
async fn admin_get(app: &TestApp, admin: &str, path: &str) -> Value {
    let res = app
        .client
        .get(app.url(path))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.unwrap()
}

/// An admin token for the app's database, created with the CLI.
async fn admin_token(app: &TestApp) -> String {
    let url = app.db.url.clone();
    let o = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_connect-keeper"))
            .args(["admin-token", "create", "--name", "forge-test"])
            .env_clear()
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

both_backends! {
    /// The real binary at `RUST_LOG=trace`, JSON logs: the system token appears in no log
    /// line — not when it is received and stored, not when the License API is read with it,
    /// not when that read fails with an answer that echoes it.
    async fn the_system_token_is_never_logged(backend) {
        let db = TestDb::new(backend).await;
        let jwks = jwks_server().await;
        let api = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(401)
                    .set_body_string(format!("invalid token {SYSTEM_TOKEN}")),
            )
            .mount(&api)
            .await;
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_connect-keeper"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &db.url)
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("APP_BASE_URL", "https://app.example.test")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "trace")
            .env("FORGE_APP_ID", fit::APP_UUID)
            .env("FORGE_JWKS_URL", format!("{}/jwks.json", jwks.uri()))
            .env("FORGE_API_URL", api.uri())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str::<Value>(&line)
                        && let Some(port) = v["port"].as_u64()
                    {
                        let _ = tx.send(port as u16);
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let port = rx.recv_timeout(Duration::from_secs(60)).expect("the server logs its port");
        let client = reqwest::Client::new();
        let post = |route: &'static str, body: &'static str| {
            client
                .post(format!("http://127.0.0.1:{port}{route}"))
                .header("authorization", format!("Bearer {}", fit_for(INST_A, CLOUD_A)))
                .header("x-forge-oauth-system", SYSTEM_TOKEN)
                .body(body)
                .send()
        };
        assert_eq!(post("/forge/lifecycle", INSTALLED).await.unwrap().status(), 204);
        assert_eq!(post("/forge/heartbeat", SCHEDULED).await.unwrap().status(), 204);
        assert_eq!(post("/forge/lifecycle", "{bad").await.unwrap().status(), 400);
        let read = async {
            for _ in 0..100 {
                if api.received_requests().await.unwrap_or_default().len() == 1 {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        };
        assert!(read.await, "the License API was read (and failed)");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = child.kill();
        let _ = child.wait();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let lines = lines.lock().unwrap();
        assert!(lines.len() > 20, "trace logging is on: {} lines", lines.len());
        assert!(
            lines.iter().any(|l| l.contains("Forge License API")),
            "the failed read is logged"
        );
        for line in lines.iter() {
            assert!(!line.contains(SYSTEM_TOKEN), "token in a log line: {line}");
            assert!(!line.contains("forge-system-token"), "token in a log line: {line}");
        }
    }
}
