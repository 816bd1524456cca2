//! The Forge License API: `GET {FORGE_API_URL}/forge/app/v1/license`, called with an
//! installation's app system token (the `x-forge-oauth-system` header Forge sends to a remote).
//! It is the Forge counterpart of the Connect product licence endpoint read by
//! `crate::host_license`.
//!
//! Wire format (developer.atlassian.com/platform/forge/apis-reference/license-api/):
//! * no `appId` query parameter: the calling app's own licence on the token's installation;
//! * `200` with `{"results": [{"appId", "data": {…}} | {"appId", "error": {"type", "message"}}]}`;
//!   `data` has the fields of a FIT's `app.license` (`active`, `isEvaluation`, `trialEndDate`,
//!   `type`, `ccpEntitlementId`, `ccpEntitlementSlug`, …) and is `{}` when there is no licence;
//! * rate limits: 1 request per 5 minutes per installation, 10 per minute per site (shared by
//!   every app on it); a `429` carries `Retry-After`, which the caller must honour.
//!
//! The client here only reads and parses; when to read is the caller's business
//! ([`MIN_INTERVAL`], [`LicenseApiError::retry_after`]). The token is sent to `FORGE_API_URL`
//! and nowhere else: a redirect to another origin is not followed, and no error text carries
//! the token or the answer's body.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::fit::{FitLicense, RawLicense};
use super::ids::AppId;
use crate::http_client::{BodyError, read_limited};

/// The path of the License API under `FORGE_API_URL`.
pub const LICENSE_PATH: &str = "/forge/app/v1/license";
/// Atlassian's limit per installation: one read per 5 minutes.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// The answer is a few hundred bytes per app; anything much larger is not an answer.
pub const MAX_BODY: usize = 64 * 1024;
/// A whole read (connect, headers, body) gets this long.
pub const TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A `Retry-After` beyond this is taken as this: a broken header must not silence an
/// installation's licence reads for months.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// An error `type` from Atlassian is kept (for logs and the stored last error) up to this
/// length, printable ASCII only.
const MAX_ERROR_TYPE: usize = 64;

/// What the License API says about the app on the token's installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LicenseAnswer {
    /// A licence record (`active` may still be false: expired, cancelled).
    License(FitLicense),
    /// No licence: `data` is `{}` or the app's result is a `NOT_FOUND` error (a free app, an
    /// app not listed on the Marketplace, a development install).
    NoLicense,
}

/// Why a read failed. The text is safe to log and to store: never the token, never the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseApiError {
    /// `429`: try again after `Retry-After` (when given and readable).
    #[error("rate limited (HTTP 429)")]
    RateLimited { retry_after: Option<Duration> },
    /// Any other non-2xx answer (`401`/`403`: the token expired or lacks the right).
    #[error("HTTP {0}")]
    Status(u16),
    /// A redirect that was not followed (to another origin, or too many).
    #[error("redirected (HTTP {0}); not followed")]
    Redirect(u16),
    /// The app's own result was an error other than `NOT_FOUND`.
    #[error("the License API reported {0} for this app")]
    AppError(String),
    #[error("timed out")]
    Timeout,
    #[error("connection failed")]
    Network,
    #[error("invalid answer: {0}")]
    Invalid(&'static str),
}

impl LicenseApiError {
    /// A stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            LicenseApiError::RateLimited { .. } => "rate_limited",
            LicenseApiError::Status(_) => "http_error",
            LicenseApiError::Redirect(_) => "redirect",
            LicenseApiError::AppError(_) => "app_error",
            LicenseApiError::Timeout => "timeout",
            LicenseApiError::Network => "network_error",
            LicenseApiError::Invalid(_) => "invalid",
        }
    }

    /// How long Atlassian asked us to wait, for a `429` that said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LicenseApiError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    fn from_reqwest(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            LicenseApiError::Timeout
        } else if e.is_decode() || e.is_body() {
            LicenseApiError::Invalid("unreadable body")
        } else {
            LicenseApiError::Network
        }
    }
}

/// The License API client, built once. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LicenseApi {
    url: Url,
    http: reqwest::Client,
}

impl LicenseApi {
    /// A client for `{api_url}/forge/app/v1/license` with its own HTTP client: bounded in time,
    /// following only same-origin redirects (the token must never leave `FORGE_API_URL`).
    pub fn new(api_url: &Url) -> Result<LicenseApi, reqwest::Error> {
        Self::with_timeout(api_url, TIMEOUT)
    }

    /// As [`LicenseApi::new`] with another time limit per read (tests).
    pub fn with_timeout(api_url: &Url, timeout: Duration) -> Result<LicenseApi, reqwest::Error> {
        // Same-origin redirects only (crate::http_client): the token must stay at FORGE_API_URL.
        let http = crate::http_client::build(CONNECT_TIMEOUT.min(timeout), timeout)?;
        Ok(LicenseApi {
            url: license_url(api_url),
            http,
        })
    }

    /// The URL read.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Reads the licence of `app_id` on the installation `token` was issued for.
    pub async fn read(
        &self,
        token: &SecretString,
        app_id: AppId,
    ) -> Result<LicenseAnswer, LicenseApiError> {
        let res = self
            .http
            .get(self.url.clone())
            .bearer_auth(token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| LicenseApiError::from_reqwest(&e))?;
        let status = res.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = res
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, Utc::now()));
            return Err(LicenseApiError::RateLimited { retry_after });
        }
        if status.is_redirection() {
            return Err(LicenseApiError::Redirect(status.as_u16()));
        }
        if !status.is_success() {
            return Err(LicenseApiError::Status(status.as_u16()));
        }
        let body = read_body(res).await?;
        parse_response(&body, app_id)
    }
}

/// `{api_url}/forge/app/v1/license`, keeping a path prefix of `api_url` (a proxy, a test fake).
pub fn license_url(api_url: &Url) -> Url {
    let mut url = api_url.clone();
    let base = api_url.path().trim_end_matches('/');
    url.set_path(&format!("{base}{LICENSE_PATH}"));
    url.set_query(None);
    url.set_fragment(None);
    url
}

async fn read_body(res: reqwest::Response) -> Result<Vec<u8>, LicenseApiError> {
    read_limited(res, MAX_BODY).await.map_err(|e| match e {
        BodyError::TooLarge => LicenseApiError::Invalid("answer too large"),
        BodyError::Read(e) => LicenseApiError::from_reqwest(&e),
    })
}

#[derive(Deserialize)]
struct RawResponse {
    results: Vec<RawResult>,
}

#[derive(Deserialize)]
struct RawResult {
    #[serde(default, rename = "appId")]
    app_id: Option<String>,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<RawError>,
}

#[derive(Deserialize)]
struct RawError {
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// Parses a `200` answer and picks the result for `app_id`. A single result without an
/// `appId` is taken as the app's own (a self-query asks for nothing else); among several, the
/// one naming `app_id` (ARI or bare uuid) is taken, and none naming it is an invalid answer.
pub fn parse_response(body: &[u8], app_id: AppId) -> Result<LicenseAnswer, LicenseApiError> {
    let parsed: RawResponse = serde_json::from_slice(body)
        .map_err(|_| LicenseApiError::Invalid("not a licence answer"))?;
    let mine = |r: &&RawResult| r.app_id.as_deref().and_then(AppId::parse) == Some(app_id);
    let result = match parsed.results.iter().find(mine) {
        Some(r) => r,
        None => match parsed.results.as_slice() {
            [only] if only.app_id.is_none() => only,
            _ => return Err(LicenseApiError::Invalid("no result for this app")),
        },
    };
    if let Some(error) = &result.error {
        let kind = error
            .kind
            .as_deref()
            .map(sanitise_error_type)
            .unwrap_or_else(|| "an error".to_owned());
        return if kind.eq_ignore_ascii_case("NOT_FOUND") {
            Ok(LicenseAnswer::NoLicense)
        } else {
            Err(LicenseApiError::AppError(kind))
        };
    }
    match &result.data {
        None | Some(serde_json::Value::Null) => Ok(LicenseAnswer::NoLicense),
        Some(serde_json::Value::Object(map)) if map.is_empty() => Ok(LicenseAnswer::NoLicense),
        Some(data @ serde_json::Value::Object(_)) => {
            let raw: RawLicense = serde_json::from_value(data.clone())
                .map_err(|_| LicenseApiError::Invalid("licence data of the wrong shape"))?;
            Ok(LicenseAnswer::License(FitLicense::from_raw(raw)))
        }
        Some(_) => Err(LicenseApiError::Invalid("licence data is not an object")),
    }
}

/// Atlassian's error type, cut to printable ASCII of a bounded length: it goes into logs and
/// the stored last error.
fn sanitise_error_type(kind: &str) -> String {
    kind.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(MAX_ERROR_TYPE)
        .collect()
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, relative to `now`.
/// Capped at [`MAX_RETRY_AFTER`]; a date in the past is zero; garbage is `None`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still "a very long time".
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = DateTime::parse_from_rfc2822(value)
            .ok()?
            .with_timezone(&Utc);
        (at - now).to_std().unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::testing::APP_UUID;
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const DOC_EXAMPLE: &str = include_str!("../../tests/fixtures/forge/license-api-response.json");

    fn app() -> AppId {
        AppId::parse(APP_UUID).unwrap()
    }

    fn token() -> SecretString {
        SecretString::from("system-token-value-123")
    }

    #[test]
    fn the_documented_example_parses() {
        // The documentation's example, with our app id in the first result.
        let other = AppId::parse("35559c21-6120-406b-b7cd-d87f468f6d32").unwrap();
        let answer = parse_response(DOC_EXAMPLE.as_bytes(), other).unwrap();
        let LicenseAnswer::License(l) = answer else {
            panic!("expected a licence, got {answer:?}")
        };
        assert_eq!(l.active, Some(true));
        assert!(!l.evaluation);
        assert_eq!(l.trial_end, None);
        assert_eq!(
            l.subscription_end,
            Some("2027-01-01T00:00:00Z".parse().unwrap())
        );
        assert_eq!(l.license_type.as_deref(), Some("commercial"));
        assert_eq!(l.entitlement_id.as_deref(), Some("ent-abc123"));
        assert_eq!(l.entitlement_number.as_deref(), Some("my-app-commercial"));

        // The second result of the same example is a NOT_FOUND error: no licence.
        let second = AppId::parse("11259c21-6120-406b-b7cd-d87f468f6d99").unwrap();
        assert_eq!(
            parse_response(DOC_EXAMPLE.as_bytes(), second),
            Ok(LicenseAnswer::NoLicense)
        );
        // An app the answer does not name.
        assert_eq!(
            parse_response(DOC_EXAMPLE.as_bytes(), app()),
            Err(LicenseApiError::Invalid("no result for this app"))
        );
    }

    #[test]
    fn a_trial_and_the_deprecated_is_active() {
        let body = format!(
            r#"{{"results":[{{"appId":"ari:cloud:ecosystem::app/{APP_UUID}","data":{{
                "isActive":true,"isEvaluation":true,"trialEndDate":"2026-12-31T10:00:00.000Z",
                "type":"COMMERCIAL","unknownField":[1,2]}}}}]}}"#
        );
        let LicenseAnswer::License(l) = parse_response(body.as_bytes(), app()).unwrap() else {
            panic!("licence expected")
        };
        assert_eq!(l.active, Some(true));
        assert!(l.evaluation);
        assert_eq!(l.trial_end, Some("2026-12-31T10:00:00Z".parse().unwrap()));
    }

    #[test]
    fn no_licence_answers() {
        for body in [
            format!(r#"{{"results":[{{"appId":"{APP_UUID}","data":{{}}}}]}}"#),
            format!(r#"{{"results":[{{"appId":"{APP_UUID}","data":null}}]}}"#),
            format!(
                r#"{{"results":[{{"appId":"{APP_UUID}","error":{{"type":"NOT_FOUND","message":"none"}}}}]}}"#
            ),
            r#"{"results":[{"data":{}}]}"#.to_owned(),
        ] {
            assert_eq!(
                parse_response(body.as_bytes(), app()),
                Ok(LicenseAnswer::NoLicense),
                "{body}"
            );
        }
    }

    #[test]
    fn errors_and_garbage() {
        let err = format!(
            r#"{{"results":[{{"appId":"{APP_UUID}","error":{{"type":"FORBIDDEN\n\u001b[31m","message":"secret stuff"}}}}]}}"#
        );
        assert_eq!(
            parse_response(err.as_bytes(), app()),
            Err(LicenseApiError::AppError("FORBIDDEN[31m".into()))
        );
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"results":{}}"#,
            r#"{"results":[]}"#,
            r#"{"results":[{"data":"active"}]}"#,
            r#"{"results":[{"data":{"active":"yes"}}]}"#,
            r#"{"results":[{"data":{}},{"data":{}}]}"#,
        ] {
            assert!(
                matches!(
                    parse_response(bad.as_bytes(), app()),
                    Err(LicenseApiError::Invalid(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now: DateTime<Utc> = "2026-12-03T08:00:00Z".parse().unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Thu, 03 Dec 2026 08:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Thu, 03 Dec 2026 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn the_url_keeps_a_path_prefix() {
        let u = |s: &str| license_url(&Url::parse(s).unwrap()).to_string();
        assert_eq!(
            u("https://api.atlassian.com"),
            "https://api.atlassian.com/forge/app/v1/license"
        );
        assert_eq!(
            u("http://127.0.0.1:9000/proxy/?x=1"),
            "http://127.0.0.1:9000/proxy/forge/app/v1/license"
        );
    }

    async fn client(server: &MockServer) -> LicenseApi {
        let _ = rustls::crypto::ring::default_provider().install_default();
        LicenseApi::new(&Url::parse(&server.uri()).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn reads_with_the_system_token() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(LICENSE_PATH))
            .and(header("authorization", "Bearer system-token-value-123"))
            .and(header("accept", "application/json"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(
                format!(r#"{{"results":[{{"appId":"{APP_UUID}","data":{{"active":false}}}}]}}"#),
                "application/json",
            ))
            .expect(1)
            .mount(&server)
            .await;
        let answer = client(&server).await.read(&token(), app()).await.unwrap();
        let LicenseAnswer::License(l) = answer else {
            panic!("licence expected")
        };
        assert_eq!(l.active, Some(false));
    }

    #[tokio::test]
    async fn rate_limited_with_retry_after() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "240"))
            .mount(&server)
            .await;
        let err = client(&server)
            .await
            .read(&token(), app())
            .await
            .unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(240)));
        assert_eq!(err.kind(), "rate_limited");

        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(429))
            .mount(&server)
            .await;
        let err = client(&server)
            .await
            .read(&token(), app())
            .await
            .unwrap_err();
        assert_eq!(err, LicenseApiError::RateLimited { retry_after: None });
    }

    #[tokio::test]
    async fn errors_name_no_secret() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(401).set_body_string("bad token system-token-value-123"),
            )
            .mount(&server)
            .await;
        let err = client(&server)
            .await
            .read(&token(), app())
            .await
            .unwrap_err();
        assert_eq!(err, LicenseApiError::Status(401));
        assert!(!format!("{err} {err:?}").contains("system-token"));
    }

    #[tokio::test]
    async fn a_redirect_to_another_origin_is_not_followed() {
        let elsewhere = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"results":[]}"#))
            .expect(0)
            .mount(&elsewhere)
            .await;
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(302)
                    .insert_header("location", format!("{}/steal", elsewhere.uri())),
            )
            .mount(&server)
            .await;
        let err = client(&server)
            .await
            .read(&token(), app())
            .await
            .unwrap_err();
        assert_eq!(err, LicenseApiError::Redirect(302));
    }

    #[tokio::test]
    async fn a_same_origin_redirect_is_followed() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(LICENSE_PATH))
            .respond_with(ResponseTemplate::new(307).insert_header("location", "/v2/license"))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v2/license"))
            .and(header("authorization", "Bearer system-token-value-123"))
            .respond_with(ResponseTemplate::new(200).set_body_string(format!(
                r#"{{"results":[{{"appId":"{APP_UUID}","data":{{}}}}]}}"#
            )))
            .expect(1)
            .mount(&server)
            .await;
        assert_eq!(
            client(&server).await.read(&token(), app()).await,
            Ok(LicenseAnswer::NoLicense)
        );
    }

    #[tokio::test]
    async fn an_oversized_answer_is_refused() {
        let server = MockServer::start().await;
        let huge = format!(
            r#"{{"results":[{{"appId":"{APP_UUID}","data":{{"type":"{}"}}}}]}}"#,
            "x".repeat(MAX_BODY)
        );
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_string(huge))
            .mount(&server)
            .await;
        assert_eq!(
            client(&server).await.read(&token(), app()).await,
            Err(LicenseApiError::Invalid("answer too large"))
        );
    }

    #[tokio::test]
    async fn a_slow_answer_times_out() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
            .mount(&server)
            .await;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let api = LicenseApi::with_timeout(
            &Url::parse(&server.uri()).unwrap(),
            Duration::from_millis(200),
        )
        .unwrap();
        assert_eq!(
            api.read(&token(), app()).await,
            Err(LicenseApiError::Timeout)
        );
    }

    #[tokio::test]
    async fn a_server_error_and_garbage() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(500).set_body_string(r#"{"code":500}"#))
            .mount(&server)
            .await;
        assert_eq!(
            client(&server).await.read(&token(), app()).await,
            Err(LicenseApiError::Status(500))
        );
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_string("<html>"))
            .mount(&server)
            .await;
        assert!(matches!(
            client(&server).await.read(&token(), app()).await,
            Err(LicenseApiError::Invalid(_))
        ));
    }
}
