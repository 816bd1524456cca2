//! Connect JWT verification, split into small checks that callers compose in the order the
//! protocol demands (docs/protocol.md#signed-install-and-install-keys for signed installs,
//! docs/protocol.md#jwt-on-product-requests for product requests).
//!
//! The pieces are separate because the order matters for security: the tenant (and so the secret)
//! is chosen from the *unverified* `iss` via [`peek`], the signature is checked with an algorithm
//! pinned by the route rather than taken from the token, and only then are the claims trusted.
//! Time checks take `now` as an argument so that tests and the interop vectors (issued in 2016) can
//! use a fixed clock; `jsonwebtoken`'s own clock-based checks are switched off.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::qsh::{CONTEXT_QSH, form_decode_cow};

/// Longer tokens, Connect JWTs and Forge Invocation Tokens alike, are refused before any other
/// work (decoding, a cache look-up); real ones are well under 2 KiB.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Claims a Connect token may carry; unknown claims are ignored.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// A string or an array of strings, depending on the issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    #[serde(
        default,
        deserialize_with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub iat: Option<i64>,
    #[serde(
        default,
        deserialize_with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub exp: Option<i64>,
    #[serde(
        default,
        deserialize_with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qsh: Option<String>,
    // `context` (user details in old tokens, `{}` in current ones) is not read by anything
    // here, so it is skipped while parsing rather than built into a JSON tree per request.
}

/// RFC 7519 NumericDate may be fractional; it is floored so that a fractional `exp` never extends a
/// token's life. Anything that is not a number of plausible size makes the token malformed.
pub(crate) fn numeric_date<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(i) = number.as_i64() {
        return Ok(Some(i));
    }
    match number.as_f64() {
        Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(Some(f.floor() as i64)),
        _ => Err(serde::de::Error::custom("numeric date out of range")),
    }
}

/// Why a token was refused. Messages are safe to log and to return to clients: they never contain
/// the token, a secret or a claim value (only a sanitised `alg` name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("no JWT in the request")]
    Missing,
    #[error("the JWT is malformed")]
    Malformed,
    #[error("JWT algorithm {0:?} is not allowed here")]
    Algorithm(String),
    #[error("the JWT header has no key id (kid)")]
    MissingKid,
    #[error("the JWT key id (kid) is not a valid key id")]
    InvalidKid,
    #[error("the JWT key id (kid) is unknown to the key server")]
    UnknownKid,
    #[error("the public key for the JWT could not be obtained")]
    KeyUnavailable,
    #[error("the JWT signature is invalid")]
    BadSignature,
    #[error("the JWT has expired")]
    Expired,
    #[error("the JWT is not valid yet (nbf)")]
    NotYetValid,
    #[error("the JWT was issued in the future (iat)")]
    IssuedInFuture,
    #[error("the JWT lacks the required claim {0:?}")]
    MissingClaim(&'static str),
    #[error("the JWT audience (aud) does not match this app")]
    WrongAudience,
    #[error("the JWT query string hash (qsh) does not match the request")]
    QshMismatch,
    #[error("a context JWT is not accepted on this endpoint")]
    ContextTokenNotAllowed,
}

impl JwtError {
    /// A stable snake_case label for metrics and structured logs.
    pub fn reason(&self) -> &'static str {
        match self {
            JwtError::Missing => "missing_token",
            JwtError::Malformed => "malformed",
            JwtError::Algorithm(_) => "bad_algorithm",
            JwtError::MissingKid | JwtError::InvalidKid => "bad_kid",
            JwtError::UnknownKid => "unknown_kid",
            JwtError::KeyUnavailable => "key_unavailable",
            JwtError::BadSignature => "bad_signature",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::IssuedInFuture => "issued_in_future",
            JwtError::MissingClaim(_) => "missing_claim",
            JwtError::WrongAudience => "wrong_audience",
            JwtError::QshMismatch => "qsh_mismatch",
            JwtError::ContextTokenNotAllowed => "context_token_not_allowed",
        }
    }

    /// Builds [`JwtError::Algorithm`] from a token's `alg`. Use this rather than the variant
    /// directly: the `alg` is attacker-chosen text that ends up in logs and error bodies, so it is
    /// cut to 20 characters and stripped of anything but printable ASCII.
    pub fn bad_algorithm(alg: &str) -> Self {
        let clean: String = alg
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(20)
            .collect();
        JwtError::Algorithm(clean)
    }
}

/// The unverified JOSE header fields the caller dispatches on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    pub alg: String,
    pub kid: Option<String>,
}

/// The header as parsed: `alg` borrowed from the decoded bytes when it has no escapes; `kid`
/// as any JSON value so that a non-string `kid` can be told apart (`InvalidKid`).
#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow)]
    alg: Option<Cow<'a, str>>,
    kid: Option<serde_json::Value>,
}

/// Decoded segments up to this size stay on the stack (a product token's claims are ~200
/// bytes); longer ones are decoded into a heap buffer.
const STACK_SEGMENT: usize = 768;

/// Decodes one base64url segment and hands the bytes to `parse`, without a heap allocation for
/// the usual sizes. Padding, other alphabets and non-canonical trailing bits are refused.
fn with_b64<T>(
    segment: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, JwtError>,
) -> Result<T, JwtError> {
    if segment.len() / 4 * 3 + 3 <= STACK_SEGMENT {
        let mut buf = [0u8; STACK_SEGMENT];
        let n = URL_SAFE_NO_PAD
            .decode_slice(segment, &mut buf)
            .map_err(|_| JwtError::Malformed)?;
        parse(&buf[..n])
    } else {
        let bytes = URL_SAFE_NO_PAD
            .decode(segment)
            .map_err(|_| JwtError::Malformed)?;
        parse(&bytes)
    }
}

fn b64_json<T: serde::de::DeserializeOwned>(segment: &str) -> Result<T, JwtError> {
    with_b64(segment, |bytes| {
        serde_json::from_slice(bytes).map_err(|_| JwtError::Malformed)
    })
}

/// The three dot-separated segments of a compact JWS (header, payload, signature), or `None`
/// for anything else and for a token longer than `max_len`: the first check of every token,
/// Connect's and Forge's, before any decoding work.
pub fn segments(token: &str, max_len: usize) -> Option<(&str, &str, &str)> {
    if token.len() > max_len {
        return None;
    }
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(payload), Some(signature), None) => Some((header, payload, signature)),
        _ => None,
    }
}

/// Decodes header and claims WITHOUT verifying anything, so the caller can pick the tenant by `iss`
/// and the key by `alg`/`kid`. Nothing returned here may be trusted until a `verify_*` function
/// has succeeded. Any `alg` string is returned as is (including `none`); refusing it is the job of
/// the `verify_*` functions, which pin the algorithm.
pub fn peek(token: &str) -> Result<(TokenHeader, Claims), JwtError> {
    let (header, payload, _signature) =
        segments(token, MAX_TOKEN_LEN).ok_or(JwtError::Malformed)?;

    let (alg, kid) = with_b64(header, |bytes| {
        let raw: RawHeader<'_> = serde_json::from_slice(bytes).map_err(|_| JwtError::Malformed)?;
        let alg = raw.alg.ok_or(JwtError::Malformed)?.into_owned();
        let kid = match raw.kid {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(kid)) => Some(kid),
            Some(_) => return Err(JwtError::InvalidKid),
        };
        Ok((alg, kid))
    })?;
    let claims: Claims = b64_json(payload)?;
    Ok((TokenHeader { alg, kid }, claims))
}

/// Verifies an HS256 token signed with a tenant's shared secret. Only the signature is checked;
/// time, audience and qsh checks are separate. Any other `alg` (including HS384/HS512, which the
/// product never issues) is refused before the key is touched. An empty secret verifies nothing.
pub fn verify_hs256(token: &str, secret: &[u8]) -> Result<Claims, JwtError> {
    let (header, claims) = peek(token)?;
    if header.alg != "HS256" {
        return Err(JwtError::bad_algorithm(&header.alg));
    }
    Hs256Key::new(secret).verify(token)?;
    Ok(claims)
}

/// A tenant's HS256 key with the HMAC pads of the secret hashed once ([`hmac::Hmac`] keeps
/// the keyed state), so that verifying a token costs only its own blocks. Build it once per
/// secret (the tenant cache does) rather than per request.
#[derive(Clone)]
pub struct Hs256Key {
    /// `None` for an empty secret, which verifies nothing.
    mac: Option<hmac::Hmac<Sha256>>,
}

/// The key is a secret: never in a log line.
impl std::fmt::Debug for Hs256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hs256Key(..)")
    }
}

impl Hs256Key {
    pub fn new(secret: &[u8]) -> Hs256Key {
        Hs256Key {
            mac: (!secret.is_empty())
                .then(|| hmac::Hmac::<Sha256>::new_from_slice(secret).ok())
                .flatten(),
        }
    }

    /// Checks the signature of `header.claims.signature` in constant time. The caller has
    /// already pinned the algorithm to HS256 (see [`verify_hs256`]); nothing but the signature
    /// is checked here. A signature that is not canonical unpadded base64url is malformed.
    pub fn verify(&self, token: &str) -> Result<(), JwtError> {
        let (message, signature) = token.rsplit_once('.').ok_or(JwtError::Malformed)?;
        let Some(mac) = &self.mac else {
            return Err(JwtError::BadSignature);
        };
        with_b64(signature, |tag| {
            let mut mac = mac.clone();
            mac.update(message.as_bytes());
            mac.verify_slice(tag).map_err(|_| JwtError::BadSignature)
        })
    }

    /// The raw HMAC-SHA256 of `message` (an empty secret signs with an empty key).
    fn sign(secret: &[u8], message: &[u8]) -> [u8; 32] {
        let mut mac =
            hmac::Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
        mac.update(message);
        mac.finalize().into_bytes().into()
    }
}

/// Verifies an RS256 token (signed install) with a public key from [`super::install_keys`].
/// The `alg` is pinned so that an HS256 token "signed" with the public key text can never pass.
pub fn verify_rs256(token: &str, key: &DecodingKey) -> Result<Claims, JwtError> {
    let (header, claims) = peek(token)?;
    if header.alg != "RS256" {
        return Err(JwtError::bad_algorithm(&header.alg));
    }
    verify_signature(token, key, Algorithm::RS256)?;
    Ok(claims)
}

/// Signature only: `jsonwebtoken` compares in constant time, but its clock-based checks are
/// disabled because the caller supplies the clock to [`check_times`].
fn verify_signature(token: &str, key: &DecodingKey, alg: Algorithm) -> Result<(), JwtError> {
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    match jsonwebtoken::decode::<serde_json::Value>(token, key, &validation) {
        Ok(_) => Ok(()),
        Err(err) => Err(match err.kind() {
            ErrorKind::InvalidSignature => JwtError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                JwtError::bad_algorithm(alg_name(alg))
            }
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_)
            | ErrorKind::InvalidClaimFormat(_) => JwtError::Malformed,
            _ => JwtError::BadSignature,
        }),
    }
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        _ => "other",
    }
}

/// Checks `exp`, `iat` and `nbf` against the caller's clock (seconds since the epoch).
///
/// `exp` and `iat` are required (as connect-spring-boot and atlassian-connect-play do; docs/protocol.md#jwt-on-product-requests). With leeway `L` a token is
/// accepted up to and including `exp + L` and refused from `exp + L + 1` on (the Java reference and
/// `jsonwebtoken` use the same `now > exp + L` rule). `nbf` and `iat` may lie at most `L` seconds in
/// the future. Arithmetic saturates, so absurd claim values cannot overflow into acceptance.
pub fn check_times(claims: &Claims, now: i64, leeway_secs: u64) -> Result<(), JwtError> {
    let leeway = i64::try_from(leeway_secs).unwrap_or(i64::MAX);
    let exp = claims.exp.ok_or(JwtError::MissingClaim("exp"))?;
    let iat = claims.iat.ok_or(JwtError::MissingClaim("iat"))?;
    if now > exp.saturating_add(leeway) {
        return Err(JwtError::Expired);
    }
    let latest_allowed = now.saturating_add(leeway);
    if claims.nbf.is_some_and(|nbf| nbf > latest_allowed) {
        return Err(JwtError::NotYetValid);
    }
    if iat > latest_allowed {
        return Err(JwtError::IssuedInFuture);
    }
    Ok(())
}

/// Checks that the token was minted for this app (signed installs carry `aud` = the descriptor
/// `baseUrl`). Accepts a string or a one-element array; one trailing slash is ignored on both
/// sides because Atlassian and configurations disagree about it. A missing `aud` fails: otherwise a
/// token meant for another app would do.
pub fn check_audience(claims: &Claims, app_base_url: &str) -> Result<(), JwtError> {
    let aud = match &claims.aud {
        Some(serde_json::Value::String(aud)) => aud.as_str(),
        Some(serde_json::Value::Array(items)) if items.len() == 1 => {
            items[0].as_str().ok_or(JwtError::WrongAudience)?
        }
        _ => return Err(JwtError::WrongAudience),
    };
    let normalise = |s: &str| s.strip_suffix('/').unwrap_or(s).to_owned();
    if normalise(aud) == normalise(app_base_url) {
        Ok(())
    } else {
        Err(JwtError::WrongAudience)
    }
}

/// Which tokens an endpoint accepts, by `qsh`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QshPolicy {
    /// Iframe pages, webhooks, lifecycle callbacks: the token must be bound to this request.
    RequestOnly,
    /// App API calls from the front end: a bound token or a context token (`context-qsh`).
    RequestOrContext,
}

/// What kind of token passed the `qsh` check. Context tokens cover no query parameters, so anything
/// read from the query (such as `lic`) must not be trusted for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    QueryBound,
    Context,
}

/// Checks `qsh` against an already computed expected value; see [`check_qsh_with`].
pub fn check_qsh(
    claims: &Claims,
    expected_qsh: &str,
    policy: QshPolicy,
) -> Result<TokenKind, JwtError> {
    check_qsh_with(claims, policy, || expected_qsh.to_owned())
}

/// Checks `qsh`, computing the expected hash only when the token claims to be request-bound.
///
/// A missing `qsh` is always refused (one third-party library lets it pass; docs/protocol.md#signed-install-and-install-keys), and a context
/// token is only accepted where the policy allows it, never silently on a request-bound endpoint.
pub fn check_qsh_with(
    claims: &Claims,
    policy: QshPolicy,
    expected_qsh: impl FnOnce() -> String,
) -> Result<TokenKind, JwtError> {
    let claimed = claims.qsh.as_deref().ok_or(JwtError::MissingClaim("qsh"))?;
    if claimed == CONTEXT_QSH {
        return match policy {
            QshPolicy::RequestOrContext => Ok(TokenKind::Context),
            QshPolicy::RequestOnly => Err(JwtError::ContextTokenNotAllowed),
        };
    }
    let expected = expected_qsh();
    if bool::from(claimed.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(TokenKind::QueryBound)
    } else {
        Err(JwtError::QshMismatch)
    }
}

/// Finds the token of a request: `Authorization: JWT <token>` (exact, case-sensitive scheme as in
/// ACE) or the `jwt` query parameter (iframes). Two different tokens are refused rather than
/// choosing one, since which one a proxy or the app would honour is ambiguous (docs/protocol.md#jwt-on-product-requests). An
/// `Authorization` header with another scheme is not ours and is ignored.
pub fn extract_token<'a>(
    authorization_header: Option<&'a str>,
    raw_query: &'a str,
) -> Result<Option<Cow<'a, str>>, JwtError> {
    let from_header = match authorization_header.and_then(|h| h.strip_prefix("JWT ")) {
        Some(token) => {
            let token = token.trim();
            if token.is_empty() {
                return Err(JwtError::Malformed);
            }
            Some(token)
        }
        None => None,
    };

    let mut from_query: Option<Cow<'a, str>> = None;
    for segment in raw_query.split('&').filter(|s| !s.is_empty()) {
        let (name, value) = segment.split_once('=').unwrap_or((segment, ""));
        if form_decode_cow(name) != "jwt" {
            continue;
        }
        // A token is base64url and dots: borrowed as is, decoded only if encoded.
        let value = form_decode_cow(value);
        if value.is_empty() {
            return Err(JwtError::Malformed);
        }
        match &from_query {
            Some(previous) if *previous != value => return Err(JwtError::Malformed),
            _ => from_query = Some(value),
        }
    }

    match (from_header, from_query) {
        (Some(h), Some(q)) if h != q => Err(JwtError::Malformed),
        (Some(h), _) => Ok(Some(Cow::Borrowed(h))),
        (None, q) => Ok(q),
    }
}

/// Signs claims as an HS256 JWT (header `{"alg":"HS256","typ":"JWT"}`).
///
/// HMAC is computed here with `hmac` rather than through `jsonwebtoken`, whose key constructor
/// refuses an empty secret; this keeps signing infallible. A token signed with an empty secret is
/// still refused by [`verify_hs256`].
pub fn sign_hs256(claims: &serde_json::Value, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let signature = Hs256Key::sign(secret, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::qsh::qsh_for_url;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const INTEROP_SECRET: &str = "7512836e-9137-48ac-baaf-a1935b96e17a";
    const INTEROP_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJxc2giOiJiZTE2OTEwODU4YTQxZmQxOWVhNWMxYjRlOWRlY2NhOWE3ODRkMTAyNGNiMDBiMjE1OGRlZmUyZjI5ZGM4NmRkIiwiY29udGV4dCI6e30sImlzcyI6ImppcmE6MTIzNC01Njc4LTkwMDAiLCJleHAiOjE0NjY3MzEyNTUsImlhdCI6MTQ2NjczMTA3NX0.ssbmLUBemh6nQW3MH5o2fSdnOFTIKf2w0KASnnH8aXo";
    const PRIVATE_PEM: &[u8] = include_bytes!("../../tests/fixtures/rsa_private.pem");
    const PUBLIC_PEM: &[u8] = include_bytes!("../../tests/fixtures/rsa_public.pem");
    const OTHER_PUBLIC_PEM: &[u8] = include_bytes!("../../tests/fixtures/rsa_other_public.pem");

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn rs256(claims: &serde_json::Value, kid: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_owned);
        let key = EncodingKey::from_rsa_pem(PRIVATE_PEM).expect("private key");
        jsonwebtoken::encode(&header, claims, &key).expect("sign RS256")
    }

    fn public_key() -> DecodingKey {
        DecodingKey::from_rsa_pem(PUBLIC_PEM).expect("public key")
    }

    fn claims_at(now: i64) -> Claims {
        Claims {
            iat: Some(now),
            exp: Some(now + 180),
            ..Claims::default()
        }
    }

    #[test]
    fn interop_token_verifies_and_is_expired_in_real_time() {
        let claims = verify_hs256(INTEROP_TOKEN, INTEROP_SECRET.as_bytes()).expect("valid HMAC");
        assert_eq!(claims.iss.as_deref(), Some("jira:1234-5678-9000"));
        assert_eq!(claims.exp, Some(1_466_731_255));
        assert_eq!(claims.iat, Some(1_466_731_075));

        let real_now = chrono::Utc::now().timestamp();
        assert_eq!(check_times(&claims, real_now, 30), Err(JwtError::Expired));
        assert_eq!(check_times(&claims, 1_466_731_100, 0), Ok(()));

        let url = format!("https://example.com/test?param=value&jwt={INTEROP_TOKEN}");
        let expected = qsh_for_url("GET", &url, "https://example.com");
        assert_eq!(
            check_qsh(&claims, &expected, QshPolicy::RequestOnly),
            Ok(TokenKind::QueryBound)
        );
    }

    #[test]
    fn interop_token_with_wrong_secret_or_tampering_is_refused() {
        assert_eq!(
            verify_hs256(INTEROP_TOKEN, b"another-secret").unwrap_err(),
            JwtError::BadSignature
        );
        assert_eq!(
            verify_hs256(INTEROP_TOKEN, b"").unwrap_err(),
            JwtError::BadSignature
        );
        let (head, rest) = INTEROP_TOKEN.split_once('.').expect("dot");
        let (_, sig) = rest.split_once('.').expect("dot");
        let forged_payload = b64(r#"{"iss":"jira:1234-5678-9000","exp":9999999999,"iat":1}"#);
        let forged = format!("{head}.{forged_payload}.{sig}");
        assert_eq!(
            verify_hs256(&forged, INTEROP_SECRET.as_bytes()).unwrap_err(),
            JwtError::BadSignature
        );
    }

    #[test]
    fn sign_hs256_round_trips_and_matches_jsonwebtoken() {
        let claims = json!({"iss": "app", "iat": 1, "exp": 2, "qsh": "abc"});
        let token = sign_hs256(&claims, b"s3cret");
        let verified = verify_hs256(&token, b"s3cret").expect("verify own token");
        assert_eq!(verified.iss.as_deref(), Some("app"));
        assert_eq!(verified.qsh.as_deref(), Some("abc"));
        let (header, _) = peek(&token).expect("peek");
        assert_eq!(header.alg, "HS256");

        let reference = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s3cret").expect("key"),
        )
        .expect("encode");
        // Both implementations accept each other's tokens.
        assert!(verify_hs256(&reference, b"s3cret").is_ok());
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let decoded = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_secret(b"s3cret").expect("key"),
            &validation,
        )
        .expect("jsonwebtoken accepts our token");
        assert_eq!(decoded.claims, claims);
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex::encode(Hs256Key::sign(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than one block is hashed first.
        assert_eq!(
            hex::encode(Hs256Key::sign(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let token = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(r#"{"iss":"x","iat":1,"exp":2}"#)
        );
        let (header, _) = peek(&token).expect("peek tolerates alg none");
        assert_eq!(header.alg, "none");
        assert_eq!(
            verify_hs256(&token, b"secret").unwrap_err(),
            JwtError::Algorithm("none".into())
        );
        assert_eq!(
            verify_rs256(&token, &public_key()).unwrap_err(),
            JwtError::Algorithm("none".into())
        );
    }

    #[test]
    fn unknown_alg_does_not_panic() {
        let token = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"XX999\u0000<script>aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#),
            b64("{}")
        );
        match verify_hs256(&token, b"secret") {
            Err(JwtError::Algorithm(alg)) => {
                assert!(alg.len() <= 20);
                assert!(alg.chars().all(|c| c.is_ascii_graphic()));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn hs384_is_refused() {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &json!({"iat": 1, "exp": 2}),
            &EncodingKey::from_secret(b"secret").expect("key"),
        )
        .expect("encode");
        assert_eq!(
            verify_hs256(&token, b"secret").unwrap_err(),
            JwtError::Algorithm("HS384".into())
        );
    }

    #[test]
    fn rs256_token_is_refused_by_hs256_verification() {
        let token = rs256(&json!({"iat": 1, "exp": 2}), Some("k1"));
        assert_eq!(
            verify_hs256(&token, b"secret").unwrap_err(),
            JwtError::Algorithm("RS256".into())
        );
    }

    #[test]
    fn rs256_verifies_with_the_right_key_only() {
        let token = rs256(
            &json!({"iss": "client", "aud": ["https://app.example.com"], "iat": 1, "exp": 2}),
            Some("kid-1"),
        );
        let (header, _) = peek(&token).expect("peek");
        assert_eq!(header.kid.as_deref(), Some("kid-1"));
        let claims = verify_rs256(&token, &public_key()).expect("valid RS256");
        assert_eq!(claims.iss.as_deref(), Some("client"));

        let other = DecodingKey::from_rsa_pem(OTHER_PUBLIC_PEM).expect("other key");
        assert_eq!(
            verify_rs256(&token, &other).unwrap_err(),
            JwtError::BadSignature
        );
    }

    #[test]
    fn alg_confusion_hs256_signed_with_public_key_pem_is_refused() {
        let claims = json!({"iss": "client", "iat": 1, "exp": 2});
        let token = sign_hs256(&claims, PUBLIC_PEM);
        // The attack works against a verifier that takes the algorithm from the token...
        assert!(verify_hs256(&token, PUBLIC_PEM).is_ok());
        // ...which is why the RS256 path pins its algorithm.
        assert_eq!(
            verify_rs256(&token, &public_key()).unwrap_err(),
            JwtError::Algorithm("HS256".into())
        );
    }

    #[test]
    fn malformed_tokens() {
        for token in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "!!!.e30.sig",
            &format!("{}.!!!.sig", b64(r#"{"alg":"HS256"}"#)),
            &format!("{}.{}.sig", b64("not json"), b64("{}")),
            &format!("{}.{}.sig", b64(r#"{"typ":"JWT"}"#), b64("{}")),
            &format!("{}.{}.sig", b64(r#"{"alg":7}"#), b64("{}")),
            &format!("{}.{}.sig", b64(r#"{"alg":"HS256"}"#), b64("[1,2]")),
            &format!(
                "{}.{}.sig",
                b64(r#"{"alg":"HS256"}"#),
                b64(r#"{"exp":"soon"}"#)
            ),
            &format!("{}.{}.sig", b64(r#"{"alg":"HS256"}"#), b64(r#"{"iss":5}"#)),
        ] {
            assert_eq!(peek(token).unwrap_err(), JwtError::Malformed, "{token}");
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(peek(&long).unwrap_err(), JwtError::Malformed);
        let numeric_kid = format!("{}.{}.s", b64(r#"{"alg":"RS256","kid":5}"#), b64("{}"));
        assert_eq!(peek(&numeric_kid).unwrap_err(), JwtError::InvalidKid);
    }

    #[test]
    fn bad_signature_encoding_is_refused() {
        let (message, _) = INTEROP_TOKEN.rsplit_once('.').expect("dot");
        let token = format!("{message}.***");
        assert!(matches!(
            verify_hs256(&token, INTEROP_SECRET.as_bytes()),
            Err(JwtError::Malformed | JwtError::BadSignature)
        ));
    }

    #[test]
    fn fractional_and_unknown_claims() {
        let token = format!(
            "{}.{}.s",
            b64(r#"{"alg":"HS256"}"#),
            b64(r#"{"iat":10.9,"exp":20.5,"extra":{"x":1},"sub":"acc"}"#)
        );
        let (_, claims) = peek(&token).expect("peek");
        assert_eq!(claims.iat, Some(10));
        assert_eq!(claims.exp, Some(20));
        assert_eq!(claims.sub.as_deref(), Some("acc"));
    }

    #[test]
    fn time_leeway_edges() {
        let now = 1_000_000;
        let mut c = claims_at(now - 1000);
        c.exp = Some(now - 30);
        assert_eq!(check_times(&c, now, 30), Ok(()), "exactly at exp + leeway");
        c.exp = Some(now - 31);
        assert_eq!(check_times(&c, now, 30), Err(JwtError::Expired));
        c.exp = Some(now);
        assert_eq!(check_times(&c, now, 0), Ok(()));
        c.exp = Some(now - 1);
        assert_eq!(check_times(&c, now, 0), Err(JwtError::Expired));

        let mut c = claims_at(now);
        c.nbf = Some(now + 30);
        assert_eq!(check_times(&c, now, 30), Ok(()));
        c.nbf = Some(now + 31);
        assert_eq!(check_times(&c, now, 30), Err(JwtError::NotYetValid));

        let mut c = claims_at(now);
        c.iat = Some(now + 30);
        assert_eq!(check_times(&c, now, 30), Ok(()));
        c.iat = Some(now + 31);
        assert_eq!(check_times(&c, now, 30), Err(JwtError::IssuedInFuture));

        let mut c = claims_at(now);
        c.exp = None;
        assert_eq!(check_times(&c, now, 30), Err(JwtError::MissingClaim("exp")));
        let mut c = claims_at(now);
        c.iat = None;
        assert_eq!(check_times(&c, now, 30), Err(JwtError::MissingClaim("iat")));

        let mut c = claims_at(now);
        c.exp = Some(i64::MAX);
        assert_eq!(check_times(&c, now, u64::MAX), Ok(()));
        c.exp = Some(i64::MIN);
        assert_eq!(check_times(&c, now, 30), Err(JwtError::Expired));
    }

    #[test]
    fn audience_variants() {
        let with = |aud: serde_json::Value| Claims {
            aud: Some(aud),
            ..Claims::default()
        };
        let base = "https://app.example.com";
        assert_eq!(check_audience(&with(json!(base)), base), Ok(()));
        assert_eq!(check_audience(&with(json!([base])), base), Ok(()));
        assert_eq!(
            check_audience(&with(json!("https://app.example.com/")), base),
            Ok(())
        );
        assert_eq!(
            check_audience(&with(json!([base])), "https://app.example.com/"),
            Ok(())
        );
        assert_eq!(
            check_audience(
                &with(json!("https://app.example.com/acme/")),
                "https://app.example.com/acme"
            ),
            Ok(())
        );
        for wrong in [
            json!("https://evil.example.com"),
            json!("https://app.example.com/other"),
            json!("https://app.example.com//"),
            json!([]),
            json!([base, "https://evil.example.com"]),
            json!([1]),
            json!(null),
            json!({"aud": base}),
        ] {
            assert_eq!(
                check_audience(&with(wrong.clone()), base),
                Err(JwtError::WrongAudience),
                "{wrong}"
            );
        }
        assert_eq!(
            check_audience(&Claims::default(), base),
            Err(JwtError::WrongAudience)
        );
    }

    #[test]
    fn qsh_policy_matrix() {
        let with = |qsh: Option<&str>| Claims {
            qsh: qsh.map(str::to_owned),
            ..Claims::default()
        };
        let expected = "a".repeat(64);
        let bound = with(Some(&expected));
        let context = with(Some(CONTEXT_QSH));
        let wrong = with(Some(&"b".repeat(64)));
        let missing = with(None);

        use QshPolicy::*;
        for policy in [RequestOnly, RequestOrContext] {
            assert_eq!(
                check_qsh(&bound, &expected, policy),
                Ok(TokenKind::QueryBound)
            );
            assert_eq!(
                check_qsh(&wrong, &expected, policy),
                Err(JwtError::QshMismatch)
            );
            assert_eq!(
                check_qsh(&missing, &expected, policy),
                Err(JwtError::MissingClaim("qsh"))
            );
            assert_eq!(
                check_qsh(&with(Some("")), &expected, policy),
                Err(JwtError::QshMismatch)
            );
        }
        assert_eq!(
            check_qsh(&context, &expected, RequestOnly),
            Err(JwtError::ContextTokenNotAllowed)
        );
        assert_eq!(
            check_qsh(&context, &expected, RequestOrContext),
            Ok(TokenKind::Context)
        );
        // The expected hash is never computed for a context token.
        assert_eq!(
            check_qsh_with(&context, RequestOrContext, || panic!("computed")),
            Ok(TokenKind::Context)
        );
    }

    #[test]
    fn extract_token_cases() {
        assert_eq!(extract_token(None, ""), Ok(None));
        assert_eq!(extract_token(None, "a=1&b=2"), Ok(None));
        assert_eq!(
            extract_token(Some("JWT abc.def.ghi"), ""),
            Ok(Some("abc.def.ghi".into()))
        );
        assert_eq!(
            extract_token(None, "x=1&jwt=abc.def.ghi&lic=active"),
            Ok(Some("abc.def.ghi".into()))
        );
        assert_eq!(
            extract_token(Some("JWT abc.def.ghi"), "jwt=abc.def.ghi"),
            Ok(Some("abc.def.ghi".into()))
        );
        assert_eq!(
            extract_token(Some("JWT abc.def.ghi"), "jwt=xyz.def.ghi"),
            Err(JwtError::Malformed)
        );
        assert_eq!(
            extract_token(None, "jwt=a.b.c&jwt=d.e.f"),
            Err(JwtError::Malformed)
        );
        assert_eq!(extract_token(None, "jwt="), Err(JwtError::Malformed));
        assert_eq!(extract_token(Some("JWT "), ""), Err(JwtError::Malformed));
        // Other schemes and a lower-case prefix are not Connect tokens.
        assert_eq!(extract_token(Some("Bearer abc"), ""), Ok(None));
        assert_eq!(extract_token(Some("jwt abc"), ""), Ok(None));
        assert_eq!(
            extract_token(Some("Bearer abc"), "jwt=a.b.c"),
            Ok(Some("a.b.c".into()))
        );
        // The query value is form-decoded; the name match is exact.
        assert_eq!(extract_token(None, "jwt=a%2Eb.c"), Ok(Some("a.b.c".into())));
        assert_eq!(extract_token(None, "JWT=a.b.c"), Ok(None));
    }

    #[test]
    fn reasons_and_messages() {
        let all = [
            JwtError::Missing,
            JwtError::Malformed,
            JwtError::Algorithm("none".into()),
            JwtError::MissingKid,
            JwtError::InvalidKid,
            JwtError::UnknownKid,
            JwtError::KeyUnavailable,
            JwtError::BadSignature,
            JwtError::Expired,
            JwtError::NotYetValid,
            JwtError::IssuedInFuture,
            JwtError::MissingClaim("exp"),
            JwtError::WrongAudience,
            JwtError::QshMismatch,
            JwtError::ContextTokenNotAllowed,
        ];
        for err in all {
            let reason = err.reason();
            assert!(
                reason.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{reason}"
            );
            assert!(!err.to_string().is_empty());
        }
        assert_eq!(JwtError::Missing.reason(), "missing_token");
        assert_eq!(JwtError::MissingKid.reason(), "bad_kid");
    }
}
