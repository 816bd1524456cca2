//! Verification and license enforcement on product requests (`/panel`,
//! `/api/whoami`, `/api/access-tokens/redeem`), grants and access tokens, and the tenant cache
//! that must pick up other processes' changes within 5 seconds.

use chrono::{Duration, Utc};
use connect_keeper::config::DatabaseUrl;
use connect_keeper::registry::grants as vendor;
use connect_keeper::store::{Db, access_tokens, grants};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

const SECRET: &str = "shared-secret-for-product-tests";

/// `GET /panel?{query}&jwt=<query-bound token>` (what the product loads in its iframe).
async fn panel(app: &TestApp, client_key: &str, secret: &str, query: &str) -> reqwest::Response {
    let path_and_query = if query.is_empty() {
        "/panel".to_owned()
    } else {
        format!("/panel?{query}")
    };
    let token = hs256_query_bound("GET", &path_and_query, client_key, secret, json!({}));
    let sep = if query.is_empty() { '?' } else { '&' };
    app.get(&format!("{path_and_query}{sep}jwt={token}")).await
}

/// `GET /api/whoami` with a context token (what `AP.context.getToken()` gives the iframe).
async fn whoami(app: &TestApp, client_key: &str, secret: &str) -> reqwest::Response {
    let token = hs256_context(client_key, secret, json!({}));
    app.get_with_jwt_header("/api/whoami", &token).await
}

async fn status_and_json(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let ct = content_type(&res);
    let text = res.text().await.unwrap();
    assert!(ct.starts_with("application/json"), "{status} {ct}: {text}");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

fn content_type(res: &reqwest::Response) -> String {
    res.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The license source whoami answers, or the error code.
async fn whoami_says(app: &TestApp, client_key: &str) -> String {
    let (status, body) = status_and_json(whoami(app, client_key, SECRET).await).await;
    match status {
        200 => body["license_source"].as_str().unwrap().to_owned(),
        _ => format!("{status} {}", body["error"].as_str().unwrap_or_default()),
    }
}

/// A second connection to the app's database: stands for the CLI or another instance. The
/// registry functions called with it cannot reach the app's cache.
async fn other_process(app: &TestApp) -> Db {
    Db::connect(&DatabaseUrl::parse(&app.db.url).unwrap())
        .await
        .expect("second connection")
}

async fn redeem(app: &TestApp, client_key: &str, secret: &str, token: &str) -> (u16, Value) {
    let jwt = hs256_context(client_key, secret, json!({}));
    let res = app
        .client
        .post(app.url("/api/access-tokens/redeem"))
        .header("authorization", format!("JWT {jwt}"))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    status_and_json(res).await
}

both_backends! {
    async fn enforcement_off_licenses_every_verified_request(backend) {
        let app = TestApp::spawn_with(backend, &[("LICENSE_ENFORCEMENT", "off")]).await;
        app.install("ck-off", SECRET).await;
        let res = panel(&app, "ck-off", SECRET, "lic=none").await;
        assert_eq!(res.status(), 200);
        assert!(content_type(&res).starts_with("text/html"));
        assert_eq!(whoami_says(&app, "ck-off").await, "enforcement_off");
        // Verification still applies.
        let res = panel(&app, "ck-off", "wrong-secret", "lic=active").await;
        assert_eq!(res.status(), 401);
    }
}

both_backends! {
    async fn lic_decides_for_the_page_and_the_api(backend) {
        let app = TestApp::spawn(backend).await;
        app.install("ck-lic", SECRET).await;

        let res = panel(&app, "ck-lic", SECRET, "lic=active&cp=&xdm_e=https%3A%2F%2Fx.atlassian.net").await;
        assert_eq!(res.status(), 200);
        assert!(content_type(&res).starts_with("text/html"));
        assert!(res.text().await.unwrap().contains("licensed"));

        // Unlicensed page: a friendly HTML 403.
        let res = panel(&app, "ck-lic", SECRET, "lic=none").await;
        assert_eq!(res.status(), 403);
        assert!(content_type(&res).starts_with("text/html"));
        let html = res.text().await.unwrap();
        assert!(html.contains("needs a license"), "{html}");
        assert!(html.contains("Atlassian Marketplace"), "{html}");

        // Unlicensed API call: JSON 403 (query-bound token in the header, lic bound).
        let token = hs256_query_bound("GET", "/api/whoami?lic=none", "ck-lic", SECRET, json!({}));
        let (status, body) = status_and_json(app.get_with_jwt_header("/api/whoami?lic=none", &token).await).await;
        assert_eq!(status, 403);
        assert_eq!(body["error"], "unlicensed");
        assert!(body["message"].is_string());

        let token = hs256_query_bound("GET", "/api/whoami?lic=active", "ck-lic", SECRET, json!({}));
        let (status, body) = status_and_json(app.get_with_jwt_header("/api/whoami?lic=active", &token).await).await;
        assert_eq!(status, 200);
        assert_eq!(body, json!({
            "client_key": "ck-lic",
            // the install payload's Forge installation id (Connect on Forge)
            "installation_id": "ari:cloud:ecosystem::installation/6f9f0c1e-52a4-4d3b-9a77-0d5a7e0b8f21",
            "account_id": "557058:f0e1d2c3-account",
            "licensed": true,
            "license_source": "lic",
        }));
    }
}

both_backends! {
    async fn a_context_token_works_on_the_api_and_not_on_the_page(backend) {
        let app = TestApp::spawn(backend).await;
        app.install("ck-ctx", SECRET).await;
        vendor::grant_free(app.state.as_ref(), "ck-ctx", None, Some("partner"), "test", Utc::now())
            .await
            .unwrap();
        assert_eq!(whoami_says(&app, "ck-ctx").await, "grant");

        let ctx = hs256_context("ck-ctx", SECRET, json!({}));
        let res = app.get(&format!("/panel?lic=active&jwt={ctx}")).await;
        assert_eq!(res.status(), 401);
        let (_, body) = status_and_json(res).await;
        assert!(body["message"].as_str().unwrap().contains("context"), "{body}");
    }
}

both_backends! {
    async fn a_lic_beside_a_context_token_is_ignored(backend) {
        let app = TestApp::spawn(backend).await;
        app.install("ck-ign", SECRET).await;
        let ctx = hs256_context("ck-ign", SECRET, json!({}));
        let (status, body) = status_and_json(app.get_with_jwt_header("/api/whoami?lic=active", &ctx).await).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"], "unlicensed");
        // Nor is it recorded as the site's license.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert_eq!(app.installation("ck-ign").await.unwrap().lic_last_seen, None);
    }
}

both_backends! {
    async fn the_known_license_decides_when_no_lic_is_bound(backend) {
        let app = TestApp::spawn(backend).await;
        app.install("ck-known", SECRET).await;
        assert_eq!(whoami_says(&app, "ck-known").await, "403 unlicensed");

        // The page load binds lic=active; the iframe's context-token call then relies on it.
        assert_eq!(panel(&app, "ck-known", SECRET, "lic=active").await.status(), 200);
        assert_eq!(whoami_says(&app, "ck-known").await, "known_license");

        // It is recorded in the background (last lic, last seen, the registry's view).
        assert!(eventually(5, || async {
            let row = app.installation("ck-known").await.unwrap();
            row.lic_last_seen.as_deref() == Some("active")
                && row.last_seen_at.is_some()
                && row.license_state == "active"
        }).await, "lic and last seen recorded");

        // A newer lic=none wins over it.
        assert_eq!(panel(&app, "ck-known", SECRET, "lic=none").await.status(), 403);
        assert_eq!(whoami_says(&app, "ck-known").await, "403 unlicensed");
        assert!(eventually(5, || async {
            app.installation("ck-known").await.unwrap().lic_last_seen.as_deref() == Some("none")
        }).await);
    }
}

both_backends! {
    async fn the_products_license_endpoint_is_a_known_license(backend) {
        let app = TestApp::spawn(backend).await;
        Mock::given(method("GET"))
            .and(path(format!("/rest/atlassian-connect/1/addons/{APP_KEY}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "key": APP_KEY,
                "state": "ENABLED",
                "license": {"active": true, "type": "COMMERCIAL", "evaluation": false}
            })))
            .mount(&app.product)
            .await;
        app.install("ck-host", SECRET).await;
        assert!(
            eventually(10, || async { whoami_says(&app, "ck-host").await == "known_license" }).await,
            "the license read after install licenses context-token calls"
        );
    }
}

both_backends! {
    async fn free_grants_and_trial_extensions_license_the_site(backend) {
        let app = TestApp::spawn(backend).await;
        app.install("ck-free", SECRET).await;
        app.install("ck-trial", SECRET).await;
        let now = Utc::now();

        let g = vendor::grant_free(app.state.as_ref(), "ck-free", Some(now + Duration::days(10)), None, "test", now)
            .await
            .unwrap();
        assert_eq!(g.kind, "free");
        assert_eq!(whoami_says(&app, "ck-free").await, "grant");
        // A grant beats a bound lic=none.
        assert_eq!(panel(&app, "ck-free", SECRET, "lic=none").await.status(), 200);

        let first = vendor::extend_trial(app.state.as_ref(), "ck-trial", 30, Some("eval"), "test", now)
            .await
            .unwrap();
        assert_eq!(first.kind, "trial_extension");
        assert_eq!(whoami_says(&app, "ck-trial").await, "grant");
        let first_end = first.ends_at.unwrap();
        assert!((first_end - (now + Duration::days(30))).num_seconds().abs() <= 1);
        // A second extension counts from the first one's end.
        let second = vendor::extend_trial(app.state.as_ref(), "ck-trial", 10, None, "test", now)
            .await
            .unwrap();
        assert!((second.ends_at.unwrap() - (first_end + Duration::days(10))).num_seconds().abs() <= 1);
        let row = app.installation("ck-trial").await.unwrap();
        assert_eq!(row.license_state, "trial");

        // Rules: unknown tenant 404, days out of range 400, with the field named.
        use actix_web::ResponseError;
        let e = vendor::extend_trial(app.state.as_ref(), "nobody", 5, None, "test", now).await.unwrap_err();
        assert_eq!(connect_keeper::error::ApiError::from(e).status_code().as_u16(), 404);
        for days in [0, 366] {
            let e = vendor::extend_trial(app.state.as_ref(), "ck-trial", days, None, "test", now).await.unwrap_err();
            let e = connect_keeper::error::ApiError::from(e);
            assert_eq!(e.status_code().as_u16(), 400);
            assert!(e.to_string().starts_with("days"), "{e}");
        }

        // Revoking in this process takes effect at once; the audit trail has every change.
        vendor::revoke_grant(app.state.as_ref(), &g.id, "test", Utc::now()).await.unwrap();
        assert_eq!(whoami_says(&app, "ck-free").await, "403 unlicensed");
        let audit = connect_keeper::store::audit::for_client(&app.state.db, "ck-free").await.unwrap();
        let actions: Vec<_> = audit.iter().map(|a| a.action.as_str()).collect();
        assert_eq!(actions, ["grant.create", "grant.revoke"]);
    }
}

both_backends! {
    async fn another_process_grant_and_revocation_apply_within_five_seconds(backend) {
        let app = TestApp::spawn(backend).await;
        app.install("ck-remote", SECRET).await;
        assert_eq!(whoami_says(&app, "ck-remote").await, "403 unlicensed"); // now cached
        let cli = other_process(&app).await;

        let g = vendor::grant_free(&cli, "ck-remote", None, Some("via CLI"), "cli", Utc::now())
            .await
            .unwrap();
        let started = std::time::Instant::now();
        assert!(
            eventually(5, || async { whoami_says(&app, "ck-remote").await == "grant" }).await,
            "a grant written by another process applies within 5 s"
        );
        report_delay(started, "grant");

        vendor::revoke_grant(&cli, &g.id, "cli", Utc::now()).await.unwrap();
        let started = std::time::Instant::now();
        assert!(
            eventually(5, || async { whoami_says(&app, "ck-remote").await == "403 unlicensed" }).await,
            "a revoked grant stops working within 5 s"
        );
        report_delay(started, "revocation");
        cli.close().await;
    }
}

fn report_delay(started: std::time::Instant, what: &str) {
    eprintln!(
        "{what} seen by the running app after {:?}",
        started.elapsed()
    );
}

both_backends! {
    async fn grants_end_by_time_passing_without_any_write(backend) {
        let app = TestApp::spawn(backend).await;
        app.install("ck-short", SECRET).await;
        let now = Utc::now();
        vendor::grant_free(app.state.as_ref(), "ck-short", Some(now + Duration::seconds(2)), None, "test", now)
            .await
            .unwrap();
        assert_eq!(whoami_says(&app, "ck-short").await, "grant");
        tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
        assert_eq!(whoami_says(&app, "ck-short").await, "403 unlicensed");
    }
}

both_backends! {
    async fn query_strings_are_hashed_as_received(backend) {
        let app = TestApp::spawn(backend).await;
        app.install("ck-qsh", SECRET).await;
        for query in [
            "lic=active&q=hello%20world+again",
            "lic=active&name=%E5%AE%AE%E5%B4%8E",
            "lic=active&ids=2&ids=1&ids=10&ids=1",
            "lic=active&star=*&tilde=~x&bang=!",
            "lic=active&a=1&A=2&b&empty=",
            "issueKey=ABC-1&projectKey=ABC&lic=active&cp=%2Fwiki&xdm_e=https%3A%2F%2Fx.atlassian.net",
        ] {
            let res = panel(&app, "ck-qsh", SECRET, query).await;
            assert_eq!(res.status(), 200, "{query}: {}", res.text().await.unwrap());
        }
        // A token for one query does not cover another.
        let token = hs256_query_bound("GET", "/panel?lic=none", "ck-qsh", SECRET, json!({}));
        let res = app.get(&format!("/panel?lic=active&jwt={token}")).await;
        assert_eq!(res.status(), 401);
        let token = hs256_query_bound("GET", "/panel?lic=active", "ck-qsh", SECRET, json!({}));
        let res = app.get(&format!("/panel?lic=active&lic=active&jwt={token}")).await;
        assert_eq!(res.status(), 401, "a repeated key changes the hash");
    }
}

both_backends! {
    async fn a_base_url_with_a_path_is_stripped_for_the_qsh(backend) {
        let app = TestApp::spawn_with(backend, &[("APP_BASE_URL", "https://app.example.test/acme")]).await;
        app.install("ck-base", SECRET).await;
        // The product hashes the path relative to the base URL: `/panel`.
        let token = hs256_query_bound("GET", "/panel?lic=active", "ck-base", SECRET, json!({}));
        for prefix in ["", "/acme"] {
            let res = app.get(&format!("{prefix}/panel?lic=active&jwt={token}")).await;
            assert_eq!(res.status(), 200, "{prefix}/panel");
        }
        // A token hashed over `/acme/panel` is not the product's: refused.
        let wrong = hs256_query_bound("GET", "/acme/panel?lic=active", "ck-base", SECRET, json!({}));
        let res = app.get(&format!("/acme/panel?lic=active&jwt={wrong}")).await;
        assert_eq!(res.status(), 401);
    }
}

both_backends! {
    async fn token_failures_are_401_with_json_and_counted(backend) {
        let app = TestApp::spawn(backend).await;
        app.install("ck-bad", SECRET).await;
        let now = Utc::now().timestamp();
        let bound = |extra: Value, secret: &str| {
            hs256_query_bound("GET", "/panel?lic=active", "ck-bad", secret, extra)
        };
        let hs384 = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
            &json!({"iss": "ck-bad", "iat": now, "exp": now + 60, "qsh": qsh("GET", "/panel?lic=active")}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap();
        let rs256 = sign_rs256(&json!({"iss": "ck-bad", "iat": now, "exp": now + 60, "qsh": qsh("GET", "/panel?lic=active")}));
        let cases: Vec<(&str, Option<String>)> = vec![
            ("no token", None),
            ("garbage", Some("not-a-jwt".into())),
            ("wrong secret", Some(bound(json!({}), "wrong-secret"))),
            ("unknown iss", Some(hs256_query_bound("GET", "/panel?lic=active", "nobody", SECRET, json!({})))),
            ("expired beyond leeway", Some(bound(json!({"exp": now - 60, "iat": now - 240}), SECRET))),
            ("no exp", Some(bound(json!({"exp": null}), SECRET))),
            ("no qsh", Some(bound(json!({"qsh": null}), SECRET))),
            ("not yet valid", Some(bound(json!({"nbf": now + 300}), SECRET))),
            ("HS384", Some(hs384)),
            ("RS256", Some(rs256)),
        ];
        for (name, token) in cases {
            let url = match &token {
                Some(t) => format!("/panel?lic=active&jwt={t}"),
                None => "/panel?lic=active".to_owned(),
            };
            let res = app.get(&url).await;
            assert_eq!(res.status(), 401, "{name}");
            let realm = res.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_owned);
            assert_eq!(realm.as_deref(), Some(format!("JWT realm=\"{APP_KEY}\"").as_str()), "{name}");
            let (_, body) = status_and_json(res).await;
            assert_eq!(body["error"], "invalid_token", "{name}");
        }
        // Within the leeway (30 s) an expired token still passes.
        let res = app.get(&format!("/panel?lic=active&jwt={}", bound(json!({"exp": now - 20, "iat": now - 200}), SECRET))).await;
        assert_eq!(res.status(), 200);

        let metrics = app.get("/metrics").await.text().await.unwrap();
        for reason in ["missing_token", "bad_signature", "unknown_issuer", "expired", "bad_algorithm"] {
            assert!(
                metrics.contains(&format!("jwt_verification_failures_total{{reason=\"{reason}\"}}")),
                "{reason} counted"
            );
        }
        assert!(metrics.contains("license_decisions_total{source=\"lic\"}"), "{metrics}");
    }
}

both_backends! {
    async fn lifecycle_states_gate_requests(backend) {
        let app = TestApp::spawn(backend).await;
        app.install("ck-life", SECRET).await;
        assert_eq!(panel(&app, "ck-life", SECRET, "lic=active").await.status(), 200);

        assert_eq!(app.lifecycle("disabled", "ck-life", SECRET).await.status(), 204);
        let (status, body) = status_and_json(panel(&app, "ck-life", SECRET, "lic=active").await).await;
        assert_eq!(status, 403);
        assert_eq!(body["error"], "tenant_disabled");
        assert_eq!(app.lifecycle("enabled", "ck-life", SECRET).await.status(), 204);
        assert_eq!(panel(&app, "ck-life", SECRET, "lic=active").await.status(), 200);

        // A reinstall rotating the secret: the old one stops working at once.
        app.install("ck-life", "rotated-secret").await;
        assert_eq!(panel(&app, "ck-life", SECRET, "lic=active").await.status(), 401);
        assert_eq!(panel(&app, "ck-life", "rotated-secret", "lic=active").await.status(), 200);

        assert_eq!(app.lifecycle("uninstalled", "ck-life", "rotated-secret").await.status(), 204);
        assert_eq!(panel(&app, "ck-life", "rotated-secret", "lic=active").await.status(), 401);
    }
}

both_backends! {
    async fn wrong_methods_and_missing_bodies(backend) {
        let app = TestApp::spawn(backend).await;
        app.install("ck-m", SECRET).await;
        let res = app.client.post(app.url("/panel")).send().await.unwrap();
        assert_eq!(res.status(), 405, "405 before asking for a token");
        let res = app.client.delete(app.url("/api/whoami")).send().await.unwrap();
        assert_eq!(res.status(), 405);
        let res = app.get("/api/access-tokens/redeem").await;
        assert_eq!(res.status(), 405);
        // Redeem without a token field: 400 naming it; without a JWT: 401.
        let jwt = hs256_context("ck-m", SECRET, json!({}));
        let res = app.client.post(app.url("/api/access-tokens/redeem"))
            .header("authorization", format!("JWT {jwt}"))
            .json(&json!({})).send().await.unwrap();
        let (status, body) = status_and_json(res).await;
        assert_eq!(status, 400);
        assert!(body["message"].as_str().unwrap().starts_with("token"), "{body}");
        let res = app.client.post(app.url("/api/access-tokens/redeem"))
            .json(&json!({"token": "x"})).send().await.unwrap();
        assert_eq!(res.status(), 401);
    }
}

both_backends! {
    async fn access_tokens_are_redeemed_once_by_one_site(backend) {
        let app = TestApp::spawn(backend).await;
        app.install("site-a", SECRET).await;
        app.install("site-b", SECRET).await;
        let now = Utc::now();
        let (row, token) = vendor::create_access_token(
            app.state.as_ref(), Some("partner programme"), Some(now + Duration::days(30)), None, "test", now,
        ).await.unwrap();
        assert_ne!(row.token_hash, token);
        assert_eq!(row.token_hash, connect_keeper::registry::tokens::hash(&token));
        assert_eq!(whoami_says(&app, "site-a").await, "403 unlicensed");

        let (status, grant) = redeem(&app, "site-a", SECRET, &token).await;
        assert_eq!(status, 200, "{grant}");
        assert_eq!(grant["kind"], "access_token");
        assert_eq!(grant["reason"], "partner programme");
        for field in ["id", "starts_at", "ends_at", "created_at"] {
            assert!(grant[field].is_string(), "{field}: {grant}");
        }
        assert!(grant["revoked_at"].is_null());
        assert_eq!(whoami_says(&app, "site-a").await, "access_token");

        // Again by the same site: the same grant.
        let (status, again) = redeem(&app, "site-a", SECRET, &token).await;
        assert_eq!(status, 200);
        assert_eq!(again["id"], grant["id"]);

        // By another site: 409, nothing granted.
        let (status, body) = redeem(&app, "site-b", SECRET, &token).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(whoami_says(&app, "site-b").await, "403 unlicensed");
        assert_eq!(grants::for_client(&app.state.db, "site-b").await.unwrap().len(), 0);

        // Revoking the token ends site-a's free use at once and stops re-redeeming.
        vendor::revoke_access_token(app.state.as_ref(), &row.id, "test", Utc::now()).await.unwrap();
        assert_eq!(whoami_says(&app, "site-a").await, "403 unlicensed");
        let (status, _) = redeem(&app, "site-a", SECRET, &token).await;
        assert_eq!(status, 400);
    }
}

both_backends! {
    async fn bad_access_tokens_are_400_or_409_and_change_nothing(backend) {
        let app = TestApp::spawn(backend).await;
        app.install("site-a", SECRET).await;
        app.install("site-b", SECRET).await;
        let now = Utc::now();
        // Expired: written straight to the store (the registry refuses a past expiry).
        let expired = "expired-token-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        access_tokens::insert(&app.state.db, access_tokens::NewAccessToken {
            token_hash: &connect_keeper::registry::tokens::hash(expired),
            note: None,
            expires_at: Some(now - Duration::hours(1)),
            client_key: None,
            created_by: "test",
        }, now - Duration::days(1)).await.unwrap();
        let (revoked_row, revoked) = vendor::create_access_token(app.state.as_ref(), None, None, None, "test", now).await.unwrap();
        vendor::revoke_access_token(app.state.as_ref(), &revoked_row.id, "test", now).await.unwrap();
        let (_, bound_to_b) = vendor::create_access_token(app.state.as_ref(), None, None, Some("site-b"), "test", now).await.unwrap();

        for (name, token, want) in [
            ("unknown", "no-such-token", 400),
            ("expired", expired, 400),
            ("revoked", revoked.as_str(), 400),
            ("bound to another site", bound_to_b.as_str(), 409),
        ] {
            let (status, body) = redeem(&app, "site-a", SECRET, token).await;
            assert_eq!(status, want, "{name}: {body}");
            assert!(body["error"].is_string() && body["message"].is_string(), "{name}");
        }
        assert_eq!(grants::for_client(&app.state.db, "site-a").await.unwrap().len(), 0);
        assert_eq!(whoami_says(&app, "site-a").await, "403 unlicensed");
        // The site it is bound to may redeem it.
        let (status, _) = redeem(&app, "site-b", SECRET, &bound_to_b).await;
        assert_eq!(status, 200);
    }
}

both_backends! {
    async fn an_install_url_with_an_access_token_redeems_it(backend) {
        let app = TestApp::spawn(backend).await;
        let now = Utc::now();
        let (_, token) = vendor::create_access_token(app.state.as_ref(), Some("dev site"), None, None, "test", now).await.unwrap();
        let path = format!("/installed?access-token={token}");
        let install = |key: &'static str| {
            let path = path.clone();
            let app = &app;
            async move {
                let jwt = sign_rs256(&app.install_claims(key, &path));
                app.post_lifecycle(&path, Some(&jwt), &app.installed_payload(key, SECRET)).await
            }
        };
        assert_eq!(install("site-a").await.status(), 204);
        assert_eq!(whoami_says(&app, "site-a").await, "access_token");

        // Another site installing with the same token: the install succeeds, grants nothing.
        assert_eq!(install("site-b").await.status(), 204);
        assert_eq!(whoami_says(&app, "site-b").await, "403 unlicensed");
        assert!(grants::for_client(&app.state.db, "site-b").await.unwrap().is_empty());

        // An unknown token does not fail the install either.
        let path = "/installed?access-token=bogus";
        let jwt = sign_rs256(&app.install_claims("site-c", path));
        let res = app.post_lifecycle(path, Some(&jwt), &app.installed_payload("site-c", SECRET)).await;
        assert_eq!(res.status(), 204);
    }
}

both_backends! {
    async fn a_cached_tenant_needs_no_database(backend) {
        let app = TestApp::spawn_tuned(backend, &[], no_change_poll).await;
        app.install("ck-cache", SECRET).await;
        vendor::grant_free(app.state.as_ref(), "ck-cache", None, None, "test", Utc::now())
            .await
            .unwrap();
        assert_eq!(whoami_says(&app, "ck-cache").await, "grant"); // loads the tenant once
        // With the database gone, verified and licensed requests still pass: the request path
        // makes no database round trip for a known tenant.
        app.state.db.close().await;
        for _ in 0..3 {
            assert_eq!(whoami_says(&app, "ck-cache").await, "grant");
            assert_eq!(panel(&app, "ck-cache", SECRET, "lic=none").await.status(), 200);
        }
        // A tenant never seen needs the database: 503, not a wrong answer.
        let (status, body) = status_and_json(whoami(&app, "ck-never-seen", SECRET).await).await;
        assert_eq!(status, 503, "{body}");
    }
}

both_backends! {
    async fn a_reused_context_token_is_checked_again_after_every_change(backend) {
        // An iframe reuses one context token for all its API calls; the server remembers that
        // it verified it, but a rotation, a revoked grant, a disable or an uninstall applies
        // to that same token at once.
        let app = TestApp::spawn(backend).await;
        app.install("ck-reuse", SECRET).await;
        let grant = vendor::grant_free(app.state.as_ref(), "ck-reuse", None, None, "test", Utc::now())
            .await
            .unwrap();
        let token = hs256_context("ck-reuse", SECRET, json!({}));
        let call = |token: String| {
            let app = &app;
            async move { status_and_json(app.get_with_jwt_header("/api/whoami", &token).await).await }
        };
        for _ in 0..3 {
            let (status, body) = call(token.clone()).await;
            assert_eq!((status, body["license_source"].as_str()), (200, Some("grant")), "{body}");
        }
        assert_eq!(app.state.verified_tokens.len(), 1, "the context token is remembered");

        vendor::revoke_grant(app.state.as_ref(), &grant.id, "test", Utc::now())
            .await
            .unwrap();
        let (status, body) = call(token.clone()).await;
        assert_eq!((status, body["error"].as_str()), (403, Some("unlicensed")), "{body}");
        vendor::grant_free(app.state.as_ref(), "ck-reuse", None, None, "test", Utc::now())
            .await
            .unwrap();
        assert_eq!(call(token.clone()).await.0, 200);

        assert_eq!(app.lifecycle("disabled", "ck-reuse", SECRET).await.status(), 204);
        let (status, body) = call(token.clone()).await;
        assert_eq!((status, body["error"].as_str()), (403, Some("tenant_disabled")), "{body}");
        assert_eq!(app.lifecycle("enabled", "ck-reuse", SECRET).await.status(), 204);
        assert_eq!(call(token.clone()).await.0, 200);

        // A reinstall rotates the secret: the remembered token is now signed with the old one.
        app.install("ck-reuse", "rotated-secret").await;
        let (status, body) = call(token.clone()).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_token")), "{body}");
        let rotated = hs256_context("ck-reuse", "rotated-secret", json!({}));
        assert_eq!(call(rotated.clone()).await.0, 200);
        assert_eq!(call(rotated.clone()).await.0, 200);

        assert_eq!(app.lifecycle("uninstalled", "ck-reuse", "rotated-secret").await.status(), 204);
        assert_eq!(call(rotated).await.0, 401);
    }
}
