#![allow(dead_code)] // a shared harness: not every test binary module uses every helper
//! The test harness: [`TestApp::spawn`], signers for every kind of token, and the
//! `both_backends!` macro.

use std::collections::HashMap;
use std::sync::Arc;

use connect_keeper::config::Config;
use connect_keeper::startup::Application;
use connect_keeper::state::AppState;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const APP_KEY: &str = "connect-keeper-app";
pub const KID: &str = "kid-1";
pub const OTHER_KID: &str = "kid-other";
pub const RSA_PRIVATE: &str = include_str!("../fixtures/rsa_private.pem");
pub const RSA_PUBLIC: &str = include_str!("../fixtures/rsa_public.pem");
pub const RSA_OTHER_PRIVATE: &str = include_str!("../fixtures/rsa_other_private.pem");
pub const RSA_OTHER_PUBLIC: &str = include_str!("../fixtures/rsa_other_public.pem");

/// Runs one expression against whichever pool the app's database holds, for tests that set
/// up or read rows directly (the library keeps its own `on_db!` internal).
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            connect_keeper::store::Db::Sqlite($pool) => $body,
            connect_keeper::store::Db::Postgres($pool) => $body,
        }
    };
}

/// Makes `NAME::sqlite` and `NAME::postgres` tests from one async body taking a [`Backend`].
/// The PostgreSQL variant is ignored, with the reason shown, when TEST_DATABASE_URL was unset
/// at build time.
#[macro_export]
macro_rules! both_backends {
    ($(#[$meta:meta])* async fn $name:ident($backend:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(#[$meta])*
            async fn run($backend: $crate::helpers::Backend) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run($crate::helpers::Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(no_postgres, ignore = "TEST_DATABASE_URL is unset: PostgreSQL variant skipped")]
            async fn postgres() {
                run($crate::helpers::Backend::Postgres).await
            }
        }
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database for one test: a fresh SQLite file, or a fresh PostgreSQL schema. Dropping it
/// removes the database (the temporary folder, or the schema with `DROP SCHEMA … CASCADE`), also
/// when the test fails, so `cargo test` can run any number of times on one PostgreSQL database.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    /// `(TEST_DATABASE_URL, schema)` for PostgreSQL.
    schema: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/nested/keeper.db", dir.path().display());
                TestDb {
                    url,
                    _dir: Some(dir),
                    schema: None,
                }
            }
            Backend::Postgres => {
                let base = std::env::var("TEST_DATABASE_URL")
                    .expect("TEST_DATABASE_URL must be set for PostgreSQL tests");
                let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
                let pool = sqlx::PgPool::connect(&base)
                    .await
                    .expect("connect to TEST_DATABASE_URL");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&pool)
                    .await
                    .expect("create schema");
                pool.close().await;
                let sep = if base.contains('?') { '&' } else { '?' };
                // The schema's name doubles as the connections' application_name, so the drop
                // below can find the connections the test's app (or its CLI children) left open.
                TestDb {
                    url: format!(
                        "{base}{sep}application_name={schema}&options=-c%20search_path%3D{schema}"
                    ),
                    _dir: None,
                    schema: Some((base, schema)),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((base, schema)) = self.schema.take() else {
            return;
        };
        // Drop runs inside the test's runtime (or while a panic unwinds it), where blocking on
        // a future is not allowed: a thread of its own with a small runtime does the work. The
        // test's app may still hold pooled connections (its tasks are aborted, not joined), and
        // an open transaction among them would make DROP SCHEMA wait: end them first.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for the schema drop");
            rt.block_on(async move {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&base).await?;
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $1 AND pid <> pg_backend_pid()",
                )
                .bind(&schema)
                .execute(&mut conn)
                .await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .execute(&mut conn)
                .await?;
                conn.close().await
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("test schema not dropped: {e}"),
            Err(_) => eprintln!("test schema not dropped: the drop thread panicked"),
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub state: Arc<AppState>,
    /// The fake signed-install key server (serves RSA_PUBLIC at /kid-1, the other key at
    /// /kid-other, 404 otherwise).
    pub keys: MockServer,
    /// A fake product site (Jira): the default `baseUrl` of installs, so background reads of
    /// the license endpoint and tenant_info stay on this machine. Unmatched requests get 404.
    pub product: MockServer,
    pub client: reqwest::Client,
    /// APP_BASE_URL as configured (the `aud` of signed installs).
    pub base_url: String,
    pub db: Arc<TestDb>,
    pub env: HashMap<String, String>,
    /// Applied to the `Config` after it is read, on every start (see [`TestApp::spawn_tuned`]).
    tune: fn(&mut Config),
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A `tune` for tests that close the database to prove the request path needs none: the
/// change poll (every 500 ms in tests, looking 5 s back) re-invalidates a tenant changed just
/// before, and the reload it causes would race the close. With the poll at an hour, only its
/// first tick (at start-up) runs. The poll itself is tested on its own.
pub fn no_change_poll(config: &mut Config) {
    config.cache_refresh = std::time::Duration::from_secs(3600);
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, &[]).await
    }

    /// Starts the app with extra environment variables (as `Config::from_lookup` sees them).
    pub async fn spawn_with(backend: Backend, env: &[(&str, &str)]) -> TestApp {
        Self::spawn_tuned(backend, env, |_| {}).await
    }

    /// As [`TestApp::spawn_with`], then `tune` sets `Config` fields that are not environment
    /// variables (retry delays, timeouts); a [`TestApp::restart`] applies it again.
    pub async fn spawn_tuned(
        backend: Backend,
        env: &[(&str, &str)],
        tune: fn(&mut Config),
    ) -> TestApp {
        let db = Arc::new(TestDb::new(backend).await);
        let keys = key_server().await;
        let mut vars: HashMap<String, String> = HashMap::from([
            ("DATABASE_URL".into(), db.url.clone()),
            ("BIND_ADDR".into(), "127.0.0.1:0".into()),
            ("APP_BASE_URL".into(), "https://app.example.test".into()),
            ("INSTALL_KEYS_URL".into(), keys.uri()),
            ("RUST_LOG".into(), "warn".into()),
        ]);
        for (k, v) in env {
            vars.insert(k.to_string(), v.to_string());
        }
        Self::start(db, keys, vars, tune).await
    }

    async fn start(
        db: Arc<TestDb>,
        keys: MockServer,
        env: HashMap<String, String>,
        tune: fn(&mut Config),
    ) -> TestApp {
        let mut config = Config::from_lookup(|k| env.get(k).cloned()).expect("test config");
        config.cache_refresh = std::time::Duration::from_millis(500);
        tune(&mut config);
        let base_url = config
            .app_base_url
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        let product = MockServer::start().await;
        let app = Application::build(config)
            .await
            .expect("application builds");
        let port = app.port();
        let state = app.state();
        let server = tokio::spawn(async move {
            let _ = app.run_until_stopped().await;
        });
        TestApp {
            address: format!("http://127.0.0.1:{port}"),
            port,
            state,
            keys,
            product,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base_url,
            db,
            env,
            tune,
            server,
        }
    }

    /// Stops this instance and starts a new one on the same database and key server.
    pub async fn restart(self) -> TestApp {
        let db = self.db.clone();
        let env = self.env.clone();
        let tune = self.tune;
        self.server.abort();
        self.state.db.close().await;
        // The key server must outlive the old app: build a new one with the same mocks.
        let keys = key_server().await;
        let mut env = env;
        env.insert("INSTALL_KEYS_URL".into(), keys.uri());
        Self::start(db, keys, env, tune).await
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.address, path_and_query)
    }

    /// Valid signed-install claims for `POST {path_and_query}`. `jti` makes each token unique,
    /// as two installs made by a product are in practice (they are seconds apart at least):
    /// without it, two installs within one second would carry the same signature, and the
    /// second, with another body, is refused as a replay (docs/operations.md#lifecycle-replay).
    pub fn install_claims(&self, client_key: &str, path_and_query: &str) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": client_key,
            "aud": [self.base_url],
            "qsh": qsh("POST", path_and_query),
            "iat": now,
            "exp": now + 180,
            "jti": uuid::Uuid::new_v4().to_string(),
            "context": {},
        })
    }

    /// A realistic `installed` body whose `baseUrl` is this app's fake product site.
    pub fn installed_payload(&self, client_key: &str, secret: &str) -> Value {
        installed_payload(client_key, secret, &self.product.uri())
    }

    /// POSTs a lifecycle callback with `Authorization: JWT <token>` when a token is given.
    pub async fn post_lifecycle(
        &self,
        path_and_query: &str,
        token: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        self.post_raw(path_and_query, token, body.to_string()).await
    }

    pub async fn post_raw(
        &self,
        path_and_query: &str,
        token: Option<&str>,
        body: String,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url(path_and_query))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.header("authorization", format!("JWT {t}"));
        }
        req.send().await.expect("request sent")
    }

    /// A correctly signed `installed` for `client_key` with `secret`; asserts 204.
    pub async fn install(&self, client_key: &str, secret: &str) {
        let body = self.installed_payload(client_key, secret);
        self.install_payload(&body).await;
    }

    /// A correctly signed `installed` carrying `body`; asserts 204.
    pub async fn install_payload(&self, body: &Value) {
        let client_key = body["clientKey"].as_str().unwrap();
        let token = sign_rs256(&self.install_claims(client_key, "/installed"));
        let res = self.post_lifecycle("/installed", Some(&token), body).await;
        assert_eq!(
            res.status(),
            204,
            "install failed: {}",
            res.text().await.unwrap_or_default()
        );
    }

    /// A signed lifecycle callback of `event` (RS256 for installed/uninstalled, HS256 with
    /// `secret` for enabled/disabled); returns the response.
    pub async fn lifecycle(
        &self,
        event: &str,
        client_key: &str,
        secret: &str,
    ) -> reqwest::Response {
        let path = format!("/{event}");
        let mut body = self.installed_payload(client_key, secret);
        body["eventType"] = json!(event);
        if event != "installed" {
            body.as_object_mut().unwrap().remove("sharedSecret");
        }
        let token = match event {
            "installed" | "uninstalled" => sign_rs256(&self.install_claims(client_key, &path)),
            _ => hs256_query_bound("POST", &path, client_key, secret, json!({})),
        };
        self.post_lifecycle(&path, Some(&token), &body).await
    }

    /// GET with `Authorization: JWT <token>`.
    pub async fn get_with_jwt_header(
        &self,
        path_and_query: &str,
        token: &str,
    ) -> reqwest::Response {
        self.client
            .get(self.url(path_and_query))
            .header("authorization", format!("JWT {token}"))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.client
            .get(self.url(path_and_query))
            .send()
            .await
            .expect("request sent")
    }

    /// The raw row of a tenant (None when absent).
    pub async fn installation(
        &self,
        client_key: &str,
    ) -> Option<connect_keeper::store::installations::InstallationRow> {
        connect_keeper::store::installations::get(&self.state.db, client_key)
            .await
            .expect("query")
    }

    pub async fn events(&self, client_key: &str) -> Vec<connect_keeper::store::events::EventRow> {
        connect_keeper::store::events::for_client(&self.state.db, client_key)
            .await
            .expect("query")
    }
}

async fn key_server() -> MockServer {
    let keys = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/{KID}")))
        .respond_with(ResponseTemplate::new(200).set_body_string(RSA_PUBLIC))
        .mount(&keys)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/{OTHER_KID}")))
        .respond_with(ResponseTemplate::new(200).set_body_string(RSA_OTHER_PUBLIC))
        .mount(&keys)
        .await;
    keys
}

/// The qsh of a request to the app (base URL without a path).
pub fn qsh(method: &str, path_and_query: &str) -> String {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    connect_keeper::connect::qsh::qsh(method, path, query, "")
}

/// An RS256 token with `kid-1`, signed by the key the fake key server publishes.
pub fn sign_rs256(claims: &Value) -> String {
    sign_rs256_with(claims, KID, RSA_PRIVATE)
}

pub fn sign_rs256_with(claims: &Value, kid: &str, private_pem: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("test RSA key");
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// An HS256 token for `method path_and_query` (query-bound qsh), `iss` = client key,
/// expiring in 180 s, unique (`jti`, see [`TestApp::install_claims`]); `extra` claims are
/// merged over the defaults.
pub fn hs256_query_bound(
    method: &str,
    path_and_query: &str,
    client_key: &str,
    secret: &str,
    extra: Value,
) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "iss": client_key,
        "sub": "557058:f0e1d2c3-account",
        "qsh": qsh(method, path_and_query),
        "iat": now,
        "exp": now + 180,
        "jti": uuid::Uuid::new_v4().to_string(),
        "context": {},
    });
    merge(&mut claims, extra);
    connect_keeper::connect::jwt::sign_hs256(&claims, secret.as_bytes())
}

/// A context token (`qsh` = `context-qsh`), as `AP.context.getToken()` returns.
pub fn hs256_context(client_key: &str, secret: &str, extra: Value) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "iss": client_key,
        "sub": "557058:f0e1d2c3-account",
        "qsh": "context-qsh",
        "iat": now,
        "exp": now + 900,
        "context": {},
    });
    merge(&mut claims, extra);
    connect_keeper::connect::jwt::sign_hs256(&claims, secret.as_bytes())
}

pub fn merge(target: &mut Value, extra: Value) {
    if let (Some(t), Value::Object(e)) = (target.as_object_mut(), extra) {
        for (k, v) in e {
            if v.is_null() {
                t.remove(&k);
            } else {
                t.insert(k, v);
            }
        }
    }
}

/// A realistic `installed` body (fields as in docs/protocol.md#lifecycle-callbacks). Tests must point `base_url` at a
/// local fake (`app.product.uri()`): the app reads the site's license in the background.
pub fn installed_payload(client_key: &str, secret: &str, base_url: &str) -> Value {
    json!({
        "key": APP_KEY,
        "clientKey": client_key,
        "sharedSecret": secret,
        "serverVersion": "100245",
        "pluginsVersion": "1001.0.0-SNAPSHOT",
        "baseUrl": base_url,
        "displayUrl": "https://jira.acme-corp.com",
        "productType": "jira",
        "description": "Atlassian JIRA at https://acme-corp.atlassian.net ",
        "entitlementId": "e2dab8c3-7d0a-4b59-a4bd-c55f92862b07",
        "entitlementNumber": "E-3XJ-WYD-KA7-HBJ",
        "oauthClientId": "nQ7pXk2rT0bC9uVh3WmYs1LdEaF8gJ4i",
        "installationId": "ari:cloud:ecosystem::installation/6f9f0c1e-52a4-4d3b-9a77-0d5a7e0b8f21",
        "eventType": "installed"
    })
}

/// Waits until `check` is true, polling every 100 ms, for at most `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
