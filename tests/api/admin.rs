//! The admin API — authentication, listing with filters, sorts, keyset pagination
//! and CSV, the detail view, the summary, trial extensions, grants, access tokens and the
//! OpenAPI document.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::helpers::*;

pub const ADMIN: &str = "test-admin-token-9f8e7d6c5b4a3f2e1d0c";

pub async fn spawn_admin(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, &[("ADMIN_TOKEN", ADMIN)]).await
}

/// GET with the admin token; returns status and body text.
pub async fn admin_get(app: &TestApp, path: &str) -> (u16, String) {
    let res = app
        .client
        .get(app.url(path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("request sent");
    let status = res.status().as_u16();
    (status, res.text().await.unwrap_or_default())
}

pub async fn admin_json(app: &TestApp, path: &str) -> Value {
    let (status, body) = admin_get(app, path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

pub async fn admin_send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(ADMIN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("request sent");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A site of its own under the fake product (background reads stay local and get 404).
pub fn site(app: &TestApp, slug: &str) -> String {
    format!("{}/{slug}", app.product.uri())
}

/// Installs `client_key` at `site(slug)` with a signed callback.
pub async fn install_at(app: &TestApp, client_key: &str, secret: &str, slug: &str) {
    let body = installed_payload(client_key, secret, &site(app, slug));
    app.install_payload(&body).await;
}

/// Installs `n` tenants `{prefix}-000…` ten at a time.
pub async fn install_many(app: &TestApp, prefix: &str, n: usize) -> Vec<String> {
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:03}")).collect();
    for chunk in keys.chunks(10) {
        futures::future::join_all(chunk.iter().map(|k| async move {
            let secret = format!("secret-of-{k}");
            install_at(app, k, &secret, k).await
        }))
        .await;
    }
    keys
}

/// Marketplace data as a sync would have written it, then the license view recomputed.
pub async fn set_marketplace(
    app: &TestApp,
    client_key: &str,
    company: &str,
    email: &str,
    license_type: &str,
    trial_end: Option<DateTime<Utc>>,
) {
    let db = &app.state.db;
    let now = Utc::now();
    let contact = json!({"name": "Ada Admin", "email": email, "phone": "+49 30 1"}).to_string();
    let tier = if license_type == "EVALUATION" {
        "Evaluation"
    } else {
        "25 Users"
    };
    let user_count: Option<i64> = (license_type != "EVALUATION").then_some(25);
    let trial_start = trial_end.map(|t| t - Duration::days(30));
    on_db!(db, |p| {
        sqlx::query(
            "UPDATE installations SET mp_license_id = $2, mp_license_type = $3, mp_status = 'active',
                 mp_tier = $4, mp_user_count = $5, mp_company = $6, mp_country = 'Germany',
                 mp_region = 'EMEA', mp_technical_contact = $7, mp_trial_start = $8,
                 mp_trial_end = $9, mp_last_updated = $10, mp_synced_at = $10
             WHERE client_key = $1",
        )
        .bind(client_key)
        .bind(format!("SEN-{client_key}"))
        .bind(license_type)
        .bind(tier)
        .bind(user_count)
        .bind(company)
        .bind(contact)
        .bind(trial_start)
        .bind(trial_end)
        .bind(now)
        .execute(p)
        .await
        .map(|_| ())
    })
    .expect("update marketplace columns");
    connect_keeper::registry::license_view::refresh(db, client_key)
        .await
        .expect("refresh license view");
}

fn keys_of(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["client_key"].as_str().unwrap().to_owned())
        .collect()
}

async fn keys(app: &TestApp, query: &str) -> Vec<String> {
    keys_of(&admin_json(app, &format!("/admin/installations?{query}")).await)
}

// ---------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------

both_backends! {
    async fn every_admin_route_needs_a_valid_bearer_token(backend) {
        let app = spawn_admin(backend).await;
        app.install("ck-auth", "s3cret-auth").await;
        let routes = [
            ("GET", "/admin/installations"),
            ("GET", "/admin/installations/ck-auth"),
            ("GET", "/admin/summary"),
            ("GET", "/admin/openapi.json"),
            ("GET", "/admin/access-tokens"),
            ("POST", "/admin/access-tokens"),
            ("POST", "/admin/installations/ck-auth/trial-extension"),
            ("POST", "/admin/installations/ck-auth/grants"),
            ("DELETE", "/admin/grants/some-id"),
            ("DELETE", "/admin/access-tokens/some-id"),
            ("POST", "/admin/marketplace/sync"),
            ("GET", "/admin/no-such-route"),
        ];
        for (method, path) in routes {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            for auth in [None, Some("Bearer wrong-token"), Some("Basic dXNlcjpwYXNz"), Some(ADMIN)] {
                let mut req = app.client.request(m.clone(), app.url(path));
                if let Some(a) = auth {
                    req = req.header("authorization", a);
                }
                let res = req.send().await.unwrap();
                assert_eq!(res.status(), 401, "{method} {path} with {auth:?}");
                assert!(res.headers().get("www-authenticate").is_some());
                let body: Value = res.json().await.unwrap();
                assert_eq!(body["error"], "unauthorized", "{method} {path}");
            }
        }
        // the env token works
        let (status, _) = admin_get(&app, "/admin/summary").await;
        assert_eq!(status, 200);
        let (status, _) = admin_get(&app, "/admin/no-such-route").await;
        assert_eq!(status, 404, "authenticated: an unknown admin route is a JSON 404");
    }
}

both_backends! {
    async fn created_tokens_work_until_revoked(backend) {
        let app = TestApp::spawn(backend).await; // no ADMIN_TOKEN at all
        let db = &app.state.db;
        let created = connect_keeper::registry::admin_tokens::create(
            db, "ops-bot", "test", Utc::now()).await.unwrap();
        let get = |token: String| {
            let req = app.client.get(app.url("/admin/summary")).bearer_auth(token);
            async move { req.send().await.unwrap().status().as_u16() }
        };
        assert_eq!(get(created.token.clone()).await, 200);
        assert_eq!(get(format!("{}x", created.token)).await, 401);
        assert_eq!(get(String::new()).await, 401);
        let stored = connect_keeper::store::admin_tokens::list(db).await.unwrap();
        assert_eq!(stored.len(), 1);
        assert!(stored[0].last_used_at.is_some(), "use is recorded");
        connect_keeper::registry::admin_tokens::revoke(db, &created.id, "test", Utc::now())
            .await
            .unwrap();
        assert_eq!(get(created.token.clone()).await, 401, "revoked at once");
    }
}

// ---------------------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------------------

both_backends! {
    async fn list_shows_the_installation_shape_without_secrets(backend) {
        let app = spawn_admin(backend).await;
        install_at(&app, "ck-shape", "sup3r-s3cret-shape-value", "acme").await;
        set_marketplace(&app, "ck-shape", "Acme Widgets", "ada@acme.example", "COMMERCIAL", None).await;
        let page = admin_json(&app, "/admin/installations").await;
        assert_eq!(page["total"], 1);
        assert_eq!(page["next_cursor"], Value::Null);
        let i = &page["items"][0];
        for field in [
            "client_key", "app_key", "base_url", "display_url", "product_type", "description",
            "cloud_id", "installation_id", "service_entitlement_number", "entitlement_id",
            "entitlement_number", "status", "installed_at", "updated_at", "uninstalled_at",
            "last_seen_at", "license", "customer", "grants",
        ] {
            assert!(i.get(field).is_some(), "missing {field}: {i}");
        }
        assert!(i.get("shared_secret").is_none());
        assert_eq!(i["status"], "installed");
        assert_eq!(i["entitlement_number"], "E-3XJ-WYD-KA7-HBJ");
        let l = &i["license"];
        for field in [
            "state", "source", "lic_last_seen", "lic_seen_at", "license_type", "evaluation",
            "tier", "user_count", "maintenance_start", "maintenance_end", "trial_start",
            "trial_end", "effective_trial_end", "marketplace_status", "synced_at",
        ] {
            assert!(l.get(field).is_some(), "missing license.{field}: {l}");
        }
        assert_eq!(l["state"], "active");
        assert_eq!(l["source"], "marketplace");
        assert_eq!(l["license_type"], "COMMERCIAL");
        assert_eq!(l["evaluation"], false);
        assert_eq!(l["tier"], "25 Users");
        assert_eq!(l["user_count"], 25);
        assert_eq!(l["marketplace_status"], "active");
        let c = &i["customer"];
        assert_eq!(c["company"], "Acme Widgets");
        assert_eq!(c["country"], "Germany");
        assert_eq!(c["region"], "EMEA");
        assert_eq!(c["technical_contact"]["email"], "ada@acme.example");
        assert_eq!(c["billing_contact"], Value::Null);
        // an installation without Marketplace data has no customer
        install_at(&app, "ck-bare", "another-s3cret-value", "bare").await;
        let page = admin_json(&app, "/admin/installations?q=bare").await;
        assert_eq!(page["items"][0]["customer"], Value::Null);
        assert_eq!(page["items"][0]["license"]["state"], "unlicensed");
        assert_eq!(page["items"][0]["license"]["source"], Value::Null);
    }
}

both_backends! {
    async fn filters_select_the_right_rows(backend) {
        let app = spawn_admin(backend).await;
        for (k, slug) in [("ck-a", "alpha"), ("ck-b", "bravo"), ("ck-c", "charlie"), ("ck-d", "delta")] {
            install_at(&app, k, &format!("secret-{k}"), slug).await;
        }
        let mut conf = installed_payload("ck-e", "secret-ck-e", &site(&app, "echo/wiki"));
        conf["productType"] = json!("confluence");
        app.install_payload(&conf).await;
        // statuses: a enabled, b disabled, c uninstalled, d and e installed
        assert_eq!(app.lifecycle("enabled", "ck-a", "secret-ck-a").await.status(), 204);
        assert_eq!(app.lifecycle("disabled", "ck-b", "secret-ck-b").await.status(), 204);
        assert_eq!(app.lifecycle("uninstalled", "ck-c", "secret-ck-c").await.status(), 204);
        // license data: a trial ending in 10 days, b commercial, d trial ending in 40 days
        let now = Utc::now();
        set_marketplace(&app, "ck-a", "Acme Widgets", "ada@acme.example", "EVALUATION", Some(now + Duration::days(10))).await;
        set_marketplace(&app, "ck-b", "Bravo Corp", "bob@bravo.example", "COMMERCIAL", None).await;
        set_marketplace(&app, "ck-d", "Delta_100% Ltd", "dee@delta.example", "EVALUATION", Some(now + Duration::days(40))).await;

        let sorted = |mut v: Vec<String>| { v.sort(); v };
        assert_eq!(sorted(keys(&app, "status=installed").await), ["ck-d", "ck-e"]);
        assert_eq!(sorted(keys(&app, "status=enabled,disabled").await), ["ck-a", "ck-b"]);
        assert_eq!(sorted(keys(&app, "status=uninstalled").await), ["ck-c"]);
        assert_eq!(sorted(keys(&app, "status=enabled&status=uninstalled").await), ["ck-a", "ck-c"]);
        assert_eq!(sorted(keys(&app, "license=trial").await), ["ck-a", "ck-d"]);
        assert_eq!(sorted(keys(&app, "license=active").await), ["ck-b"]);
        assert_eq!(sorted(keys(&app, "license=unlicensed").await), ["ck-c", "ck-e"]);
        assert_eq!(keys(&app, "license=free").await, Vec::<String>::new());
        assert_eq!(sorted(keys(&app, "product=confluence").await), ["ck-e"]);
        assert_eq!(keys(&app, "product=jira").await.len(), 4);
        // q: base URL, company, contact e-mail; case-insensitive; wildcards are literal
        assert_eq!(keys(&app, "q=CHARLIE").await, ["ck-c"]);
        assert_eq!(keys(&app, "q=widgets").await, ["ck-a"]);
        assert_eq!(keys(&app, "q=bob%40bravo").await, ["ck-b"]);
        assert_eq!(keys(&app, "q=_100%25").await, ["ck-d"]);
        assert_eq!(keys(&app, "q=100%25%25").await, Vec::<String>::new());
        // trial_ends_before: a date, exclusive
        let in_20 = (now + Duration::days(20)).format("%Y-%m-%d");
        assert_eq!(keys(&app, &format!("trial_ends_before={in_20}")).await, ["ck-a"]);
        let in_60 = (now + Duration::days(60)).format("%Y-%m-%d");
        assert_eq!(sorted(keys(&app, &format!("trial_ends_before={in_60}")).await), ["ck-a", "ck-d"]);
        // filters combine with AND, and total counts all matches
        let page = admin_json(&app, "/admin/installations?license=trial&status=installed&limit=1").await;
        assert_eq!(keys_of(&page), ["ck-d"]);
        assert_eq!(page["total"], 1);
        let page = admin_json(&app, "/admin/installations?limit=2").await;
        assert_eq!(page["total"], 5);
        assert!(page["next_cursor"].is_string());
    }
}

both_backends! {
    async fn sorts_order_the_rows(backend) {
        let app = spawn_admin(backend).await;
        // installed in this order; base URLs in another
        for (k, slug) in [("ck-1", "mike"), ("ck-2", "alpha"), ("ck-3", "zulu"), ("ck-4", "kilo")] {
            install_at(&app, k, &format!("secret-{k}"), slug).await;
        }
        let now = Utc::now();
        set_marketplace(&app, "ck-3", "Z", "z@z.example", "EVALUATION", Some(now + Duration::days(3))).await;
        set_marketplace(&app, "ck-4", "K", "k@k.example", "EVALUATION", Some(now + Duration::days(1))).await;
        assert_eq!(keys(&app, "").await, ["ck-1", "ck-2", "ck-3", "ck-4"]);
        assert_eq!(keys(&app, "sort=installed_at").await, ["ck-1", "ck-2", "ck-3", "ck-4"]);
        assert_eq!(keys(&app, "sort=-installed_at").await, ["ck-4", "ck-3", "ck-2", "ck-1"]);
        assert_eq!(keys(&app, "sort=base_url").await, ["ck-2", "ck-4", "ck-1", "ck-3"]);
        // soonest trial end first, installations without one last (by client_key)
        assert_eq!(keys(&app, "sort=trial_end").await, ["ck-4", "ck-3", "ck-1", "ck-2"]);
        // and the same orders hold across pages of one
        for sort in ["installed_at", "-installed_at", "base_url", "trial_end"] {
            let all = keys(&app, &format!("sort={sort}")).await;
            let mut paged = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let q = match &cursor {
                    Some(c) => format!("/admin/installations?sort={sort}&limit=1&cursor={c}"),
                    None => format!("/admin/installations?sort={sort}&limit=1"),
                };
                let page = admin_json(&app, &q).await;
                paged.extend(keys_of(&page));
                assert!(paged.len() <= all.len(), "sort={sort}: rows repeat: {paged:?}");
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
            }
            assert_eq!(paged, all, "sort={sort}");
        }
    }
}

both_backends! {
    async fn invalid_parameters_are_400_naming_the_parameter(backend) {
        let app = spawn_admin(backend).await;
        app.install("ck-p", "secret-p").await;
        let page = admin_json(&app, "/admin/installations?limit=1").await;
        let _ = page;
        let base_cursor = {
            install_at(&app, "ck-q", "secret-q", "q").await;
            let p = admin_json(&app, "/admin/installations?limit=1&sort=base_url").await;
            p["next_cursor"].as_str().unwrap().to_owned()
        };
        for (query, param) in [
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("limit=-1", "limit"),
            ("limit=many", "limit"),
            ("status=enabled,deleted", "status"),
            ("license=paid", "license"),
            ("sort=company", "sort"),
            ("product=bamboo", "product"),
            ("cursor=not-a-cursor", "cursor"),
            ("cursor=eyJmb28iOjF9", "cursor"),
            (&format!("cursor={base_cursor}&sort=installed_at"), "cursor"),
            ("trial_ends_before=soon", "trial_ends_before"),
            ("trial_ends_before=2026-13-45", "trial_ends_before"),
            ("format=xml", "format"),
        ] {
            let (status, body) = admin_get(&app, &format!("/admin/installations?{query}")).await;
            assert_eq!(status, 400, "{query}: {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            let msg = v["message"].as_str().unwrap();
            assert!(msg.contains(param), "{query}: message {msg:?} should name {param}");
        }
        for ok in ["limit=1", "limit=500", "trial_ends_before=2030-01-01", "status=", "product=jira,confluence"] {
            let (status, body) = admin_get(&app, &format!("/admin/installations?{ok}")).await;
            assert_eq!(status, 200, "{ok}: {body}");
        }
        let (status, body) = admin_get(&app, "/admin/installations/no-such-key").await;
        assert_eq!(status, 404, "{body}");
        let (status, _) = admin_send(&app, reqwest::Method::DELETE, "/admin/installations", None).await;
        assert_eq!(status, 405);
    }
}

both_backends! {
    async fn pagination_returns_every_row_exactly_once_while_installs_arrive(backend) {
        let app = spawn_admin(backend).await;
        let original = install_many(&app, "ck-page", 120).await;
        for (sort, limit) in [("installed_at", 7), ("-installed_at", 13), ("base_url", 50), ("trial_end", 500)] {
            let mut seen: Vec<String> = Vec::new();
            let mut cursor: Option<String> = None;
            let mut pages = 0;
            loop {
                let q = match &cursor {
                    Some(c) => format!("/admin/installations?sort={sort}&limit={limit}&cursor={c}"),
                    None => format!("/admin/installations?sort={sort}&limit={limit}"),
                };
                let page = admin_json(&app, &q).await;
                let got = keys_of(&page);
                assert!(got.len() <= limit);
                seen.extend(got);
                pages += 1;
                // a new installation arrives between pages
                if sort == "installed_at" && pages <= 3 {
                    let k = format!("ck-late-{pages}");
                    install_at(&app, &k, "late-secret", &k).await;
                }
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
                assert!(pages < 200, "pagination does not end");
            }
            let unique: HashSet<&String> = seen.iter().collect();
            assert_eq!(unique.len(), seen.len(), "sort={sort}: a row appeared twice");
            for k in &original {
                assert!(unique.contains(k), "sort={sort}: {k} missing");
            }
        }
    }
}

both_backends! {
    async fn csv_export_streams_every_matching_row(backend) {
        let app = spawn_admin(backend).await;
        let keys = install_many(&app, "ck-csv", 30).await;
        set_marketplace(&app, &keys[0], "Acme, \"Quoted\" Inc", "ada@acme.example", "COMMERCIAL", None).await;
        for (path, accept) in [
            ("/admin/installations?format=csv&limit=5", None),
            ("/admin/installations", Some("text/csv")),
        ] {
            let mut req = app.client.get(app.url(path)).bearer_auth(ADMIN);
            if let Some(a) = accept {
                req = req.header("accept", a);
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 200);
            assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
            let body = res.text().await.unwrap();
            assert!(!body.contains("secret-of-"), "no shared secret in CSV");
            let mut r = csv::Reader::from_reader(body.as_bytes());
            let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
            assert_eq!(header[0], "client_key");
            for col in ["license_state", "customer_company", "technical_contact_email", "license_tier", "status"] {
                assert!(header.iter().any(|h| h == col), "missing column {col}");
            }
            let col = |name: &str| header.iter().position(|h| h == name).unwrap();
            let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
            assert_eq!(rows.len(), 30, "every row, limit ignored");
            let got: HashSet<&str> = rows.iter().map(|r| &r[0]).collect();
            assert_eq!(got.len(), 30);
            let acme = rows.iter().find(|r| r[0] == *keys[0]).unwrap();
            assert_eq!(&acme[col("customer_company")], "Acme, \"Quoted\" Inc");
            assert_eq!(&acme[col("technical_contact_email")], "ada@acme.example");
            assert_eq!(&acme[col("license_state")], "active");
        }
        // filters apply to the export
        let (_, body) = admin_get(&app, "/admin/installations?format=csv&license=active").await;
        assert_eq!(body.lines().count(), 2, "{body}");
        let (status, _) = admin_get(&app, "/admin/installations?format=csv&status=gone").await;
        assert_eq!(status, 400);
    }
}

// ---------------------------------------------------------------------------------------
// Detail, summary, OpenAPI
// ---------------------------------------------------------------------------------------

both_backends! {
    async fn detail_has_events_oldest_first_and_no_secret(backend) {
        let app = spawn_admin(backend).await;
        app.install("ck-detail", "detail-s3cret-value").await;
        assert_eq!(app.lifecycle("enabled", "ck-detail", "detail-s3cret-value").await.status(), 204);
        assert_eq!(app.lifecycle("disabled", "ck-detail", "detail-s3cret-value").await.status(), 204);
        let (status, body) = admin_get(&app, "/admin/installations/ck-detail").await;
        assert_eq!(status, 200);
        assert!(!body.contains("detail-s3cret-value"), "{body}");
        let d: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(d["client_key"], "ck-detail");
        assert_eq!(d["status"], "disabled");
        let types: Vec<&str> = d["events"].as_array().unwrap().iter()
            .map(|e| e["event_type"].as_str().unwrap()).collect();
        assert_eq!(types, ["installed", "enabled", "disabled"]);
        let first = &d["events"][0];
        assert!(first["received_at"].is_string());
        assert_eq!(first["payload"]["clientKey"], "ck-detail");
        assert_eq!(first["payload"]["entitlementNumber"], "E-3XJ-WYD-KA7-HBJ");
        assert!(first["payload"].get("sharedSecret").is_none());
        assert!(d["audit"].as_array().unwrap().is_empty());
        // uninstalled tenants stay visible
        assert_eq!(app.lifecycle("uninstalled", "ck-detail", "detail-s3cret-value").await.status(), 204);
        let d = admin_json(&app, "/admin/installations/ck-detail").await;
        assert_eq!(d["status"], "uninstalled");
        assert!(d["uninstalled_at"].is_string());
    }
}

both_backends! {
    async fn summary_counts_by_status_and_license(backend) {
        let app = spawn_admin(backend).await;
        for k in ["ck-s1", "ck-s2", "ck-s3"] {
            install_at(&app, k, &format!("secret-{k}"), k).await;
        }
        assert_eq!(app.lifecycle("enabled", "ck-s1", "secret-ck-s1").await.status(), 204);
        let now = Utc::now();
        set_marketplace(&app, "ck-s1", "A", "a@a.example", "EVALUATION", Some(now + Duration::days(3))).await;
        set_marketplace(&app, "ck-s2", "B", "b@b.example", "EVALUATION", Some(now + Duration::days(30))).await;
        let s = admin_json(&app, "/admin/summary").await;
        assert_eq!(s["total"], 3);
        assert_eq!(s["by_status"], json!({"installed": 2, "enabled": 1, "disabled": 0, "uninstalled": 0}));
        assert_eq!(s["by_license"], json!({"active": 0, "trial": 2, "free": 0, "unlicensed": 1}));
        assert_eq!(s["trials_ending_in_7_days"], 1);
    }
}

both_backends! {
    async fn openapi_describes_every_admin_route(backend) {
        let app = spawn_admin(backend).await;
        let doc = admin_json(&app, "/admin/openapi.json").await;
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        for (path, method) in [
            ("/admin/installations", "get"),
            ("/admin/installations/{client_key}", "get"),
            ("/admin/installations/{client_key}/trial-extension", "post"),
            ("/admin/installations/{client_key}/grants", "post"),
            ("/admin/grants/{id}", "delete"),
            ("/admin/access-tokens", "post"),
            ("/admin/access-tokens", "get"),
            ("/admin/access-tokens/{id}", "delete"),
            ("/admin/marketplace/sync", "post"),
            ("/admin/summary", "get"),
            ("/admin/openapi.json", "get"),
        ] {
            assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing");
        }
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for s in ["Installation", "License", "Customer", "Grant", "InstallationPage", "InstallationDetail", "Summary"] {
            assert!(schemas.contains_key(s), "schema {s} missing");
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }
}

// ---------------------------------------------------------------------------------------
// Trials, grants, access tokens
// ---------------------------------------------------------------------------------------

fn ends_at(grant: &Value) -> DateTime<Utc> {
    grant["ends_at"].as_str().unwrap().parse().unwrap()
}

fn close_to(a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
    (a - b).num_seconds().abs() <= 60
}

both_backends! {
    async fn trial_extensions_count_from_the_later_of_now_and_the_trial_end(backend) {
        let app = spawn_admin(backend).await;
        app.install("ck-t1", "secret-t1").await;
        let post = reqwest::Method::POST;
        // no known trial: from now
        let (status, g1) = admin_send(&app, post.clone(), "/admin/installations/ck-t1/trial-extension",
            Some(json!({"days": 10, "reason": "customer asked"}))).await;
        assert_eq!(status, 201, "{g1}");
        assert_eq!(g1["kind"], "trial_extension");
        assert_eq!(g1["reason"], "customer asked");
        assert!(close_to(ends_at(&g1), Utc::now() + Duration::days(10)), "{g1}");
        // stacked: from the first one's end
        let (status, g2) = admin_send(&app, post.clone(), "/admin/installations/ck-t1/trial-extension",
            Some(json!({"days": 5}))).await;
        assert_eq!(status, 201, "{g2}");
        assert!(close_to(ends_at(&g2), ends_at(&g1) + Duration::days(5)), "{g2}");
        let d = admin_json(&app, "/admin/installations/ck-t1").await;
        assert_eq!(d["license"]["state"], "trial");
        assert_eq!(d["license"]["source"], "grant");
        let eff: DateTime<Utc> = d["license"]["effective_trial_end"].as_str().unwrap().parse().unwrap();
        assert!(close_to(eff, ends_at(&g2)));
        assert_eq!(d["grants"].as_array().unwrap().len(), 2);
        // the audit trail says who and why
        let audit = d["audit"].as_array().unwrap();
        assert!(audit.iter().any(|a| a["actor"] == "env" && a["reason"] == "customer asked"), "{audit:?}");

        // a future Marketplace trial end: from that end
        app.install("ck-t2", "secret-t2").await;
        let trial_end = Utc::now() + Duration::days(20);
        set_marketplace(&app, "ck-t2", "T2", "t2@t.example", "EVALUATION", Some(trial_end)).await;
        let (status, g) = admin_send(&app, post.clone(), "/admin/installations/ck-t2/trial-extension",
            Some(json!({"days": 7, "reason": "more time"}))).await;
        assert_eq!(status, 201, "{g}");
        assert!(close_to(ends_at(&g), trial_end + Duration::days(7)), "{g}");

        // a past trial end: from now
        app.install("ck-t3", "secret-t3").await;
        set_marketplace(&app, "ck-t3", "T3", "t3@t.example", "EVALUATION", Some(Utc::now() - Duration::days(5))).await;
        let (status, g) = admin_send(&app, post.clone(), "/admin/installations/ck-t3/trial-extension",
            Some(json!({"days": 3}))).await;
        assert_eq!(status, 201, "{g}");
        assert!(close_to(ends_at(&g), Utc::now() + Duration::days(3)), "{g}");

        // bounds and bad bodies
        for body in [json!({"days": 0}), json!({"days": 366}), json!({"days": -1}), json!({"days": "ten"}), json!({}), json!({"days": 2.5})] {
            let (status, v) = admin_send(&app, post.clone(), "/admin/installations/ck-t1/trial-extension", Some(body.clone())).await;
            assert_eq!(status, 400, "{body}: {v}");
            assert!(v["message"].as_str().unwrap().contains("days"), "{body}: {v}");
        }
        let (status, _) = admin_send(&app, post.clone(), "/admin/installations/ck-t1/trial-extension", Some(json!({"days": 365}))).await;
        assert_eq!(status, 201);
        let (status, _) = admin_send(&app, post, "/admin/installations/nobody/trial-extension", Some(json!({"days": 1}))).await;
        assert_eq!(status, 404);
    }
}

both_backends! {
    async fn free_grants_can_be_made_and_revoked(backend) {
        let app = spawn_admin(backend).await;
        app.install("ck-g", "secret-g-value").await;
        let post = reqwest::Method::POST;
        let (status, g) = admin_send(&app, post.clone(), "/admin/installations/ck-g/grants",
            Some(json!({"kind": "free", "ends_at": null, "reason": "partner"}))).await;
        assert_eq!(status, 201, "{g}");
        assert_eq!(g["kind"], "free");
        assert_eq!(g["ends_at"], Value::Null);
        assert_eq!(g["revoked_at"], Value::Null);
        let d = admin_json(&app, "/admin/installations/ck-g").await;
        assert_eq!(d["license"]["state"], "free");
        let id = g["id"].as_str().unwrap();
        let (status, _) = admin_send(&app, reqwest::Method::DELETE, &format!("/admin/grants/{id}"), None).await;
        assert_eq!(status, 204);
        let d = admin_json(&app, "/admin/installations/ck-g").await;
        assert_eq!(d["license"]["state"], "unlicensed");
        assert!(d["grants"][0]["revoked_at"].is_string(), "kept for the record");
        let actions: Vec<&str> = d["audit"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
        assert!(actions.len() >= 2, "{actions:?}");
        // with an end date
        let until = (Utc::now() + Duration::days(30)).to_rfc3339();
        let (status, g) = admin_send(&app, post.clone(), "/admin/installations/ck-g/grants",
            Some(json!({"kind": "free", "ends_at": until, "reason": "pilot"}))).await;
        assert_eq!(status, 201, "{g}");
        assert!(g["ends_at"].is_string());
        // invalid bodies name the field
        for (body, field) in [
            (json!({"kind": "paid"}), "kind"),
            (json!({"kind": "free", "ends_at": "tomorrow"}), "ends_at"),
            (json!({"kind": "free", "ends_at": 5}), "ends_at"),
            (json!({"kind": "free", "reason": 5}), "reason"),
        ] {
            let (status, v) = admin_send(&app, post.clone(), "/admin/installations/ck-g/grants", Some(body.clone())).await;
            assert_eq!(status, 400, "{body}: {v}");
            assert!(v["message"].as_str().unwrap().contains(field), "{body}: {v}");
        }
        let res = app.client.post(app.url("/admin/installations/ck-g/grants")).bearer_auth(ADMIN)
            .header("content-type", "application/json").body("{not json").send().await.unwrap();
        assert_eq!(res.status(), 400);
        let (status, _) = admin_send(&app, post, "/admin/installations/nobody/grants", Some(json!({"kind": "free"}))).await;
        assert_eq!(status, 404);
        let (status, _) = admin_send(&app, reqwest::Method::DELETE, "/admin/grants/no-such-grant", None).await;
        assert_eq!(status, 404);
    }
}

both_backends! {
    async fn access_tokens_are_shown_once_and_listed_without_secrets(backend) {
        let app = spawn_admin(backend).await;
        app.install("ck-at", "secret-at-value").await;
        let post = reqwest::Method::POST;
        let (status, t) = admin_send(&app, post.clone(), "/admin/access-tokens",
            Some(json!({"note": "for Acme", "expires_at": null, "client_key": null}))).await;
        assert_eq!(status, 201, "{t}");
        let token = t["token"].as_str().unwrap().to_owned();
        let id = t["id"].as_str().unwrap().to_owned();
        assert_eq!(
            t["install_url"].as_str().unwrap(),
            format!("{}/atlassian-connect.json?access-token={token}", app.base_url)
        );
        let (status, bound) = admin_send(&app, post.clone(), "/admin/access-tokens",
            Some(json!({"note": "bound", "client_key": "ck-at",
                        "expires_at": (Utc::now() + Duration::days(3)).to_rfc3339()}))).await;
        assert_eq!(status, 201, "{bound}");
        let (status, body) = admin_get(&app, "/admin/access-tokens").await;
        assert_eq!(status, 200);
        assert!(!body.contains(&token), "the token is shown only once");
        let list: Value = serde_json::from_str(&body).unwrap();
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        let mine = items.iter().find(|i| i["id"] == id.as_str()).unwrap();
        for f in ["id", "note", "created_at", "expires_at", "redeemed_by", "redeemed_at", "revoked_at"] {
            assert!(mine.get(f).is_some(), "missing {f}");
        }
        assert!(mine.get("token").is_none() && mine.get("token_hash").is_none());
        let (status, _) = admin_send(&app, reqwest::Method::DELETE, &format!("/admin/access-tokens/{id}"), None).await;
        assert_eq!(status, 204);
        let list = admin_json(&app, "/admin/access-tokens").await;
        let mine = list["items"].as_array().unwrap().iter().find(|i| i["id"] == id.as_str()).unwrap().clone();
        assert!(mine["revoked_at"].is_string());
        let (status, _) = admin_send(&app, reqwest::Method::DELETE, "/admin/access-tokens/nope", None).await;
        assert_eq!(status, 404);
        for (body, field) in [
            (json!({"expires_at": "never"}), "expires_at"),
            (json!({"client_key": "nobody"}), "client_key"),
            (json!({"note": 7}), "note"),
        ] {
            let (status, v) = admin_send(&app, post.clone(), "/admin/access-tokens", Some(body.clone())).await;
            assert!(status == 400 || status == 404, "{body}: {status} {v}");
            assert!(v["message"].as_str().unwrap().contains(field) || status == 404, "{body}: {v}");
        }
    }
}

both_backends! {
    async fn shared_secrets_appear_in_no_admin_response(backend) {
        let app = spawn_admin(backend).await;
        let secret = "zz-SHARED-secret-never-shown-zz";
        app.install("ck-sec", secret).await;
        set_marketplace(&app, "ck-sec", "Sec", "s@s.example", "COMMERCIAL", None).await;
        let post = reqwest::Method::POST;
        let mut bodies: HashMap<String, String> = HashMap::new();
        for path in [
            "/admin/installations",
            "/admin/installations?format=csv",
            "/admin/installations/ck-sec",
            "/admin/summary",
            "/admin/access-tokens",
            "/admin/openapi.json",
        ] {
            let (_, body) = admin_get(&app, path).await;
            bodies.insert(path.to_owned(), body);
        }
        for (path, body) in [
            ("/admin/installations/ck-sec/trial-extension", json!({"days": 3, "reason": "r"})),
            ("/admin/installations/ck-sec/grants", json!({"kind": "free"})),
            ("/admin/access-tokens", json!({"client_key": "ck-sec"})),
        ] {
            let (_, v) = admin_send(&app, post.clone(), path, Some(body)).await;
            bodies.insert(path.to_owned(), v.to_string());
        }
        for (path, body) in &bodies {
            assert!(!body.contains(secret), "{path} leaks the shared secret");
        }
    }
}

both_backends! {
    async fn concurrent_trial_extensions_all_count(backend) {
        // Five vendors' staff extend the same trial at the same moment: each extension must
        // start from the end the previous one made, so the trial ends 5 × 10 days out.
        let app = TestApp::spawn(backend).await;
        app.install("ck-race", "secret-race").await;
        // PostgreSQL keeps microseconds.
        let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
        let extensions = (0..5).map(|i| {
            let state = app.state.clone();
            async move {
                connect_keeper::registry::grants::extend_trial(
                    state.as_ref(),
                    "ck-race",
                    10,
                    Some("race"),
                    &format!("staff-{i}"),
                    now,
                )
                .await
            }
        });
        let mut ends: Vec<_> = futures::future::join_all(extensions)
            .await
            .into_iter()
            .map(|r| r.expect("extended").ends_at.expect("an end"))
            .collect();
        ends.sort();
        let expected: Vec<_> = (1..=5).map(|n| now + Duration::days(10 * n)).collect();
        assert_eq!(ends, expected, "each extension counts from the previous end");
    }
}

both_backends! {
    async fn license_views_are_recomputed_in_batches_per_tenant(backend) {
        // Keys whose order differs between byte order and a linguistic collation, so that a
        // grouping that trusted the database's sort order would mix tenants' grants up.
        let app = TestApp::spawn(backend).await;
        let keys = ["ck-a", "ck-B", "CK-c", "ck-d"];
        for key in keys {
            app.install(key, "secret-views").await;
        }
        let now = Utc::now();
        connect_keeper::registry::grants::grant_free(app.state.as_ref(), "ck-a", None, None, "t", now)
            .await
            .unwrap();
        connect_keeper::registry::grants::extend_trial(app.state.as_ref(), "CK-c", 10, None, "t", now)
            .await
            .unwrap();
        let db = &app.state.db;
        let state_of = |key: &'static str| async move {
            connect_keeper::store::installations::get(db, key)
                .await
                .unwrap()
                .unwrap()
                .license_state
        };
        let before: Vec<String> = futures::future::join_all(keys.map(state_of)).await;
        assert_eq!(before[0], "free");
        assert_eq!(before[2], "trial");
        assert_eq!(before[1], "unlicensed");

        // Wipe the stored views, then recompute them all in one batch (plus an unknown key).
        connect_keeper::store::installations::refresh_license_views(
            db,
            &keys.map(String::from),
            |_, _| connect_keeper::licensing::LicenseView {
                state: connect_keeper::domain::LicenseState::Active,
                source: None,
                effective_trial_end: None,
                corroborated: false,
            },
        )
        .await
        .unwrap();
        assert_eq!(state_of("ck-B").await, "active");
        let mut all: Vec<String> = keys.map(String::from).to_vec();
        all.push("ck-unknown".into());
        connect_keeper::registry::license_view::refresh_many(db, &all).await.unwrap();
        let after: Vec<String> = futures::future::join_all(keys.map(state_of)).await;
        assert_eq!(after, before);
    }
}

both_backends! {
    async fn seeded_rows_carry_the_license_view_the_decision_gives(backend) {
        // `dev seed` writes its rows' materialised licence view by hand (for speed, 100k rows in
        // BENCHMARKS.md §3): recomputing it must change nothing, or the benchmarks filter on
        // data the service would never hold.
        let app = TestApp::spawn(backend).await;
        let db = &app.state.db;
        let n = connect_keeper::store::listing::seed::installations(db, 60, Utc::now()).await.unwrap();
        assert_eq!(n, 60);
        let keys: Vec<String> = (0..60).map(|i| format!("{i:07}")).collect();
        let snapshot = || async {
            let page = connect_keeper::store::listing::page(
                db,
                &Default::default(),
                connect_keeper::store::listing::Sort::BaseUrl,
                None,
                100,
            )
            .await
            .unwrap();
            page.into_iter()
                .map(|r| (r.client_key, r.license_state, r.license_source, r.effective_trial_end, r.license_corroborated))
                .collect::<Vec<_>>()
        };
        let before = snapshot().await;
        assert_eq!(before.len(), 60);
        assert!(before.iter().any(|r| r.4), "some seeded rows are corroborated by the Marketplace");
        assert!(before.iter().any(|r| !r.4));
        let all: Vec<String> = before.iter().map(|r| r.0.clone()).collect();
        assert!(keys.iter().all(|k| all.iter().any(|c| c.ends_with(k.as_str()))));
        connect_keeper::registry::license_view::refresh_many(db, &all).await.unwrap();
        assert_eq!(snapshot().await, before);
    }
}
