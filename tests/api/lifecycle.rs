//! The descriptor, verified lifecycle callbacks, the registry they write, and the
//! operations routes.

use serde_json::{Value, json};

use crate::helpers::*;

/// What a rejected callback must leave as it was.
async fn fingerprint(app: &TestApp, client_key: &str) -> String {
    let row = app.installation(client_key).await.map(|r| {
        format!(
            "{}|{}|{:?}|{}|{:?}",
            r.status, r.site.base_url, r.shared_secret, r.updated_at, r.last_install_iat
        )
    });
    format!("{row:?} events={}", app.events(client_key).await.len())
}

both_backends! {
    async fn valid_install_is_recorded_with_its_event(backend) {
        let app = TestApp::spawn(backend).await;
        app.install("ck-1", "s3cret-one").await;
        let row = app.installation("ck-1").await.expect("tenant stored");
        assert_eq!(row.status, "installed");
        assert_eq!(row.shared_secret.as_deref(), Some("s3cret-one"));
        assert_eq!(row.site.base_url, app.product.uri());
        assert_eq!(row.site.base_host, "127.0.0.1");
        assert_eq!(row.entitlement_number.as_deref(), Some("E-3XJ-WYD-KA7-HBJ"));
        assert_eq!(row.site.product_type, "jira");
        let events = app.events("ck-1").await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, "installed");
        assert!(!events[0].payload.contains("s3cret-one"), "the secret is never kept in history");
        let payload: Value = serde_json::from_str(&events[0].payload).unwrap();
        assert_eq!(payload["clientKey"], "ck-1");
    }
}

/// Every way a signed `installed` can be wrong: the expected status (401 for the token, 400 for
/// the body; docs/protocol.md#lifecycle-callbacks), a JSON error, nothing written.
async fn assert_rejected(
    app: &TestApp,
    name: &str,
    token: Option<String>,
    body: String,
    status: u16,
) {
    let before = fingerprint(app, "victim").await;
    let res = app.post_raw("/installed", token.as_deref(), body).await;
    let got = res.status().as_u16();
    let text = res.text().await.unwrap();
    assert_eq!(got, status, "{name}: {text}");
    let err: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{name}: JSON error body: {text}"));
    assert!(
        err["error"].is_string() && err["message"].is_string(),
        "{name}: {text}"
    );
    assert!(!text.contains("attacker-secret"), "{name}: secret echoed");
    assert_eq!(
        fingerprint(app, "victim").await,
        before,
        "{name}: database changed"
    );
}

both_backends! {
    async fn bad_installs_are_rejected_and_change_nothing(backend) {
        let app = TestApp::spawn(backend).await;
        let fresh = |app: &TestApp| app.install_claims("victim", "/installed");
        let body = app.installed_payload("victim", "attacker-secret").to_string();
        let with = |mut c: Value, k: &str, v: Value| { c[k] = v; c };
        let now = chrono::Utc::now().timestamp();

        // Run every case twice: for an unknown clientKey, and once the tenant exists.
        for round in 0..2 {
            if round == 1 {
                app.install("victim", "real-secret").await;
            }
            let cases: Vec<(&str, Option<String>, String, u16)> = vec![
                ("missing header", None, body.clone(), 401),
                ("garbage token", Some("not.a.jwt".into()), body.clone(), 401),
                ("bad signature", Some(sign_rs256_with(&fresh(&app), KID, RSA_OTHER_PRIVATE)), body.clone(), 401),
                ("wrong aud", Some(sign_rs256(&with(fresh(&app), "aud", json!(["https://evil.example"])))), body.clone(), 401),
                ("missing aud", Some(sign_rs256(&with(fresh(&app), "aud", Value::Null)))
                    .map(|_| { let mut c = fresh(&app); c.as_object_mut().unwrap().remove("aud"); sign_rs256(&c) }), body.clone(), 401),
                ("wrong iss", Some(sign_rs256(&with(fresh(&app), "iss", json!("someone-else")))), body.clone(), 401),
                ("qsh mismatch", Some(sign_rs256(&with(fresh(&app), "qsh", json!(qsh("POST", "/uninstalled"))))), body.clone(), 401),
                ("context qsh", Some(sign_rs256(&with(fresh(&app), "qsh", json!("context-qsh")))), body.clone(), 401),
                ("expired", Some(sign_rs256(&with(with(fresh(&app), "exp", json!(now - 120)), "iat", json!(now - 400)))), body.clone(), 401),
                ("missing exp", Some({ let mut c = fresh(&app); c.as_object_mut().unwrap().remove("exp"); sign_rs256(&c) }), body.clone(), 401),
                ("missing iat", Some({ let mut c = fresh(&app); c.as_object_mut().unwrap().remove("iat"); sign_rs256(&c) }), body.clone(), 401),
                ("not yet valid", Some(sign_rs256(&with(fresh(&app), "nbf", json!(now + 600)))), body.clone(), 401),
                ("unknown kid", Some(sign_rs256_with(&fresh(&app), "no-such-kid", RSA_PRIVATE)), body.clone(), 401),
                ("path kid", Some(sign_rs256_with(&fresh(&app), "../kid-1", RSA_PRIVATE)), body.clone(), 401),
                ("kid of another key", Some(sign_rs256_with(&fresh(&app), OTHER_KID, RSA_PRIVATE)), body.clone(), 401),
                ("missing kid", Some({
                    let key = jsonwebtoken::EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
                    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &fresh(&app), &key).unwrap()
                }), body.clone(), 401),
                ("alg none", Some(unsigned_token(&fresh(&app))), body.clone(), 401),
                ("HS256 with the public key text", Some(connect_keeper::connect::jwt::sign_hs256(&fresh(&app), RSA_PUBLIC.as_bytes())), body.clone(), 401),
                ("HS256 with the tenant's own secret", Some(hs256_query_bound("POST", "/installed", "victim", "real-secret", json!({}))), body.clone(), 401),
                ("malformed JSON", Some(sign_rs256(&fresh(&app))), "{\"clientKey\": ".into(), 400),
                ("not an object", Some(sign_rs256(&fresh(&app))), "[1,2]".into(), 400),
                ("missing clientKey", Some(sign_rs256(&fresh(&app))), without(&body, "clientKey"), 400),
                ("missing sharedSecret", Some(sign_rs256(&fresh(&app))), without(&body, "sharedSecret"), 400),
                ("missing baseUrl", Some(sign_rs256(&fresh(&app))), without(&body, "baseUrl"), 400),
                ("missing productType", Some(sign_rs256(&fresh(&app))), without(&body, "productType"), 400),
                ("clientKey not a string", Some(sign_rs256(&fresh(&app))), replaced(&body, "clientKey", json!(42)), 400),
                ("eventType of another route", Some(sign_rs256(&fresh(&app))), replaced(&body, "eventType", json!("enabled")), 400),
                ("key of another app", Some(sign_rs256(&fresh(&app))), replaced(&body, "key", json!("other-app")), 400),
                ("iss differs from clientKey", Some(sign_rs256(&fresh(&app))), replaced(&body, "clientKey", json!("victim2")), 401),
            ];
            for (name, token, body, status) in cases {
                assert_rejected(&app, name, token, body, status).await;
            }
        }
        let row = app.installation("victim").await.unwrap();
        assert_eq!(row.shared_secret.as_deref(), Some("real-secret"), "a forged reinstall never replaces the secret");
        assert!(app.installation("victim2").await.is_none());
    }
}

fn without(body: &str, field: &str) -> String {
    let mut v: Value = serde_json::from_str(body).unwrap();
    v.as_object_mut().unwrap().remove(field);
    v.to_string()
}

fn replaced(body: &str, field: &str, value: Value) -> String {
    let mut v: Value = serde_json::from_str(body).unwrap();
    v[field] = value;
    v.to_string()
}

fn unsigned_token(claims: &Value) -> String {
    use base64::Engine;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        e.encode(br#"{"alg":"none","typ":"JWT"}"#),
        e.encode(claims.to_string())
    )
}

both_backends! {
    async fn verified_reinstall_rotates_the_secret_and_renames_the_site(backend) {
        let app = TestApp::spawn(backend).await;
        app.install("ck", "first").await;
        let first = app.installation("ck").await.unwrap();
        let mut body = installed_payload("ck", "second", "http://localhost:9/renamed");
        body["description"] = json!("renamed");
        // iat must not go backwards: a later install has a later or equal iat
        app.install_payload(&body).await;
        let row = app.installation("ck").await.unwrap();
        assert_eq!(row.shared_secret.as_deref(), Some("second"));
        assert_eq!(row.site.base_url, "http://localhost:9/renamed");
        assert_eq!(row.installed_at, first.installed_at, "a reinstall keeps the first install time");
        assert_eq!(app.events("ck").await.len(), 2);
    }
}

both_backends! {
    async fn a_replayed_older_install_cannot_roll_back_the_secret(backend) {
        let app = TestApp::spawn(backend).await;
        let old_claims = app.install_claims("ck", "/installed");
        let old_token = sign_rs256(&{
            let mut c = old_claims.clone();
            c["iat"] = json!(old_claims["iat"].as_i64().unwrap() - 60);
            c
        });
        app.install("ck", "new-secret").await;
        let res = app
            .post_lifecycle("/installed", Some(&old_token), &app.installed_payload("ck", "old-secret"))
            .await;
        assert_eq!(res.status(), 204, "a duplicate is harmless");
        assert_eq!(app.installation("ck").await.unwrap().shared_secret.as_deref(), Some("new-secret"));
        assert_eq!(app.events("ck").await.len(), 1, "a stale token writes nothing");
    }
}

both_backends! {
    async fn enabled_disabled_and_uninstalled_follow_the_lifecycle(backend) {
        let app = TestApp::spawn(backend).await;
        app.install("ck", "sec").await;
        assert_eq!(app.lifecycle("enabled", "ck", "sec").await.status(), 204);
        assert_eq!(app.installation("ck").await.unwrap().status, "enabled");
        // duplicates are harmless
        assert_eq!(app.lifecycle("enabled", "ck", "sec").await.status(), 204);
        assert_eq!(app.lifecycle("disabled", "ck", "sec").await.status(), 204);
        assert_eq!(app.installation("ck").await.unwrap().status, "disabled");
        // a site rename (reinstall) keeps the app disabled
        app.install("ck", "sec").await;
        assert_eq!(app.installation("ck").await.unwrap().status, "disabled");
        assert_eq!(app.lifecycle("enabled", "ck", "sec").await.status(), 204);

        // HS256 enabled/disabled with the wrong secret, an unknown tenant, or another alg
        let before = fingerprint(&app, "ck").await;
        let mut body = app.installed_payload("ck", "x");
        body["eventType"] = json!("disabled");
        body.as_object_mut().unwrap().remove("sharedSecret");
        for token in [
            hs256_query_bound("POST", "/disabled", "ck", "wrong", json!({})),
            hs256_query_bound("POST", "/enabled", "ck", "sec", json!({})),
            hs256_query_bound("POST", "/disabled", "nobody", "sec", json!({})),
            hs256_context("ck", "sec", json!({})),
        ] {
            let res = app.post_lifecycle("/disabled", Some(&token), &body).await;
            assert_eq!(res.status(), 401);
        }
        let hs384 = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
            &app.install_claims("ck", "/disabled"),
            &jsonwebtoken::EncodingKey::from_secret(b"sec").unwrap(),
        ).unwrap();
        assert_eq!(app.post_lifecycle("/disabled", Some(&hs384), &body).await.status(), 401);
        assert_eq!(fingerprint(&app, "ck").await, before);

        // RS256 (signed install style) is also accepted on disabled
        let token = sign_rs256(&app.install_claims("ck", "/disabled"));
        assert_eq!(app.post_lifecycle("/disabled", Some(&token), &body).await.status(), 204);
        assert_eq!(app.installation("ck").await.unwrap().status, "disabled");

        assert_eq!(app.lifecycle("uninstalled", "ck", "sec").await.status(), 204);
        let row = app.installation("ck").await.unwrap();
        assert_eq!(row.status, "uninstalled");
        assert_eq!(row.shared_secret, None, "uninstalled erases the secret");
        assert!(row.uninstalled_at.is_some());
        // the old secret no longer verifies anything
        assert_eq!(app.lifecycle("enabled", "ck", "sec").await.status(), 401);
        assert_eq!(app.lifecycle("uninstalled", "ck", "sec").await.status(), 204, "duplicate uninstall is harmless");

        let kinds: Vec<String> = app.events("ck").await.into_iter().map(|e| e.event_type).collect();
        assert_eq!(
            kinds,
            ["installed", "enabled", "enabled", "disabled", "installed", "enabled", "disabled", "uninstalled", "uninstalled"],
            "the history is complete and in order"
        );

        // reinstall after uninstall: a new secret, installed again
        app.install("ck", "fresh").await;
        let row = app.installation("ck").await.unwrap();
        assert_eq!((row.status.as_str(), row.shared_secret.as_deref()), ("installed", Some("fresh")));
        assert_eq!(row.uninstalled_at, None);
    }
}

both_backends! {
    async fn a_restart_on_the_same_database_keeps_everything(backend) {
        let app = TestApp::spawn(backend).await;
        app.install("a", "sa").await;
        app.install("b", "sb").await;
        assert_eq!(app.lifecycle("enabled", "a", "sa").await.status(), 204);
        let app = app.restart().await;
        assert_eq!(app.installation("a").await.unwrap().status, "enabled");
        assert_eq!(app.installation("b").await.unwrap().shared_secret.as_deref(), Some("sb"));
        assert_eq!(app.events("a").await.len(), 2);
        // and the restarted app still verifies with the stored secret
        assert_eq!(app.lifecycle("disabled", "a", "sa").await.status(), 204);
    }
}

both_backends! {
    async fn descriptor_is_served_with_configured_base_url_and_key(backend) {
        let app = TestApp::spawn_with(backend, &[
            ("APP_BASE_URL", "https://keeper.example.com/acme"),
            ("APP_KEY", "com.example.keeper"),
        ]).await;
        let res = app.get("/atlassian-connect.json").await;
        assert_eq!(res.status(), 200);
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
        let d: Value = res.json().await.unwrap();
        assert_eq!(d["baseUrl"], "https://keeper.example.com/acme");
        assert_eq!(d["key"], "com.example.keeper");
        assert_eq!(d["enableLicensing"], true);
        assert_eq!(d["lifecycle"]["installed"], "/installed");
        let d: Value = app.get("/atlassian-connect.json?access-token=abc123").await.json().await.unwrap();
        assert_eq!(d["lifecycle"]["installed"], "/installed?access-token=abc123");
    }
}

both_backends! {
    async fn signed_install_under_a_base_path(backend) {
        let app = TestApp::spawn_with(backend, &[("APP_BASE_URL", "https://keeper.example.com/acme/")]).await;
        // Atlassian signs the path relative to the base URL: POST&/installed&
        let mut claims = app.install_claims("ck", "/installed");
        claims["aud"] = json!("https://keeper.example.com/acme");
        let token = sign_rs256(&claims);
        let body = app.installed_payload("ck", "s");
        // through a proxy that keeps the prefix, and one that strips it
        assert_eq!(app.post_lifecycle("/acme/installed", Some(&token), &body).await.status(), 204);
        assert_eq!(app.post_lifecycle("/installed", Some(&token), &body).await.status(), 204);
    }
}

both_backends! {
    async fn operations_routes_and_error_shapes(backend) {
        let app = TestApp::spawn(backend).await;
        assert_eq!(app.get("/healthz").await.status(), 200);
        assert_eq!(app.get("/readyz").await.status(), 200);
        app.install("ck", "s").await;
        let _ = app.post_raw("/installed", None, "{}".into()).await;
        let metrics = app.get("/metrics").await.text().await.unwrap();
        assert!(metrics.contains("http_requests_total"), "{metrics}");
        assert!(metrics.contains(r#"lifecycle_events_total{event="installed",outcome="accepted"} 1"#), "{metrics}");
        assert!(metrics.contains(r#"jwt_verification_failures_total{reason="missing_token"}"#), "{metrics}");
        assert!(metrics.contains(r#"route="/installed""#), "{metrics}");

        let res = app.get("/no/such/route").await;
        assert_eq!(res.status(), 404);
        assert_eq!(res.json::<Value>().await.unwrap()["error"], "not_found");
        let res = app.get("/installed").await;
        assert_eq!(res.status(), 405);
        assert_eq!(res.json::<Value>().await.unwrap()["error"], "method_not_allowed");

        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(1_100_000));
        let token = sign_rs256(&app.install_claims("big", "/installed"));
        let res = app.post_raw("/installed", Some(&token), big).await;
        assert_eq!(res.status(), 413);
        assert!(res.json::<Value>().await.unwrap()["error"].is_string());
        assert!(app.installation("big").await.is_none());
    }
}

both_backends! {
    async fn descriptor_path_serves_another_template(backend) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("descriptor.json");
        std::fs::write(
            &path,
            r#"{"key": "from-file", "name": "Other", "baseUrl": "x",
                "lifecycle": {"installed": "/installed"}, "modules": {}}"#,
        )
        .unwrap();
        let app = TestApp::spawn_with(backend, &[("DESCRIPTOR_PATH", path.to_str().unwrap())]).await;
        let d: Value = app.get("/atlassian-connect.json").await.json().await.unwrap();
        assert_eq!(d["name"], "Other");
        assert_eq!(d["key"], "from-file", "APP_KEY defaults to the template's key");
        assert_eq!(d["baseUrl"], app.base_url);
    }
}
