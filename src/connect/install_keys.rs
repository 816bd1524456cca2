//! Public keys for signed installs (docs/protocol.md#signed-install-and-install-keys): `GET {INSTALL_KEYS_URL}/{kid}` answers a PEM RSA
//! public key.
//!
//! Keys are cached by `kid` because Atlassian never changes the key behind a `kid` (rotation mints a
//! new one), so a cached key can never be stale; transient failures are not cached, so an admin who
//! retries an install after a key-server hiccup gets a fresh attempt.
//!
//! Anyone can send a signed-install callback with a made-up `kid`, and each one would cost a
//! request to Atlassian's key server — which may then throttle the app, failing real installs.
//! So: a `kid` the key server said it does not know is remembered as missing for
//! [`MISSING_TTL`]; all fetches together are limited to [`FetchLimits::per_second`] (a token
//! bucket with a small burst) and [`FetchLimits::concurrent`] at a time. A fetch over the limit
//! is not queued: it fails at once as "unavailable" (503, the caller may retry), so a flood
//! holds neither memory nor outbound connections. The cheap checks (`exp`, `aud`, `qsh`) run
//! before [`InstallKeys::get`] is called (see `registry::lifecycle`).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::crypto::CryptoProvider;
use moka::future::Cache;
use url::Url;

use super::jwt::JwtError;
use crate::http_client::{BodyError, read_limited};

/// Real key ids are UUIDs or short names; anything longer is not worth a request.
pub const MAX_KID_LEN: usize = 200;
/// A PEM RSA public key is well under 2 KiB; a larger answer is not a key.
const MAX_KEY_BODY_BYTES: usize = 16 * 1024;
const CACHE_CAPACITY: u64 = 1000;
const CACHE_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a `kid` the key server did not know is answered "unknown" without asking again.
pub const MISSING_TTL: Duration = Duration::from_secs(5 * 60);
/// Missing kids remembered at most (junk kids are random: bounded, with moka's admission).
const MISSING_CAPACITY: u64 = 100_000;

/// Limits on outbound key fetches, for all kids together.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    /// Sustained fetches per second.
    pub per_second: f64,
    /// Fetches allowed at once after a quiet period (the bucket's size).
    pub burst: u32,
    /// Fetches in flight at the same time.
    pub concurrent: usize,
}

impl Default for FetchLimits {
    /// A real install needs one fetch per new kid, and Atlassian signs with a handful of kids:
    /// a few per second is far above honest use.
    fn default() -> Self {
        FetchLimits {
            per_second: 2.0,
            burst: 5,
            concurrent: 2,
        }
    }
}

/// A token bucket: `take` succeeds when a fetch may start now.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, limits: &FetchLimits, now: Instant) -> bool {
        let refill = now.duration_since(self.at).as_secs_f64() * limits.per_second;
        self.tokens = (self.tokens + refill).min(f64::from(limits.burst));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Checks that a `kid` is a plain key id before it goes anywhere near a URL.
///
/// A `kid` is never a path (docs/protocol.md#signed-install-and-install-keys), so only `[A-Za-z0-9._-]` is allowed and `.`/`..`
/// alone are refused: this rules out path traversal (`../x`), extra segments (`a/b`) and
/// pre-encoded separators (`%2F`) without relying on URL encoding being done right.
pub fn validate_kid(kid: &str) -> Result<(), JwtError> {
    let plain = !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid != "."
        && kid != ".."
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain {
        Ok(())
    } else {
        Err(JwtError::InvalidKid)
    }
}

/// Fetches and caches signed-install public keys. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct InstallKeys {
    base_url: Url,
    http: reqwest::Client,
    cache: Cache<String, DecodingKey>,
    /// Kids the key server answered 4xx for (no value: presence is the fact).
    missing: Cache<String, ()>,
    limits: FetchLimits,
    bucket: Arc<Mutex<Bucket>>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl fmt::Debug for InstallKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallKeys")
            .field("base_url", &self.base_url.as_str())
            .field("cached_keys", &self.cache.entry_count())
            .finish()
    }
}

impl InstallKeys {
    /// `base_url` is `INSTALL_KEYS_URL` (with or without a trailing slash or a path); the client is
    /// passed in so that timeouts and TLS set-up are decided in one place by the caller.
    pub fn new(base_url: Url, http: reqwest::Client) -> Self {
        Self::with_limits(base_url, http, FetchLimits::default())
    }

    /// As [`InstallKeys::new`] with other fetch limits.
    pub fn with_limits(base_url: Url, http: reqwest::Client, limits: FetchLimits) -> Self {
        let cache = Cache::builder()
            .max_capacity(CACHE_CAPACITY)
            .time_to_live(CACHE_TTL)
            .build();
        let missing = Cache::builder()
            .max_capacity(MISSING_CAPACITY)
            .time_to_live(MISSING_TTL)
            .build();
        Self {
            base_url,
            http,
            cache,
            missing,
            bucket: Arc::new(Mutex::new(Bucket {
                tokens: f64::from(limits.burst),
                at: Instant::now(),
            })),
            in_flight: Arc::new(tokio::sync::Semaphore::new(limits.concurrent.max(1))),
            limits,
        }
    }

    /// The verification key for `kid`.
    ///
    /// Errors: [`JwtError::InvalidKid`] for a kid that is not a plain id (no request is made),
    /// [`JwtError::UnknownKid`] when the key server answers 4xx (except 408/429),
    /// [`JwtError::KeyUnavailable`] on 5xx, 408, 429, other non-2xx answers, network errors,
    /// timeouts, or a body that is not an RSA public key. Concurrent requests for
    /// the same uncached kid share one fetch.
    pub async fn get(&self, kid: &str) -> Result<DecodingKey, JwtError> {
        validate_kid(kid)?;
        if let Some(key) = self.cache.get(kid).await {
            return Ok(key);
        }
        if self.missing.contains_key(kid) {
            return Err(JwtError::UnknownKid);
        }
        let result = self
            .cache
            .try_get_with_by_ref(kid, self.limited_fetch(kid))
            .await
            .map_err(|err| (*err).clone());
        if matches!(result, Err(JwtError::UnknownKid)) {
            self.missing.insert(kid.to_owned(), ()).await;
        }
        result
    }

    /// [`Self::fetch`] within the global limits; over them, unavailable at once.
    async fn limited_fetch(&self, kid: &str) -> Result<DecodingKey, JwtError> {
        let Ok(_permit) = self.in_flight.try_acquire() else {
            tracing::warn!("install key fetch refused: too many in flight");
            return Err(JwtError::KeyUnavailable);
        };
        let allowed = self
            .bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(&self.limits, Instant::now());
        if !allowed {
            tracing::warn!("install key fetch refused: over the rate limit");
            return Err(JwtError::KeyUnavailable);
        }
        self.fetch(kid).await
    }

    /// `{base}/{kid}` with the kid as exactly one path segment (it is already validated, so it
    /// needs no encoding); any query or fragment of the base is dropped.
    fn key_url(&self, kid: &str) -> Result<Url, JwtError> {
        let mut url = self.base_url.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .map_err(|()| {
                tracing::error!(base_url = %self.base_url, "install key server URL cannot have a path");
                JwtError::KeyUnavailable
            })?
            .pop_if_empty()
            .push(kid);
        Ok(url)
    }

    async fn fetch(&self, kid: &str) -> Result<DecodingKey, JwtError> {
        let url = self.key_url(kid)?;
        let response = self.http.get(url).send().await.map_err(|err| {
            tracing::warn!(kid, error = %err, "install key request failed");
            JwtError::KeyUnavailable
        })?;

        let status = response.status();
        // 408 and 429 are the key server's trouble, not a verdict on the kid: retrying may work.
        let transient = matches!(
            status,
            reqwest::StatusCode::REQUEST_TIMEOUT | reqwest::StatusCode::TOO_MANY_REQUESTS
        );
        if status.is_client_error() && !transient {
            tracing::warn!(
                kid,
                status = status.as_u16(),
                "install key server does not know this kid"
            );
            return Err(JwtError::UnknownKid);
        }
        if !status.is_success() {
            tracing::warn!(kid, status = status.as_u16(), "install key server failed");
            return Err(JwtError::KeyUnavailable);
        }

        let body = read_limited(response, MAX_KEY_BODY_BYTES)
            .await
            .map_err(|e| {
                match e {
                    BodyError::TooLarge => tracing::warn!(kid, "install key response too large"),
                    BodyError::Read(err) => {
                        tracing::warn!(kid, error = %err, "reading install key failed")
                    }
                }
                JwtError::KeyUnavailable
            })?;

        parse_public_key(&body).inspect_err(|_| {
            tracing::warn!(
                kid,
                "install key server answered something that is not an RSA public key"
            );
        })
    }
}

/// Parses a PEM RSA public key, tolerating CRLF line ends and surrounding whitespace (ACSB 2.2.0
/// tripped over line breaks: community.developer.atlassian.com/t/49046).
///
/// `DecodingKey::from_rsa_pem` only checks the PEM and ASN.1 envelope, so the RSA key itself is
/// parsed here as well: a corrupt key then counts as unavailable (and is not cached) instead of
/// turning every later signature check into a misleading "bad signature".
pub fn parse_public_key(pem: &[u8]) -> Result<DecodingKey, JwtError> {
    let text = std::str::from_utf8(pem).map_err(|_| JwtError::KeyUnavailable)?;
    let normalised = text.replace("\r\n", "\n").replace('\r', "\n");
    let key = DecodingKey::from_rsa_pem(normalised.trim().as_bytes())
        .map_err(|_| JwtError::KeyUnavailable)?;
    let der = key
        .try_get_as_bytes()
        .map_err(|_| JwtError::KeyUnavailable)?;
    let provider = CryptoProvider::try_get_default().ok_or(JwtError::KeyUnavailable)?;
    (provider.key_utils.rsa_pub_components_from_public_key)(der)
        .map_err(|_| JwtError::KeyUnavailable)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::jwt::verify_rs256;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const PRIVATE_PEM: &[u8] = include_bytes!("../../tests/fixtures/rsa_private.pem");
    const PUBLIC_PEM: &str = include_str!("../../tests/fixtures/rsa_public.pem");
    const OTHER_PRIVATE_PEM: &[u8] = include_bytes!("../../tests/fixtures/rsa_other_private.pem");

    fn client(timeout: Option<Duration>) -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder();
        if let Some(timeout) = timeout {
            builder = builder.timeout(timeout);
        }
        builder.build().expect("reqwest client")
    }

    /// Limits high enough that the tests below are about fetching, not limiting.
    const GENEROUS: FetchLimits = FetchLimits {
        per_second: 1000.0,
        burst: 1000,
        concurrent: 100,
    };

    fn keys_for(server: &MockServer, suffix: &str) -> InstallKeys {
        let base = Url::parse(&format!("{}{suffix}", server.uri())).expect("base url");
        InstallKeys::with_limits(base, client(None), GENEROUS)
    }

    fn signed_with(private_pem: &[u8], kid: &str) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        let key = EncodingKey::from_rsa_pem(private_pem).expect("private key");
        jsonwebtoken::encode(&header, &json!({"iss": "c", "iat": 1, "exp": 2}), &key).expect("sign")
    }

    async fn serve_key(server: &MockServer, at: &str, body: &str, times: u64) {
        Mock::given(method("GET"))
            .and(path(at))
            .respond_with(ResponseTemplate::new(200).set_body_string(body))
            .expect(times)
            .mount(server)
            .await;
    }

    #[test]
    fn kid_validation() {
        for good in [
            "kid-1",
            "a",
            "A.b_c-9",
            "d4b9b8b6-1f2e-4c3a-9b1a-0123456789ab",
            ".a",
            "a..",
        ] {
            assert_eq!(validate_kid(good), Ok(()), "{good}");
        }
        let long = "k".repeat(MAX_KID_LEN + 1);
        for bad in [
            "", ".", "..", "../x", "a/b", "/a", "a%2Fb", "%2F", "a b", "a?b", "a#b", "a\\b", "ké",
            "a\nb", &long,
        ] {
            assert_eq!(validate_kid(bad), Err(JwtError::InvalidKid), "{bad:?}");
        }
        assert_eq!(validate_kid(&"k".repeat(MAX_KID_LEN)), Ok(()));
    }

    #[test]
    fn parse_tolerates_crlf_and_rejects_garbage() {
        assert!(parse_public_key(PUBLIC_PEM.as_bytes()).is_ok());
        assert!(parse_public_key(PUBLIC_PEM.replace('\n', "\r\n").as_bytes()).is_ok());
        assert!(parse_public_key(format!("\n  {PUBLIC_PEM}\n\n").as_bytes()).is_ok());
        for garbage in [
            &b""[..],
            b"hello",
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            PRIVATE_PEM,
            &[0xff, 0xfe, 0x00],
        ] {
            assert!(
                matches!(parse_public_key(garbage), Err(JwtError::KeyUnavailable)),
                "{}",
                String::from_utf8_lossy(garbage)
            );
        }
    }

    #[tokio::test]
    async fn fetches_verifies_and_caches() {
        let server = MockServer::start().await;
        serve_key(&server, "/kid-1", PUBLIC_PEM, 1).await;
        let keys = keys_for(&server, "");

        let key = keys.get("kid-1").await.expect("key");
        assert!(verify_rs256(&signed_with(PRIVATE_PEM, "kid-1"), &key).is_ok());
        assert_eq!(
            verify_rs256(&signed_with(OTHER_PRIVATE_PEM, "kid-1"), &key).unwrap_err(),
            JwtError::BadSignature
        );

        // Served from the cache: the mock's `expect(1)` fails on drop otherwise.
        let again = keys.get("kid-1").await.expect("cached key");
        assert!(verify_rs256(&signed_with(PRIVATE_PEM, "kid-1"), &again).is_ok());
        server.verify().await;
    }

    #[tokio::test]
    async fn base_url_with_path_and_trailing_slash() {
        let server = MockServer::start().await;
        serve_key(&server, "/keys/kid-2", PUBLIC_PEM, 2).await;
        assert!(keys_for(&server, "/keys").get("kid-2").await.is_ok());
        assert!(keys_for(&server, "/keys/").get("kid-2").await.is_ok());
        server.verify().await;

        let root = MockServer::start().await;
        serve_key(&root, "/kid-3", PUBLIC_PEM, 1).await;
        assert!(keys_for(&root, "/").get("kid-3").await.is_ok());
        root.verify().await;
    }

    #[tokio::test]
    async fn crlf_body_is_accepted() {
        let server = MockServer::start().await;
        serve_key(&server, "/kid-crlf", &PUBLIC_PEM.replace('\n', "\r\n"), 1).await;
        assert!(keys_for(&server, "").get("kid-crlf").await.is_ok());
    }

    #[tokio::test]
    async fn not_found_is_unknown_kid_and_remembered() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/nope"))
            .respond_with(ResponseTemplate::new(404))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/forbidden"))
            .respond_with(ResponseTemplate::new(403))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/busy"))
            .respond_with(ResponseTemplate::new(429))
            .mount(&server)
            .await;
        let keys = keys_for(&server, "");
        assert_eq!(keys.get("nope").await.unwrap_err(), JwtError::UnknownKid);
        assert_eq!(keys.get("nope").await.unwrap_err(), JwtError::UnknownKid);
        assert_eq!(
            keys.get("forbidden").await.unwrap_err(),
            JwtError::UnknownKid
        );
        assert_eq!(
            keys.get("busy").await.unwrap_err(),
            JwtError::KeyUnavailable
        );
        assert_eq!(
            keys.get("busy").await.unwrap_err(),
            JwtError::KeyUnavailable,
            "a transient failure is not remembered as missing"
        );
        assert_eq!(
            server
                .received_requests()
                .await
                .unwrap()
                .iter()
                .filter(|r| r.url.path() == "/busy")
                .count(),
            2
        );
        server.verify().await;
    }

    #[tokio::test]
    async fn fetches_are_rate_and_concurrency_limited() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(404).set_delay(Duration::from_millis(300)))
            .mount(&server)
            .await;
        let base = Url::parse(&server.uri()).expect("base");
        let limits = FetchLimits {
            per_second: 1.0,
            burst: 3,
            concurrent: 2,
        };
        let keys = InstallKeys::with_limits(base, client(None), limits);
        let kids: Vec<String> = (0..20).map(|i| format!("junk-{i}")).collect();
        let results = futures::future::join_all(kids.iter().map(|k| keys.get(k))).await;
        let asked = server.received_requests().await.unwrap().len();
        assert_eq!(asked, 2, "at most `concurrent` fetches at once");
        assert_eq!(
            results
                .iter()
                .filter(|r| matches!(r, Err(JwtError::KeyUnavailable)))
                .count(),
            18
        );
        // Sequentially: the third fetch empties the bucket, the fourth is refused.
        assert_eq!(keys.get("junk-a").await.unwrap_err(), JwtError::UnknownKid);
        assert_eq!(
            keys.get("junk-b").await.unwrap_err(),
            JwtError::KeyUnavailable
        );
        assert_eq!(server.received_requests().await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn server_error_is_unavailable_and_retried_later() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/flaky"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
        serve_key(&server, "/flaky", PUBLIC_PEM, 1).await;
        let keys = keys_for(&server, "");
        assert_eq!(
            keys.get("flaky").await.unwrap_err(),
            JwtError::KeyUnavailable
        );
        assert!(
            keys.get("flaky").await.is_ok(),
            "failure must not be cached"
        );
        server.verify().await;
    }

    #[tokio::test]
    async fn internal_server_error_is_unavailable() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(500))
            .mount(&server)
            .await;
        assert_eq!(
            keys_for(&server, "").get("kid").await.unwrap_err(),
            JwtError::KeyUnavailable
        );
    }

    #[tokio::test]
    async fn bad_kids_never_reach_the_server() {
        let server = MockServer::start().await;
        Mock::given(wiremock::matchers::any())
            .respond_with(ResponseTemplate::new(200).set_body_string(PUBLIC_PEM))
            .expect(0)
            .mount(&server)
            .await;
        let keys = keys_for(&server, "/keys");
        for bad in ["../x", "a/b", "", "%2F", "..", ".", "x?y=1", "x#y"] {
            assert_eq!(
                keys.get(bad).await.unwrap_err(),
                JwtError::InvalidKid,
                "{bad:?}"
            );
        }
        server.verify().await;
    }

    #[tokio::test]
    async fn garbage_and_oversized_bodies_are_unavailable() {
        let server = MockServer::start().await;
        serve_key(&server, "/garbage", "<html>not a key</html>", 2).await;
        serve_key(&server, "/huge", &"A".repeat(MAX_KEY_BODY_BYTES + 1), 1).await;
        let keys = keys_for(&server, "");
        assert_eq!(
            keys.get("garbage").await.unwrap_err(),
            JwtError::KeyUnavailable
        );
        assert_eq!(
            keys.get("garbage").await.unwrap_err(),
            JwtError::KeyUnavailable
        );
        assert_eq!(
            keys.get("huge").await.unwrap_err(),
            JwtError::KeyUnavailable
        );
        server.verify().await;
    }

    #[tokio::test]
    async fn timeout_is_unavailable() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/slow"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_string(PUBLIC_PEM)
                    .set_delay(Duration::from_secs(2)),
            )
            .mount(&server)
            .await;
        let base = Url::parse(&server.uri()).expect("base");
        let keys = InstallKeys::new(base, client(Some(Duration::from_millis(100))));
        assert_eq!(
            keys.get("slow").await.unwrap_err(),
            JwtError::KeyUnavailable
        );
    }

    #[tokio::test]
    async fn unreachable_server_is_unavailable() {
        // Bind and drop a listener to get a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let base = Url::parse(&format!("http://127.0.0.1:{port}")).expect("base");
        let keys = InstallKeys::new(base, client(Some(Duration::from_secs(2))));
        assert_eq!(keys.get("kid").await.unwrap_err(), JwtError::KeyUnavailable);
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_fetch() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/shared"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_string(PUBLIC_PEM)
                    .set_delay(Duration::from_millis(200)),
            )
            .expect(1)
            .mount(&server)
            .await;
        let keys = keys_for(&server, "");
        let results = futures::future::join_all((0..8).map(|_| keys.get("shared"))).await;
        assert!(results.iter().all(Result::is_ok));
        server.verify().await;
    }
}
