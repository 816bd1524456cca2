//! Hardening of the network edge (docs/security.md): outbound redirects, request encodings,
//! slow bodies, metric labels, admin authentication throttling, security headers and the
//! SQLite file's mode. Each test reproduces what was seen against an earlier version, on the
//! real server over HTTP, on both backends where the database matters.

use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

// ---------------------------------------------------------------------------------------
// Outbound calls follow no redirect to another origin
// ---------------------------------------------------------------------------------------

/// A server that answers everything as if it were the real one: a paid licence, a cloudId,
/// a Marketplace page, an install key. Whatever it says must never be stored.
async fn impostor() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/rest/atlassian-connect/1/addons/{APP_KEY}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "key": APP_KEY,
            "license": {"active": true, "type": "COMMERCIAL", "evaluation": false}
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/_edge/tenant_info"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"cloudId": "impostor-cloud"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/kid-redirected"))
        .respond_with(ResponseTemplate::new(200).set_body_string(RSA_PUBLIC))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "_links": {},
            "licenses": [{"appEntitlementId": "impostor-1", "cloudSiteHostname": "x.example.test"}]
        })))
        .mount(&server)
        .await;
    server
}

/// Answers every GET with a 302 to the same path on `to`.
async fn redirect_all_to(server: &MockServer, to: &MockServer) {
    let target = to.uri();
    Mock::given(method("GET"))
        .respond_with(move |req: &wiremock::Request| {
            let location = format!("{target}{}", req.url.path());
            ResponseTemplate::new(302).insert_header("location", location.as_str())
        })
        .mount(server)
        .await;
}

both_backends! {
    /// A fixed defect (docs/security.md#outbound-calls): the product licence read and tenant_info
    /// followed a 302 to another host and stored what that host said.
    async fn product_reads_follow_no_redirect_to_another_origin(backend) {
        let app = TestApp::spawn_tuned(backend, &[], |c| {
            c.host_retry_base = Duration::from_millis(50);
        })
        .await;
        let other = impostor().await;
        let site = MockServer::start().await;
        redirect_all_to(&site, &other).await;
        let mut body = app.installed_payload("redirected", "secret-redirected");
        body["baseUrl"] = json!(site.uri());
        app.install_payload(&body).await;

        let failed = eventually(10, || async {
            app.installation("redirected").await.unwrap().host_failures >= 2
        })
        .await;
        let row = app.installation("redirected").await.unwrap();
        assert!(failed, "the redirected reads were not refused: {:?}", row.host_last_error);
        let error = row.host_last_error.unwrap_or_default();
        assert!(error.contains("license endpoint: HTTP 302"), "{error}");
        assert!(error.contains("tenant_info: HTTP 302"), "{error}");
        assert_eq!(row.host_license_active, None);
        assert_eq!(row.cloud_id, None);
        assert!(other.received_requests().await.unwrap().is_empty(), "the other origin was called");
    }
}

both_backends! {
    /// A fixed defect (docs/security.md#outbound-calls): Marketplace redirects were followed
    /// off-origin.
    async fn marketplace_sync_follows_no_redirect_to_another_origin(backend) {
        let mp = MockServer::start().await;
        let mp_uri = mp.uri();
        let app = TestApp::spawn_tuned(
            backend,
            &[
                ("MARKETPLACE_URL", mp_uri.as_str()),
                ("MARKETPLACE_VENDOR_ID", "1234567"),
                ("MARKETPLACE_USER", "vendor@example.com"),
                ("MARKETPLACE_API_TOKEN", "mp-token"),
            ],
            |c| {
                c.marketplace_retry_base = Duration::from_millis(10);
            },
        )
        .await;
        let other = impostor().await;
        redirect_all_to(&mp, &other).await;

        let err = connect_keeper::marketplace::sync_once(&app.state.db, &app.state.marketplace, &app.state.metrics).await;
        assert!(err.is_err(), "the sync took the other origin's answer: {err:?}");
        assert!(other.received_requests().await.unwrap().is_empty(), "the other origin was called");
        let stored = connect_keeper::store::marketplace::all(&app.state.db).await.unwrap();
        assert!(stored.is_empty(), "{} licences stored", stored.len());
    }
}

both_backends! {
    /// The install-keys server: a key served by another origin after a redirect is not used.
    async fn install_keys_follow_no_redirect_to_another_origin(backend) {
        let app = TestApp::spawn(backend).await;
        let other = impostor().await;
        redirect_all_to(&app.keys, &other).await;

        let claims = app.install_claims("ck-redirected", "/installed");
        let token = sign_rs256_with(&claims, "kid-redirected", RSA_PRIVATE);
        let body = app.installed_payload("ck-redirected", "s");
        let res = app.post_lifecycle("/installed", Some(&token), &body).await;
        assert_ne!(res.status(), 204);
        assert!(app.installation("ck-redirected").await.is_none());
        assert!(other.received_requests().await.unwrap().is_empty(), "the other origin was called");
        // The key server's own keys still work.
        app.install("ck-fine", "s").await;
    }
}

// ---------------------------------------------------------------------------------------
// /metrics labels are bounded
// ---------------------------------------------------------------------------------------

/// A fixed defect (docs/security.md#metrics): invented HTTP methods (and paths) each made a new
/// series in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_labels_stay_bounded_under_invented_methods_and_paths() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for i in 0..60 {
        let invented = reqwest::Method::from_bytes(format!("INVENTED{i}").as_bytes()).unwrap();
        let target = if i % 2 == 0 {
            "/healthz".to_owned()
        } else {
            format!("/no-such-route-{i}/{}", uuid::Uuid::new_v4())
        };
        app.client
            .request(invented, app.url(&target))
            .send()
            .await
            .unwrap();
        app.get(&format!("/made-up-{i}")).await;
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        !metrics.contains("INVENTED"),
        "an invented method became a label"
    );
    assert!(
        !metrics.contains("no-such-route") && !metrics.contains("made-up"),
        "a raw path became a label"
    );
    assert!(metrics.contains(r#"method="OTHER""#), "{metrics}");
    assert!(metrics.contains(r#"route="unmatched""#), "{metrics}");
    let series = metrics
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .count();
    assert!(
        series <= 6,
        "{series} series of http_requests_total:\n{metrics}"
    );
}

// ---------------------------------------------------------------------------------------
// Request bodies: no Content-Encoding, and a deadline
// ---------------------------------------------------------------------------------------

/// 16 MiB of JSON gzipped to 16 KB.
const GZIP_BOMB: &[u8] = include_bytes!("../fixtures/gzip_bomb_16mib.json.gz");
/// A valid `installed` body for `ck-gzip`, gzipped.
const GZIPPED_INSTALL: &[u8] = include_bytes!("../fixtures/installed_ck_gzip.json.gz");

both_backends! {
    /// A fixed defect (docs/security.md#request-bodies): a gzip bomb on `/installed` (and the other
    /// routes) was decompressed up to the size limit before it was refused; a compressed install
    /// was accepted.
    async fn compressed_request_bodies_are_refused(backend) {
        let app = TestApp::spawn_with(backend, &[("ADMIN_TOKEN", crate::admin::ADMIN)]).await;
        let token = sign_rs256(&app.install_claims("ck-gzip", "/installed"));
        let res = app
            .client
            .post(app.url("/installed"))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .header("authorization", format!("JWT {token}"))
            .body(GZIPPED_INSTALL)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 415);
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"], "unsupported_media_type");
        assert!(app.installation("ck-gzip").await.is_none(), "a compressed install was applied");

        for (route, encoding) in [
            ("/installed", "gzip"),
            ("/uninstalled", "gzip"),
            ("/enabled", "x-gzip"),
            ("/disabled", "deflate"),
            ("/api/access-tokens/redeem", "gzip"),
            ("/admin/access-tokens", "gzip"),
            ("/admin/ui/login", "br"),
            ("/no-such-route", "identity, gzip"),
        ] {
            let res = app
                .client
                .post(app.url(route))
                .header("content-type", "application/json")
                .header("content-encoding", encoding)
                .header("authorization", format!("Bearer {}", crate::admin::ADMIN))
                .body(GZIP_BOMB)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 415, "{route} with {encoding}");
        }
        // `identity` is no encoding: the request goes through as usual.
        let res = app
            .client
            .post(app.url("/installed"))
            .header("content-encoding", "identity")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        let listed = app
            .client
            .get(app.url("/admin/access-tokens"))
            .bearer_auth(crate::admin::ADMIN)
            .send()
            .await
            .unwrap();
        let listed: serde_json::Value = listed.json().await.unwrap();
        assert_eq!(listed["items"], json!([]), "nothing was created");
    }
}

/// Sends `head` and then `body_part` on a raw connection and stalls; returns what the server
/// wrote before closing the connection, or `None` if it was still open after `wait`.
async fn stall(port: u16, head: &str, body_part: &[u8], wait: Duration) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body_part).await.unwrap();
    stream.flush().await.unwrap();
    let mut answer = Vec::new();
    match tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await {
        Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
        Err(_) => None,
    }
}

/// A fixed defect (docs/security.md#request-bodies): connections that announced 1 MiB, sent part of
/// it and stalled stayed open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_dropped() {
    let app = TestApp::spawn_tuned(Backend::Sqlite, &[], |c| {
        c.body_timeout = Duration::from_secs(1);
    })
    .await;
    let head = "POST /installed HTTP/1.1\r\nHost: keeper.test\r\nContent-Type: application/json\r\n\
                Content-Length: 1048576\r\n\r\n";
    let started = std::time::Instant::now();
    let stalled = futures::future::join_all(
        (0..5).map(|_| stall(app.port, head, &[b' '; 100_000], Duration::from_secs(15))),
    )
    .await;
    for answer in stalled {
        let answer = answer.expect("the stalled connection was still open after 15 s");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
    }
    assert!(started.elapsed() < Duration::from_secs(15));
    // A body that arrives in time is read as usual (here: an unsigned install, 401).
    let res = app.post_raw("/installed", None, "{}".into()).await;
    assert_eq!(res.status(), 401);
}

/// The real deadline is 10 s: a stalled body is still held at 5 s and dropped by 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_body_deadline_is_ten_seconds() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let head = "POST /enabled HTTP/1.1\r\nHost: keeper.test\r\nContent-Length: 5000\r\n\r\n";
    let early = stall(app.port, head, b"{", Duration::from_secs(5)).await;
    assert!(early.is_none(), "dropped before 10 s: {early:?}");
    let answer = stall(app.port, head, b"{", Duration::from_secs(15)).await;
    let answer = answer.expect("the stalled connection was still open after 15 s");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

// ---------------------------------------------------------------------------------------
// Admin authentication: throttled per address, no short token
// ---------------------------------------------------------------------------------------

/// `GET /admin/installations` with `token`, from the local address `from`.
async fn admin_get(app: &TestApp, from: &str, token: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
        .get(app.url("/admin/installations"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn dashboard_login(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .post(app.url("/admin/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("token", token)]).unwrap())
        .send()
        .await
        .unwrap()
}

fn retry_after(res: &reqwest::Response) -> u64 {
    res.headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

both_backends! {
    /// A fixed defect (docs/security.md#admin-authentication): 1,635 wrong guesses in 3 s got plain
    /// 401s. After 100 failures within 60 s an address gets 429 with Retry-After — even with the
    /// right token — and other addresses do not.
    async fn admin_token_guessing_is_throttled_per_address(backend) {
        let admin = crate::admin::ADMIN;
        let app = TestApp::spawn_with(backend, &[("ADMIN_TOKEN", admin)]).await;
        for i in 0..100 {
            let res = admin_get(&app, "127.0.0.1", &format!("guess-{i}")).await;
            assert_eq!(res.status(), 401, "guess {i}");
        }
        let res = admin_get(&app, "127.0.0.1", "guess-101").await;
        assert_eq!(res.status(), 429);
        let wait = retry_after(&res);
        assert!((1..=60).contains(&wait), "Retry-After: {wait}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"], "too_many_attempts");
        // The right token from the same address waits too; the dashboard door is shut as well.
        assert_eq!(admin_get(&app, "127.0.0.1", admin).await.status(), 429);
        let res = dashboard_login(&app, admin).await;
        assert_eq!(res.status(), 429);
        assert!(retry_after(&res) >= 1);
        // Another address is not affected.
        assert_eq!(admin_get(&app, "127.0.0.2", admin).await.status(), 200);
    }
}

both_backends! {
    /// The dashboard sign-in counts failures in the same table, and the block ends with the
    /// window (shortened here).
    async fn dashboard_sign_in_is_throttled_and_the_block_ends(backend) {
        let admin = crate::admin::ADMIN;
        let app = TestApp::spawn_tuned(backend, &[("ADMIN_TOKEN", admin)], |c| {
            c.admin_auth_max_failures = 5;
            c.admin_auth_window = Duration::from_secs(2);
        })
        .await;
        for i in 0..5 {
            assert_eq!(dashboard_login(&app, &format!("wrong-{i}")).await.status(), 401);
        }
        // An empty form is not a guess, but it is refused all the same.
        let res = dashboard_login(&app, admin).await;
        assert_eq!(res.status(), 429);
        assert_eq!(admin_get(&app, "127.0.0.1", admin).await.status(), 429);
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        assert_eq!(admin_get(&app, "127.0.0.1", admin).await.status(), 200);
        assert_eq!(dashboard_login(&app, admin).await.status(), 303);
    }
}

/// A fixed defect (docs/security.md#admin-authentication): any non-empty `ADMIN_TOKEN` was
/// accepted, even `a`.
#[test]
fn a_short_admin_token_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_connect-keeper"))
        .arg("serve")
        .env_clear()
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/k.db", dir.path().display()),
        )
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("ADMIN_TOKEN", "change-me")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the server started with a 9-character ADMIN_TOKEN");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("ADMIN_TOKEN"), "{err}");
    assert!(!err.contains("change-me"), "{err}");
}

/// Shipped files carry no default admin token (finding 5: `change-me` in docker-compose.yml).
#[test]
fn shipped_files_carry_no_default_admin_token() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = [
        "docker-compose.yml",
        ".env.example",
        "Dockerfile",
        "README.md",
    ]
    .iter()
    .map(|f| root.join(f))
    .collect();
    for dir in ["examples", "deploy", "docs", "scripts"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            files.push(entry.unwrap().path());
        }
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines() {
            let l = line.trim();
            for assign in ["ADMIN_TOKEN=", "ADMIN_TOKEN:", "ADMIN_TOKEN\", \""] {
                let Some((_, value)) = l.split_once(assign) else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                let fine = value.is_empty()
                    || value.starts_with('$')
                    || value.starts_with("<")
                    || value.starts_with("${ADMIN_TOKEN:-}");
                assert!(fine, "{}: a default ADMIN_TOKEN: {line}", file.display());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------

fn header<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|v| v.to_str().unwrap())
}

both_backends! {
    /// A fixed defect (docs/security.md#headers): admin answers (a new access token, the CSV) had
    /// no `Cache-Control: no-store`; `/panel`, whose URL carries a JWT, had no CSP
    /// `frame-ancestors`, no `nosniff`, no `Referrer-Policy`.
    async fn admin_and_panel_answers_carry_the_security_headers(backend) {
        let admin = crate::admin::ADMIN;
        let app = TestApp::spawn_with(backend, &[("ADMIN_TOKEN", admin), ("LICENSE_ENFORCEMENT", "off")]).await;
        let mut body = app.installed_payload("ck-hdr", "hdr-secret");
        body["displayUrl"] = json!("https://jira.acme-corp.example");
        app.install_payload(&body).await;

        let created = app
            .client
            .post(app.url("/admin/access-tokens"))
            .bearer_auth(admin)
            .json(&json!({"note": "for headers"}))
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success(), "{}", created.status());
        assert_eq!(header(&created, "cache-control"), Some("no-store"));
        for target in ["/admin/installations?format=csv", "/admin/installations/ck-hdr", "/admin/openapi.json"] {
            let res = app.client.get(app.url(target)).bearer_auth(admin).send().await.unwrap();
            assert_eq!(res.status(), 200, "{target}");
            assert_eq!(header(&res, "cache-control"), Some("no-store"), "{target}");
        }
        let refused = app.get("/admin/installations").await;
        assert_eq!(refused.status(), 401);
        assert_eq!(header(&refused, "cache-control"), Some("no-store"));

        let token = hs256_query_bound("GET", "/panel?lic=active", "ck-hdr", "hdr-secret", json!({}));
        let refusal_token = hs256_query_bound("GET", "/panel?lic=active", "ck-hdr", "wrong", json!({}));
        for (jwt, status) in [(token, 200), (refusal_token, 401)] {
            let res = app.get(&format!("/panel?lic=active&jwt={jwt}")).await;
            assert_eq!(res.status(), status);
            assert_eq!(header(&res, "cache-control"), Some("no-store"));
            assert_eq!(header(&res, "x-content-type-options"), Some("nosniff"));
            assert_eq!(header(&res, "referrer-policy"), Some("no-referrer"));
            assert_eq!(header(&res, "x-frame-options"), None, "the page lives in an iframe");
            let csp = header(&res, "content-security-policy").expect("a CSP");
            let ancestors = csp.strip_prefix("frame-ancestors ").expect(csp);
            for source in ["'self'", "https://*.atlassian.net", "https://*.jira.com"] {
                assert!(ancestors.split(' ').any(|s| s == source), "{csp}");
            }
            if status == 200 {
                // The site's own origins: its baseUrl (the fake product) and custom domain.
                assert!(ancestors.contains(&app.product.uri()), "{csp}");
                assert!(ancestors.contains("https://jira.acme-corp.example"), "{csp}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The SQLite file
// ---------------------------------------------------------------------------------------

/// A fixed defect (docs/security.md#files): the SQLite file, holding every shared secret, was
/// created 0644.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_file_is_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.install("ck-mode", "mode-secret").await;
    let file = app.db.url.strip_prefix("sqlite://").unwrap().to_owned();
    let file = std::path::Path::new(&file);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(file), 0o600, "{}", file.display());
    assert_eq!(mode(file.parent().unwrap()), 0o700, "the new folder");
    let wal = file.with_extension("db-wal");
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600, "{}", wal.display());
    }
}
