//! Verifying a Forge Invocation Token (FIT), the `Authorization: Bearer` token Forge sends to a
//! remote backend with every invocation (UI calls, lifecycle events, triggers).
//!
//! The steps, in the order docs/forge.md#verifying-a-fit gives them:
//! 1. [`peek_kid`]: the header's `alg` is RS256 and it has a `kid`. The algorithm is pinned
//!    here, never taken from the token, so an HS256 token "signed" with the public key text,
//!    or `none`, can never pass.
//! 2. The key is found by `kid` in the cached key set ([`super::keys::ForgeKeys`]).
//! 3. [`verify_signature`], then [`check_claims`]: `iss` = `forge/invocation-token` (which
//!    keeps Forge *context* tokens, `iss` = `forge/context-token`, from passing as FITs);
//!    `aud` holds a configured app id; `exp`, `iat`, `nbf` present and valid with the leeway.
//! 4. Still [`check_claims`]: `app.id` = the matched `aud`; `app.installationId` present and
//!    equal to `app.installation.id` when both are given; `context.cloudId`, when given, one of
//!    the installation's contexts; `app.environment.type` allowed; no `icLabel` (Isolated Cloud
//!    uses key sets this service is not onboarded for).
//!
//! Every function is pure: the clock is an argument, the key is looked up by the caller.
//! A FIT binds nothing about the request (no `qsh`): it proves "this installation, this
//! environment (and, for UI calls, this user) invoked the app moments ago", like a Connect
//! context token, so nothing in the path, query or body may be trusted because of it.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDate, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::ids::{AppId, EnvironmentType, InstallationId};
use crate::connect::jwt::{MAX_TOKEN_LEN, numeric_date, segments};

/// The `iss` of every FIT.
pub const ISSUER: &str = "forge/invocation-token";
/// Key ids are short; a longer one is not looked up at all.
pub const MAX_KID_LEN: usize = 200;

/// Why a FIT was refused. Messages are safe to log and to return: they never carry the token
/// or a claim value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FitError {
    #[error("Forge invocation tokens are not accepted: FORGE_APP_ID is not configured")]
    Disabled,
    #[error("no Forge invocation token in the request")]
    Missing,
    #[error("the Forge invocation token is malformed")]
    Malformed,
    #[error("the Forge invocation token's algorithm is not RS256")]
    Algorithm,
    #[error("the Forge invocation token has no usable key id (kid)")]
    MissingKid,
    #[error("the Forge invocation token's key id (kid) is not in the Forge key set")]
    UnknownKid,
    #[error("the Forge key set could not be obtained")]
    KeyUnavailable,
    #[error("the Forge invocation token's signature is invalid")]
    BadSignature,
    #[error("the token is not a Forge invocation token (iss)")]
    WrongIssuer,
    #[error("the Forge invocation token is for another app (aud)")]
    WrongAudience,
    #[error("the Forge invocation token lacks the required claim {0:?}")]
    MissingClaim(&'static str),
    #[error("the Forge invocation token has expired")]
    Expired,
    #[error("the Forge invocation token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the Forge invocation token was issued in the future (iat)")]
    IssuedInFuture,
    #[error("the Forge invocation token's app.id does not match its audience")]
    AppIdMismatch,
    #[error("the Forge invocation token has no valid app.installationId")]
    MissingInstallationId,
    #[error("the Forge invocation token names two different installations")]
    InstallationIdMismatch,
    #[error("the Forge invocation token names a site outside its installation")]
    CloudIdMismatch,
    #[error("the Forge invocation token comes from an environment this service does not accept")]
    EnvironmentNotAllowed,
    #[error("Forge invocation tokens from Isolated Cloud are not accepted")]
    IsolatedCloud,
}

impl FitError {
    /// A stable snake_case label for metrics (`fit_verification_failures_total{reason}`) and
    /// structured logs.
    pub fn reason(&self) -> &'static str {
        match self {
            FitError::Disabled => "forge_disabled",
            FitError::Missing => "missing_token",
            FitError::Malformed => "malformed",
            FitError::Algorithm => "bad_algorithm",
            FitError::MissingKid => "bad_kid",
            FitError::UnknownKid => "unknown_kid",
            FitError::KeyUnavailable => "key_unavailable",
            FitError::BadSignature => "bad_signature",
            FitError::WrongIssuer => "wrong_issuer",
            FitError::WrongAudience => "wrong_audience",
            FitError::MissingClaim(_) => "missing_claim",
            FitError::Expired => "expired",
            FitError::NotYetValid => "not_yet_valid",
            FitError::IssuedInFuture => "issued_in_future",
            FitError::AppIdMismatch => "app_id_mismatch",
            FitError::MissingInstallationId => "missing_installation_id",
            FitError::InstallationIdMismatch => "installation_id_mismatch",
            FitError::CloudIdMismatch => "cloud_id_mismatch",
            FitError::EnvironmentNotAllowed => "environment_not_allowed",
            FitError::IsolatedCloud => "isolated_cloud",
        }
    }

    /// Every refusal, for tests and for pre-registering metric labels.
    pub const ALL_REASONS: [&'static str; 20] = [
        "forge_disabled",
        "missing_token",
        "malformed",
        "bad_algorithm",
        "bad_kid",
        "unknown_kid",
        "key_unavailable",
        "bad_signature",
        "wrong_issuer",
        "wrong_audience",
        "missing_claim",
        "expired",
        "not_yet_valid",
        "issued_in_future",
        "app_id_mismatch",
        "missing_installation_id",
        "installation_id_mismatch",
        "cloud_id_mismatch",
        "environment_not_allowed",
        "isolated_cloud",
    ];
}

/// What this service accepts (from `FORGE_APP_ID`, `FORGE_ENVIRONMENTS`, `JWT_LEEWAY_SECS`).
#[derive(Clone, Debug)]
pub struct FitPolicy {
    pub app_ids: Vec<AppId>,
    pub environments: Vec<EnvironmentType>,
    pub leeway_secs: u64,
}

/// Finds the FIT of a request: `Authorization: Bearer <token>` (scheme case-insensitive, as
/// RFC 7235 says). `None` when the header uses another scheme (a Connect `JWT …`).
pub fn bearer_token(authorization: Option<&str>) -> Option<Result<&str, FitError>> {
    let header = authorization?;
    let (scheme, rest) = header.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case("bearer ") {
        return None;
    }
    let token = rest.trim();
    Some(if token.is_empty() {
        Err(FitError::Missing)
    } else {
        Ok(token)
    })
}

#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow)]
    alg: Option<Cow<'a, str>>,
    kid: Option<serde_json::Value>,
}

/// Step 1: the unverified header. `alg` must be RS256 and `kid` a non-empty string of
/// printable ASCII; the `kid` is returned for the key lookup.
pub fn peek_kid(token: &str) -> Result<String, FitError> {
    let (header, _, _) = segments(token, MAX_TOKEN_LEN).ok_or(FitError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| FitError::Malformed)?;
    let raw: RawHeader<'_> = serde_json::from_slice(&bytes).map_err(|_| FitError::Malformed)?;
    if raw.alg.as_deref() != Some("RS256") {
        return Err(FitError::Algorithm);
    }
    match raw.kid {
        Some(serde_json::Value::String(kid))
            if !kid.is_empty()
                && kid.len() <= MAX_KID_LEN
                && kid.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(kid)
        }
        _ => Err(FitError::MissingKid),
    }
}

/// The claims of a FIT as sent. Every field is optional and unknown ones are ignored: the
/// published contract and what vendors observe differ, and Atlassian adds fields.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FitClaims {
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub aud: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "numeric_date")]
    pub iat: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    pub exp: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    pub nbf: Option<i64>,
    #[serde(default)]
    pub principal: Option<String>,
    #[serde(default)]
    pub app: Option<RawApp>,
    #[serde(default)]
    pub context: Option<RawContext>,
    /// Present only on Isolated Cloud invocations; its value is never read.
    #[serde(default, rename = "icLabel")]
    pub ic_label: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawApp {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub installation_id: Option<String>,
    #[serde(default)]
    pub installation: Option<RawInstallation>,
    #[serde(default)]
    pub api_base_url: Option<String>,
    #[serde(default)]
    pub environment: Option<RawEnvironment>,
    #[serde(default)]
    pub license: Option<RawLicense>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawInstallation {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub contexts: Vec<RawInstallationContext>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawInstallationContext {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub cloud_id: Option<String>,
    #[serde(default)]
    pub api_base_url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawEnvironment {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
}

/// `app.license`: present only for paid apps listed on the Marketplace, in production (or with
/// a test override in development).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawLicense {
    #[serde(default)]
    pub active: Option<bool>,
    /// Deprecated by Atlassian in favour of `active`, read only when `active` is absent.
    #[serde(default)]
    pub is_active: Option<bool>,
    #[serde(default)]
    pub is_evaluation: Option<bool>,
    #[serde(default)]
    pub trial_end_date: Option<String>,
    #[serde(default)]
    pub subscription_end_date: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub ccp_entitlement_id: Option<String>,
    #[serde(default)]
    pub ccp_entitlement_slug: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawContext {
    #[serde(default)]
    pub cloud_id: Option<String>,
    #[serde(default)]
    pub site_url: Option<String>,
}

/// Step 3a: the RS256 signature with the key found by `kid`; returns the claims, trusted from
/// here on. `jsonwebtoken`'s own clock checks are off: [`check_claims`] takes the clock.
pub fn verify_signature(token: &str, key: &DecodingKey) -> Result<FitClaims, FitError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(FitError::Malformed);
    }
    let mut validation = Validation::new(Algorithm::RS256);
    validation.algorithms = vec![Algorithm::RS256];
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    match jsonwebtoken::decode::<FitClaims>(token, key, &validation) {
        Ok(data) => Ok(data.claims),
        Err(err) => Err(match err.kind() {
            ErrorKind::InvalidSignature => FitError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => FitError::Algorithm,
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_)
            | ErrorKind::InvalidClaimFormat(_) => FitError::Malformed,
            _ => FitError::BadSignature,
        }),
    }
}

/// A verified FIT: what the rest of the service may rely on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fit {
    pub app_id: AppId,
    pub installation_id: InstallationId,
    pub environment: Environment,
    /// The site: `context.cloudId`, else the first installation context's `cloudId`.
    pub cloud_id: Option<String>,
    /// The product of that context (`jira`, `confluence`, …).
    pub product: Option<String>,
    /// `context.siteUrl` (UI invocations only).
    pub site_url: Option<String>,
    pub api_base_url: Option<String>,
    /// The invoking user's account id (UI invocations only).
    pub principal: Option<String>,
    pub license: Option<FitLicense>,
    pub iat: i64,
    pub exp: i64,
    pub nbf: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub kind: EnvironmentType,
    pub id: Option<String>,
}

/// What `app.license` says, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitLicense {
    /// `active`, or `isActive` when `active` is absent; `None` when neither is given (the
    /// object then says nothing about the licence).
    pub active: Option<bool>,
    pub evaluation: bool,
    pub trial_end: Option<DateTime<Utc>>,
    pub subscription_end: Option<DateTime<Utc>>,
    pub license_type: Option<String>,
    pub entitlement_id: Option<String>,
    pub entitlement_number: Option<String>,
}

impl FitLicense {
    /// From the wire form, shared by the FIT's `app.license` and the License API's `data`. Text
    /// fields are cut here, once per token ([`crate::sanitize::cut`]): what is stored, shown and
    /// compared is this value.
    pub fn from_raw(raw: RawLicense) -> FitLicense {
        let field = |v: Option<String>| v.filter(|s| !s.is_empty()).map(crate::sanitize::cut_owned);
        FitLicense {
            active: raw.active.or(raw.is_active),
            evaluation: raw.is_evaluation.unwrap_or(false),
            trial_end: raw.trial_end_date.as_deref().and_then(parse_instant),
            subscription_end: raw.subscription_end_date.as_deref().and_then(parse_instant),
            license_type: field(raw.kind),
            entitlement_id: field(raw.ccp_entitlement_id),
            entitlement_number: field(raw.ccp_entitlement_slug),
        }
    }
}

/// An ISO 8601 date-time, or a bare date (taken as its midnight UTC). Anything else is dropped
/// rather than refusing the token over a display field.
pub fn parse_instant(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// `exp` and `iat` required, `nbf` honoured, with the same leeway rule as Connect tokens
/// ([`crate::connect::jwt::check_times`]): accepted up to and including `exp + L`.
pub fn check_times(
    iat: i64,
    exp: i64,
    nbf: Option<i64>,
    now: i64,
    leeway_secs: u64,
) -> Result<(), FitError> {
    let leeway = i64::try_from(leeway_secs).unwrap_or(i64::MAX);
    if now > exp.saturating_add(leeway) {
        return Err(FitError::Expired);
    }
    let latest_allowed = now.saturating_add(leeway);
    if nbf.is_some_and(|nbf| nbf > latest_allowed) {
        return Err(FitError::NotYetValid);
    }
    if iat > latest_allowed {
        return Err(FitError::IssuedInFuture);
    }
    Ok(())
}

/// Steps 3b and 4 on claims whose signature was verified.
pub fn check_claims(claims: FitClaims, policy: &FitPolicy, now: i64) -> Result<Fit, FitError> {
    if claims.iss.as_deref() != Some(ISSUER) {
        return Err(FitError::WrongIssuer);
    }
    let audience = matched_audience(claims.aud.as_ref(), &policy.app_ids)?;
    let exp = claims.exp.ok_or(FitError::MissingClaim("exp"))?;
    let iat = claims.iat.ok_or(FitError::MissingClaim("iat"))?;
    let nbf = claims.nbf.ok_or(FitError::MissingClaim("nbf"))?;
    check_times(iat, exp, Some(nbf), now, policy.leeway_secs)?;

    let app = claims.app.ok_or(FitError::MissingClaim("app"))?;
    if app.id.as_deref().and_then(AppId::parse) != Some(audience) {
        return Err(FitError::AppIdMismatch);
    }
    let installation_id = app
        .installation_id
        .as_deref()
        .and_then(InstallationId::parse)
        .ok_or(FitError::MissingInstallationId)?;
    let installation = app.installation.unwrap_or_default();
    if let Some(other) = installation.id.as_deref()
        && InstallationId::parse(other) != Some(installation_id)
    {
        return Err(FitError::InstallationIdMismatch);
    }
    let (cloud_id, product) = site(claims.context.as_ref(), &installation.contexts)?;
    let raw_env = app.environment.unwrap_or_default();
    let kind = raw_env
        .kind
        .as_deref()
        .and_then(EnvironmentType::parse)
        .filter(|k| policy.environments.contains(k))
        .ok_or(FitError::EnvironmentNotAllowed)?;
    if claims.ic_label.is_some() {
        return Err(FitError::IsolatedCloud);
    }
    let context = claims.context.unwrap_or_default();
    Ok(Fit {
        app_id: audience,
        installation_id,
        environment: Environment {
            kind,
            id: raw_env.id.filter(|s| !s.is_empty()),
        },
        cloud_id,
        product,
        site_url: context.site_url.filter(|s| !s.is_empty()),
        api_base_url: app.api_base_url.filter(|s| !s.is_empty()),
        principal: claims.principal.filter(|s| !s.is_empty()),
        license: app.license.map(FitLicense::from_raw),
        iat,
        exp,
        nbf,
    })
}

/// The configured app id that `aud` (a string or an array of strings) names.
fn matched_audience(aud: Option<&serde_json::Value>, app_ids: &[AppId]) -> Result<AppId, FitError> {
    let matches = |v: &serde_json::Value| {
        v.as_str()
            .and_then(AppId::parse)
            .filter(|id| app_ids.contains(id))
    };
    match aud {
        Some(v @ serde_json::Value::String(_)) => matches(v),
        Some(serde_json::Value::Array(items)) => items.iter().find_map(matches),
        _ => None,
    }
    .ok_or(FitError::WrongAudience)
}

/// The site of the invocation and its product. `context.cloudId` (UI calls) must be one of the
/// installation's contexts when those name any: otherwise one signed token would speak for two
/// sites.
fn site(
    context: Option<&RawContext>,
    contexts: &[RawInstallationContext],
) -> Result<(Option<String>, Option<String>), FitError> {
    let named: Vec<&RawInstallationContext> = contexts
        .iter()
        .filter(|c| c.cloud_id.as_deref().is_some_and(|id| !id.is_empty()))
        .collect();
    let product_of = |cloud_id: &str| {
        named
            .iter()
            .find(|c| c.cloud_id.as_deref() == Some(cloud_id))
            .and_then(|c| c.name.clone())
    };
    match context
        .and_then(|c| c.cloud_id.as_deref())
        .filter(|s| !s.is_empty())
    {
        Some(cloud_id) => {
            if !named.is_empty()
                && !named
                    .iter()
                    .any(|c| c.cloud_id.as_deref() == Some(cloud_id))
            {
                return Err(FitError::CloudIdMismatch);
            }
            Ok((Some(cloud_id.to_owned()), product_of(cloud_id)))
        }
        None => Ok(named
            .first()
            .map(|c| (c.cloud_id.clone(), c.name.clone()))
            .unwrap_or((None, None))),
    }
}

/// The checks of [`check_claims`] that depend on the clock or the configuration, run again on
/// a FIT verified earlier and found in [`crate::verified_tokens::VerifiedFits`]: `aud` still a
/// configured app, `exp`/`iat`/`nbf` with the leeway at `now`, the environment still allowed,
/// with the same refusals. The rest (issuer, `app.id`, installation ids, site, `icLabel`) is
/// fixed by the token's bytes, which the cache compares whole. Today the policy is fixed for
/// the life of the process (and of its cache), so only the times can change the answer; the
/// audience and environment are checked anyway, for nanoseconds, so that a policy that one day
/// reloads stays enforced.
pub fn check_again(fit: &Fit, policy: &FitPolicy, now: i64) -> Result<(), FitError> {
    if !policy.app_ids.contains(&fit.app_id) {
        return Err(FitError::WrongAudience);
    }
    check_times(fit.iat, fit.exp, Some(fit.nbf), now, policy.leeway_secs)?;
    if !policy.environments.contains(&fit.environment.kind) {
        return Err(FitError::EnvironmentNotAllowed);
    }
    Ok(())
}

/// Steps 3 and 4 with a key already found: signature, then claims.
pub fn verify(
    token: &str,
    key: &DecodingKey,
    policy: &FitPolicy,
    now: i64,
) -> Result<Fit, FitError> {
    let claims = verify_signature(token, key)?;
    check_claims(claims, policy, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::testing::{self, APP_UUID, INSTALLATION_UUID, KID};
    use serde_json::{Value, json};

    const NOW: i64 = 1_780_000_000;

    fn policy() -> FitPolicy {
        FitPolicy {
            app_ids: vec![AppId::parse(APP_UUID).unwrap()],
            environments: vec![EnvironmentType::Production],
            leeway_secs: 30,
        }
    }

    fn key() -> DecodingKey {
        DecodingKey::from_rsa_pem(testing::PUBLIC_PEM.as_bytes()).unwrap()
    }

    /// Mints with `edit` applied to a valid claim set, then runs every step.
    fn run(edit: impl FnOnce(&mut Value)) -> Result<Fit, FitError> {
        let mut claims = testing::claims(NOW);
        edit(&mut claims);
        let token = testing::mint(&claims, KID);
        assert_eq!(peek_kid(&token)?, KID);
        verify(&token, &key(), &policy(), NOW)
    }

    #[test]
    fn a_valid_fit_verifies() {
        let fit = run(|_| {}).expect("valid");
        assert_eq!(fit.app_id, AppId::parse(APP_UUID).unwrap());
        assert_eq!(fit.installation_id.as_key(), INSTALLATION_UUID);
        assert_eq!(fit.environment.kind, EnvironmentType::Production);
        assert_eq!(fit.cloud_id.as_deref(), Some(testing::CLOUD_ID));
        assert_eq!(fit.product.as_deref(), Some("jira"));
        assert_eq!(fit.principal.as_deref(), Some("user-1"));
        assert_eq!(fit.license, None);
    }

    #[test]
    fn the_header_is_checked_first() {
        let claims = testing::claims(NOW);
        // No kid.
        let token = testing::mint_with_header(&claims, None, Algorithm::RS256);
        assert_eq!(peek_kid(&token), Err(FitError::MissingKid));
        // HS256, whatever the key.
        let hs = crate::connect::jwt::sign_hs256(&claims, testing::PUBLIC_PEM.as_bytes());
        assert_eq!(peek_kid(&hs), Err(FitError::Algorithm));
        // alg none.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        assert_eq!(peek_kid(&none), Err(FitError::Algorithm));
        // RS512 is not RS256.
        let rs512 = testing::mint_with_header(&claims, Some(KID), Algorithm::RS512);
        assert_eq!(peek_kid(&rs512), Err(FitError::Algorithm));
        assert_eq!(peek_kid("a.b"), Err(FitError::Malformed));
        assert_eq!(peek_kid("!!.b.c"), Err(FitError::Malformed));
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(peek_kid(&long), Err(FitError::Malformed));
    }

    #[test]
    fn a_signature_by_another_key_or_tampering_is_refused() {
        let claims = testing::claims(NOW);
        let other = testing::mint_other(&claims, KID);
        assert_eq!(
            verify(&other, &key(), &policy(), NOW),
            Err(FitError::BadSignature)
        );
        let token = testing::mint(&claims, KID);
        let (head, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let mut forged = claims.clone();
        forged["app"]["license"] = json!({"active": true});
        let forged = format!(
            "{head}.{}.{sig}",
            URL_SAFE_NO_PAD.encode(forged.to_string())
        );
        assert_eq!(
            verify(&forged, &key(), &policy(), NOW),
            Err(FitError::BadSignature)
        );
    }

    #[test]
    fn every_claim_refusal_has_its_reason() {
        type Edit = Box<dyn FnOnce(&mut Value)>;
        let cases: Vec<(FitError, Edit)> = vec![
            (
                FitError::WrongIssuer,
                Box::new(|c| c["iss"] = json!("forge/context-token")),
            ),
            (
                FitError::WrongIssuer,
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("iss");
                }),
            ),
            (
                FitError::WrongAudience,
                Box::new(|c| {
                    c["aud"] =
                        json!("ari:cloud:ecosystem::app/11111111-2222-4333-8444-555555555555")
                }),
            ),
            (
                FitError::WrongAudience,
                Box::new(|c| c["aud"] = json!("forge")),
            ),
            (FitError::WrongAudience, Box::new(|c| c["aud"] = json!([]))),
            (
                FitError::MissingClaim("exp"),
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
            ),
            (
                FitError::MissingClaim("iat"),
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("iat");
                }),
            ),
            (
                FitError::MissingClaim("nbf"),
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("nbf");
                }),
            ),
            (FitError::Expired, Box::new(|c| c["exp"] = json!(NOW - 31))),
            (
                FitError::NotYetValid,
                Box::new(|c| c["nbf"] = json!(NOW + 31)),
            ),
            (
                FitError::IssuedInFuture,
                Box::new(|c| c["iat"] = json!(NOW + 31)),
            ),
            (
                FitError::MissingClaim("app"),
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("app");
                }),
            ),
            (
                FitError::AppIdMismatch,
                Box::new(|c| {
                    c["app"]["id"] =
                        json!("ari:cloud:ecosystem::app/11111111-2222-4333-8444-555555555555")
                }),
            ),
            (
                FitError::MissingInstallationId,
                Box::new(|c| {
                    c["app"].as_object_mut().unwrap().remove("installationId");
                }),
            ),
            (
                FitError::MissingInstallationId,
                Box::new(|c| c["app"]["installationId"] = json!("not-an-id")),
            ),
            (
                FitError::InstallationIdMismatch,
                Box::new(|c| {
                    c["app"]["installation"]["id"] = json!(
                        "ari:cloud:ecosystem::installation/11111111-2222-4333-8444-555555555555"
                    )
                }),
            ),
            (
                FitError::CloudIdMismatch,
                Box::new(|c| c["context"]["cloudId"] = json!("another-site")),
            ),
            (
                FitError::EnvironmentNotAllowed,
                Box::new(|c| c["app"]["environment"]["type"] = json!("DEVELOPMENT")),
            ),
            (
                FitError::EnvironmentNotAllowed,
                Box::new(|c| {
                    c["app"].as_object_mut().unwrap().remove("environment");
                }),
            ),
            (
                FitError::IsolatedCloud,
                Box::new(|c| c["icLabel"] = json!("acme")),
            ),
        ];
        for (want, edit) in cases {
            assert_eq!(run(edit), Err(want.clone()), "{}", want.reason());
            assert!(FitError::ALL_REASONS.contains(&want.reason()));
        }
    }

    #[test]
    fn leeway_applies_to_all_three_times() {
        assert!(run(|c| c["exp"] = json!(NOW - 30)).is_ok());
        assert!(run(|c| c["nbf"] = json!(NOW + 30)).is_ok());
        assert!(run(|c| c["iat"] = json!(NOW + 30)).is_ok());
    }

    #[test]
    fn audience_forms() {
        // An array holding the app among others; a bare uuid; several configured apps.
        assert!(run(|c| c["aud"] = json!(["other", testing::app_ari()])).is_ok());
        assert!(
            run(|c| {
                c["aud"] = json!(APP_UUID);
            })
            .is_ok()
        );
        let mut p = policy();
        p.app_ids.insert(
            0,
            AppId::parse("11111111-2222-4333-8444-555555555555").unwrap(),
        );
        let token = testing::mint(&testing::claims(NOW), KID);
        assert!(verify(&token, &key(), &p, NOW).is_ok());
    }

    #[test]
    fn environments_are_configurable() {
        let mut claims = testing::claims(NOW);
        claims["app"]["environment"]["type"] = json!("DEVELOPMENT");
        let token = testing::mint(&claims, KID);
        let mut p = policy();
        assert_eq!(
            verify(&token, &key(), &p, NOW),
            Err(FitError::EnvironmentNotAllowed)
        );
        p.environments.push(EnvironmentType::Development);
        let fit = verify(&token, &key(), &p, NOW).unwrap();
        assert_eq!(fit.environment.kind, EnvironmentType::Development);
    }

    #[test]
    fn the_licence_is_parsed_with_the_fallback_to_is_active() {
        let fit = run(|c| {
            c["app"]["license"] = json!({
                "isActive": true, "isEvaluation": true,
                "trialEndDate": "2026-07-01T00:00:00.000Z", "type": "commercial",
                "ccpEntitlementId": "ent-1", "ccpEntitlementSlug": "E-1"
            })
        })
        .unwrap();
        let l = fit.license.unwrap();
        assert_eq!(l.active, Some(true));
        assert!(l.evaluation);
        assert_eq!(
            l.trial_end,
            Some(
                DateTime::parse_from_rfc3339("2026-07-01T00:00:00Z")
                    .unwrap()
                    .into()
            )
        );
        assert_eq!(l.license_type.as_deref(), Some("commercial"));
        assert_eq!(l.entitlement_id.as_deref(), Some("ent-1"));
        assert_eq!(l.entitlement_number.as_deref(), Some("E-1"));

        // `active` wins over `isActive`.
        let fit =
            run(|c| c["app"]["license"] = json!({"active": false, "isActive": true})).unwrap();
        assert_eq!(fit.license.unwrap().active, Some(false));
        let fit = run(|c| c["app"]["license"] = json!({"trialEndDate": "2026-07-01"})).unwrap();
        let l = fit.license.unwrap();
        assert_eq!(l.active, None);
        assert!(l.trial_end.is_some());
    }

    #[test]
    fn site_without_context() {
        let fit = run(|c| {
            c.as_object_mut().unwrap().remove("context");
            c.as_object_mut().unwrap().remove("principal");
        })
        .unwrap();
        assert_eq!(fit.cloud_id.as_deref(), Some(testing::CLOUD_ID));
        assert_eq!(fit.principal, None);
    }

    #[test]
    fn checked_again_against_the_clock_and_the_policy() {
        let fit = run(|_| {}).expect("valid"); // iat = nbf = NOW, exp = NOW + 25, leeway 30
        assert_eq!(check_again(&fit, &policy(), NOW), Ok(()));
        assert_eq!(check_again(&fit, &policy(), NOW + 55), Ok(()));
        assert_eq!(
            check_again(&fit, &policy(), NOW + 56),
            Err(FitError::Expired)
        );
        assert_eq!(
            check_again(&fit, &policy(), NOW - 31),
            Err(FitError::NotYetValid)
        );
        let mut other_app = policy();
        other_app.app_ids = vec![AppId::parse("11111111-2222-4333-8444-555555555555").unwrap()];
        assert_eq!(
            check_again(&fit, &other_app, NOW),
            Err(FitError::WrongAudience)
        );
        let mut no_production = policy();
        no_production.environments = vec![EnvironmentType::Development];
        assert_eq!(
            check_again(&fit, &no_production, NOW),
            Err(FitError::EnvironmentNotAllowed)
        );
    }

    #[test]
    fn bearer_scheme() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some(Ok("abc")));
        assert_eq!(bearer_token(Some("bearer abc")), Some(Ok("abc")));
        assert_eq!(bearer_token(Some("Bearer  ")), Some(Err(FitError::Missing)));
        assert_eq!(bearer_token(Some("JWT abc")), None);
        assert_eq!(bearer_token(Some("Bear")), None);
        assert_eq!(bearer_token(None), None);
    }
}
