//! The vendor's admin API (docs/admin-api.md), all under `/admin`.
//!
//! Protection is on the scope: `require_admin` runs before every route of the scope (and its
//! 404 fallback), so a handler that forgets to ask for the caller cannot be left open. The
//! middleware writes the caller into the request extensions; the [`AdminActor`] extractor
//! reads it for the audit trail ("the middleware writes, the extractor reads").
//!
//! Handlers are thin: parse, call [`crate::registry`] (the same functions the CLI calls), map.

use std::future::{Ready, ready};
use std::sync::OnceLock;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{Next, from_fn};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::marketplace::{SyncError, SyncSummary};
use crate::registry::list_query::{self, Format};
use crate::registry::{admin_tokens, export, grants, installations, views};
use crate::state::SharedState;
use crate::store::Db;

/// Who is calling the admin API: an admin token's name, or `env` for `ADMIN_TOKEN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminActor(pub String);

impl AdminActor {
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl FromRequest for AdminActor {
    type Error = ApiError;
    type Future = Ready<Result<AdminActor, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Missing means the handler is mounted outside the admin scope: a bug, not a 401.
        ready(
            req.extensions()
                .get::<AdminActor>()
                .cloned()
                .ok_or_else(|| {
                    ApiError::Internal(anyhow::anyhow!("AdminActor used outside the admin scope"))
                }),
        )
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Decides who the caller is from its `Authorization` header, or refuses with 401. Plain
/// function so it can be tested and reused without actix; the rules are
/// [`admin_tokens::authenticate`].
pub async fn authorize(
    db: &Db,
    env_token: Option<&SecretString>,
    authorization: Option<&str>,
) -> Result<AdminActor, ApiError> {
    let caller = admin_tokens::authenticate(db, env_token, bearer(authorization)).await?;
    Ok(AdminActor(caller.actor))
}

/// The answer to a client address that failed admin authentication too often
/// ([`crate::routes::auth_throttle`]).
pub fn too_many_attempts(wait: std::time::Duration) -> HttpResponse {
    let mut res = crate::error::json_error(
        actix_web::http::StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
        "too many failed admin authentications from this address; try again later",
    );
    res.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(crate::routes::auth_throttle::retry_after_secs(wait)),
    );
    res
}

enum Refused {
    Throttled(std::time::Duration),
    Error(ApiError),
}

/// The scope's middleware: 401 JSON unless [`authorize`] accepts the caller; `429` for an
/// address that failed too often. Every answer of the scope is `Cache-Control: no-store`: it
/// may carry a new token, or what a vendor knows about their customers.
async fn require_admin(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let outcome = match req.app_data::<SharedState>() {
        Some(state) => {
            let client = crate::routes::auth_throttle::Client::of(req.peer_addr().map(|a| a.ip()));
            let header = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match state
                .admin_throttle
                .check(client, std::time::Instant::now())
            {
                Err(wait) => Err(Refused::Throttled(wait)),
                Ok(()) => {
                    let outcome =
                        authorize(&state.db, state.config.admin_token.as_ref(), header).await;
                    // A presented token that is wrong is a guess; no token at all is not.
                    if matches!(outcome, Err(ApiError::Unauthorized { .. })) && header.is_some() {
                        state
                            .admin_throttle
                            .failed(client, std::time::Instant::now());
                    }
                    outcome.map_err(Refused::Error)
                }
            }
        }
        None => Err(Refused::Error(ApiError::Internal(anyhow::anyhow!(
            "AppState is not registered"
        )))),
    };
    let mut res = match outcome {
        Ok(actor) => {
            req.extensions_mut().insert(actor);
            next.call(req).await?.map_into_left_body()
        }
        Err(Refused::Throttled(wait)) => req
            .into_response(too_many_attempts(wait))
            .map_into_right_body(),
        Err(Refused::Error(e)) => {
            let mut res = e.error_response();
            if matches!(e, ApiError::Unauthorized { .. }) {
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"connect-keeper admin\""),
                );
            }
            req.into_response(res).map_into_right_body()
        }
    };
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(res)
}

/// Mounts the admin scope. Called from [`super::configure`].
pub fn configure(cfg: &mut web::ServiceConfig) {
    use web::{get, resource};
    let na = || web::to(super::method_not_allowed);
    cfg.service(
        web::scope("/admin")
            .wrap(from_fn(require_admin))
            .service(
                resource("/installations")
                    .route(get().to(list_installations))
                    .default_service(na()),
            )
            .service(
                resource("/installations/{client_key}")
                    .route(get().to(get_installation))
                    .default_service(na()),
            )
            .service(
                resource("/installations/{client_key}/trial-extension")
                    .route(web::post().to(extend_trial))
                    .default_service(na()),
            )
            .service(
                resource("/installations/{client_key}/grants")
                    .route(web::post().to(create_grant))
                    .default_service(na()),
            )
            .service(
                resource("/grants/{id}")
                    .route(web::delete().to(revoke_grant))
                    .default_service(na()),
            )
            .service(
                resource("/access-tokens")
                    .route(web::post().to(create_access_token))
                    .route(get().to(list_access_tokens))
                    .default_service(na()),
            )
            .service(
                resource("/access-tokens/{id}")
                    .route(web::delete().to(revoke_access_token))
                    .default_service(na()),
            )
            .service(
                resource("/summary")
                    .route(get().to(summary))
                    .default_service(na()),
            )
            .service(
                resource("/summary/weekly")
                    .route(get().to(summary_weekly))
                    .default_service(na()),
            )
            .service(
                resource("/marketplace/sync")
                    .route(web::post().to(marketplace_sync))
                    .default_service(na()),
            )
            .service(
                resource("/openapi.json")
                    .route(get().to(openapi))
                    .default_service(na()),
            )
            .default_service(web::to(|| async {
                ApiError::not_found("no such admin route").error_response()
            })),
    );
}

fn accepts_csv(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/csv"))
}

/// List installations
///
/// Filters combine with AND; comma-separated values within one filter combine with OR.
/// Pages are keyset-paginated: pass `next_cursor` as `cursor` (with the same `sort`) for the
/// next page; every row appears exactly once even while installs arrive. `format=csv` (or
/// `Accept: text/csv`) streams every matching row as CSV instead (`limit` and `cursor` are
/// then ignored).
#[utoipa::path(
    get,
    path = "/admin/installations",
    tag = "installations",
    params(
        ("status" = Option<String>, Query, description = "installed, enabled, disabled, uninstalled; comma-separated"),
        ("license" = Option<String>, Query, description = "active, trial, free, unlicensed; comma-separated"),
        ("product" = Option<String>, Query, description = "jira, confluence; comma-separated"),
        ("flavour" = Option<String>, Query, description = "connect, connect_on_forge, forge; comma-separated"),
        ("q" = Option<String>, Query, description = "case-insensitive substring of the base URL, company or contact e-mail"),
        ("trial_ends_before" = Option<String>, Query, description = "a date (YYYY-MM-DD, midnight UTC) or RFC 3339 instant: effective trial end strictly before it"),
        ("corroborated" = Option<bool>, Query, description = "true: an outside source (product licence endpoint, Marketplace) says the site is licensed; false: none does, e.g. sites licensed only by the lic of their requests"),
        ("sort" = Option<String>, Query, description = "installed_at (default), -installed_at, trial_end (soonest first, none last), base_url"),
        ("limit" = Option<u32>, Query, description = "1..=500, default 50"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("format" = Option<String>, Query, description = "json (default) or csv"),
    ),
    responses(
        (status = 200, description = "A page of installations", body = views::InstallationPage),
        (status = 200, description = "Every matching installation as CSV (format=csv or Accept: text/csv)", content_type = "text/csv", body = String),
        (status = 400, description = "A parameter is invalid; the message names it", body = ErrorSchema),
        (status = 401, description = "Missing or invalid admin token", body = ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn list_installations(
    state: SharedState,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let list = list_query::parse_list_query(req.query_string(), accepts_csv(&req))?;
    match list.format {
        Format::Json => Ok(HttpResponse::Ok().json(installations::list(&state.db, &list).await?)),
        Format::Csv => Ok(csv_download(&state, list.filter, list.sort)),
    }
}

/// The CSV export as a download, streamed ([`export::csv_stream`]): the API's
/// `format=csv` and the dashboard's "download CSV" link.
pub(crate) fn csv_download(
    state: &crate::state::AppState,
    filter: crate::store::listing::Filter,
    sort: crate::store::listing::Sort,
) -> HttpResponse {
    let stream = export::csv_stream(state.db.clone(), filter, sort);
    let stream = futures::StreamExt::map(stream, |chunk| {
        chunk.map_err(|e| {
            // The status line is already sent: all we can do is log and cut the body.
            tracing::error!(error = ?e, "CSV export failed mid-stream");
            actix_web::error::ErrorInternalServerError("export failed")
        })
    });
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"installations.csv\"",
        ))
        .streaming(stream)
}

/// One installation with its lifecycle history and audit trail
#[utoipa::path(
    get,
    path = "/admin/installations/{client_key}",
    tag = "installations",
    params(("client_key" = String, Path, description = "the tenant's clientKey, or its Forge installation id (ARI or bare uuid)")),
    responses(
        (status = 200, description = "The installation, its events (oldest first) and audit trail", body = views::InstallationDetail),
        (status = 401, description = "Missing or invalid admin token", body = ErrorSchema),
        (status = 404, description = "Unknown client_key", body = ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn get_installation(
    state: SharedState,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(installations::detail(&state.db, &path).await?))
}

// ---------------------------------------------------------------------------------------
// Request bodies. Typed, and read by `json_body`, so that every 400 names the field: serde's
// own messages do not for a wrong type, so the field path comes from `serde_path_to_error`
// and the fields that need it say in their own words what they expect.
// ---------------------------------------------------------------------------------------

/// `POST /admin/installations/{client_key}/trial-extension`
#[derive(Deserialize, ToSchema)]
pub struct TrialExtensionRequest {
    /// 1..=365, counted from the later of now and the current effective trial end.
    #[serde(deserialize_with = "body::trial_days")]
    #[schema(minimum = 1, maximum = 365)]
    days: u32,
    #[serde(default, deserialize_with = "body::text")]
    reason: Option<String>,
}

/// `POST /admin/installations/{client_key}/grants`
#[derive(Deserialize, ToSchema)]
pub struct GrantRequest {
    /// Only `free`.
    #[serde(deserialize_with = "body::free_kind")]
    #[schema(example = "free")]
    #[allow(dead_code)] // checked while reading the body: there is one kind
    kind: String,
    /// `null` (or absent) for no end.
    #[serde(default, deserialize_with = "body::instant")]
    ends_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "body::text")]
    reason: Option<String>,
}

/// `POST /admin/access-tokens`
#[derive(Deserialize, ToSchema)]
pub struct AccessTokenRequest {
    #[serde(default, deserialize_with = "body::text")]
    note: Option<String>,
    /// `null` (or absent) for a token that never expires.
    #[serde(default, deserialize_with = "body::instant")]
    expires_at: Option<DateTime<Utc>>,
    /// Bind the token in advance to this installation.
    #[serde(default, deserialize_with = "body::text")]
    client_key: Option<String>,
}

/// `{"items": […]}` of access tokens.
#[derive(serde::Serialize, ToSchema)]
pub struct AccessTokenList {
    items: Vec<views::AccessToken>,
}

/// Reads a request body into `T`. An empty body counts as `{}` (every field absent); a body
/// that is not a JSON object, a missing required field and a field that does not fit are each
/// a 400 whose message starts with the field (`body` for the whole).
fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(serde_json::Map::new())
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return Err(ApiError::invalid_field("body", "must be a JSON object")),
            Err(_) => return Err(ApiError::invalid_field("body", "is not valid JSON")),
        }
    };
    // From a `Value`, serde_json's messages carry no line and column, only the reason.
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let why = e.into_inner().to_string();
        // A missing field fails at the object, not at the field: name the field instead.
        match why
            .strip_prefix("missing field `")
            .and_then(|r| r.strip_suffix('`'))
        {
            Some(missing) => ApiError::invalid_field(missing, "is required"),
            None => ApiError::invalid_field(&field, why),
        }
    })
}

/// Field readers for the request bodies: each accepts exactly what the API documents and
/// otherwise says what it expected (the field's name is added by [`json_body`]).
mod body {
    use chrono::{DateTime, Utc};
    use serde::Deserialize;
    use serde::de::{Deserializer, Error};
    use serde_json::Value;

    use crate::registry::grants::{MAX_TRIAL_DAYS, TRIAL_DAYS_RULE};
    use crate::registry::list_query;

    /// A string or `null`.
    pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            _ => Err(D::Error::custom("must be a string or null")),
        }
    }

    /// An RFC 3339 timestamp or `null`.
    pub fn instant<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            Value::String(s) => list_query::rfc3339(&s).map(Some).map_err(D::Error::custom),
            _ => Err(D::Error::custom(
                "must be an RFC 3339 timestamp string or null",
            )),
        }
    }

    /// A whole number of days, 1..=365.
    pub fn trial_days<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        Value::deserialize(d)?
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=MAX_TRIAL_DAYS).contains(n))
            .ok_or_else(|| D::Error::custom(TRIAL_DAYS_RULE))
    }

    /// The kind of a grant made by `POST …/grants`: only `free`.
    pub fn free_kind<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        match Option::<String>::deserialize(d)
            .map_err(|_: D::Error| D::Error::custom("must be a string or null"))?
        {
            Some(kind) if kind == "free" => Ok(kind),
            Some(other) => Err(D::Error::custom(format!(
                "unknown kind {other:?}; only \"free\" can be granted here (trial extensions use …/trial-extension)"
            ))),
            None => Err(D::Error::custom("is required: \"free\"")),
        }
    }
}

/// Extend a trial by N days
///
/// Counts from the later of now and the current effective trial end (the Marketplace trial
/// end or the latest extension), so extensions stack. The extension starts now.
#[utoipa::path(
    post,
    path = "/admin/installations/{client_key}/trial-extension",
    tag = "grants",
    params(("client_key" = String, Path, description = "the tenant's clientKey, or its Forge installation id (ARI or bare uuid)")),
    request_body = TrialExtensionRequest,
    responses(
        (status = 201, description = "The trial-extension grant", body = views::Grant),
        (status = 400, description = "Invalid body; the message names the field", body = ErrorSchema),
        (status = 401, description = "Missing or invalid admin token", body = ErrorSchema),
        (status = 404, description = "Unknown client_key", body = ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn extend_trial(
    state: SharedState,
    actor: AdminActor,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: TrialExtensionRequest = json_body(&body)?;
    let grant = grants::extend_trial(
        state.get_ref(),
        &path,
        body.days,
        body.reason.as_deref(),
        actor.name(),
        crate::store::now(),
    )
    .await?;
    Ok(HttpResponse::Created().json(views::Grant::from(&grant)))
}

/// Let an installation use the app for free
#[utoipa::path(
    post,
    path = "/admin/installations/{client_key}/grants",
    tag = "grants",
    params(("client_key" = String, Path, description = "the tenant's clientKey, or its Forge installation id (ARI or bare uuid)")),
    request_body = GrantRequest,
    responses(
        (status = 201, description = "The free grant", body = views::Grant),
        (status = 400, description = "Invalid body; the message names the field", body = ErrorSchema),
        (status = 401, description = "Missing or invalid admin token", body = ErrorSchema),
        (status = 404, description = "Unknown client_key", body = ErrorSchema),
        (status = 409, description = "The site already has free use with no end; the message names that grant", body = ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn create_grant(
    state: SharedState,
    actor: AdminActor,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: GrantRequest = json_body(&body)?;
    let grant = grants::grant_free(
        state.get_ref(),
        &path,
        body.ends_at,
        body.reason.as_deref(),
        actor.name(),
        crate::store::now(),
    )
    .await?;
    Ok(HttpResponse::Created().json(views::Grant::from(&grant)))
}

/// Revoke a grant
///
/// The grant is kept for the record with `revoked_at` set. Revoking a redeemed access token's
/// grant ends that site's free use.
#[utoipa::path(
    delete,
    path = "/admin/grants/{id}",
    tag = "grants",
    params(("id" = String, Path, description = "the grant id")),
    responses(
        (status = 204, description = "Revoked (or already revoked)"),
        (status = 401, description = "Missing or invalid admin token", body = ErrorSchema),
        (status = 404, description = "Unknown id", body = ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn revoke_grant(
    state: SharedState,
    actor: AdminActor,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    grants::revoke_grant(state.get_ref(), &path, actor.name(), crate::store::now()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Issue an access token
///
/// The token is in this answer only; it is stored hashed. `install_url` is the descriptor URL
/// carrying it.
#[utoipa::path(
    post,
    path = "/admin/access-tokens",
    tag = "access tokens",
    request_body = AccessTokenRequest,
    responses(
        (status = 201, description = "The new token, shown this once", body = views::CreatedAccessToken),
        (status = 400, description = "Invalid body; the message names the field", body = ErrorSchema),
        (status = 401, description = "Missing or invalid admin token", body = ErrorSchema),
        (status = 404, description = "client_key names no installation", body = ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn create_access_token(
    state: SharedState,
    actor: AdminActor,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: AccessTokenRequest = json_body(&body)?;
    let (row, token) = grants::create_access_token(
        state.get_ref(),
        body.note.as_deref(),
        body.expires_at,
        body.client_key.as_deref(),
        actor.name(),
        crate::store::now(),
    )
    .await?;
    let created = views::CreatedAccessToken::new(&row, token, &state.config.app_base_url);
    Ok(HttpResponse::Created().json(created))
}

/// List access tokens (without the tokens)
#[utoipa::path(
    get,
    path = "/admin/access-tokens",
    tag = "access tokens",
    responses(
        (status = 200, description = "Every access token, newest first", body = AccessTokenList),
        (status = 401, description = "Missing or invalid admin token", body = ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn list_access_tokens(state: SharedState) -> Result<HttpResponse, ApiError> {
    let items = grants::list_access_tokens(&state.db).await?;
    Ok(HttpResponse::Ok().json(AccessTokenList { items }))
}

/// Revoke an access token
///
/// A redeemed token's grant is revoked with it, ending that site's free use.
#[utoipa::path(
    delete,
    path = "/admin/access-tokens/{id}",
    tag = "access tokens",
    params(("id" = String, Path, description = "the access token id")),
    responses(
        (status = 204, description = "Revoked (or already revoked)"),
        (status = 401, description = "Missing or invalid admin token", body = ErrorSchema),
        (status = 404, description = "Unknown id", body = ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn revoke_access_token(
    state: SharedState,
    actor: AdminActor,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    grants::revoke_access_token(state.get_ref(), &path, actor.name(), crate::store::now()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Counts by status and license state, and trials ending within 7 days
#[utoipa::path(
    get,
    path = "/admin/summary",
    tag = "installations",
    responses(
        (status = 200, description = "The summary", body = views::Summary),
        (status = 401, description = "Missing or invalid admin token", body = ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn summary(state: SharedState) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(installations::summary(&state.db, crate::store::now()).await?))
}

/// Installs and uninstalls per week over the last 26 weeks
///
/// Oldest first; the last week is the current one. Weeks start on Monday, UTC. `installs`
/// counts installations that became installed that week (a first install or a reinstall after
/// an uninstall); `uninstalls` those that became uninstalled.
#[utoipa::path(
    get,
    path = "/admin/summary/weekly",
    tag = "installations",
    responses(
        (status = 200, description = "26 weeks, oldest first", body = crate::registry::weekly::WeeklySummary),
        (status = 401, description = "Missing or invalid admin token", body = ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn summary_weekly(state: SharedState) -> Result<HttpResponse, ApiError> {
    let weekly = crate::registry::weekly::weekly(&state.db, crate::store::now()).await?;
    Ok(HttpResponse::Ok().json(weekly))
}

/// Run one Marketplace license sync now
///
/// Joins each Marketplace license to an installation by (cloudId, app key), then entitlement
/// id/number, then SEN, then site host name; the latest `lastUpdated` wins per site.
#[utoipa::path(
    post,
    path = "/admin/marketplace/sync",
    tag = "marketplace",
    responses(
        (status = 200, description = "The sync finished", body = SyncSummary),
        (status = 400, description = "Marketplace credentials are not configured", body = ErrorSchema),
        (status = 401, description = "Missing or invalid admin token", body = ErrorSchema),
        (status = 409, description = "A sync is already running", body = ErrorSchema),
        (status = 502, description = "The Marketplace refused, failed or timed out (`marketplace_unavailable`); stored data unchanged", body = ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn marketplace_sync(state: SharedState) -> Result<HttpResponse, ApiError> {
    match crate::marketplace::sync_once(&state.db, &state.marketplace, &state.metrics).await {
        Ok(summary) => Ok(HttpResponse::Ok().json(summary)),
        Err(e @ (SyncError::InProgress | SyncError::LeaseLost)) => Ok(crate::error::json_error(
            actix_web::http::StatusCode::CONFLICT,
            "sync_in_progress",
            &e.to_string(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// This document
#[utoipa::path(
    get,
    path = "/admin/openapi.json",
    tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI 3.1 description of the admin API"),
        (status = 401, description = "Missing or invalid admin token", body = ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn openapi() -> HttpResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    let body = DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|_| "{}".to_owned())
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body.clone())
}

/// The error body of every failed answer, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorSchema {
    /// A machine code, e.g. `invalid_request`, `unauthorized`, `not_found`.
    error: String,
    /// Human text; for a 400 it starts with the offending field or parameter.
    message: String,
}

// Keeps the documented error shape and the real one from drifting apart silently.
const _: fn(ErrorBody<'static>) -> (&'static str, &'static str) = |b| (b.error, b.message);

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "ADMIN_TOKEN, or a token made by `connect-keeper admin-token create`",
                    ))
                    .build(),
            ),
        );
    }
}

/// The admin API's OpenAPI document, generated from the handlers' `#[utoipa::path]`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "connect-keeper admin API",
        description = "The vendor's installation registry: installations, trials, grants, access tokens, Marketplace sync."
    ),
    paths(
        list_installations,
        get_installation,
        extend_trial,
        create_grant,
        revoke_grant,
        create_access_token,
        list_access_tokens,
        revoke_access_token,
        summary,
        summary_weekly,
        marketplace_sync,
        openapi,
    ),
    components(schemas(
        views::Installation,
        views::License,
        views::Customer,
        views::Contact,
        views::GrantItem,
        views::Grant,
        views::Event,
        views::AuditEntry,
        views::InstallationDetail,
        views::InstallationPage,
        views::Summary,
        views::StatusCounts,
        views::LicenseCounts,
        crate::registry::weekly::Week,
        crate::registry::weekly::WeeklySummary,
        views::AccessToken,
        views::CreatedAccessToken,
        AccessTokenList,
        TrialExtensionRequest,
        GrantRequest,
        AccessTokenRequest,
        SyncSummary,
        ErrorSchema,
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(Some("abc")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn bodies_that_do_not_fit_are_400s_naming_the_field() {
        fn message<T: DeserializeOwned>(body: &str) -> String {
            match json_body::<T>(body.as_bytes()) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{body} was accepted"),
            }
        }
        for (body, expected) in [
            ("[1]", "body: must be a JSON object"),
            ("{not json", "body: is not valid JSON"),
            ("", "days: is required"),
            (
                r#"{"days": 0}"#,
                "days: must be a whole number from 1 to 365",
            ),
            (
                r#"{"days": 2.5}"#,
                "days: must be a whole number from 1 to 365",
            ),
            (
                r#"{"days": "ten"}"#,
                "days: must be a whole number from 1 to 365",
            ),
            (
                r#"{"days": 1, "reason": 5}"#,
                "reason: must be a string or null",
            ),
        ] {
            assert_eq!(message::<TrialExtensionRequest>(body), expected, "{body}");
        }
        for (body, expected) in [
            (r#"{"kind": "paid"}"#, "kind: unknown kind \"paid\""),
            (r#"{"kind": 1}"#, "kind: must be a string or null"),
            (r#"{"kind": null}"#, "kind: is required: \"free\""),
            (
                r#"{"kind": "free", "ends_at": 5}"#,
                "ends_at: must be an RFC 3339 timestamp",
            ),
            (
                r#"{"kind": "free", "ends_at": "soon"}"#,
                "ends_at: expected an RFC 3339",
            ),
        ] {
            let m = message::<GrantRequest>(body);
            assert!(m.starts_with(expected), "{body}: {m}");
        }
        let m = message::<AccessTokenRequest>(r#"{"client_key": ["a"]}"#);
        assert_eq!(m, "client_key: must be a string or null");

        let ok: GrantRequest =
            json_body(br#"{"kind": "free", "ends_at": "2030-01-01T00:00:00Z", "x": 1}"#).unwrap();
        assert_eq!(
            ok.ends_at.unwrap().to_rfc3339(),
            "2030-01-01T00:00:00+00:00"
        );
        let empty: AccessTokenRequest = json_body(b" ").unwrap();
        assert!(empty.note.is_none() && empty.expires_at.is_none() && empty.client_key.is_none());
    }

    #[test]
    fn openapi_lists_the_routes() {
        let doc = ApiDoc::openapi();
        for p in [
            "/admin/installations",
            "/admin/installations/{client_key}",
            "/admin/installations/{client_key}/trial-extension",
            "/admin/installations/{client_key}/grants",
            "/admin/grants/{id}",
            "/admin/access-tokens",
            "/admin/access-tokens/{id}",
            "/admin/marketplace/sync",
            "/admin/summary",
            "/admin/summary/weekly",
            "/admin/openapi.json",
        ] {
            assert!(doc.paths.paths.contains_key(p), "{p}");
        }
    }
}
