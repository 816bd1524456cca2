//! Forge: Forge Invocation Tokens on the guarded routes, the registry of Forge installations
//! (first sight, linking by installation id and by cloudId, reinstall), the licence decision
//! for FITs, and the Forge key set. The key set is a wiremock server publishing the
//! repository's test key; FITs are minted here (`connect_keeper::forge::testing`).

use chrono::{Duration, Utc};
use connect_keeper::forge::testing::{self, APP_UUID, CLOUD_ID, INSTALLATION_UUID, KID};
use connect_keeper::registry::grants as vendor;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

const SECRET: &str = "shared-secret-for-forge-tests";
const JWKS_PATH: &str = "/.well-known/jwks.json";

/// A running app with the Forge path on (`FORGE_APP_ID` = the test app) and its fake key set.
pub struct ForgeApp {
    pub app: TestApp,
    pub jwks: MockServer,
}

impl std::ops::Deref for ForgeApp {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

/// A key set server publishing the test key under [`KID`].
pub async fn jwks_server() -> MockServer {
    let jwks = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(JWKS_PATH))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(testing::jwks(&[(KID, testing::PUBLIC_PEM)])),
        )
        .mount(&jwks)
        .await;
    jwks
}

/// Starts the app with `FORGE_APP_ID` and `FORGE_JWKS_URL` set, plus `env`; waits until the
/// key set was fetched at start-up.
pub async fn spawn_forge(backend: Backend, env: &[(&str, &str)]) -> ForgeApp {
    spawn_forge_tuned(backend, env, |_| {}).await
}

pub async fn spawn_forge_tuned(
    backend: Backend,
    env: &[(&str, &str)],
    tune: fn(&mut connect_keeper::config::Config),
) -> ForgeApp {
    let jwks = jwks_server().await;
    let url = format!("{}{JWKS_PATH}", jwks.uri());
    let mut vars: Vec<(&str, &str)> = vec![("FORGE_APP_ID", APP_UUID), ("FORGE_JWKS_URL", &url)];
    vars.extend_from_slice(env);
    let app = TestApp::spawn_tuned(backend, &vars, tune).await;
    let keys = app.state.forge_keys.clone().expect("Forge path on");
    assert!(
        eventually(5, || async { !keys.is_empty() }).await,
        "the key set is fetched at start-up"
    );
    ForgeApp { app, jwks }
}

/// Valid FIT claims now, for the test installation on the test site.
pub fn fit_claims() -> Value {
    testing::claims(Utc::now().timestamp())
}

/// FIT claims for another installation on `cloud_id`.
pub fn fit_claims_for(installation_uuid: &str, cloud_id: &str) -> Value {
    testing::claims_for(Utc::now().timestamp(), installation_uuid, Some(cloud_id))
}

/// A FIT signed with the published test key.
pub fn fit(claims: &Value) -> String {
    testing::mint(claims, KID)
}

/// `method path` with `Authorization: Bearer <token>`.
pub async fn with_fit(app: &TestApp, method: &str, path: &str, token: &str) -> reqwest::Response {
    app.client
        .request(method.parse().unwrap(), app.url(path))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("request sent")
}

async fn whoami(app: &TestApp, claims: &Value) -> (u16, Value) {
    whoami_with(app, &fit(claims)).await
}

async fn whoami_with(app: &TestApp, token: &str) -> (u16, Value) {
    let res = with_fit(app, "GET", "/api/whoami", token).await;
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

/// The licence source whoami answers for `claims`, or `"{status} {error}"`.
async fn whoami_says(app: &TestApp, claims: &Value) -> String {
    token_says(app, &fit(claims)).await
}

/// The licence source whoami answers for this very token, or `"{status} {error}"`.
async fn token_says(app: &TestApp, token: &str) -> String {
    match whoami_with(app, token).await {
        (200, body) => body["license_source"].as_str().unwrap().to_owned(),
        (status, body) => format!("{status} {}", body["error"].as_str().unwrap_or_default()),
    }
}

/// The message of a refusal of this token (401 asserted).
async fn refused_because(app: &TestApp, token: &str) -> String {
    let (status, body) = whoami_with(app, token).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token")),
        "{body}"
    );
    body["message"].as_str().unwrap_or_default().to_owned()
}

fn with_license(mut claims: Value, license: Value) -> Value {
    claims["app"]["license"] = license;
    claims
}

async fn row_count(app: &TestApp) -> i64 {
    connect_keeper::store::installations::count(&app.state.db)
        .await
        .unwrap()
}

fn internal_key(uuid: &str) -> String {
    format!("forge:{uuid}")
}

both_backends! {
    async fn a_fit_registers_its_installation_at_first_sight(backend) {
        let app = spawn_forge(backend, &[]).await;
        let claims = with_license(fit_claims(), json!({"active": true}));
        let (status, body) = whoami(&app, &claims).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            json!({
                "client_key": null,
                "installation_id": testing::installation_ari(INSTALLATION_UUID),
                "account_id": "user-1",
                "licensed": true,
                "license_source": "fit",
            })
        );
        let row = app.installation(&internal_key(INSTALLATION_UUID)).await.expect("registered");
        assert_eq!(row.flavour, "forge");
        assert_eq!(row.status, "installed");
        assert_eq!(row.forge_installation_id.as_deref(), Some(INSTALLATION_UUID));
        assert_eq!(row.cloud_id.as_deref(), Some(CLOUD_ID));
        assert_eq!(row.site.product_type, "jira");
        assert_eq!(row.site.app_key, APP_KEY);
        assert_eq!(row.site.base_url, "https://acme.atlassian.net");
        assert_eq!(row.forge_environment_type.as_deref(), Some("PRODUCTION"));
        assert_eq!(row.forge_environment_id.as_deref(), Some(testing::ENVIRONMENT_ID));
        let events = app.events(&internal_key(INSTALLATION_UUID)).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, "forge_registered");

        // Known from now on: no second row, no second event; a FIT without a principal
        // (events, triggers) has no account.
        let mut no_user = claims.clone();
        no_user.as_object_mut().unwrap().remove("principal");
        let (status, body) = whoami(&app, &no_user).await;
        assert_eq!((status, body["account_id"].clone()), (200, Value::Null));
        assert_eq!(row_count(&app).await, 1);
        assert_eq!(app.events(&internal_key(INSTALLATION_UUID)).await.len(), 1);
    }
}

both_backends! {
    async fn every_fit_refusal_is_a_401_counted_by_reason(backend) {
        let app = spawn_forge(backend, &[]).await;
        let now = Utc::now().timestamp();
        let good = fit_claims();
        let edited = |edit: &dyn Fn(&mut Value)| {
            let mut c = good.clone();
            edit(&mut c);
            fit(&c)
        };
        let hs256 = connect_keeper::connect::jwt::sign_hs256(&good, testing::PUBLIC_PEM.as_bytes());
        let no_kid = testing::mint_with_header(&good, None, jsonwebtoken::Algorithm::RS256);
        let cases: Vec<(&str, String)> = vec![
            ("malformed", "not.a-token".into()),
            ("bad_algorithm", hs256),
            ("bad_kid", no_kid),
            ("unknown_kid", testing::mint(&good, "invented-kid")),
            ("bad_signature", testing::mint_other(&good, KID)),
            ("wrong_issuer", edited(&|c| c["iss"] = json!("forge/context-token"))),
            ("wrong_audience", edited(&|c| c["aud"] = json!("ari:cloud:ecosystem::app/11111111-2222-4333-8444-555555555555"))),
            ("missing_claim", edited(&|c| { c.as_object_mut().unwrap().remove("nbf"); })),
            ("expired", edited(&|c| c["exp"] = json!(now - 120))),
            ("not_yet_valid", edited(&|c| c["nbf"] = json!(now + 120))),
            ("issued_in_future", edited(&|c| c["iat"] = json!(now + 120))),
            ("app_id_mismatch", edited(&|c| c["app"]["id"] = json!("ari:cloud:ecosystem::app/11111111-2222-4333-8444-555555555555"))),
            ("missing_installation_id", edited(&|c| { c["app"].as_object_mut().unwrap().remove("installationId"); })),
            ("installation_id_mismatch", edited(&|c| c["app"]["installation"]["id"] = json!(testing::installation_ari("11111111-2222-4333-8444-555555555555")))),
            ("cloud_id_mismatch", edited(&|c| c["context"]["cloudId"] = json!("another-site"))),
            ("environment_not_allowed", edited(&|c| c["app"]["environment"]["type"] = json!("DEVELOPMENT"))),
            ("isolated_cloud", edited(&|c| c["icLabel"] = json!("acme"))),
        ];
        for (reason, token) in &cases {
            for route in ["/api/whoami", "/api/access-tokens/redeem"] {
                let verb = if route == "/api/whoami" { "GET" } else { "POST" };
                let res = with_fit(&app, verb, route, token).await;
                assert_eq!(res.status(), 401, "{reason} on {route}");
                assert!(res.headers().get("www-authenticate").is_some());
                let body: Value = res.json().await.unwrap();
                assert_eq!(body["error"], "invalid_token", "{reason}");
                let message = body["message"].as_str().unwrap();
                assert!(!message.contains(token.as_str()) && !message.contains(CLOUD_ID), "{message}");
            }
        }
        // Empty bearer.
        let res = app.client.get(app.url("/api/whoami")).header("authorization", "Bearer ").send().await.unwrap();
        assert_eq!(res.status(), 401);

        let metrics = app.get("/metrics").await.text().await.unwrap();
        for (reason, _) in &cases {
            let line = format!("fit_verification_failures_total{{reason=\"{reason}\"}} 2");
            assert!(metrics.contains(&line), "{line} in\n{metrics}");
        }
        // Nothing was registered by any of them.
        assert_eq!(row_count(&app).await, 0);
        // The key set was not fetched again for the invented kid (the start-up fetch is
        // less than 30 s old).
        assert_eq!(app.jwks.received_requests().await.unwrap().len(), 1);
        // /panel takes Connect tokens only: a valid FIT there is no credential.
        let res = with_fit(&app, "GET", "/panel", &fit(&good)).await;
        assert_eq!(res.status(), 401);
        assert_eq!(row_count(&app).await, 0);
    }
}

both_backends! {
    async fn without_forge_app_id_a_bearer_token_is_refused(backend) {
        let app = TestApp::spawn(backend).await;
        let res = with_fit(&app, "GET", "/api/whoami", &fit(&fit_claims())).await;
        assert_eq!(res.status(), 401);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "invalid_token");
        let metrics = app.get("/metrics").await.text().await.unwrap();
        assert!(metrics.contains("fit_verification_failures_total{reason=\"forge_disabled\"} 1"), "{metrics}");
    }
}

both_backends! {
    async fn a_rotated_key_is_fetched_once_and_a_flood_of_unknown_kids_fetches_at_most_once_per_cooldown(backend) {
        let app = spawn_forge_tuned(backend, &[], |c| {
            c.forge_jwks_cooldown = std::time::Duration::from_secs(2);
        })
        .await;
        let fetches = || async { app.jwks.received_requests().await.unwrap().len() };
        assert_eq!(fetches().await, 1, "fetched at start-up");
        // Atlassian rotates: the key set now also holds a new kid.
        app.jwks.reset().await;
        Mock::given(method("GET"))
            .and(path(JWKS_PATH))
            .respond_with(ResponseTemplate::new(200).set_body_json(testing::jwks(&[
                (KID, testing::PUBLIC_PEM),
                ("rotated-kid", testing::OTHER_PUBLIC_PEM),
            ])))
            .mount(&app.jwks)
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        // A flood of invented kids, all at once: one fetch between them.
        let flood = (0..100).map(|i| {
            let token = testing::mint(&fit_claims(), &format!("invented-{i}"));
            let app = &app;
            async move { with_fit(app, "GET", "/api/whoami", &token).await.status().as_u16() }
        });
        let statuses = futures::future::join_all(flood).await;
        assert!(statuses.iter().all(|s| *s == 401));
        assert_eq!(fetches().await, 1, "one fetch for the whole flood");
        // The rotated key is in that fetch: a FIT signed with it passes without another one.
        let rotated = testing::mint_other(&with_license(fit_claims(), json!({"active": true})), "rotated-kid");
        let res = with_fit(&app, "GET", "/api/whoami", &rotated).await;
        assert_eq!(res.status(), 200);
        // Within the cool-down, more invented kids fetch nothing.
        for i in 0..20 {
            let token = testing::mint(&fit_claims(), &format!("again-{i}"));
            assert_eq!(with_fit(&app, "GET", "/api/whoami", &token).await.status(), 401);
        }
        assert_eq!(fetches().await, 1);
    }
}

both_backends! {
    async fn a_connect_tenant_is_linked_by_its_installation_id_with_its_grants(backend) {
        let app = spawn_forge(backend, &[]).await;
        let mut payload = app.installed_payload("ck-cof", SECRET);
        payload["installationId"] = json!(testing::installation_ari(INSTALLATION_UUID));
        app.install_payload(&payload).await;
        let row = app.installation("ck-cof").await.unwrap();
        assert_eq!(row.flavour, "connect_on_forge");
        assert_eq!(row.forge_installation_id.as_deref(), Some(INSTALLATION_UUID));
        vendor::grant_free(app.state.as_ref(), "ck-cof", None, None, "test", Utc::now()).await.unwrap();

        // No licence in the FIT: the grant decides, for the same tenant.
        let (status, body) = whoami(&app, &fit_claims()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["client_key"], "ck-cof");
        assert_eq!(body["installation_id"], testing::installation_ari(INSTALLATION_UUID));
        assert_eq!(body["license_source"], "grant");
        assert_eq!(row_count(&app).await, 1);
    }
}

/// A Connect tenant whose cloudId the product's tenant_info gave (as after any install).
pub async fn connect_tenant_with_cloud_id(app: &ForgeApp, client_key: &str, cloud_id: &str) {
    Mock::given(method("GET"))
        .and(path("/_edge/tenant_info"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"cloudId": cloud_id})))
        .mount(&app.product)
        .await;
    let mut payload = app.installed_payload(client_key, SECRET);
    payload.as_object_mut().unwrap().remove("installationId");
    app.install_payload(&payload).await;
    assert!(
        eventually(10, || async {
            app.installation(client_key)
                .await
                .and_then(|r| r.cloud_id)
                .as_deref()
                == Some(cloud_id)
        })
        .await,
        "tenant_info read"
    );
    assert_eq!(
        app.installation(client_key).await.unwrap().flavour,
        "connect"
    );
}

both_backends! {
    async fn a_connect_tenant_is_linked_by_cloud_id_and_keeps_grants_and_history(backend) {
        let app = spawn_forge(backend, &[]).await;
        connect_tenant_with_cloud_id(&app, "ck-site", CLOUD_ID).await;
        let now = Utc::now();
        let ext = vendor::extend_trial(app.state.as_ref(), "ck-site", 10, Some("pilot"), "test", now)
            .await
            .unwrap();

        let (status, body) = whoami(&app, &fit_claims()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["client_key"], "ck-site");
        assert_eq!(body["license_source"], "grant");
        let row = app.installation("ck-site").await.unwrap();
        assert_eq!(row.flavour, "connect_on_forge");
        assert_eq!(row.forge_installation_id.as_deref(), Some(INSTALLATION_UUID));
        assert_eq!(row_count(&app).await, 1);
        let events: Vec<String> = app.events("ck-site").await.into_iter().map(|e| e.event_type).collect();
        assert_eq!(events, vec!["installed", "forge_linked"]);
        let grants = connect_keeper::store::grants::for_client(&app.state.db, "ck-site").await.unwrap();
        assert_eq!(grants.len(), 1);
        assert_eq!(grants[0].id, ext.id);

        // Another product on the same site is another installation.
        let mut confluence = fit_claims_for("22222222-3333-4444-8555-666666666666", CLOUD_ID);
        confluence["app"]["installation"]["contexts"][0]["name"] = json!("confluence");
        let (status, body) = whoami(&app, &with_license(confluence, json!({"active": true}))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["client_key"], Value::Null);
        assert_eq!(row_count(&app).await, 2);
    }
}

both_backends! {
    async fn a_forge_site_that_reinstalls_keeps_its_row(backend) {
        let app = spawn_forge(backend, &[]).await;
        let first = with_license(fit_claims(), json!({"active": false}));
        assert_eq!(whoami_says(&app, &first).await, "403 unlicensed");
        let key = internal_key(INSTALLATION_UUID);
        vendor::grant_free(app.state.as_ref(), &key, None, None, "test", Utc::now()).await.unwrap();

        let new_id = "33333333-4444-4555-8666-777777777777";
        let again = with_license(fit_claims_for(new_id, CLOUD_ID), json!({"active": false}));
        let (status, body) = whoami(&app, &again).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["license_source"], "grant");
        assert_eq!(body["installation_id"], testing::installation_ari(new_id));
        assert_eq!(row_count(&app).await, 1);
        let row = app.installation(&key).await.unwrap();
        assert_eq!(row.forge_installation_id.as_deref(), Some(new_id));
        assert_eq!(row.flavour, "forge");
    }
}

both_backends! {
    async fn a_connect_install_naming_a_forge_only_installation_takes_it_over(backend) {
        let app = spawn_forge(backend, &[]).await;
        assert_eq!(whoami_says(&app, &with_license(fit_claims(), json!({"active": true}))).await, "fit");
        let key = internal_key(INSTALLATION_UUID);
        vendor::grant_free(app.state.as_ref(), &key, None, None, "test", Utc::now()).await.unwrap();

        // Connect on Forge: the Connect `installed` names the same installation.
        let mut payload = app.installed_payload("ck-late", SECRET);
        payload["installationId"] = json!(testing::installation_ari(INSTALLATION_UUID));
        app.install_payload(&payload).await;
        assert!(app.installation(&key).await.is_none(), "the Forge-only row became the tenant");
        let row = app.installation("ck-late").await.unwrap();
        assert_eq!(row.flavour, "connect_on_forge");
        assert_eq!(row.cloud_id.as_deref(), Some(CLOUD_ID));
        let events: Vec<String> = app.events("ck-late").await.into_iter().map(|e| e.event_type).collect();
        assert_eq!(events, vec!["forge_registered", "installed"]);

        // The FIT now speaks for the Connect tenant, grant included; so does its Connect JWT.
        let (status, body) = whoami(&app, &fit_claims()).await;
        assert_eq!((status, body["client_key"].clone()), (200, json!("ck-late")), "{body}");
        assert_eq!(body["license_source"], "grant");
        let token = hs256_context("ck-late", SECRET, json!({}));
        let res = app.get_with_jwt_header("/api/whoami", &token).await;
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["license_source"], "grant");
        assert_eq!(body["installation_id"], testing::installation_ari(INSTALLATION_UUID));
        assert_eq!(row_count(&app).await, 1);
    }
}

both_backends! {
    async fn the_licence_of_a_fit_decides_in_order(backend) {
        let app = spawn_forge(backend, &[]).await;
        let claims = fit_claims();
        // Nothing known yet and no licence in the token: unlicensed.
        assert_eq!(whoami_says(&app, &claims).await, "403 unlicensed");
        // `active` true; `isActive` when `active` is absent; `active` wins over `isActive`.
        assert_eq!(whoami_says(&app, &with_license(claims.clone(), json!({"active": true}))).await, "fit");
        assert_eq!(whoami_says(&app, &with_license(claims.clone(), json!({"isActive": true}))).await, "fit");
        assert_eq!(
            whoami_says(&app, &with_license(claims.clone(), json!({"active": false, "isActive": true}))).await,
            "403 unlicensed"
        );
        // Absent: the last known licence, which the last FIT said (inactive).
        assert_eq!(whoami_says(&app, &claims).await, "403 unlicensed");
        assert_eq!(whoami_says(&app, &with_license(claims.clone(), json!({"active": true}))).await, "fit");
        assert_eq!(whoami_says(&app, &claims).await, "known_license");
        // Recorded in the background (not by the request), and kept across a restart.
        let key = internal_key(INSTALLATION_UUID);
        assert!(
            eventually(5, || async {
                app.installation(&key).await.and_then(|r| r.fit_license_active) == Some(true)
            })
            .await
        );
        let ForgeApp { app, jwks } = app;
        let app = ForgeApp { app: app.restart().await, jwks };
        assert_eq!(whoami_says(&app, &claims).await, "known_license");
        // A grant wins over an inactive licence.
        vendor::grant_free(app.state.as_ref(), &key, None, None, "test", Utc::now()).await.unwrap();
        assert_eq!(whoami_says(&app, &with_license(claims.clone(), json!({"active": false}))).await, "grant");
    }
}

both_backends! {
    async fn enforcement_off_lets_every_verified_fit_through(backend) {
        let app = spawn_forge(backend, &[("LICENSE_ENFORCEMENT", "off")]).await;
        let claims = with_license(fit_claims(), json!({"active": false}));
        assert_eq!(whoami_says(&app, &claims).await, "enforcement_off");
    }
}

both_backends! {
    async fn a_non_production_environment_is_refused_unless_configured(backend) {
        let mut claims = with_license(fit_claims(), json!({"active": true}));
        claims["app"]["environment"]["type"] = json!("DEVELOPMENT");
        let app = spawn_forge(backend, &[]).await;
        assert_eq!(whoami_says(&app, &claims).await, "401 invalid_token");
        assert_eq!(row_count(&app).await, 0);
        drop(app);
        let app = spawn_forge(backend, &[("FORGE_ENVIRONMENTS", "DEVELOPMENT,STAGING,PRODUCTION")]).await;
        assert_eq!(whoami_says(&app, &claims).await, "fit");
        let row = app.installation(&internal_key(INSTALLATION_UUID)).await.unwrap();
        assert_eq!(row.forge_environment_type.as_deref(), Some("DEVELOPMENT"));
    }
}

both_backends! {
    async fn a_known_forge_installation_needs_no_database(backend) {
        let app = spawn_forge_tuned(backend, &[], no_change_poll).await;
        let claims = with_license(fit_claims(), json!({"active": true}));
        assert_eq!(whoami_says(&app, &claims).await, "fit"); // first sight: registered
        app.state.db.close().await;
        for _ in 0..3 {
            assert_eq!(whoami_says(&app, &claims).await, "fit");
            assert_eq!(whoami_says(&app, &fit_claims()).await, "known_license");
        }
        // An installation never seen needs the database: 503, not a wrong answer.
        let unknown = fit_claims_for("44444444-5555-4666-8777-888888888888", "other-cloud");
        assert_eq!(whoami_says(&app, &unknown).await, "503 unavailable");
    }
}

both_backends! {
    /// Forge's bridge presents the same FIT for many calls: after its first sight it is
    /// recalled from memory (no database, no signature check) — and still refused once it
    /// expires, though the cache holds it.
    async fn a_reused_fit_is_served_from_memory_until_it_expires(backend) {
        let app = spawn_forge_tuned(backend, &[("JWT_LEEWAY_SECS", "0")], no_change_poll).await;
        let now = Utc::now().timestamp();
        let mut claims = with_license(testing::claims(now), json!({"active": true}));
        claims["exp"] = json!(now + 3);
        let token = fit(&claims);
        assert_eq!(token_says(&app, &token).await, "fit"); // first sight: registered
        assert_eq!(app.state.verified_fits.len(), 1, "remembered");

        app.state.db.close().await;
        for _ in 0..5 {
            assert_eq!(token_says(&app, &token).await, "fit");
        }
        assert_eq!(app.state.verified_fits.len(), 1, "the same FIT, remembered once");
        let metrics = app.get("/metrics").await.text().await.unwrap();
        assert!(metrics.contains("fit_tokens_total{source=\"verified\"} 1"), "{metrics}");
        assert!(metrics.contains("fit_tokens_total{source=\"recalled\"} 5"), "{metrics}");

        while Utc::now().timestamp() <= now + 3 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let said = refused_because(&app, &token).await;
        assert!(said.contains("expired"), "{said}");
        let metrics = app.get("/metrics").await.text().await.unwrap();
        assert!(metrics.contains("fit_verification_failures_total{reason=\"expired\"} 1"), "{metrics}");
    }
}

both_backends! {
    /// A remembered FIT counts only while the key set holds the key that verified it: a key
    /// replaced under the same `kid` refuses it (its signature is checked again), a withdrawn
    /// `kid` refuses it, and the key published again verifies it again.
    async fn a_remembered_fit_is_verified_again_when_its_key_changes(backend) {
        let app = spawn_forge_tuned(backend, &[], |c| {
            c.forge_jwks_cooldown = std::time::Duration::ZERO;
        })
        .await;
        let token = fit(&with_license(fit_claims(), json!({"active": true})));
        assert_eq!(token_says(&app, &token).await, "fit");
        assert_eq!(token_says(&app, &token).await, "fit");
        let publish = |set| publish_key_set(&app, set);

        publish(testing::jwks(&[(KID, testing::OTHER_PUBLIC_PEM)])).await;
        let said = refused_because(&app, &token).await;
        assert!(said.contains("signature"), "{said}");

        publish(testing::jwks(&[("another-kid", testing::PUBLIC_PEM)])).await;
        let said = refused_because(&app, &token).await;
        assert!(said.contains("(kid) is not in the Forge key set"), "{said}");

        publish(testing::jwks(&[(KID, testing::PUBLIC_PEM)])).await;
        assert_eq!(token_says(&app, &token).await, "fit");
    }
}

/// The key set server now publishes `set`, and the app has read it (as its hourly refresh
/// would).
async fn publish_key_set(app: &ForgeApp, set: Value) {
    app.jwks.reset().await;
    Mock::given(method("GET"))
        .and(path(JWKS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(set))
        .mount(&app.jwks)
        .await;
    let keys = app.state.forge_keys.clone().expect("Forge path on");
    assert!(keys.refresh_if_due().await, "the key set is read again");
}

both_backends! {
    async fn redeeming_an_access_token_with_a_fit_binds_it_to_the_forge_installation(backend) {
        let app = spawn_forge(backend, &[]).await;
        let now = Utc::now();
        let (_, token) = vendor::create_access_token(app.state.as_ref(), Some("pilot"), Some(now + Duration::days(30)), None, "test", now)
            .await
            .unwrap();
        let res = app
            .client
            .post(app.url("/api/access-tokens/redeem"))
            .header("authorization", format!("Bearer {}", fit(&fit_claims())))
            .json(&json!({"token": token}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(whoami_says(&app, &fit_claims()).await, "access_token");
    }
}

const ADMIN: &str = "test-admin-token-forge-1a2b3c4d5e6f7a8b";

async fn admin(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = app
        .client
        .request(method.parse().unwrap(), app.url(path))
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `connect-keeper ARGS` against the app's database, as the vendor runs it.
async fn cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let db_url = app.db.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_connect-keeper"))
            .args(&args)
            .env_clear()
            .env("DATABASE_URL", db_url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run the binary")
    })
    .await
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

both_backends! {
    async fn the_admin_api_shows_and_acts_on_forge_installations_by_installation_id(backend) {
        let app = spawn_forge(backend, &[("ADMIN_TOKEN", ADMIN)]).await;
        connect_tenant_with_cloud_id(&app, "ck-plain", "cloud-of-a-connect-site").await;
        assert_eq!(whoami_says(&app, &with_license(fit_claims(), json!({"active": true}))).await, "fit");
        let ari = testing::installation_ari(INSTALLATION_UUID);

        // By the bare uuid and by the ARI: the same installation, client_key null.
        for id in [INSTALLATION_UUID.to_owned(), ari.clone()] {
            let path = format!("/admin/installations/{}", urlencoding(&id));
            let (status, body) = admin(&app, "GET", &path, None).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["client_key"], Value::Null);
            assert_eq!(body["installation_id"], ari);
            assert_eq!(body["flavour"], "forge");
            assert_eq!(body["forge_environment"], json!({"type": "PRODUCTION", "id": testing::ENVIRONMENT_ID}));
            assert_eq!(body["events"][0]["event_type"], "forge_registered");
            assert!(!body.to_string().contains("forge:"), "the internal key never shows: {body}");
        }
        let (status, grant) = admin(&app, "POST", &format!("/admin/installations/{INSTALLATION_UUID}/grants"),
            Some(json!({"kind": "free", "reason": "partner"}))).await;
        assert_eq!(status, 201, "{grant}");
        assert_eq!(whoami_says(&app, &fit_claims()).await, "grant");
        let (status, _) = admin(&app, "POST", &format!("/admin/installations/{}/trial-extension", urlencoding(&ari)),
            Some(json!({"days": 5}))).await;
        assert_eq!(status, 201);
        // An installation id nobody has: 404.
        let (status, _) = admin(&app, "GET", "/admin/installations/99999999-9999-4999-8999-999999999999", None).await;
        assert_eq!(status, 404);

        // The flavour filter (comma-separated) and the Connect tenant's JSON.
        let page = admin(&app, "GET", "/admin/installations?flavour=forge", None).await.1;
        assert_eq!(page["total"], 1);
        assert_eq!(page["items"][0]["installation_id"], ari);
        let page = admin(&app, "GET", "/admin/installations?flavour=connect,connect_on_forge", None).await.1;
        assert_eq!(page["total"], 1);
        assert_eq!(page["items"][0]["client_key"], "ck-plain");
        assert_eq!(page["items"][0]["flavour"], "connect");
        assert_eq!(page["items"][0]["forge_environment"], Value::Null);
        let (status, body) = admin(&app, "GET", "/admin/installations?flavour=classic", None).await;
        assert_eq!(status, 400);
        assert!(body["message"].as_str().unwrap().starts_with("flavour"), "{body}");
        // CSV: the Forge columns at the end, the client key empty.
        let (status, csv) = admin(&app, "GET", "/admin/installations?format=csv&flavour=forge", None).await;
        assert_eq!(status, 200);
        let csv = csv.as_str().unwrap().to_owned();
        let header = csv.lines().next().unwrap();
        assert!(header.ends_with("flavour,forge_environment_type,forge_environment_id"), "{header}");
        let row = csv.lines().nth(1).unwrap();
        assert!(row.starts_with(','), "{row}");
        assert!(row.contains(",forge,PRODUCTION,"), "{row}");
        // The OpenAPI document names the filter and the installation-id form.
        let doc = admin(&app, "GET", "/admin/openapi.json", None).await.1.to_string();
        assert!(doc.contains("connect_on_forge") && doc.contains("Forge installation id"));
    }
}

both_backends! {
    async fn the_cli_finds_forge_installations_by_installation_id(backend) {
        let app = spawn_forge(backend, &[]).await;
        assert_eq!(whoami_says(&app, &with_license(fit_claims(), json!({"active": true}))).await, "fit");
        let ari = testing::installation_ari(INSTALLATION_UUID);

        let (ok, out, err) = cli(&app, &["installations", "show", INSTALLATION_UUID, "--format", "json"]).await;
        assert!(ok, "{err}");
        let body: Value = serde_json::from_str(&out).unwrap();
        assert_eq!((body["client_key"].clone(), body["flavour"].clone()), (Value::Null, json!("forge")));
        let (ok, out, err) = cli(&app, &["installations", "show", &ari]).await;
        assert!(ok, "{err}");
        assert!(out.contains("flavour") && out.contains("forge") && out.contains("PRODUCTION"), "{out}");

        let (ok, _, err) = cli(&app, &["grant", "free", &ari, "--reason", "partner"]).await;
        assert!(ok, "{err}");
        assert!(eventually(5, || async { whoami_says(&app, &fit_claims()).await == "grant" }).await);
        let (ok, _, err) = cli(&app, &["trial", "extend", INSTALLATION_UUID, "--days", "3"]).await;
        assert!(ok, "{err}");

        let (ok, out, err) = cli(&app, &["installations", "list", "--flavour", "forge"]).await;
        assert!(ok, "{err}");
        let header = out.lines().next().unwrap();
        assert!(header.contains("FLAVOUR") && header.contains("FORGE_ENV"), "{header}");
        assert!(out.contains(&ari) && out.contains("PRODUCTION"), "{out}");
        let (ok, out, _) = cli(&app, &["installations", "list", "--flavour", "connect", "--format", "json"]).await;
        assert!(ok);
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["items"], json!([]));
        let (ok, _, err) = cli(&app, &["installations", "list", "--flavour", "classic"]).await;
        assert!(!ok);
        assert!(err.contains("--flavour"), "{err}");
    }
}

both_backends! {
    async fn a_fit_trial_end_is_the_installation_trial_end_and_extensions_count_from_it(backend) {
        let app = spawn_forge(backend, &[("ADMIN_TOKEN", ADMIN)]).await;
        let trial_end = (Utc::now() + Duration::days(20)).date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
        let license = json!({
            "active": true, "isEvaluation": true, "type": "commercial",
            "trialEndDate": trial_end.to_rfc3339(),
            "ccpEntitlementId": "ccp-ent-1", "ccpEntitlementSlug": "E-FORGE-1",
        });
        assert_eq!(whoami_says(&app, &with_license(fit_claims(), license)).await, "fit");
        let path = format!("/admin/installations/{INSTALLATION_UUID}");
        assert!(
            eventually(5, || async { admin(&app, "GET", &path, None).await.1["license"]["state"] == "trial" }).await,
            "the FIT's licence reaches the registry in the background"
        );
        let body = admin(&app, "GET", &path, None).await.1;
        let l = &body["license"];
        assert_eq!(l["source"], "fit");
        assert_eq!(l["license_type"], "commercial");
        assert_eq!(l["evaluation"], true);
        let shown = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
        assert_eq!(shown(&l["trial_end"]), trial_end);
        assert_eq!(shown(&l["effective_trial_end"]), trial_end);
        assert_eq!(body["entitlement_id"], "ccp-ent-1");
        assert_eq!(body["entitlement_number"], "E-FORGE-1");

        // A 10-day extension counts from that trial end, not from today.
        let (status, grant) = admin(&app, "POST", &format!("{path}/trial-extension"), Some(json!({"days": 10}))).await;
        assert_eq!(status, 201, "{grant}");
        assert_eq!(shown(&grant["ends_at"]), trial_end + Duration::days(10));
        let body = admin(&app, "GET", &path, None).await.1;
        assert_eq!(shown(&body["license"]["effective_trial_end"]), trial_end + Duration::days(10));
    }
}

pub fn urlencoding(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
