//! What the real binary logs for refused and failed requests, and what `sync marketplace` says
//! when the Marketplace fails (docs/operations.md#logs): a client error (4xx) is one short
//! `INFO` line, a server error (5xx) a `WARN` line, and the CLI says its error once.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_connect-keeper");
const ADMIN: &str = "log-levels-admin-token-0123456789abcdef";

/// A Marketplace that refuses every request with `status`.
async fn marketplace(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

fn marketplace_env(uri: &str) -> [(&'static str, String); 4] {
    [
        ("MARKETPLACE_URL", uri.to_owned()),
        ("MARKETPLACE_VENDOR_ID", "1234".to_owned()),
        ("MARKETPLACE_USER", "vendor@example.test".to_owned()),
        ("MARKETPLACE_API_TOKEN", "mp-api-token-not-real".to_owned()),
    ]
}

/// The server as a child process whose stdout lines are collected.
struct Server {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(db_url: &str, format: &str, marketplace: &str) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("DATABASE_URL", db_url)
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("APP_BASE_URL", "https://app.example.test")
            .env("ADMIN_TOKEN", ADMIN)
            .env("LOG_FORMAT", format)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in marketplace_env(marketplace) {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("binary starts");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let port = line
                        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                        .skip_while(|w| *w != "port")
                        .find_map(|w| w.parse::<u16>().ok());
                    if let Some(port) = port {
                        let _ = tx.send(port);
                    }
                }
                collected.lock().unwrap().push(line);
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server logs its port");
        Server { child, lines, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The lines logged so far that contain `needle`.
    fn lines_with(&self, needle: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}

both_backends! {
    async fn client_errors_are_short_info_lines_and_server_errors_warn(backend) {
        let db = TestDb::new(backend).await;
        let mp = marketplace(404).await;
        // reqwest is built without a default TLS provider (the app installs ring at start-up).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        for format in ["json", "pretty"] {
            let server = Server::start(&db.url, format, &mp.uri());
            // 401: no token; 400: a bad filter; 502: the Marketplace fails.
            let r = client.get(server.url("/admin/installations")).send().await.unwrap();
            assert_eq!(r.status(), 401);
            let r = client.get(server.url("/admin/installations?status=bogus"))
                .bearer_auth(ADMIN).send().await.unwrap();
            assert_eq!(r.status(), 400);
            let r = client.post(server.url("/admin/marketplace/sync"))
                .bearer_auth(ADMIN).send().await.unwrap();
            assert_eq!(r.status(), 502);
            // Each request's line is written before its answer is sent.
            assert!(eventually(5, || async { !server.lines_with("request failed").is_empty() }).await);

            let refused = server.lines_with("request refused");
            assert_eq!(refused.len(), 2, "{format}: {refused:#?}");
            let failed = server.lines_with("request failed");
            assert_eq!(failed.len(), 1, "{format}: {failed:#?}");
            for line in refused.iter().chain(&failed) {
                assert!(line.len() < 400, "{format}: a short line: {line}");
                assert!(!line.contains("Error encountered") && !line.contains("BadRequest {"), "{line}");
                assert!(!line.contains('\u{1b}'), "no colour into a pipe: {line:?}");
            }
            if format == "json" {
                let parsed: Vec<Value> = refused.iter().chain(&failed)
                    .map(|l| serde_json::from_str(l).unwrap()).collect();
                let by_status = |s: u64| parsed.iter().find(|v| v["status"] == s).unwrap_or_else(|| panic!("{s}: {parsed:#?}"));
                assert_eq!(by_status(401)["level"], "INFO");
                assert_eq!(by_status(401)["spans"][0]["route"], "/admin/installations");
                assert_eq!(by_status(400)["level"], "INFO");
                assert_eq!(by_status(400)["error"], "invalid_request");
                assert_eq!(by_status(502)["level"], "WARN");
                assert_eq!(by_status(502)["error"], "marketplace_unavailable");
                assert!(by_status(502)["message"].as_str().unwrap().contains("404"), "{parsed:#?}");
            } else {
                assert!(refused.iter().all(|l| l.contains(" INFO ")), "{refused:#?}");
                assert!(failed[0].contains(" WARN "), "{failed:#?}");
                assert!(refused.iter().any(|l| l.contains("status=401")), "{refused:#?}");
            }
            // Nothing else at WARN or above inside a request (the failed sync is the 502's line).
            let loud: Vec<String> = server.lines.lock().unwrap().iter()
                .filter(|l| l.contains("route") && (l.contains("WARN") || l.contains("ERROR")))
                .cloned().collect();
            assert_eq!(loud, failed, "{format}");
        }
    }
}

both_backends! {
    async fn sync_marketplace_says_its_error_once(backend) {
        let app = TestApp::spawn(backend).await;
        for (status, words) in [(401, "refused the credentials"), (404, "answered HTTP 404")] {
            let mp = marketplace(status).await;
            let env = marketplace_env(&mp.uri());
            let db_url = app.db.url.clone();
            let out = tokio::task::spawn_blocking(move || {
                let mut cmd = Command::new(BIN);
                cmd.args(["sync", "marketplace"]).env_clear().env("DATABASE_URL", db_url);
                for (k, v) in env {
                    cmd.env(k, v);
                }
                cmd.output().unwrap()
            })
            .await
            .unwrap();
            assert!(!out.status.success());
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(stderr.matches(words).count(), 1, "said once: {stderr}");
            let said: Vec<&str> = stderr.lines().filter(|l| l.contains(words)).collect();
            assert!(said[0].starts_with("connect-keeper: the Marketplace "), "{stderr}");
            assert!(!stderr.contains("Marketplace sync failed"), "no log line besides: {stderr}");
            assert!(!stderr.contains("mp-api-token-not-real"));
            assert!(out.stdout.is_empty());
        }
    }
}
