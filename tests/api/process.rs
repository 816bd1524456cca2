//! The real binary as an operator runs it: configuration errors, SIGTERM, and `kill -9`
//! durability of every callback answered 204.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_connect-keeper");

/// Kills the server if the test panics before it stops it itself.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(db_url: &str, keys_url: &str) -> (Server, u16) {
    let mut child = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db_url)
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("APP_BASE_URL", "https://app.example.test")
        .env("INSTALL_KEYS_URL", keys_url)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if std::env::var_os("KEEPER_TEST_LOGS").is_some() {
                eprintln!("{line}");
            }
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(port) = v["port"].as_u64()
            {
                let _ = tx.send(port as u16);
            }
        }
    });
    let server = Server(child);
    let port = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server logs its port");
    (server, port)
}

fn signal(server: &Server, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &server.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

both_backends! {
    async fn callbacks_answered_204_survive_kill_9_and_sigterm_stops_cleanly(backend) {
        let db = TestDb::new(backend).await;
        // a harness app only for its key server and signing helpers
        let harness = TestApp::spawn(backend).await;
        let keys = harness.keys.uri();
        let (mut child, port) = start(&db.url, &keys);
        let client = reqwest::Client::new();
        for i in 0..5 {
            let ck = format!("site-{i}");
            let body = installed_payload(&ck, "sec", &harness.product.uri());
            let token = sign_rs256(&harness.install_claims(&ck, "/installed"));
            let res = client
                .post(format!("http://127.0.0.1:{port}/installed"))
                .header("authorization", format!("JWT {token}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 204);
        }
        signal(&child, "-KILL");
        let _ = child.0.wait();

        let (mut child, port) = start(&db.url, &keys);
        let url = connect_keeper::config::DatabaseUrl::parse(&db.url).unwrap();
        let store = connect_keeper::store::Db::connect(&url).await.unwrap();
        assert_eq!(connect_keeper::store::installations::count(&store).await.unwrap(), 5);
        assert_eq!(
            client.get(format!("http://127.0.0.1:{port}/readyz")).send().await.unwrap().status(),
            200
        );
        signal(&child, "-TERM");
        let status = tokio::task::spawn_blocking(move || child.0.wait()).await.unwrap().unwrap();
        assert!(status.success(), "SIGTERM ends the server cleanly: {status:?}");
    }
}

#[test]
fn a_bad_variable_stops_start_up_naming_it() {
    for (var, value) in [
        ("LICENSE_ENFORCEMENT", "sometimes"),
        ("LOG_FORMAT", "xml"),
        ("JWT_LEEWAY_SECS", "-1"),
        ("DATABASE_URL", "mysql://x/y"),
    ] {
        let out = Command::new(BIN)
            .env(var, value)
            .env("BIND_ADDR", "127.0.0.1:0")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{var}={value} must stop start-up");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(var) && stderr.contains(value),
            "{var}: {stderr}"
        );
    }
}

#[test]
fn every_command_has_help() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("serve") && text.contains("migrate"), "{text}");
}

#[test]
fn migrate_creates_the_sqlite_file_and_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/keeper.db");
    let out = Command::new(BIN)
        .arg("migrate")
        .env("DATABASE_URL", format!("sqlite://{}", path.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(path.exists());
}

#[test]
fn a_missing_descriptor_path_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .env("DESCRIPTOR_PATH", "/nonexistent/descriptor.json")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/k.db", dir.path().display()),
        )
        .env("BIND_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DESCRIPTOR_PATH"), "{stderr}");
}

/// Runs `connect-keeper healthcheck` with `BIND_ADDR` as the container sets it.
async fn healthcheck(bind_addr: String) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .arg("healthcheck")
            .env_clear()
            .env("BIND_ADDR", bind_addr)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

both_backends! {
    async fn the_healthcheck_command_passes_only_when_the_server_is_ready(backend) {
        let app = TestApp::spawn(backend).await;
        // The container listens on 0.0.0.0: the check asks the loopback address.
        let out = healthcheck(format!("0.0.0.0:{}", app.port)).await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

        // Database gone: /readyz answers 503 and the check fails, naming the answer.
        app.state.db.close().await;
        let out = healthcheck(format!("127.0.0.1:{}", app.port)).await;
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("/readyz") && stderr.contains("503"), "{stderr}");

        // Nothing listening: a non-zero exit naming the address.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let out = healthcheck(free.to_string()).await;
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(&free.to_string()));
    }
}
