//! The CLI, run as the real binary against the test's database while the server runs
//! on the same database. A change made with the CLI must reach the running server within 5 s.

use std::process::Output;

use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::admin::{ADMIN, admin_json, set_marketplace, spawn_admin};
use crate::helpers::*;

/// Runs `connect-keeper ARGS` with only the variables it needs (no ADMIN_TOKEN, no
/// inherited DATABASE_URL), off the async workers.
pub async fn run(db_url: &str, base_url: &str, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let db_url = db_url.to_owned();
    let base_url = base_url.to_owned();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_connect-keeper"))
            .args(&args)
            .env_clear()
            .env("DATABASE_URL", db_url)
            .env("APP_BASE_URL", base_url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run the connect-keeper binary")
    })
    .await
    .unwrap()
}

pub async fn cli(app: &TestApp, args: &[&str]) -> Output {
    run(&app.db.url, &app.base_url, args).await
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and asserts success; returns stdout.
pub async fn ok(app: &TestApp, args: &[&str]) -> String {
    let o = cli(app, args).await;
    assert!(
        o.status.success(),
        "{args:?} failed: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    stdout(&o)
}

/// Runs and asserts failure with `needle` in stderr.
pub async fn fails(app: &TestApp, args: &[&str], needle: &str) {
    let o = cli(app, args).await;
    assert!(!o.status.success(), "{args:?} should fail: {}", stdout(&o));
    assert!(
        stderr(&o).contains(needle),
        "{args:?}: stderr {:?} should mention {needle:?}",
        stderr(&o)
    );
}

pub fn json_out(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

async fn status_with(app: &TestApp, token: &str) -> u16 {
    app.client
        .get(app.url("/admin/summary"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

both_backends! {
    async fn admin_tokens_made_by_the_cli_work_until_revoked(backend) {
        let app = TestApp::spawn(backend).await;
        let out = ok(&app, &["admin-token", "create", "--name", "ci-bot"]).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "the token alone on stdout: {out:?}");
        let token = lines[0].trim().to_owned();
        assert!(token.len() >= 32);
        assert_eq!(status_with(&app, &token).await, 200);

        let created = json_out(&ok(&app, &["admin-token", "create", "--name", "other", "--format", "json"]).await);
        assert!(created["id"].is_string() && created["token"].is_string());
        assert_eq!(status_with(&app, created["token"].as_str().unwrap()).await, 200);

        let list = ok(&app, &["admin-token", "list", "--format", "json"]).await;
        assert!(!list.contains(&token), "tokens are never listed");
        let list = json_out(&list);
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        let id = items.iter().find(|t| t["name"] == "ci-bot").unwrap()["id"].as_str().unwrap().to_owned();
        let table = ok(&app, &["admin-token", "list"]).await;
        assert!(table.starts_with("ID") && table.contains("ci-bot"), "{table}");

        ok(&app, &["admin-token", "revoke", &id]).await;
        assert_eq!(status_with(&app, &token).await, 401, "revoked tokens stop at once");
        assert_eq!(status_with(&app, created["token"].as_str().unwrap()).await, 200);
        fails(&app, &["admin-token", "revoke", "no-such-id"], "no admin token").await;
        fails(&app, &["admin-token", "create", "--name", " "], "name").await;
        // the stored form is a SHA-256, never the token
        let stored: Vec<String> = on_db!(&app.state.db, |p| {
            sqlx::query_scalar::<_, String>("SELECT token_hash FROM admin_tokens").fetch_all(p).await
        }).unwrap();
        assert!(stored.iter().all(|h| h.len() == 64 && h != &token));
    }
}

both_backends! {
    async fn installations_list_and_show(backend) {
        let app = spawn_admin(backend).await;
        for k in ["ck-c1", "ck-c2", "ck-c3"] {
            app.install_payload(&installed_payload(k, &format!("cli-secret-{k}"), &format!("{}/{k}", app.product.uri()))).await;
        }
        assert_eq!(app.lifecycle("enabled", "ck-c2", "cli-secret-ck-c2").await.status(), 204);
        set_marketplace(&app, "ck-c1", "Acme Widgets", "ada@acme.example", "EVALUATION", Some(Utc::now() + Duration::days(9))).await;

        let all = json_out(&ok(&app, &["installations", "list", "--format", "json"]).await);
        let keys: Vec<&str> = all["items"].as_array().unwrap().iter().map(|i| i["client_key"].as_str().unwrap()).collect();
        assert_eq!(keys, ["ck-c1", "ck-c2", "ck-c3"]);
        let enabled = json_out(&ok(&app, &["installations", "list", "--status", "enabled", "--format", "json"]).await);
        assert_eq!(enabled["items"].as_array().unwrap().len(), 1);
        let trial = json_out(&ok(&app, &["installations", "list", "--license", "trial", "--format", "json"]).await);
        assert_eq!(trial["items"][0]["client_key"], "ck-c1");
        assert_eq!(trial["items"][0]["customer"]["company"], "Acme Widgets");

        let csv_text = ok(&app, &["installations", "list", "--format", "csv"]).await;
        assert!(!csv_text.contains("cli-secret-"));
        let mut r = csv::Reader::from_reader(csv_text.as_bytes());
        assert_eq!(&r.headers().unwrap()[0], "client_key");
        assert_eq!(r.records().count(), 3);

        let table = ok(&app, &["installations", "list", "--sort", "-installed_at"]).await;
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("CLIENT_KEY"), "{table}");
        assert!(lines[1].starts_with("ck-c3") && lines[3].starts_with("ck-c1"), "{table}");
        assert!(table.contains("Acme Widgets") && table.contains("ada@acme.example"), "{table}");
        // columns are aligned: the second column starts at the same offset on every line
        let offset = |l: &str| l.find("http").unwrap();
        assert!(lines[1..].iter().all(|l| offset(l) == lines[0].find("BASE_URL").unwrap()), "{table}");

        let shown = json_out(&ok(&app, &["installations", "show", "ck-c2", "--format", "json"]).await);
        assert_eq!(shown["client_key"], "ck-c2");
        assert_eq!(shown["status"], "enabled");
        assert_eq!(shown["events"].as_array().unwrap().len(), 2);
        let text = ok(&app, &["installations", "show", "ck-c1"]).await;
        assert!(text.contains("ck-c1") && text.contains("trial") && !text.contains("cli-secret-"), "{text}");

        fails(&app, &["installations", "show", "nobody"], "no installation").await;
        fails(&app, &["installations", "list", "--status", "bogus"], "--status").await;
        fails(&app, &["installations", "list", "--license", "paid"], "--license").await;
        fails(&app, &["installations", "list", "--format", "yaml"], "yaml").await;
    }
}

/// `GET /api/whoami` as the tenant's iframe would call it (context token, no `lic`).
async fn whoami(app: &TestApp, client_key: &str, secret: &str) -> u16 {
    let token = hs256_context(client_key, secret, json!({}));
    app.get_with_jwt_header("/api/whoami", &token)
        .await
        .status()
        .as_u16()
}

both_backends! {
    async fn grants_and_trials_from_the_cli_reach_the_running_server(backend) {
        let app = spawn_admin(backend).await;
        app.install("ck-live", "live-secret").await;
        assert_eq!(whoami(&app, "ck-live", "live-secret").await, 403, "no license yet");

        let g = json_out(&ok(&app, &["grant", "free", "ck-live", "--reason", "partner deal", "--format", "json"]).await);
        assert_eq!(g["kind"], "free");
        let grant_id = g["id"].as_str().unwrap().to_owned();
        assert!(eventually(5, || async { whoami(&app, "ck-live", "live-secret").await == 200 }).await,
            "the server sees the CLI's free grant within 5 s");
        let d = admin_json(&app, "/admin/installations/ck-live").await;
        assert_eq!(d["license"]["state"], "free");
        let audit = d["audit"].as_array().unwrap();
        assert!(audit.iter().any(|a| a["actor"] == "cli" && a["reason"] == "partner deal"), "{audit:?}");

        let out = ok(&app, &["grant", "revoke", &grant_id]).await;
        assert!(out.contains(&grant_id));
        assert!(eventually(5, || async { whoami(&app, "ck-live", "live-secret").await == 403 }).await,
            "the server sees the revocation within 5 s");

        let ext = json_out(&ok(&app, &["trial", "extend", "ck-live", "--days", "3", "--reason", "eval", "--format", "json"]).await);
        assert_eq!(ext["kind"], "trial_extension");
        let end: chrono::DateTime<Utc> = ext["ends_at"].as_str().unwrap().parse().unwrap();
        assert!((end - (Utc::now() + Duration::days(3))).num_seconds().abs() < 60);
        assert!(eventually(5, || async { whoami(&app, "ck-live", "live-secret").await == 200 }).await);
        let text = ok(&app, &["trial", "extend", "ck-live", "--days", "2"]).await;
        assert!(text.contains("trial of \"ck-live\" extended: it now ends"), "{text}");
        let d = admin_json(&app, "/admin/installations/ck-live").await;
        let eff: chrono::DateTime<Utc> = d["license"]["effective_trial_end"].as_str().unwrap().parse().unwrap();
        assert!((eff - (end + Duration::days(2))).num_seconds().abs() < 2, "stacked: {eff} vs {end}");

        for days in ["0", "366", "-1"] {
            fails(&app, &["trial", "extend", "ck-live", "--days", days], "days").await;
        }
        fails(&app, &["trial", "extend", "nobody", "--days", "3"], "no installation").await;
        fails(&app, &["grant", "free", "ck-live", "--until", "tomorrow"], "--until").await;
        fails(&app, &["grant", "revoke", "no-such-grant"], "no grant").await;
        let until = (Utc::now() + Duration::days(10)).to_rfc3339();
        let g = json_out(&ok(&app, &["grant", "free", "ck-live", "--until", &until, "--format", "json"]).await);
        assert!(g["ends_at"].is_string());
    }
}

both_backends! {
    async fn access_tokens_from_the_cli(backend) {
        let app = spawn_admin(backend).await;
        app.install("ck-tok", "tok-secret").await;
        let out = ok(&app, &["access-token", "create", "--note", "for Acme"]).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "the token alone on stdout: {out:?}");
        let token = lines[0].to_owned();

        let created = json_out(&ok(&app, &["access-token", "create", "--client-key", "ck-tok", "--note", "bound", "--format", "json"]).await);
        assert!(created["id"].is_string());
        let t2 = created["token"].as_str().unwrap();
        assert_eq!(created["install_url"], format!("{}/atlassian-connect.json?access-token={t2}", app.base_url));

        let list_text = ok(&app, &["access-token", "list", "--format", "json"]).await;
        assert!(!list_text.contains(&token) && !list_text.contains(t2), "never listed");
        let list = json_out(&list_text);
        assert_eq!(list["items"].as_array().unwrap().len(), 2);
        // the server lists what the CLI made
        let api = admin_json(&app, "/admin/access-tokens").await;
        assert_eq!(api["items"].as_array().unwrap().len(), 2);

        let id = created["id"].as_str().unwrap();
        ok(&app, &["access-token", "revoke", id]).await;
        let api = admin_json(&app, "/admin/access-tokens").await;
        let revoked = api["items"].as_array().unwrap().iter().find(|t| t["id"] == id).unwrap().clone();
        assert!(revoked["revoked_at"].is_string());
        let table = ok(&app, &["access-token", "list"]).await;
        assert!(table.starts_with("ID") && table.contains("for Acme"), "{table}");
        let csv_text = ok(&app, &["access-token", "list", "--format", "csv"]).await;
        assert_eq!(csv_text.lines().count(), 3);

        fails(&app, &["access-token", "create", "--client-key", "nobody"], "no installation").await;
        fails(&app, &["access-token", "create", "--until", "later"], "--until").await;
        fails(&app, &["access-token", "revoke", "nope"], "no access token").await;
        let _ = ADMIN;
    }
}

/// The CLI refuses to create a SQLite database (docs/cli.md: a wrong URL or working directory must
/// not look like an empty registry); after `migrate` made it, it works on it.
#[tokio::test]
async fn cli_works_on_a_fresh_sqlite_database_once_migrate_made_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/fresh/keeper.db", dir.path().display());
    let list = ["installations", "list", "--format", "json"];
    let o = run(&url, "https://app.example.test", &list).await;
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("no SQLite database at"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("fresh").exists(), "nothing created");
    let o = run(&url, "https://app.example.test", &["migrate"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&url, "https://app.example.test", &list).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_out(&stdout(&o)), json!({"items": []}));
    let o = run(&url, "https://app.example.test", &["--help"]).await;
    let help = stdout(&o);
    for cmd in [
        "serve",
        "migrate",
        "admin-token",
        "installations",
        "trial",
        "grant",
        "access-token",
        "sync",
    ] {
        assert!(help.contains(cmd), "--help lists {cmd}: {help}");
    }
    let o = run(&url, "https://app.example.test", &["sync", "marketplace"]).await;
    assert!(!o.status.success());
    assert!(stderr(&o).contains("MARKETPLACE_"), "{}", stderr(&o));
}
