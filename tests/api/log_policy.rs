//! The log policy (docs/operations.md#logs): the real binary runs at `RUST_LOG=trace`, in the
//! pretty and the JSON format, while every route is driven with recognisable secrets — signed
//! installs (accepted and rejected, with an access token in the URL), enabled/disabled, the
//! iframe page with a good and a refused `jwt`, the product API, every admin route (a new
//! access token included, and wrong admin tokens), the dashboard sign-in and its actions, the
//! operations routes, a Marketplace sync — and the CLI commands that print secrets. Then
//! every line the processes wrote is scanned: none may hold a JWT, an access token, a shared
//! secret, an admin token, a session cookie, the Marketplace API token or `SECRETS_KEY`.
//! Control characters from sites must arrive escaped.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;
use crate::hostile_text::{VENDOR, license_for, serve_licenses};

const BIN: &str = env!("CARGO_BIN_EXE_connect-keeper");

const ADMIN_SECRET: &str = "adm1n-LOGPOLICY-token-0123456789abcdef";
const WRONG_ADMIN: &str = "wr0ng-LOGPOLICY-guess-0123456789abcdef";
const MP_SECRET: &str = "mpapi-LOGPOLICY-token-0123456789";
const ACCESS_IN_URL: &str = "acc3ss-LOGPOLICY-in-url-0001";
const ACCESS_UNKNOWN: &str = "acc3ss-LOGPOLICY-unknown-0002";
const SECRET_A: &str = "shs3c-LOGPOLICY-site-a-0003";
const SECRET_FORGED: &str = "shs3c-LOGPOLICY-forged-0004";
const SECRET_BAD_BODY: &str = "shs3c-LOGPOLICY-badbody-0005";
/// A site's company and description carry a screen clear and a forged log line.
const HOSTILE: &str = "Acme\x1b[2J\u{9b}31m\nFORGED-LOG-LINE level=ERROR";

/// Lines written by a child process, stdout and stderr both.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn collect(
        &self,
        stream: impl Read + Send + 'static,
        port_tx: Option<std::sync::mpsc::Sender<u16>>,
    ) {
        let lines = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if std::env::var_os("KEEPER_TEST_LOGS").is_some() {
                    eprintln!("{line}");
                }
                if let Some(tx) = &port_tx
                    && let Some(port) = listening_port(&line)
                {
                    let _ = tx.send(port);
                }
                lines.0.lock().unwrap().push(line);
            }
        });
    }

    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// The port of the start-up line, in either format.
fn listening_port(line: &str) -> Option<u16> {
    if !line.contains("connect-keeper listening") {
        return None;
    }
    if let Ok(v) = serde_json::from_str::<Value>(line) {
        return v["port"].as_u64().map(|p| p as u16);
    }
    let at = line.find("port=")? + "port=".len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The environment of the server and the CLI.
fn env(
    db_url: &str,
    keys: &str,
    mp: &str,
    secrets_key: &str,
    format: &str,
) -> Vec<(String, String)> {
    [
        ("PATH", std::env::var("PATH").unwrap_or_default().as_str()),
        ("DATABASE_URL", db_url),
        ("BIND_ADDR", "127.0.0.1:0"),
        ("APP_BASE_URL", "https://app.example.test"),
        ("INSTALL_KEYS_URL", keys),
        ("ADMIN_TOKEN", ADMIN_SECRET),
        ("MARKETPLACE_URL", mp),
        ("MARKETPLACE_VENDOR_ID", VENDOR),
        ("MARKETPLACE_USER", "vendor@example.com"),
        ("MARKETPLACE_API_TOKEN", MP_SECRET),
        ("SECRETS_KEY", secrets_key),
        ("LOG_FORMAT", format),
        ("RUST_LOG", "trace"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn start(env: &[(String, String)], lines: &Lines) -> (Server, u16) {
    let mut child = Command::new(BIN)
        .env_clear()
        .envs(env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let (tx, rx) = std::sync::mpsc::channel();
    lines.collect(child.stdout.take().unwrap(), Some(tx.clone()));
    lines.collect(child.stderr.take().unwrap(), Some(tx));
    let server = Server(child);
    let port = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server logs its port");
    (server, port)
}

/// Runs a CLI command with the same environment; returns its stdout, its log lines go to `lines`.
async fn cli(env: &[(String, String)], args: &[&str], lines: &Lines) -> String {
    let env = env.to_vec();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env_clear()
            .envs(env)
            .output()
            .expect("run the CLI")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // Log lines only: the notes a command writes for its operator (the install URL that
    // carries a new access token) are its output, not logs.
    let levels = [" TRACE ", " DEBUG ", " INFO ", " WARN ", " ERROR "];
    lines.0.lock().unwrap().extend(
        stderr
            .lines()
            .filter(|l| levels.iter().any(|lv| l.contains(lv)))
            .map(str::to_owned),
    );
    assert!(out.status.success(), "CLI failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// Every JWT-shaped run in `line` (`eyJ….eyJ….sig`): a header and a payload are JSON objects,
/// so both segments start with `eyJ`.
fn jwt_in(line: &str) -> Option<&str> {
    let b64 = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut rest = line;
    while let Some(at) = rest.find("eyJ") {
        let candidate = &rest[at..];
        let end = candidate
            .find(|c: char| !(b64(c) || c == '.'))
            .unwrap_or(candidate.len());
        let run = &candidate[..end];
        let parts: Vec<&str> = run.split('.').collect();
        if parts.len() >= 2 && parts[1].starts_with("eyJ") {
            return Some(run);
        }
        rest = &candidate[3..];
    }
    None
}

/// The driver: every route of the service with recognisable secrets. Returns every secret it
/// used or was given (tokens the service issued included).
struct Drive {
    base: String,
    http: reqwest::Client,
    secrets: Vec<String>,
}

impl Drive {
    fn url(&self, p: &str) -> String {
        format!("{}{p}", self.base)
    }

    fn keep(&mut self, secret: &str) {
        // ids (UUIDs) are no secret
        if uuid::Uuid::parse_str(secret.trim()).is_err() {
            self.secrets.push(secret.to_owned());
        }
    }

    /// Keeps a JWT's segments that identify it (payload and signature).
    fn keep_jwt(&mut self, token: &str) {
        self.keep(token);
        for part in token.split('.').skip(1) {
            self.keep(part);
        }
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> (u16, String, reqwest::header::HeaderMap) {
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        (status, res.text().await.unwrap_or_default(), headers)
    }

    async fn lifecycle(&mut self, path_and_query: &str, token: &str, body: &Value) -> u16 {
        self.keep_jwt(token);
        let req = self
            .http
            .post(self.url(path_and_query))
            .header("authorization", format!("JWT {token}"))
            .header("content-type", "application/json")
            .body(body.to_string());
        self.send(req).await.0
    }

    async fn admin(
        &mut self,
        method: reqwest::Method,
        p: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, self.url(p))
            .bearer_auth(ADMIN_SECRET);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let (status, text, _) = self.send(req).await;
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get_jwt(&mut self, p: &str, token: &str) -> u16 {
        self.keep_jwt(token);
        let req = self
            .http
            .get(self.url(p))
            .header("authorization", format!("JWT {token}"));
        self.send(req).await.0
    }

    async fn get_query_jwt(&mut self, p: &str, token: &str) -> u16 {
        self.keep_jwt(token);
        let sep = if p.contains('?') { '&' } else { '?' };
        self.send(self.http.get(self.url(&format!("{p}{sep}jwt={token}"))))
            .await
            .0
    }
}

fn install_claims(client_key: &str, path_and_query: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": client_key, "aud": ["https://app.example.test"],
        "qsh": qsh("POST", path_and_query), "iat": now, "exp": now + 180,
        "jti": uuid::Uuid::new_v4().to_string(), "context": {},
    })
}

async fn mock_keys() -> MockServer {
    let keys = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/{KID}")))
        .respond_with(ResponseTemplate::new(200).set_body_string(RSA_PUBLIC))
        .mount(&keys)
        .await;
    keys
}

/// A product site: its licence endpoint answers an active licence, tenant_info a cloudId.
async fn mock_product() -> MockServer {
    let site = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/rest/atlassian-connect/1/addons/{APP_KEY}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "key": APP_KEY, "state": "ENABLED",
            "license": {"active": true, "type": "COMMERCIAL", "evaluation": false,
                        "entitlementId": "e2dab8c3-7d0a-4b59-a4bd-c55f92862b07"}
        })))
        .mount(&site)
        .await;
    Mock::given(method("GET"))
        .and(path("/_edge/tenant_info"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"cloudId": "0c3130ff-8e2b-4d4f-b1a9-6b6f4d2c8e10"})),
        )
        .mount(&site)
        .await;
    site
}

fn csrf_of(body: &str) -> Option<String> {
    let marker = "name=\"csrf_token\" value=\"";
    let start = body.find(marker)? + marker.len();
    Some(body[start..][..body[start..].find('"')?].to_owned())
}

async fn drive_everything(d: &mut Drive, product: &MockServer, mp: &MockServer) {
    let site = product.uri();
    // --- lifecycle: descriptor install URL with an access token, rejected installs first
    let (status, _, _) = d
        .send(d.http.get(d.url(&format!(
            "/atlassian-connect.json?access-token={ACCESS_IN_URL}"
        ))))
        .await;
    assert_eq!(status, 200);
    let mut body = installed_payload("ck-log-a", SECRET_A, &site);
    body["description"] = json!(HOSTILE);
    let q = format!("/installed?access-token={ACCESS_IN_URL}");
    // wrong audience, wrong key, broken body: all refused, each carrying a secret
    let mut bad = install_claims("ck-log-a", &q);
    bad["aud"] = json!(["https://evil.example.test"]);
    assert_eq!(d.lifecycle(&q, &sign_rs256(&bad), &body).await, 401);
    let other_key = sign_rs256_with(&install_claims("ck-log-a", &q), KID, RSA_OTHER_PRIVATE);
    let mut forged = body.clone();
    forged["sharedSecret"] = json!(SECRET_FORGED);
    assert_eq!(d.lifecycle(&q, &other_key, &forged).await, 401);
    let token = sign_rs256(&install_claims("ck-log-a", &q));
    d.keep_jwt(&token);
    let req = d
        .http
        .post(d.url(&q))
        .header("authorization", format!("JWT {token}"))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"sharedSecret\": \"{SECRET_BAD_BODY}\", \"clientKey\": 5"
        ));
    assert_eq!(d.send(req).await.0, 400);
    // the good one, then its replay with another secret
    let token = sign_rs256(&install_claims("ck-log-a", &q));
    assert_eq!(d.lifecycle(&q, &token, &body).await, 204);
    assert_eq!(d.lifecycle(&q, &token, &forged).await, 401);
    // enabled / disabled signed with the shared secret; one with a wrong secret
    for (event, secret, want) in [
        ("disabled", SECRET_A, 204),
        ("enabled", SECRET_FORGED, 401),
        ("enabled", SECRET_A, 204),
    ] {
        let p = format!("/{event}");
        let t = hs256_query_bound("POST", &p, "ck-log-a", secret, json!({}));
        let mut b = body.clone();
        b["eventType"] = json!(event);
        b.as_object_mut().unwrap().remove("sharedSecret");
        assert_eq!(d.lifecycle(&p, &t, &b).await, want, "{event}");
    }
    // a site whose client key carries a screen clear and a forged log line (logged as the
    // span's client_key and in "lifecycle event recorded")
    let hostile_key = format!("ck-log-{HOSTILE}");
    let hostile_body = installed_payload(&hostile_key, SECRET_A, &site);
    let t = sign_rs256(&install_claims(&hostile_key, "/installed"));
    assert_eq!(d.lifecycle("/installed", &t, &hostile_body).await, 204);
    // the background reads of the product (signed with the shared secret) have happened
    assert!(
        eventually(10, || async {
            product
                .received_requests()
                .await
                .unwrap_or_default()
                .iter()
                .any(|r| r.url.path().starts_with("/rest/"))
        })
        .await,
        "the product licence endpoint was read"
    );

    // --- the iframe page and the product API
    let p = "/panel?lic=active&xdm_e=https%3A%2F%2Facme.atlassian.net";
    let t = hs256_query_bound("GET", p, "ck-log-a", SECRET_A, json!({}));
    assert_eq!(d.get_query_jwt(p, &t).await, 200);
    let t = hs256_query_bound("GET", p, "ck-log-a", SECRET_FORGED, json!({}));
    assert_eq!(d.get_query_jwt(p, &t).await, 401, "a refused jwt");
    let p = "/panel?lic=none";
    let t = hs256_query_bound("GET", p, "ck-log-a", SECRET_A, json!({}));
    assert_eq!(d.get_query_jwt(p, &t).await, 403);
    let ctx = hs256_context("ck-log-a", SECRET_A, json!({}));
    // the last lic seen (none) is the newest licence fact: verified, but refused
    assert_eq!(d.get_jwt("/api/whoami", &ctx).await, 403);
    let bad_ctx = hs256_context("ck-log-a", SECRET_FORGED, json!({}));
    assert_eq!(d.get_jwt("/api/whoami", &bad_ctx).await, 401);
    for token in [ACCESS_UNKNOWN, "not json"] {
        d.keep_jwt(&ctx);
        let req = d
            .http
            .post(d.url("/api/access-tokens/redeem"))
            .header("authorization", format!("JWT {ctx}"))
            .header("content-type", "application/json")
            .body(if token == "not json" {
                format!("{{\"token\": {ACCESS_UNKNOWN}")
            } else {
                json!({"token": token}).to_string()
            });
        assert_eq!(d.send(req).await.0, 400);
    }

    // --- the admin API, with wrong tokens first
    for guess in [WRONG_ADMIN, ADMIN_SECRET.trim_end_matches('f')] {
        d.keep(guess);
        let (status, _, _) = d
            .send(d.http.get(d.url("/admin/installations")).bearer_auth(guess))
            .await;
        assert_eq!(status, 401);
    }
    use reqwest::Method;
    let (s, created) = d
        .admin(
            Method::POST,
            "/admin/access-tokens",
            Some(json!({"note": "log test", "client_key": null})),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let issued = created["token"].as_str().unwrap().to_owned();
    d.keep(&issued);
    let redeem = hs256_context("ck-log-a", SECRET_A, json!({}));
    d.keep_jwt(&redeem);
    let req = d
        .http
        .post(d.url("/api/access-tokens/redeem"))
        .header("authorization", format!("JWT {redeem}"))
        .json(&json!({"token": issued}));
    assert_eq!(d.send(req).await.0, 200);
    let (s, second) = d
        .admin(
            Method::POST,
            "/admin/access-tokens",
            Some(json!({"note": "unused"})),
        )
        .await;
    assert_eq!(s, 201);
    d.keep(second["token"].as_str().unwrap());
    let id = second["id"].as_str().unwrap().to_owned();
    for (m, p, b, want) in [
        (Method::GET, "/admin/installations".to_owned(), None, 200),
        (
            Method::GET,
            "/admin/installations?format=csv".to_owned(),
            None,
            200,
        ),
        (
            Method::GET,
            "/admin/installations?q=acme&license=active,free&status=enabled".to_owned(),
            None,
            200,
        ),
        (
            Method::GET,
            "/admin/installations?limit=0".to_owned(),
            None,
            400,
        ),
        (
            Method::GET,
            "/admin/installations/ck-log-a".to_owned(),
            None,
            200,
        ),
        (
            Method::GET,
            "/admin/installations/nobody".to_owned(),
            None,
            404,
        ),
        (
            Method::POST,
            "/admin/installations/ck-log-a/trial-extension".to_owned(),
            Some(json!({"days": 3, "reason": "log"})),
            201,
        ),
        (Method::GET, "/admin/access-tokens".to_owned(), None, 200),
        (
            Method::DELETE,
            format!("/admin/access-tokens/{id}"),
            None,
            204,
        ),
        (Method::GET, "/admin/summary".to_owned(), None, 200),
        (Method::GET, "/admin/summary/weekly".to_owned(), None, 200),
        (Method::GET, "/admin/openapi.json".to_owned(), None, 200),
    ] {
        let (s, b) = d.admin(m.clone(), &p, b).await;
        assert_eq!(s, want, "{m} {p}: {b}");
    }
    let (s, grant) = d
        .admin(
            Method::POST,
            "/admin/installations/ck-log-a/grants",
            Some(json!({"kind": "free", "reason": "log"})),
        )
        .await;
    assert_eq!(s, 201, "{grant}");
    let (s, _) = d
        .admin(
            Method::DELETE,
            &format!("/admin/grants/{}", grant["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 204);
    serve_licenses(mp, vec![license_for("e2dab8c3-7d0a-4b59-a4bd-c55f92862b07", "active", json!({
        "company": HOSTILE, "technicalContact": {"name": HOSTILE, "email": "it@acme.example"},
    }))]).await;
    let (s, b) = d.admin(Method::POST, "/admin/marketplace/sync", None).await;
    assert_eq!(s, 200, "{b}");

    // --- the dashboard: a wrong sign-in, a right one, pages and an action
    let form = |pairs: &[(&str, &str)]| serde_urlencoded::to_string(pairs).unwrap();
    let login = |body: String| {
        d.http
            .post(d.url("/admin/ui/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };
    let (status, _, _) = d.send(login(form(&[("token", WRONG_ADMIN)]))).await;
    assert_eq!(status, 401);
    let (status, _, headers) = d.send(login(form(&[("token", ADMIN_SECRET)]))).await;
    assert_eq!(status, 303);
    let cookie = headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    d.keep(cookie.split_once('=').unwrap().1);
    let page = |d: &Drive, p: &str| d.http.get(d.url(p)).header("cookie", &cookie);
    let mut csrf = None;
    for p in [
        "/admin/ui/",
        "/admin/ui/installations?q=acme",
        "/admin/ui/installations/ck-log-a",
        "/admin/ui/access-tokens",
        "/admin/ui/marketplace",
        "/admin/ui/installations.csv",
    ] {
        let (status, body, _) = d.send(page(d, p)).await;
        assert_eq!(status, 200, "{p}");
        csrf = csrf.or(csrf_of(&body));
    }
    let csrf = csrf.expect("a page with a form");
    d.keep(&csrf);
    let req = d
        .http
        .post(d.url("/admin/ui/access-tokens"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("csrf_token", &csrf),
            ("note", "from the dashboard"),
            ("client_key", ""),
            ("expires_at", ""),
        ]));
    let (status, _, headers) = d.send(req).await;
    assert_eq!(status, 303);
    let shown = headers["location"].to_str().unwrap().to_owned();
    let (status, body, _) = d.send(page(d, &shown)).await;
    assert_eq!(status, 200);
    // The page shows the new token once: keep every token-looking word of it.
    for word in body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')) {
        if word.len() >= 32 {
            d.keep(word);
        }
    }

    // --- operations, an unknown route, a wrong method, an invented one
    for (m, p) in [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/nope?jwt=eyJhbGciOi.eyJpc3MiOi.c2lnbmF0dXJl"),
        ("DELETE", "/installed"),
        ("FROBNICATE", "/healthz"),
    ] {
        let req = d
            .http
            .request(Method::from_bytes(m.as_bytes()).unwrap(), d.url(p));
        d.send(req).await;
    }
}

async fn run_policy(backend: Backend, format: &str) {
    // This test builds its own HTTP client, with no app in the process to choose the provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = TestDb::new(backend).await;
    let keys = mock_keys().await;
    let product = mock_product().await;
    let mp = MockServer::start().await;
    let secrets_key = base64::engine::general_purpose::STANDARD.encode([0x5a; 32]);
    let env = env(&db.url, &keys.uri(), &mp.uri(), &secrets_key, format);
    let lines = Lines::default();
    let (server, port) = start(&env, &lines);
    let mut d = Drive {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        secrets: Vec::new(),
    };
    for s in [
        ADMIN_SECRET,
        WRONG_ADMIN,
        MP_SECRET,
        ACCESS_IN_URL,
        ACCESS_UNKNOWN,
        SECRET_A,
        SECRET_FORGED,
        SECRET_BAD_BODY,
        &secrets_key,
    ] {
        d.keep(s);
    }
    drive_everything(&mut d, &product, &mp).await;
    // The JWTs the app itself signed for the product.
    for r in product.received_requests().await.unwrap_or_default() {
        if let Some(auth) = r.headers.get("authorization").and_then(|v| v.to_str().ok()) {
            d.keep_jwt(auth.trim_start_matches("JWT "));
        }
    }
    // The CLI's commands that print secrets, at trace too.
    let made = cli(
        &env,
        &["admin-token", "create", "--name", "log-policy"],
        &lines,
    )
    .await;
    d.keep(made.trim());
    let made = cli(&env, &["access-token", "create", "--note", "cli"], &lines).await;
    d.keep(made.lines().next().unwrap().trim());
    cli(&env, &["installations", "list"], &lines).await;
    cli(&env, &["installations", "show", "ck-log-a"], &lines).await;
    // Let the last background writes log, then stop the server.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(server);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let lines = lines.all();
    assert!(
        lines.len() > 200,
        "trace logging is on: {} lines",
        lines.len()
    );
    // The requests were logged (their span carries the route pattern), their secrets not.
    for route in [
        "/panel",
        "/installed",
        "/api/whoami",
        "/admin/access-tokens",
        "/admin/ui/login",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains("route") && l.contains(route)),
            "no line for {route}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("FORGED-LOG-LINE")),
        "the hostile client key is logged (escaped)"
    );
    let mut leaks = Vec::new();
    for line in &lines {
        for s in &d.secrets {
            if s.len() >= 8 && line.contains(s.as_str()) {
                leaks.push(format!("{s:?} in: {line}"));
            }
        }
        if let Some(jwt) = jwt_in(line) {
            leaks.push(format!("a JWT {jwt:?} in: {line}"));
        }
        if line.contains('\x1b') || line.contains('\u{9b}') || line.starts_with("FORGED-LOG-LINE") {
            leaks.push(format!("an unescaped control character in: {line:?}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "{} leaks ({format}):\n{}",
        leaks.len(),
        leaks
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

both_backends! {
    async fn no_log_line_holds_a_secret_in_the_pretty_format(backend) {
        run_policy(backend, "pretty").await;
    }
}

both_backends! {
    async fn no_log_line_holds_a_secret_in_the_json_format(backend) {
        run_policy(backend, "json").await;
    }
}
