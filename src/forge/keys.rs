//! The key set that signs FITs (`FORGE_JWKS_URL`, a JSON Web Key Set).
//!
//! Unlike the signed-install key server, which answers one key per `kid`, Forge publishes all
//! its current keys in one document. It is fetched at start-up and then periodically, and the
//! request path only reads it from memory ([`ForgeKeys::cached`]). A `kid` that is not in it
//! (Atlassian rotated keys, or someone invented the `kid`) makes at most one refetch per
//! cool-down (30 s), *in total*: otherwise anyone could make this server hammer Atlassian's
//! CDN, and be slowed by it, by sending tokens with made-up `kid`s. Concurrent requests share
//! that one fetch (single flight), and the fetch runs in a task of its own so that a client
//! hanging up cannot abandon it half-way.
//!
//! A fetch that fails, or answers a document without a usable RSA key, keeps the keys already
//! known: a CDN hiccup must not turn every FIT away.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use url::Url;

use super::fit::FitError;
use crate::http_client::{BodyError, read_limited};

/// The least time between two fetches of the key set, whatever asks for them.
pub const REFETCH_COOLDOWN: Duration = Duration::from_secs(30);
/// How often the key set is read again without being asked, so that keys Atlassian withdrew
/// stop being accepted.
pub const PERIODIC_REFRESH: Duration = Duration::from_secs(60 * 60);
/// Atlassian's key set is a few KiB; a larger answer is not a key set.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// A fetch gets this long; requests waiting for it wait no longer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

type KeyMap = HashMap<String, Arc<DecodingKey>>;

/// Cheap to clone; clones share the keys and the cool-down.
#[derive(Clone)]
pub struct ForgeKeys {
    inner: Arc<Inner>,
}

struct Inner {
    url: Url,
    http: reqwest::Client,
    keys: RwLock<Arc<KeyMap>>,
    /// When the last fetch started. Held across a fetch, so concurrent callers queue behind
    /// the one fetch and then find its result.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    cooldown: Duration,
    fetches: AtomicU64,
}

impl std::fmt::Debug for ForgeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgeKeys")
            .field("url", &self.inner.url.as_str())
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

/// Why a fetch of the key set failed (logged, never shown to clients).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Http(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("the answer is not a key set: {0}")]
    Body(String),
    #[error("the key set holds no usable RS256 key")]
    NoKeys,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<RawKey>,
}

#[derive(Deserialize)]
struct RawKey {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

/// The RS256 signing keys of a JWKS document, by `kid`. Keys of other types or uses are
/// skipped rather than failing the set: Atlassian may publish more than FIT keys one day.
pub fn parse_jwks(body: &[u8]) -> Result<HashMap<String, DecodingKey>, FetchError> {
    let set: RawSet = serde_json::from_slice(body).map_err(|e| FetchError::Body(e.to_string()))?;
    let keys: HashMap<String, DecodingKey> = set
        .keys
        .into_iter()
        .filter(|k| k.kty.as_deref() == Some("RSA"))
        .filter(|k| k.alg.as_deref().is_none_or(|a| a == "RS256"))
        .filter(|k| k.usage.as_deref().is_none_or(|u| u == "sig"))
        .filter_map(|k| {
            let kid = k.kid.filter(|kid| !kid.is_empty())?;
            let key = DecodingKey::from_rsa_components(k.n.as_deref()?, k.e.as_deref()?).ok()?;
            Some((kid, key))
        })
        .collect();
    if keys.is_empty() {
        return Err(FetchError::NoKeys);
    }
    Ok(keys)
}

impl ForgeKeys {
    /// Nothing is fetched until [`ForgeKeys::refresh_if_due`] or a lookup asks.
    pub fn new(url: Url, http: reqwest::Client) -> ForgeKeys {
        Self::with_cooldown(url, http, REFETCH_COOLDOWN)
    }

    /// As [`ForgeKeys::new`] with another cool-down (tests).
    pub fn with_cooldown(url: Url, http: reqwest::Client, cooldown: Duration) -> ForgeKeys {
        ForgeKeys {
            inner: Arc::new(Inner {
                url,
                http,
                keys: RwLock::new(Arc::new(HashMap::new())),
                last_fetch: tokio::sync::Mutex::new(None),
                cooldown,
                fetches: AtomicU64::new(0),
            }),
        }
    }

    /// The key for `kid` if it is known: the request path's lookup, no I/O.
    pub fn cached(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.read().get(kid).cloned()
    }

    /// The key for `kid`, refetching the key set first when it is unknown and the cool-down
    /// allows. [`FitError::UnknownKid`] when it is still unknown, [`FitError::KeyUnavailable`]
    /// when no key set was ever obtained.
    pub async fn find(&self, kid: &str) -> Result<Arc<DecodingKey>, FitError> {
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        self.refresh_if_due().await;
        match self.cached(kid) {
            Some(key) => Ok(key),
            None if self.is_empty() => Err(FitError::KeyUnavailable),
            None => Err(FitError::UnknownKid),
        }
    }

    /// Fetches the key set unless a fetch started less than a cool-down ago; waits for a
    /// fetch in progress. Returns whether this call fetched.
    pub async fn refresh_if_due(&self) -> bool {
        let mut last = self.inner.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.inner.cooldown) {
            return false;
        }
        *last = Some(Instant::now());
        let inner = self.inner.clone();
        let fetch = tokio::spawn(async move { inner.fetch_and_store().await });
        match tokio::time::timeout(FETCH_TIMEOUT + Duration::from_secs(1), fetch).await {
            Ok(Ok(Ok(n))) => tracing::info!(keys = n, "Forge key set fetched"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "Forge key set fetch failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "Forge key set fetch panicked"),
            Err(_) => tracing::warn!("Forge key set fetch timed out"),
        }
        true
    }

    /// Fetches at once and then every `period` (respecting the cool-down), until the process
    /// ends. Started once by the service when `FORGE_APP_ID` is set.
    pub fn spawn_refresher(&self, period: Duration) {
        let keys = self.clone();
        tokio::spawn(async move {
            loop {
                keys.refresh_if_due().await;
                tokio::time::sleep(period).await;
            }
        });
    }

    /// Number of keys known.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fetches started since this value was built (tests and metrics).
    pub fn fetch_count(&self) -> u64 {
        self.inner.fetches.load(Ordering::Relaxed)
    }

    fn read(&self) -> Arc<KeyMap> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Inner {
    async fn fetch_and_store(&self) -> Result<usize, FetchError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let keys = self.fetch().await?;
        let n = keys.len();
        let keys: KeyMap = keys.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(n)
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, FetchError> {
        let response = self
            .http
            .get(self.url.clone())
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let body = read_limited(response, MAX_JWKS_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => FetchError::Body("too large".into()),
                BodyError::Read(e) => FetchError::Http(e.to_string()),
            })?;
        parse_jwks(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::testing::{self, KID, OTHER_PUBLIC_PEM, PUBLIC_PEM};
    use serde_json::json;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    async fn server_with(body: serde_json::Value) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/.well-known/jwks.json"))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&server)
            .await;
        server
    }

    fn keys_for(server: &MockServer, cooldown: Duration) -> ForgeKeys {
        let url = Url::parse(&format!("{}/.well-known/jwks.json", server.uri())).unwrap();
        ForgeKeys::with_cooldown(url, client(), cooldown)
    }

    #[test]
    fn other_key_types_are_skipped() {
        let mut set = testing::jwks(&[(KID, PUBLIC_PEM)]);
        set["keys"].as_array_mut().unwrap().extend([
            json!({"kty": "EC", "kid": "ec", "crv": "P-256", "x": "a", "y": "b"}),
            json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}),
            json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
        ]);
        let keys = parse_jwks(set.to_string().as_bytes()).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec![KID]);
        assert!(matches!(
            parse_jwks(br#"{"keys":[]}"#),
            Err(FetchError::NoKeys)
        ));
        assert!(matches!(parse_jwks(b"<html>"), Err(FetchError::Body(_))));
    }

    #[tokio::test]
    async fn a_flood_of_unknown_kids_fetches_once_per_cooldown() {
        let server = server_with(testing::jwks(&[(KID, PUBLIC_PEM)])).await;
        let keys = keys_for(&server, Duration::from_secs(30));
        assert!(keys.find(KID).await.is_ok());
        assert_eq!(keys.fetch_count(), 1);
        let lookups = (0..200).map(|i| {
            let keys = keys.clone();
            async move { keys.find(&format!("invented-{i}")).await }
        });
        for result in futures::future::join_all(lookups).await {
            assert_eq!(result.unwrap_err(), FitError::UnknownKid);
        }
        assert_eq!(
            keys.fetch_count(),
            1,
            "within the cool-down nothing is fetched"
        );
        assert_eq!(server.received_requests().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn concurrent_unknown_kids_share_one_fetch_and_a_rotated_key_is_found() {
        let server = server_with(testing::jwks(&[(KID, PUBLIC_PEM)])).await;
        let keys = keys_for(&server, Duration::from_millis(300));
        assert!(keys.refresh_if_due().await);
        // Atlassian rotates: the set now holds a new kid.
        server.reset().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(testing::jwks(&[
                (KID, PUBLIC_PEM),
                ("rotated", OTHER_PUBLIC_PEM),
            ])))
            .mount(&server)
            .await;
        // Within the cool-down the new kid is unknown...
        assert_eq!(
            keys.find("rotated").await.unwrap_err(),
            FitError::UnknownKid
        );
        tokio::time::sleep(Duration::from_millis(350)).await;
        // ...after it, many requests at once make one fetch and all find it.
        let lookups = (0..50).map(|_| {
            let keys = keys.clone();
            async move { keys.find("rotated").await }
        });
        for result in futures::future::join_all(lookups).await {
            assert!(result.is_ok());
        }
        assert_eq!(server.received_requests().await.unwrap().len(), 1);
        assert_eq!(keys.fetch_count(), 2);
    }

    #[tokio::test]
    async fn a_failed_fetch_keeps_the_known_keys() {
        let server = server_with(testing::jwks(&[(KID, PUBLIC_PEM)])).await;
        let keys = keys_for(&server, Duration::from_millis(1));
        keys.refresh_if_due().await;
        server.reset().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(503))
            .mount(&server)
            .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(keys.refresh_if_due().await);
        assert!(keys.cached(KID).is_some());
    }

    #[tokio::test]
    async fn no_key_set_at_all_is_unavailable() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(500))
            .mount(&server)
            .await;
        let keys = keys_for(&server, Duration::from_secs(30));
        assert_eq!(keys.find(KID).await.unwrap_err(), FitError::KeyUnavailable);
    }
}
