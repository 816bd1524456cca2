//! Hardening: each test reproduces one attack or careless-operator mistake found against an
//! earlier version (secrets at rest, key-server floods, …) against the real server over HTTP,
//! on both backends where the database matters.

use std::process::Output;

use base64::Engine;
use serde_json::json;

use crate::helpers::*;

/// `SECRETS_KEY` values for the tests (32 bytes each, base64).
fn key(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

/// Runs `connect-keeper ARGS` against the app's database with `extra` variables only.
async fn cli(app: &TestApp, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut env = vec![
        ("DATABASE_URL".to_owned(), app.db.url.clone()),
        ("APP_BASE_URL".to_owned(), app.base_url.clone()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_connect-keeper"))
            .args(&args)
            .env_clear()
            .envs(env)
            .output()
            .expect("run the connect-keeper binary")
    })
    .await
    .unwrap()
}

/// The status of `GET /api/whoami` with a context token signed by `secret` (enforcement is
/// off in these tests, so 200 means "authenticated" and 401 "not").
async fn whoami_status(app: &TestApp, client_key: &str, secret: &str) -> u16 {
    let token = hs256_context(client_key, secret, json!({}));
    app.get_with_jwt_header("/api/whoami", &token)
        .await
        .status()
        .as_u16()
}

async fn stored_secret(app: &TestApp, client_key: &str) -> String {
    app.installation(client_key)
        .await
        .expect("tenant")
        .shared_secret
        .expect("a stored secret")
}

fn key_id(byte: u8) -> String {
    connect_keeper::secrets::key_id(&[byte; 32])
}

both_backends! {
    /// SECRETS_KEY (docs/configuration.md#secrets_key): shared secrets are stored encrypted, bound to their row;
    /// rows written before keep working and are encrypted by their next install or by
    /// `secrets rotate`; rotation to a new key while both are accepted.
    async fn shared_secrets_are_encrypted_at_rest(backend) {
        let mut app = TestApp::spawn_with(backend, &[("LICENSE_ENFORCEMENT", "off")]).await;
        app.install("ck-legacy", "legacy-secret-value").await;
        assert_eq!(stored_secret(&app, "ck-legacy").await, "legacy-secret-value");

        app.env.insert("SECRETS_KEY".into(), key(1));
        let app = app.restart().await;
        // The plain row written before the key still authenticates.
        assert_eq!(whoami_status(&app, "ck-legacy", "legacy-secret-value").await, 200);
        app.install("ck-new", "new-secret-value").await;
        let sealed = stored_secret(&app, "ck-new").await;
        assert!(sealed.starts_with(&format!("ck1:{}:", key_id(1))), "{sealed}");
        assert!(!sealed.contains("new-secret-value"));
        assert_eq!(whoami_status(&app, "ck-new", "new-secret-value").await, 200);
        assert_eq!(whoami_status(&app, "ck-new", "wrong-secret").await, 401);
        // HS256 lifecycle callbacks read the encrypted secret too.
        assert_eq!(app.lifecycle("enabled", "ck-new", "new-secret-value").await.status(), 204);
        // A reinstall of the legacy tenant encrypts its row.
        app.install("ck-legacy", "legacy-secret-value").await;
        assert!(stored_secret(&app, "ck-legacy").await.starts_with("ck1:"));

        // A value moved to another row does not decrypt there (row identity as AAD).
        app.install("ck-victim", "victim-secret").await;
        connect_keeper::store::installations::replace_secret(
            &app.state.db,
            connect_keeper::store::installations::SecretColumn::SharedSecret,
            "ck-victim",
            &stored_secret(&app, "ck-victim").await,
            &sealed,
        )
        .await
        .unwrap();
        app.state.tenants.invalidate("ck-victim").await;
        assert_eq!(whoami_status(&app, "ck-victim", "new-secret-value").await, 401);
        assert_eq!(whoami_status(&app, "ck-victim", "victim-secret").await, 401);

        // Rotation: the running server knows both keys (new first), the CLI re-encrypts.
        let mut app = app;
        app.env.insert("SECRETS_KEY".into(), format!("{},{}", key(2), key(1)));
        let app = app.restart().await;
        app.install("ck-plain-again", "p").await; // written under key 2 at once
        let out = cli(
            &app,
            &["secrets", "rotate", "--batch", "2", "--format", "json"],
            &[("SECRETS_KEY", &format!("{},{}", key(2), key(1)))],
        )
        .await;
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        // ck-victim holds another row's value: it cannot be decrypted and is reported.
        assert!(!out.status.success());
        assert_eq!(summary["undecryptable"], 1, "{summary}");
        assert_eq!(summary["rewritten"], 2, "{summary}");
        for ck in ["ck-legacy", "ck-new", "ck-plain-again"] {
            let stored = stored_secret(&app, ck).await;
            assert!(stored.starts_with(&format!("ck1:{}:", key_id(2))), "{ck}: {stored}");
        }
        assert_eq!(whoami_status(&app, "ck-new", "new-secret-value").await, 200);
        assert_eq!(whoami_status(&app, "ck-legacy", "legacy-secret-value").await, 200);

        // Once rotated, the old key can go.
        let mut app = app;
        app.env.insert("SECRETS_KEY".into(), key(2));
        let app = app.restart().await;
        assert_eq!(whoami_status(&app, "ck-new", "new-secret-value").await, 200);
        assert_eq!(whoami_status(&app, "ck-legacy", "legacy-secret-value").await, 200);
    }
}

/// A bad `SECRETS_KEY` stops start-up naming the variable, never echoing the value.
#[test]
fn a_bad_secrets_key_stops_start_up() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_connect-keeper"))
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", "sqlite::memory:")
        .env("SECRETS_KEY", "dG9vLXNob3J0LWtleQ==")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("SECRETS_KEY"), "{err}");
    assert!(!err.contains("dG9vLXNob3J0LWtleQ"), "{err}");
}

/// Requests the fake key server got for kids other than the two it knows.
async fn junk_fetches(app: &TestApp) -> usize {
    app.keys
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() != format!("/{KID}") && r.url.path() != format!("/{OTHER_KID}"))
        .count()
}

/// A signed `installed` for `client_key` whose header names `kid` (signed with the real key,
/// so only the kid is wrong), with `claims` merged over valid ones.
async fn install_with_kid(app: &TestApp, kid: &str, extra: serde_json::Value) -> u16 {
    let mut claims = app.install_claims("ck-junk", "/installed");
    merge(&mut claims, extra);
    let token = sign_rs256_with(&claims, kid, RSA_PRIVATE);
    let body = app.installed_payload("ck-junk", "s");
    app.post_lifecycle("/installed", Some(&token), &body)
        .await
        .status()
        .as_u16()
}

both_backends! {
    /// A fixed defect (docs/security.md#outbound-calls): unknown kids. Cheap checks come before any
    /// fetch, an unknown kid is asked once, and a flood of random kids makes a bounded number of
    /// fetches.
    async fn unknown_kids_do_not_flood_the_key_server(backend) {
        let app = TestApp::spawn(backend).await;
        // Atlassian's own kid, fetched once and kept.
        app.install("ck-real", "real-secret").await;
        let now = chrono::Utc::now().timestamp();
        // Expired, wrong aud, wrong qsh: refused without asking for the key.
        for extra in [
            json!({"exp": now - 3600, "iat": now - 7200}),
            json!({"aud": "https://elsewhere.example"}),
            json!({"qsh": "0".repeat(64)}),
        ] {
            let kid = format!("junk-{}", uuid::Uuid::new_v4());
            assert_eq!(install_with_kid(&app, &kid, extra).await, 401);
        }
        assert_eq!(junk_fetches(&app).await, 0, "cheap checks come first");

        // The same unknown kid twenty times: one fetch.
        for _ in 0..20 {
            assert_eq!(install_with_kid(&app, "never-heard-of", json!({})).await, 401);
        }
        assert_eq!(junk_fetches(&app).await, 1, "an unknown kid is remembered");

        // 200 random kids at once: a handful of fetches; the rest are refused without one.
        let started = std::time::Instant::now();
        let statuses = futures::future::join_all((0..200).map(|_| {
            let kid = format!("junk-{}", uuid::Uuid::new_v4());
            let app = &app;
            async move { install_with_kid(app, &kid, json!({})).await }
        }))
        .await;
        let elapsed = started.elapsed().as_secs_f64();
        assert!(statuses.iter().all(|s| *s == 401 || *s == 503), "{statuses:?}");
        let fetched = junk_fetches(&app).await - 1;
        // Default limits: a burst of 5, then 2 per second.
        let bound = 5 + (2.0 * elapsed).ceil() as usize;
        assert!(fetched <= bound, "{fetched} fetches in {elapsed:.1}s (bound {bound})");
        // A kid already known is served from memory: real installs go on during a flood.
        app.install("ck-real-2", "real-secret").await;
    }
}
