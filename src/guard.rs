//! Verification and license enforcement in front of the app's own routes
//! (docs/library.md#the-guards; docs/protocol.md#jwt-on-product-requests).
//!
//! "The middleware writes, the extractor reads": [`Guard`] (made by [`verified`],
//! [`licensed_api`] or [`licensed_page`]) verifies every request of the scope, resource or
//! route it wraps and stores a [`Verified`] (and, where it enforced a license, a
//! [`Licensed`]) in the request extensions; handlers take those as arguments. A handler whose
//! route lacks the guard fails with a 500 instead of running unprotected, and a route with the
//! guard is protected whatever its handler takes.
//!
//! The work is done by two plain functions, testable without actix: [`present`] finds the
//! token and the tenant it claims; [`authorize`] verifies it against that tenant and decides
//! the license. Neither does I/O: the tenant comes from [`crate::tenants::TenantCache`].
//!
//! `Authorization: Bearer <token>` is a Forge Invocation Token (docs/forge.md): verified by
//! [`authenticate_fit`] with the cached Forge key set ([`crate::forge`]), its installation
//! found in the same cache by installation id (registered at first sight), and its licence
//! decided by [`licensing::decide_fit`]. The handler gets the same [`Verified`] and
//! [`Licensed`] values either way; [`licensed_page`] accepts Connect tokens only.
//!
//! Wrap a scope (every route in it, also those added later) or a single route, and take the
//! extractor in the handler:
//!
//! ```
//! use actix_web::{App, HttpResponse, web};
//! use connect_keeper::connect::jwt::QshPolicy;
//! use connect_keeper::guard::{self, Licensed, Verified};
//!
//! // Front-end API: query-bound or context token, licence required (JSON 403 otherwise).
//! async fn stats(licensed: Licensed) -> HttpResponse {
//!     HttpResponse::Ok().json(serde_json::json!({
//!         "client_key": licensed.verified.client_key(),
//!         "source": licensed.source.as_str(),
//!     }))
//! }
//!
//! // A webhook: verified, no licence needed.
//! async fn hook(verified: Verified) -> HttpResponse {
//!     tracing::info!(client_key = verified.client_key(), "webhook");
//!     HttpResponse::NoContent().finish()
//! }
//!
//! let app = App::new()
//!     .service(
//!         web::scope("/api")
//!             .wrap(guard::licensed_api())
//!             .route("/stats", web::get().to(stats)),
//!     )
//!     .route(
//!         "/webhooks/issue-updated",
//!         web::post().to(hook).wrap(guard::verified(QshPolicy::RequestOnly)),
//!     );
//! # drop(app);
//! ```
//!
//! The guard finds [`crate::state::AppState`] in the app data (`.app_data(web::Data::new(state))`);
//! without it, it answers `500` rather than let a request through.

use std::borrow::Cow;
use std::future::{Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::{StatusCode, header};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use chrono::{DateTime, Utc};

use crate::connect::RequestParts;
use crate::connect::jwt::{self, Claims, JwtError, QshPolicy, TokenKind};
use crate::connect::qsh;
use crate::domain::Status;
use crate::error::{ErrorBody, json_error};
use crate::forge::fit::{self, Fit, FitError};
use crate::forge::ids::InstallationId;
use crate::licensing::{self, Decision, Source};
use crate::state::SharedState;
use crate::tenants::TenantSnapshot;
use crate::verified_tokens::{self, VerifiedTokens};

// ---------------------------------------------------------------------------------------
// The pure part
// ---------------------------------------------------------------------------------------

/// What the route accepts and how the decision is made.
#[derive(Clone, Copy, Debug)]
pub struct Rules<'a> {
    pub policy: QshPolicy,
    /// The path of `APP_BASE_URL`, stripped before computing the qsh.
    pub base_path: &'a str,
    pub leeway_secs: u64,
    /// `LICENSE_ENFORCEMENT`; when off every verified request is licensed.
    pub enforcement: bool,
    /// `LIC_TRUST`: whether a bound `lic=active` needs an outside source to agree.
    pub lic_trust: licensing::LicTrust,
}

/// A request's token and the tenant it claims to come from, not verified yet.
#[derive(Clone)]
pub struct Presented<'a> {
    token: Cow<'a, str>,
    /// Decoded once and trusted only after [`authorize`] checked the signature; its `iss` is
    /// known to be present.
    claims: Arc<Claims>,
    /// The [`TenantSnapshot::id`] whose key already verified this exact token (from
    /// [`VerifiedTokens`]); [`authorize`] skips the HMAC only for that same snapshot.
    verified_by: Option<u64>,
}

impl<'a> Presented<'a> {
    /// Decodes a token found in a request. Anything but HS256 is refused here, before a tenant
    /// is looked up, and so is a token without `iss`.
    pub fn parse(token: Cow<'a, str>) -> Result<Presented<'a>, Refusal> {
        let (header, claims) = jwt::peek(&token)?;
        if header.alg != "HS256" {
            return Err(JwtError::bad_algorithm(&header.alg).into());
        }
        if claims.iss.is_none() {
            return Err(JwtError::MissingClaim("iss").into());
        }
        Ok(Presented {
            token,
            claims: Arc::new(claims),
            verified_by: None,
        })
    }

    /// The unverified `iss`: only used to choose the tenant whose secret must verify it.
    pub fn iss(&self) -> &str {
        self.claims.iss.as_deref().unwrap_or_default()
    }
}

/// The token is a bearer credential for its lifetime: never in a log line.
impl std::fmt::Debug for Presented<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presented")
            .field("iss", &self.iss())
            .finish_non_exhaustive()
    }
}

/// The parts of an actix request that verification reads: the one way the guard and the
/// lifecycle callbacks build [`RequestParts`].
pub fn request_parts(req: &actix_web::HttpRequest) -> RequestParts<'_> {
    RequestParts::new(
        req.method().as_str(),
        req.path(),
        req.query_string(),
        req.headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
    )
}

/// Finds the token (`Authorization: JWT …` or the `jwt` query parameter) and decodes it
/// ([`Presented::parse`]).
pub fn present<'a>(req: &RequestParts<'a>) -> Result<Presented<'a>, Refusal> {
    Presented::parse(find_token(req)?)
}

fn find_token<'a>(req: &RequestParts<'a>) -> Result<Cow<'a, str>, Refusal> {
    Ok(jwt::extract_token(req.authorization, req.query)?.ok_or(JwtError::Missing)?)
}

/// The work [`present`] does, skipped when `cache` already verified this token: the guard's
/// way in.
pub fn present_cached<'a>(
    req: &RequestParts<'a>,
    cache: &VerifiedTokens,
) -> Result<Presented<'a>, Refusal> {
    let token = find_token(req)?;
    match cache.get(&token) {
        Some(known) => Ok(Presented {
            token,
            claims: known.claims,
            verified_by: Some(known.verified_by),
        }),
        None => Presented::parse(token),
    }
}

/// Remembers a token [`authorize`] accepted with its signature checked, when it is worth it: a
/// context token (reused by its iframe for many calls) not already known for this snapshot.
pub fn remember(presented: &Presented<'_>, verified: &Verified, cache: &VerifiedTokens) {
    if verified.token_kind == TokenKind::Context
        && presented.verified_by != Some(verified.tenant.id())
    {
        cache.insert(
            &presented.token,
            verified_tokens::KnownToken {
                claims: presented.claims.clone(),
                verified_by: verified.tenant.id(),
            },
        );
    }
}

/// A verified request.
#[derive(Debug, Clone)]
pub struct Verified {
    pub tenant: Arc<TenantSnapshot>,
    /// The verified claims, shared with the token cache (no copy per request).
    pub claims: Arc<Claims>,
    pub token_kind: TokenKind,
    /// `Some(active)` when a query-bound token covered a `lic` parameter; `None` for context
    /// tokens, whose query the token does not cover.
    pub lic: Option<bool>,
    /// The license decision for this request (enforced only by the licensed guards).
    pub decision: Decision,
    /// The verified Forge Invocation Token, when the request carried one instead of a
    /// Connect JWT (then `claims` is empty and `token_kind` is [`TokenKind::Context`]: a FIT
    /// binds nothing about the request either).
    pub fit: Option<Arc<Fit>>,
}

impl Verified {
    /// The installation's key in the registry: the Connect clientKey, or for an installation
    /// only Forge knows an internal key that stays the same when the site reinstalls. Use it
    /// to key the app's own data; [`Verified::connect_client_key`] is the Connect one.
    pub fn client_key(&self) -> &str {
        self.tenant.client_key()
    }

    /// The Connect clientKey; `None` for an installation only Forge knows.
    pub fn connect_client_key(&self) -> Option<&str> {
        self.tenant.connect_client_key()
    }

    /// The Forge installation id, when Forge knows the installation.
    pub fn installation_id(&self) -> Option<InstallationId> {
        self.tenant.forge_installation_id()
    }

    /// The Forge installation id in ARI form, as Forge writes it (no allocation).
    pub fn installation_ari(&self) -> Option<&str> {
        self.tenant.forge_installation_ari()
    }

    /// The Atlassian account of the user (`sub` of a Connect JWT, `principal` of a FIT),
    /// absent for anonymous users and for FITs of events and triggers.
    pub fn account_id(&self) -> Option<&str> {
        match &self.fit {
            Some(fit) => fit.principal.as_deref(),
            None => self.claims.sub.as_deref(),
        }
    }
}

/// The claims of a [`Verified`] that came with a FIT: none (one shared value, no allocation
/// per request).
static NO_CLAIMS: std::sync::LazyLock<Arc<Claims>> =
    std::sync::LazyLock::new(|| Arc::new(Claims::default()));

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Token(#[from] JwtError),
    /// Unknown `iss`, or a tenant that uninstalled the app (its secret is erased). One message
    /// for both, so a caller cannot probe which sites have the app.
    #[error("the JWT issuer is not an installed tenant of this app")]
    UnknownIssuer,
    #[error("the JWT issuer is not an installed tenant of this app")]
    Uninstalled,
    #[error("the app is disabled on this site")]
    Disabled,
}

impl Refusal {
    /// The metrics label (`jwt_verification_failures_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Token(e) => e.reason(),
            Refusal::UnknownIssuer => "unknown_issuer",
            Refusal::Uninstalled => "uninstalled",
            Refusal::Disabled => "tenant_disabled",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Disabled => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

/// Verifies a presented token against its tenant and decides the license, in the order of
/// docs/licensing.md#the-request-decision: tenant known and installed, HS256 signature with its
/// secret, `exp`/`iat`/`nbf` with leeway, `qsh` per the route's policy (401 for any of these), then
/// disabled (403). The returned decision is not enforced here: the guard does that where the route
/// asks for it.
pub fn authorize(
    presented: &Presented<'_>,
    tenant: Option<Arc<TenantSnapshot>>,
    req: &RequestParts<'_>,
    rules: &Rules<'_>,
    now: DateTime<Utc>,
) -> Result<Verified, Refusal> {
    let tenant = tenant.ok_or(Refusal::UnknownIssuer)?;
    if tenant.status() == Some(Status::Uninstalled) || tenant.status().is_none() {
        return Err(Refusal::Uninstalled);
    }
    let key = tenant.hs256_key().ok_or(Refusal::Uninstalled)?;
    // Checked before with this very snapshot's key: the same bytes give the same answer.
    if presented.verified_by != Some(tenant.id()) {
        key.verify(&presented.token)?;
    }
    let claims = &presented.claims;
    jwt::check_times(claims, now.timestamp(), rules.leeway_secs)?;
    let token_kind = jwt::check_qsh_with(claims, rules.policy, || {
        qsh::qsh(req.method, req.path, req.query, rules.base_path)
    })?;
    if tenant.status() == Some(Status::Disabled) {
        return Err(Refusal::Disabled);
    }
    let lic = match token_kind {
        TokenKind::QueryBound => bound_lic(req.query),
        TokenKind::Context => None,
    };
    let decision = licensing::decide(
        rules.enforcement,
        rules.lic_trust,
        tenant.grants(),
        lic.map(|active| if active { "active" } else { "none" }),
        &tenant.known(),
        now,
    );
    Ok(Verified {
        claims: claims.clone(),
        tenant,
        token_kind,
        lic,
        decision,
        fit: None,
    })
}

/// Why a FIT request was not verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FitRefusal {
    /// 401, counted by [`FitError::reason`].
    #[error(transparent)]
    Token(#[from] FitError),
    /// The registry could not be asked about an installation not seen before (503).
    #[error("the service cannot verify requests right now; try again")]
    Unavailable,
}

/// Verifies a FIT (docs/forge.md, in this order: header `alg`/`kid`, the key from the cached
/// key set — an unknown `kid` refetches it at most once per 30 s —, signature, `iss`, `aud`,
/// times, `app.id`, installation id, environment, `icLabel`) and finds its installation: from
/// memory when known, registered at first sight otherwise. Nothing else is written.
///
/// A FIT this process verified before with the key the key set still holds under its `kid`
/// skips the decoding and the RS256 check ([`verified_tokens::recall_fit`]); its times and the
/// policy are checked again, and the installation is looked up, on every request.
pub async fn authenticate_fit(
    state: &crate::state::AppState,
    token: &str,
    now: DateTime<Utc>,
) -> Result<(Arc<Fit>, Arc<TenantSnapshot>), FitRefusal> {
    let keys = state.forge_keys.as_ref().ok_or(FitError::Disabled)?;
    let (cache, policy, at) = (&state.verified_fits, &state.fit_policy, now.timestamp());
    let current = |kid: &str| keys.cached(kid);
    let find = async |kid: &str| keys.find(kid).await;
    let (fit, source) =
        verified_tokens::recall_or_verify(cache, token, current, find, policy, at).await?;
    state.metrics.fit_accepted(source);
    let tenant = crate::registry::forge::resolve(state, &fit)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "Forge installation lookup failed");
            FitRefusal::Unavailable
        })?;
    Ok((fit, tenant))
}

/// Verifies a request's FIT and decides its licence: [`authenticate_fit`], then a disabled
/// installation is refused (403, as for Connect, unless `allow_disabled`), then
/// [`licensing::decide_fit`]. The licence the token carried is recorded in the background.
pub async fn verify_fit(
    state: &crate::state::AppState,
    token: &str,
    allow_disabled: bool,
    now: DateTime<Utc>,
) -> Result<Verified, HttpResponse> {
    let (fit, tenant) = match authenticate_fit(state, token, now).await {
        Ok(found) => found,
        Err(FitRefusal::Token(e)) => return Err(fit_refusal_response(state, &e)),
        Err(FitRefusal::Unavailable) => {
            return Err(json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the service cannot verify requests right now; try again",
            ));
        }
    };
    // Forge keeps an app running for a while after an uninstall started, so `uninstalled`
    // is served; a status this version does not know is not.
    match tenant.status() {
        None => return Err(refusal_response(state, &Refusal::Uninstalled)),
        Some(Status::Disabled) if !allow_disabled => {
            return Err(refusal_response(state, &Refusal::Disabled));
        }
        Some(_) => {}
    }
    let decision = licensing::decide_fit(
        state.config.license_enforcement,
        state.config.lic_trust,
        tenant.grants(),
        fit.license.as_ref().and_then(|l| l.active),
        &tenant.known(),
        now,
    );
    state.seen.saw_fit(&tenant, fit.license.as_ref(), now);
    Ok(Verified {
        tenant,
        claims: NO_CLAIMS.clone(),
        token_kind: TokenKind::Context,
        lic: None,
        decision,
        fit: Some(fit),
    })
}

/// A refused FIT: 401 JSON naming the reason in words (never the token or a claim value),
/// counted in `fit_verification_failures_total{reason}`.
pub fn fit_refusal_response(state: &crate::state::AppState, e: &FitError) -> HttpResponse {
    state
        .metrics
        .fit_verification_failures
        .with_label_values(&[e.reason()])
        .inc();
    tracing::info!(reason = e.reason(), "Forge request refused");
    invalid_token(state, "Bearer", &e.to_string())
}

/// 401 `invalid_token` with a `WWW-Authenticate` challenge for `scheme` (`JWT` for Connect,
/// `Bearer` for a FIT) in the app's realm.
fn invalid_token(state: &crate::state::AppState, scheme: &str, message: &str) -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((
            header::WWW_AUTHENTICATE,
            format!("{scheme} realm=\"{}\"", realm(&state.app_key)),
        ))
        .json(ErrorBody {
            error: "invalid_token",
            message,
        })
}

/// The `lic` of a query the token covers: `Some(true)` only when every `lic` value says
/// `active` (a module URL that adds its own `lic` yields `lic=active&lic=none`,
/// docs/protocol.md#lic; the product's `none` must win). No `lic`, or only empty ones: `None`.
fn bound_lic(query: &str) -> Option<bool> {
    let mut seen = None;
    for segment in query.split('&').filter(|s| !s.is_empty()) {
        let (name, value) = segment.split_once('=').unwrap_or((segment, ""));
        if qsh::form_decode_cow(name) != "lic" {
            continue;
        }
        let value = qsh::form_decode_cow(value);
        if !value.is_empty() {
            seen = Some(seen.unwrap_or(true) && value == "active");
        }
    }
    seen
}

// ---------------------------------------------------------------------------------------
// The middleware
// ---------------------------------------------------------------------------------------

/// What a route demands; see [`verified`], [`licensed_api`], [`licensed_page`], [`forge`].
#[derive(Clone, Copy, Debug)]
pub struct Guard {
    policy: QshPolicy,
    license: Option<Unlicensed>,
    tokens: Tokens,
}

/// Which tokens a guard takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tokens {
    ConnectOnly,
    ConnectOrFit,
    /// Forge's own calls (lifecycle events, triggers): a FIT only, a disabled installation
    /// too, no licence.
    FitOnly,
}

/// How an unlicensed request is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unlicensed {
    Json,
    Page,
}

/// A verified request from an installed, enabled tenant; no license needed (e.g. redeeming
/// an access token). `policy` says whether context tokens are accepted.
///
/// A FIT (`Authorization: Bearer`) is accepted too: like a context token it binds nothing
/// about the request.
pub fn verified(policy: QshPolicy) -> Guard {
    Guard {
        policy,
        license: None,
        tokens: Tokens::ConnectOrFit,
    }
}

/// Routes that Forge itself calls (lifecycle events, scheduled triggers): a verified FIT only,
/// no licence asked, a disabled installation let through. The handler takes [`Verified`],
/// whose [`Verified::fit`] is always set.
pub fn forge() -> Guard {
    Guard {
        policy: QshPolicy::RequestOrContext,
        license: None,
        tokens: Tokens::FitOnly,
    }
}

/// API routes called from the app's iframe: a query-bound or a context token, or a FIT
/// (Forge Remote), and a license; unlicensed is a JSON 403 `{"error":"unlicensed",…}`.
pub fn licensed_api() -> Guard {
    Guard {
        policy: QshPolicy::RequestOrContext,
        license: Some(Unlicensed::Json),
        tokens: Tokens::ConnectOrFit,
    }
}

/// Iframe pages: a query-bound token only (a context token is refused), and a license;
/// unlicensed is a friendly HTML 403 page.
pub fn licensed_page() -> Guard {
    Guard {
        policy: QshPolicy::RequestOnly,
        license: Some(Unlicensed::Page),
        tokens: Tokens::ConnectOnly,
    }
}

impl<S, B> Transform<S, ServiceRequest> for Guard
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = GuardMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(GuardMiddleware {
            service: Rc::new(service),
            guard: *self,
        }))
    }
}

pub struct GuardMiddleware<S> {
    service: Rc<S>,
    guard: Guard,
}

type LocalBoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T>>>;

impl<S, B> Service<ServiceRequest> for GuardMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = self.service.clone();
        let guard = self.guard;
        Box::pin(async move {
            let Some(state) = req.app_data::<SharedState>().cloned() else {
                tracing::error!("connect-keeper guard mounted without AppState in app_data");
                let res = json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the server is misconfigured",
                );
                return Ok(req.into_response(res).map_into_right_body());
            };
            match check(&state, guard, &req).await {
                Ok((verified, licensed)) => {
                    crate::telemetry::record_client_key(req.request(), verified.client_key());
                    // One value in the extensions: a `Licensed` holds its `Verified`, which
                    // the `Verified` extractor finds there too (no clone per request).
                    match licensed {
                        Some(source) => {
                            req.extensions_mut().insert(Licensed { verified, source });
                        }
                        None => {
                            req.extensions_mut().insert(verified);
                        }
                    }
                    service
                        .call(req)
                        .await
                        .map(ServiceResponse::map_into_left_body)
                }
                Err(res) => Ok(req.into_response(res).map_into_right_body()),
            }
        })
    }
}

/// The guard's whole job for one request: verify, record, decide. Returns what to store in
/// the extensions, or the answer to send instead.
async fn check(
    state: &SharedState,
    guard: Guard,
    req: &ServiceRequest,
) -> Result<(Verified, Option<Source>), HttpResponse> {
    let parts = request_parts(req.request());
    let rules = Rules {
        policy: guard.policy,
        base_path: &state.base_path,
        leeway_secs: state.config.jwt_leeway_secs,
        enforcement: state.config.license_enforcement,
        lic_trust: state.config.lic_trust,
    };
    let now = Utc::now();
    if guard.tokens != Tokens::ConnectOnly {
        match fit::bearer_token(parts.authorization) {
            Some(Ok(token)) => {
                let verified =
                    verify_fit(state, token, guard.tokens == Tokens::FitOnly, now).await?;
                return enforce(state, guard, verified);
            }
            Some(Err(e)) => return Err(fit_refusal_response(state, &e)),
            None if guard.tokens == Tokens::FitOnly => {
                return Err(fit_refusal_response(state, &FitError::Missing));
            }
            None => {}
        }
    }
    let refuse = |r: Refusal| refusal_response(state, &r);
    let presented = present_cached(&parts, &state.verified_tokens).map_err(refuse)?;
    let tenant = state.tenants.get(presented.iss()).await.map_err(|e| {
        tracing::error!(error = %e, "tenant lookup failed");
        json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service cannot verify requests right now; try again",
        )
    })?;
    let verified = authorize(&presented, tenant, &parts, &rules, now).map_err(refuse)?;
    remember(&presented, &verified, &state.verified_tokens);
    state.seen.saw(&verified.tenant, verified.lic, now);
    enforce(state, guard, verified)
}

/// The licence part of the guard, the same for both kinds of token: counted, and enforced
/// where the route asks for it.
// The error is the response to send, built once and sent at once, as `check` returns it.
#[allow(clippy::result_large_err)]
fn enforce(
    state: &SharedState,
    guard: Guard,
    verified: Verified,
) -> Result<(Verified, Option<Source>), HttpResponse> {
    if guard.license.is_none() {
        return Ok((verified, None));
    }
    let licensed_by = match verified.decision {
        Decision {
            licensed: true,
            source: Some(source),
        } => Some(source),
        _ => None,
    };
    state.metrics.license_decision(licensed_by);
    match licensed_by {
        Some(source) => Ok((verified, Some(source))),
        None => {
            tracing::info!(client_key = %verified.client_key(), "unlicensed request refused");
            Err(unlicensed_response(guard))
        }
    }
}

fn refusal_response(state: &crate::state::AppState, r: &Refusal) -> HttpResponse {
    state
        .metrics
        .verification_failures
        .with_label_values(&[r.reason()])
        .inc();
    tracing::info!(reason = r.reason(), "product request refused");
    match r {
        Refusal::Disabled => json_error(StatusCode::FORBIDDEN, "tenant_disabled", &r.to_string()),
        _ => invalid_token(state, "JWT", &r.to_string()),
    }
}

/// The app key, as safe inside a quoted header value.
fn realm(app_key: &str) -> String {
    app_key
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .collect()
}

fn unlicensed_response(guard: Guard) -> HttpResponse {
    match guard.license {
        Some(Unlicensed::Page) => HttpResponse::Forbidden()
            .content_type("text/html; charset=utf-8")
            .body(UNLICENSED_PAGE),
        _ => json_error(
            StatusCode::FORBIDDEN,
            "unlicensed",
            "this site has no license for the app: start a trial or buy it on the Atlassian Marketplace",
        ),
    }
}

/// Shown inside the product's iframe to every user of an unlicensed site, so it speaks to
/// users (who cannot buy) as well as admins (who can). Static: nothing from the request is
/// echoed, so there is nothing to escape.
pub const UNLICENSED_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>License required</title>
<script src="https://connect-cdn.atl-paas.net/all.js" async></script>
<style>
body { font-family: -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, sans-serif; color: #172b4d; margin: 24px; }
h1 { font-size: 20px; }
</style>
</head>
<body>
<h1>This app needs a license</h1>
<p>This site does not have a valid license for this app, or its trial has ended.</p>
<p>A site administrator can start a free trial or buy a subscription on the
Atlassian Marketplace: <em>Apps &rarr; Manage apps</em>, then choose this app.</p>
<p>If you think this is a mistake, ask your administrator to contact the app's vendor.</p>
</body>
</html>
"#;

// ---------------------------------------------------------------------------------------
// Extractors
// ---------------------------------------------------------------------------------------

/// The answer when a handler asks for what no guard stored: a programming error, made loud.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GuardNotMounted(&'static str);

impl ResponseError for GuardNotMounted {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        tracing::error!(problem = self.0, "handler used without its guard");
        json_error(self.status_code(), "guard_not_mounted", self.0)
    }
}

impl FromRequest for Verified {
    type Error = GuardNotMounted;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let ext = req.extensions();
        let found = ext
            .get::<Verified>()
            .or_else(|| ext.get::<Licensed>().map(|l| &l.verified))
            .cloned();
        ready(found.ok_or(GuardNotMounted(
            "this route is not wrapped in a connect-keeper guard (guard::verified / licensed_api / licensed_page)",
        )))
    }
}

/// A verified request that the guard also found licensed.
#[derive(Debug, Clone)]
pub struct Licensed {
    pub verified: Verified,
    /// What licensed it (`license_source` of `/api/whoami`).
    pub source: Source,
}

impl FromRequest for Licensed {
    type Error = GuardNotMounted;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(req.extensions().get::<Licensed>().cloned().ok_or(GuardNotMounted(
            "this route is not wrapped in a licensing guard (guard::licensed_api / licensed_page)",
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::GrantKind;
    use crate::licensing::{GrantFacts, Observations};
    use crate::tenants::TenantRecord;
    use chrono::TimeZone;
    use serde_json::json;

    const SECRET: &str = "s3cret-shared";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap()
    }

    fn record(secret: Option<&str>, status: Status) -> TenantRecord {
        TenantRecord {
            client_key: "client-1".into(),
            shared_secret: secret.map(str::to_owned),
            status: Some(status),
            ..TenantRecord::default()
        }
    }

    fn tenant(status: &str, grants: Vec<GrantFacts>) -> Arc<TenantSnapshot> {
        let record = record(Some(SECRET), Status::parse(status).unwrap());
        Arc::new(TenantSnapshot::new(
            record,
            &Observations::default(),
            grants,
        ))
    }

    fn rules(policy: QshPolicy) -> Rules<'static> {
        Rules {
            policy,
            base_path: "",
            leeway_secs: 30,
            enforcement: true,
            lic_trust: licensing::LicTrust::Request,
        }
    }

    fn token(qsh: &str, exp_offset: i64, secret: &str) -> String {
        let t = now().timestamp();
        jwt::sign_hs256(
            &json!({"iss": "client-1", "sub": "acc-1", "qsh": qsh, "iat": t - 10, "exp": t + exp_offset}),
            secret.as_bytes(),
        )
    }

    fn bound(path: &str, query: &str) -> String {
        token(&qsh::qsh("GET", path, query, ""), 60, SECRET)
    }

    fn run(
        query_token: Option<&str>,
        header_token: Option<&str>,
        path: &str,
        query: &str,
        tenant: Option<Arc<TenantSnapshot>>,
        policy: QshPolicy,
    ) -> Result<Verified, Refusal> {
        let q = match query_token {
            Some(t) if query.is_empty() => format!("jwt={t}"),
            Some(t) => format!("{query}&jwt={t}"),
            None => query.to_owned(),
        };
        let auth = header_token.map(|t| format!("JWT {t}"));
        let parts = RequestParts {
            method: "GET",
            path,
            query: &q,
            authorization: auth.as_deref(),
        };
        let presented = present(&parts)?;
        assert_eq!(presented.iss(), "client-1");
        authorize(&presented, tenant, &parts, &rules(policy), now())
    }

    #[test]
    fn a_bound_lic_decides_for_query_bound_tokens() {
        let t = bound("/panel", "lic=active&xdm_e=x");
        let v = run(
            Some(&t),
            None,
            "/panel",
            "lic=active&xdm_e=x",
            Some(tenant("enabled", vec![])),
            QshPolicy::RequestOnly,
        )
        .expect("verified");
        assert_eq!(v.token_kind, TokenKind::QueryBound);
        assert_eq!(v.lic, Some(true));
        assert_eq!(
            v.decision,
            Decision {
                licensed: true,
                source: Some(Source::Lic)
            }
        );
        assert_eq!(v.account_id(), Some("acc-1"));

        let t = bound("/panel", "lic=none");
        let v = run(
            Some(&t),
            None,
            "/panel",
            "lic=none",
            Some(tenant("installed", vec![])),
            QshPolicy::RequestOnly,
        )
        .expect("verified");
        assert!(!v.decision.licensed);
    }

    #[test]
    fn a_context_token_ignores_the_query_lic() {
        let t = token("context-qsh", 60, SECRET);
        let v = run(
            None,
            Some(&t),
            "/api/whoami",
            "lic=active",
            Some(tenant("enabled", vec![])),
            QshPolicy::RequestOrContext,
        )
        .expect("verified");
        assert_eq!(v.token_kind, TokenKind::Context);
        assert_eq!(v.lic, None);
        assert!(!v.decision.licensed, "no grant, no known license");

        // ...and is refused where only bound tokens are accepted.
        let err = run(
            None,
            Some(&t),
            "/panel",
            "",
            Some(tenant("enabled", vec![])),
            QshPolicy::RequestOnly,
        )
        .unwrap_err();
        assert_eq!(err, Refusal::Token(JwtError::ContextTokenNotAllowed));
    }

    #[test]
    fn grants_are_evaluated_at_request_time() {
        let active = GrantFacts {
            kind: GrantKind::Free,
            starts_at: now() - chrono::Duration::days(1),
            ends_at: Some(now() + chrono::Duration::hours(1)),
            revoked_at: None,
        };
        let t = token("context-qsh", 60, SECRET);
        let v = run(
            None,
            Some(&t),
            "/api/whoami",
            "",
            Some(tenant("enabled", vec![active.clone()])),
            QshPolicy::RequestOrContext,
        )
        .unwrap();
        assert_eq!(v.decision.source, Some(Source::Grant));
        let ended = GrantFacts {
            ends_at: Some(now()),
            ..active
        };
        let v = run(
            None,
            Some(&t),
            "/api/whoami",
            "",
            Some(tenant("enabled", vec![ended])),
            QshPolicy::RequestOrContext,
        )
        .unwrap();
        assert!(!v.decision.licensed);
    }

    #[test]
    fn refusals() {
        let ok = bound("/panel", "");
        let enabled = || Some(tenant("enabled", vec![]));
        let policy = QshPolicy::RequestOnly;
        assert_eq!(
            run(Some(&ok), None, "/panel", "", None, policy).unwrap_err(),
            Refusal::UnknownIssuer
        );
        assert_eq!(
            run(
                Some(&ok),
                None,
                "/panel",
                "",
                Some(tenant("uninstalled", vec![])),
                policy
            )
            .unwrap_err(),
            Refusal::Uninstalled
        );
        assert_eq!(
            run(
                Some(&ok),
                None,
                "/panel",
                "",
                Some(tenant("disabled", vec![])),
                policy
            )
            .unwrap_err(),
            Refusal::Disabled
        );
        let wrong_secret = token(&qsh::qsh("GET", "/panel", "", ""), 60, "other");
        assert_eq!(
            run(Some(&wrong_secret), None, "/panel", "", enabled(), policy).unwrap_err(),
            Refusal::Token(JwtError::BadSignature)
        );
        // A disabled tenant with a bad signature is a 401, not a 403: nothing is revealed
        // before the signature is checked.
        assert_eq!(
            run(
                Some(&wrong_secret),
                None,
                "/panel",
                "",
                Some(tenant("disabled", vec![])),
                policy
            )
            .unwrap_err(),
            Refusal::Token(JwtError::BadSignature)
        );
        assert_eq!(
            run(Some(&ok), None, "/panel", "x=1", enabled(), policy).unwrap_err(),
            Refusal::Token(JwtError::QshMismatch)
        );
        let within_leeway = token(&qsh::qsh("GET", "/panel", "", ""), -30, SECRET);
        assert!(run(Some(&within_leeway), None, "/panel", "", enabled(), policy).is_ok());
        let beyond = token(&qsh::qsh("GET", "/panel", "", ""), -31, SECRET);
        assert_eq!(
            run(Some(&beyond), None, "/panel", "", enabled(), policy).unwrap_err(),
            Refusal::Token(JwtError::Expired)
        );
        let parts = RequestParts {
            method: "GET",
            path: "/panel",
            query: "",
            authorization: None,
        };
        assert_eq!(
            present(&parts).unwrap_err(),
            Refusal::Token(JwtError::Missing)
        );
        let rs = format!(
            "{}.{}.sig",
            base64_url(r#"{"alg":"RS256"}"#),
            base64_url(r#"{"iss":"client-1"}"#)
        );
        let parts = RequestParts {
            method: "GET",
            path: "/panel",
            query: "",
            authorization: Some(&format!("JWT {rs}")),
        };
        assert_eq!(
            present(&parts).unwrap_err(),
            Refusal::Token(JwtError::Algorithm("RS256".into()))
        );
    }

    #[test]
    fn tampered_tokens_are_refused() {
        let good = token("context-qsh", 60, SECRET);
        let (head, rest) = good.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let t = now().timestamp();
        let forged_claims = base64_url(
            &json!({"iss": "client-1", "sub": "admin", "qsh": "context-qsh", "iat": t, "exp": t + 9999})
                .to_string(),
        );
        let enabled = || Some(tenant("enabled", vec![]));
        let policy = QshPolicy::RequestOrContext;
        let forged = format!("{head}.{forged_claims}.{sig}");
        assert_eq!(
            run(None, Some(&forged), "/api/whoami", "", enabled(), policy).unwrap_err(),
            Refusal::Token(JwtError::BadSignature)
        );
        for bad_sig in ["", "***", "AAAA"] {
            let (message, _) = good.rsplit_once('.').unwrap();
            let t = format!("{message}.{bad_sig}");
            assert!(matches!(
                run(None, Some(&t), "/api/whoami", "", enabled(), policy).unwrap_err(),
                Refusal::Token(JwtError::BadSignature | JwtError::Malformed)
            ));
        }
        // A tenant with an empty secret verifies nothing, not even a token "signed" with it.
        let record = record(Some(""), Status::Enabled);
        let empty = Some(Arc::new(TenantSnapshot::new(
            record,
            &Observations::default(),
            vec![],
        )));
        let t = token("context-qsh", 60, "");
        assert_eq!(
            run(None, Some(&t), "/api/whoami", "", empty, policy).unwrap_err(),
            Refusal::Uninstalled
        );
    }

    #[test]
    fn base_path_is_stripped_for_the_qsh() {
        let t = token(&qsh::qsh("GET", "/panel", "a=1", ""), 60, SECRET);
        for path in ["/panel", "/acme/panel"] {
            let q = format!("a=1&jwt={t}");
            let parts = RequestParts {
                method: "GET",
                path,
                query: &q,
                authorization: None,
            };
            let presented = present(&parts).unwrap();
            let r = Rules {
                base_path: "/acme",
                ..rules(QshPolicy::RequestOnly)
            };
            assert!(
                authorize(
                    &presented,
                    Some(tenant("enabled", vec![])),
                    &parts,
                    &r,
                    now()
                )
                .is_ok(),
                "{path}"
            );
        }
    }

    #[test]
    fn enforcement_off_licenses_everyone_verified() {
        let t = bound("/panel", "lic=none");
        let q = format!("lic=none&jwt={t}");
        let parts = RequestParts {
            method: "GET",
            path: "/panel",
            query: &q,
            authorization: None,
        };
        let presented = present(&parts).unwrap();
        let r = Rules {
            enforcement: false,
            ..rules(QshPolicy::RequestOnly)
        };
        let v = authorize(
            &presented,
            Some(tenant("enabled", vec![])),
            &parts,
            &r,
            now(),
        )
        .unwrap();
        assert_eq!(v.decision.source, Some(Source::EnforcementOff));
    }

    #[test]
    fn repeated_lic_values_need_all_active() {
        assert_eq!(bound_lic(""), None);
        assert_eq!(bound_lic("lic="), None);
        assert_eq!(bound_lic("lic=active"), Some(true));
        assert_eq!(bound_lic("lic=none"), Some(false));
        assert_eq!(bound_lic("lic=active&lic=none"), Some(false));
        assert_eq!(bound_lic("lic=none&lic=active"), Some(false));
        assert_eq!(bound_lic("lic=Active"), Some(false));
    }

    #[test]
    fn extractors_fail_loudly_without_the_guard() {
        let req = actix_web::test::TestRequest::default().to_http_request();
        let err = futures::executor::block_on(Verified::extract(&req)).unwrap_err();
        assert_eq!(err.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        let err = futures::executor::block_on(Licensed::extract(&req)).unwrap_err();
        assert_eq!(
            err.error_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn one_extension_serves_both_extractors() {
        use actix_web::HttpMessage;
        let verified = Verified {
            tenant: Arc::new(TenantSnapshot::new(
                TenantRecord {
                    client_key: "ck".into(),
                    ..TenantRecord::default()
                },
                &Observations::default(),
                vec![],
            )),
            claims: Arc::new(Claims {
                sub: Some("acc".into()),
                ..Claims::default()
            }),
            token_kind: TokenKind::Context,
            lic: None,
            decision: Decision {
                licensed: true,
                source: Some(Source::Grant),
            },
            fit: None,
        };
        // licensed: the guard stores a `Licensed`; `Verified` is found inside it
        let req = actix_web::test::TestRequest::default().to_http_request();
        req.extensions_mut().insert(Licensed {
            verified: verified.clone(),
            source: Source::Grant,
        });
        let v = futures::executor::block_on(Verified::extract(&req)).unwrap();
        assert_eq!(v.client_key(), "ck");
        assert_eq!(v.account_id(), Some("acc"));
        assert!(futures::executor::block_on(Licensed::extract(&req)).is_ok());
        // verified only: no `Licensed` can be conjured from it
        let req = actix_web::test::TestRequest::default().to_http_request();
        req.extensions_mut().insert(verified);
        assert!(futures::executor::block_on(Verified::extract(&req)).is_ok());
        assert!(futures::executor::block_on(Licensed::extract(&req)).is_err());
    }

    #[test]
    fn realm_is_header_safe() {
        assert_eq!(realm("connect-keeper-app"), "connect-keeper-app");
        assert_eq!(realm("a\"b\\c d"), "abcd");
    }

    fn base64_url(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }
}

#[cfg(test)]
mod verified_token_tests {
    //! The guard's use of [`VerifiedTokens`]: the HMAC is skipped only for the snapshot that
    //! checked it, and every other check still runs on every request.
    use super::*;
    use crate::domain::Status;
    use crate::licensing::Observations;
    use crate::tenants::TenantRecord;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap()
    }

    fn snapshot(secret: &str, status: &str) -> Arc<TenantSnapshot> {
        let record = TenantRecord {
            client_key: "client-1".into(),
            shared_secret: Some(secret.into()),
            status: Status::parse(status),
            ..TenantRecord::default()
        };
        Arc::new(TenantSnapshot::new(
            record,
            &Observations::default(),
            vec![],
        ))
    }

    fn token(qsh: &str, secret: &str) -> String {
        let t = now().timestamp();
        jwt::sign_hs256(
            &json!({"iss": "client-1", "sub": "acc-1", "qsh": qsh, "iat": t - 10, "exp": t + 60}),
            secret.as_bytes(),
        )
    }

    fn rules(policy: QshPolicy) -> Rules<'static> {
        Rules {
            policy,
            base_path: "",
            leeway_secs: 30,
            enforcement: false,
            lic_trust: licensing::LicTrust::Request,
        }
    }

    /// What the guard does for one request, with the cache.
    fn guard_once(
        cache: &VerifiedTokens,
        header: &str,
        query: &str,
        tenant: &Arc<TenantSnapshot>,
        policy: QshPolicy,
        at: DateTime<Utc>,
    ) -> Result<(Verified, bool), Refusal> {
        let parts = RequestParts {
            method: "GET",
            path: "/api/x",
            query,
            authorization: Some(header),
        };
        let presented = present_cached(&parts, cache)?;
        let recalled = presented.verified_by.is_some();
        let verified = authorize(&presented, Some(tenant.clone()), &parts, &rules(policy), at)?;
        remember(&presented, &verified, cache);
        Ok((verified, recalled))
    }

    #[test]
    fn a_context_token_is_verified_once_per_snapshot() {
        let cache = VerifiedTokens::default();
        let tenant = snapshot("secret-1", "enabled");
        let header = format!("JWT {}", token("context-qsh", "secret-1"));
        let ctx = QshPolicy::RequestOrContext;

        let (_, recalled) = guard_once(&cache, &header, "", &tenant, ctx, now()).unwrap();
        assert!(!recalled, "first sight is verified in full");
        let (v, recalled) = guard_once(&cache, &header, "", &tenant, ctx, now()).unwrap();
        assert!(recalled, "second sight comes from the cache");
        assert_eq!(v.account_id(), Some("acc-1"));
        assert_eq!(v.token_kind, TokenKind::Context);
    }

    #[test]
    fn a_new_secret_makes_a_remembered_token_fail() {
        let cache = VerifiedTokens::default();
        let header = format!("JWT {}", token("context-qsh", "secret-1"));
        let ctx = QshPolicy::RequestOrContext;
        let old = snapshot("secret-1", "enabled");
        guard_once(&cache, &header, "", &old, ctx, now()).unwrap();

        // A reinstall rotated the secret: the cache reloads the tenant into a new snapshot.
        let rotated = snapshot("secret-2", "enabled");
        assert_ne!(old.id(), rotated.id());
        assert_eq!(
            guard_once(&cache, &header, "", &rotated, ctx, now()).unwrap_err(),
            Refusal::Token(JwtError::BadSignature)
        );
        // Even the same secret in a new snapshot is verified again, and remembered for it.
        let reloaded = snapshot("secret-1", "enabled");
        let (_, recalled) = guard_once(&cache, &header, "", &reloaded, ctx, now()).unwrap();
        assert!(recalled, "known, but for another snapshot");
        assert_eq!(
            cache
                .get(header.trim_start_matches("JWT "))
                .map(|k| k.verified_by),
            Some(reloaded.id())
        );
    }

    #[test]
    fn every_other_check_still_runs_on_a_remembered_token() {
        let cache = VerifiedTokens::default();
        let tenant = snapshot("secret-1", "enabled");
        let header = format!("JWT {}", token("context-qsh", "secret-1"));
        guard_once(
            &cache,
            &header,
            "",
            &tenant,
            QshPolicy::RequestOrContext,
            now(),
        )
        .unwrap();

        // Expired (exp + 60, leeway 30).
        let later = now() + chrono::Duration::seconds(91);
        assert_eq!(
            guard_once(
                &cache,
                &header,
                "",
                &tenant,
                QshPolicy::RequestOrContext,
                later
            )
            .unwrap_err(),
            Refusal::Token(JwtError::Expired)
        );
        // A route that refuses context tokens still refuses it.
        assert_eq!(
            guard_once(&cache, &header, "", &tenant, QshPolicy::RequestOnly, now()).unwrap_err(),
            Refusal::Token(JwtError::ContextTokenNotAllowed)
        );
        // Uninstalled and disabled tenants are refused.
        let record = TenantRecord {
            client_key: "client-1".into(),
            status: Some(Status::Uninstalled),
            ..TenantRecord::default()
        };
        let gone = Arc::new(TenantSnapshot::new(
            record,
            &Observations::default(),
            vec![],
        ));
        assert_eq!(
            guard_once(
                &cache,
                &header,
                "",
                &gone,
                QshPolicy::RequestOrContext,
                now()
            )
            .unwrap_err(),
            Refusal::Uninstalled
        );
        let disabled = snapshot("secret-1", "disabled");
        assert_eq!(
            guard_once(
                &cache,
                &header,
                "",
                &disabled,
                QshPolicy::RequestOrContext,
                now()
            )
            .unwrap_err(),
            Refusal::Disabled
        );
    }

    #[test]
    fn query_bound_and_refused_tokens_are_not_remembered() {
        let cache = VerifiedTokens::default();
        let tenant = snapshot("secret-1", "enabled");
        let bound = token(&qsh::qsh("GET", "/api/x", "a=1", ""), "secret-1");
        guard_once(
            &cache,
            &format!("JWT {bound}"),
            "a=1",
            &tenant,
            QshPolicy::RequestOrContext,
            now(),
        )
        .unwrap();
        assert!(cache.is_empty(), "query-bound tokens are not cached");

        let forged = format!("JWT {}", token("context-qsh", "not-the-secret"));
        for _ in 0..2 {
            assert_eq!(
                guard_once(
                    &cache,
                    &forged,
                    "",
                    &tenant,
                    QshPolicy::RequestOrContext,
                    now()
                )
                .unwrap_err(),
                Refusal::Token(JwtError::BadSignature)
            );
        }
        assert!(cache.is_empty(), "a refused token is never cached");
    }
}
