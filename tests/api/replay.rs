//! Lifecycle replay (docs/operations.md#lifecycle-replay): a signed lifecycle token presented
//! again is a harmless retry with the same body and refused with any other; an `enabled` or
//! `disabled` older than the last one applied is ignored. The record of what was applied is
//! in the database, so another instance (here: the app restarted on the same database) knows
//! it too.

use serde_json::{Value, json};

use crate::helpers::*;

/// Enforcement off: `/api/whoami` then answers 200 for any request its secret signs.
async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, &[("LICENSE_ENFORCEMENT", "off")]).await
}

async fn whoami(app: &TestApp, client_key: &str, secret: &str) -> u16 {
    let token = hs256_context(client_key, secret, json!({}));
    app.get_with_jwt_header("/api/whoami", &token)
        .await
        .status()
        .as_u16()
}

async fn post(app: &TestApp, path: &str, token: &str, body: &Value) -> (u16, Value) {
    let res = app.post_lifecycle(path, Some(token), body).await;
    let status = res.status().as_u16();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// An `enabled`/`disabled` body for `client_key`.
fn toggle_body(app: &TestApp, event: &str, client_key: &str) -> Value {
    let mut body = app.installed_payload(client_key, "unused");
    body["eventType"] = json!(event);
    body.as_object_mut().unwrap().remove("sharedSecret");
    body
}

/// An HS256 `enabled`/`disabled` token issued `age` seconds ago.
fn toggle_token(event: &str, client_key: &str, secret: &str, age: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    hs256_query_bound(
        "POST",
        &format!("/{event}"),
        client_key,
        secret,
        json!({"iat": now - age}),
    )
}

async fn status_of(app: &TestApp, client_key: &str) -> String {
    app.installation(client_key).await.expect("tenant").status
}

async fn token_rows(app: &TestApp) -> i64 {
    crate::on_db!(&app.state.db, |p| {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM lifecycle_tokens")
            .fetch_one(p)
            .await
    })
    .unwrap()
}

both_backends! {
    /// A fixed defect (docs/operations.md#lifecycle-replay): a captured signed `installed`,
    /// replayed within its lifetime with a new sharedSecret, was accepted and the new secret
    /// authenticated.
    async fn a_signed_installed_replayed_with_another_body_is_refused(backend) {
        let app = spawn(backend).await;
        let body = app.installed_payload("ck-replay", "original-secret");
        let token = sign_rs256(&app.install_claims("ck-replay", "/installed"));
        assert_eq!(post(&app, "/installed", &token, &body).await.0, 204);
        let before = app.installation("ck-replay").await.unwrap();

        // The same token and the same bytes: a retry, answered 204 and applied once.
        assert_eq!(post(&app, "/installed", &token, &body).await.0, 204);
        assert_eq!(app.events("ck-replay").await.len(), 1, "the retry is not applied twice");

        // The same token with the attacker's secret: 401, nothing changes.
        let mut forged = body.clone();
        forged["sharedSecret"] = json!("attacker-secret");
        let (status, err) = post(&app, "/installed", &token, &forged).await;
        assert_eq!(status, 401, "{err}");
        assert_eq!(err["error"], "invalid_token");
        assert_eq!(whoami(&app, "ck-replay", "attacker-secret").await, 401);
        assert_eq!(whoami(&app, "ck-replay", "original-secret").await, 200);
        // A body that differs only in spacing is another body too.
        let res = app.post_raw("/installed", Some(&token), format!("{body} ")).await;
        assert_eq!(res.status(), 401);
        let after = app.installation("ck-replay").await.unwrap();
        assert_eq!(after.shared_secret, before.shared_secret);
        assert_eq!(after.updated_at, before.updated_at);
        assert_eq!(app.events("ck-replay").await.len(), 1);

        // Another instance on the same database (a restart) knows the token too.
        let app = app.restart().await;
        assert_eq!(post(&app, "/installed", &token, &forged).await.0, 401);
        assert_eq!(post(&app, "/installed", &token, &body).await.0, 204);
        assert_eq!(whoami(&app, "ck-replay", "attacker-secret").await, 401);
        assert_eq!(app.events("ck-replay").await.len(), 1);

        // A new token for the new secret (a real reinstall, a moment later) is applied.
        let mut claims = app.install_claims("ck-replay", "/installed");
        claims["iat"] = json!(claims["iat"].as_i64().unwrap() + 1);
        let rotated = app.installed_payload("ck-replay", "rotated-secret");
        assert_eq!(post(&app, "/installed", &sign_rs256(&claims), &rotated).await.0, 204);
        assert_eq!(whoami(&app, "ck-replay", "rotated-secret").await, 200);
    }
}

both_backends! {
    /// A fixed defect (docs/operations.md#lifecycle-replay): an old `disabled`, replayed after
    /// `enabled`, disabled the tenant again.
    async fn an_older_enabled_or_disabled_does_not_undo_a_newer_one(backend) {
        let app = spawn(backend).await;
        app.install("ck-toggle", "toggle-secret").await;
        let disabled = toggle_token("disabled", "ck-toggle", "toggle-secret", 30);
        let disabled_body = toggle_body(&app, "disabled", "ck-toggle");
        assert_eq!(post(&app, "/disabled", &disabled, &disabled_body).await.0, 204);
        assert_eq!(status_of(&app, "ck-toggle").await, "disabled");
        let enabled = toggle_token("enabled", "ck-toggle", "toggle-secret", 10);
        let enabled_body = toggle_body(&app, "enabled", "ck-toggle");
        assert_eq!(post(&app, "/enabled", &enabled, &enabled_body).await.0, 204);
        assert_eq!(status_of(&app, "ck-toggle").await, "enabled");
        let events = app.events("ck-toggle").await.len();

        // The captured `disabled`, byte for byte: a retry of something already applied.
        assert_eq!(post(&app, "/disabled", &disabled, &disabled_body).await.0, 204);
        assert_eq!(status_of(&app, "ck-toggle").await, "enabled");
        // The same token with another body: refused.
        let mut other = disabled_body.clone();
        other["description"] = json!("changed");
        assert_eq!(post(&app, "/disabled", &disabled, &other).await.0, 401);
        // Another `disabled` signed before the last `enabled` (never presented yet): ignored.
        let older = toggle_token("disabled", "ck-toggle", "toggle-secret", 20);
        assert_eq!(post(&app, "/disabled", &older, &disabled_body).await.0, 204);
        assert_eq!(status_of(&app, "ck-toggle").await, "enabled");
        assert_eq!(app.events("ck-toggle").await.len(), events, "nothing recorded");
        assert_eq!(whoami(&app, "ck-toggle", "toggle-secret").await, 200);

        // A newer one applies.
        let newer = toggle_token("disabled", "ck-toggle", "toggle-secret", 0);
        assert_eq!(post(&app, "/disabled", &newer, &disabled_body).await.0, 204);
        assert_eq!(status_of(&app, "ck-toggle").await, "disabled");
        assert_eq!(app.events("ck-toggle").await.len(), events + 1);
    }
}

both_backends! {
    /// The table holds hashes only, and a token's row goes once the token has expired.
    async fn applied_tokens_are_kept_as_hashes_until_they_expire(backend) {
        let app = TestApp::spawn_with(backend, &[("LICENSE_ENFORCEMENT", "off"), ("JWT_LEEWAY_SECS", "0")]).await;
        let mut claims = app.install_claims("ck-short", "/installed");
        claims["exp"] = json!(chrono::Utc::now().timestamp() + 2);
        let token = sign_rs256(&claims);
        let body = app.installed_payload("ck-short", "short-secret");
        assert_eq!(post(&app, "/installed", &token, &body).await.0, 204);
        assert_eq!(token_rows(&app).await, 1);
        let stored: Vec<(String, String)> = crate::on_db!(&app.state.db, |p| {
            sqlx::query_as("SELECT signature_hash, body_hash FROM lifecycle_tokens").fetch_all(p).await
        }).unwrap();
        let signature = token.rsplit('.').next().unwrap();
        assert!(stored.iter().all(|(s, b)| s.len() == 64 && b.len() == 64 && s != signature));

        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        // The expired token itself is refused by its exp, as before.
        assert_eq!(post(&app, "/installed", &token, &body).await.0, 401);
        // The next applied callback clears the expired row.
        app.install("ck-other", "other-secret").await;
        assert_eq!(token_rows(&app).await, 1, "only the new token's row is left");
    }
}
