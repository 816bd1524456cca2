//! The vendor's admin API (contract §5), all under `/admin`.
//!
//! Protection is on the scope: [`require_admin`] runs before every route of the scope (and its
//! 404 fallback), so a handler that forgets to ask for the caller cannot be left open. The
//! middleware writes the caller into the request extensions; the [`AdminActor`] extractor
//! reads it for the audit trail ("the middleware writes, the extractor reads").
//!
//! Handlers are thin: parse, call [`crate::registry::vendor`] (the same functions the CLI
//! calls), map.

use std::future::{Ready, ready};
use std::sync::OnceLock;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{Next, from_fn};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::OpenApi;

use crate::error::{ApiError, ErrorBody};
use crate::registry::vendor::{self, Format};
use crate::startup::SharedState;
use crate::store::{Db, admin_tokens};

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
        ready(req.extensions().get::<AdminActor>().cloned().ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("AdminActor used outside the admin scope"))
        }))
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares in constant time. Hashing first makes the comparison length-independent too.
pub fn env_token_matches(presented: &str, expected: &SecretString) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.expose_secret().as_bytes());
    a.ct_eq(&b).into()
}

/// Decides who the caller is, or refuses with 401. Plain function so it can be tested and
/// reused without actix.
pub async fn authorize(
    db: &Db,
    env_token: Option<&SecretString>,
    authorization: Option<&str>,
) -> Result<AdminActor, ApiError> {
    let Some(token) = bearer(authorization) else {
        return Err(ApiError::unauthorized(
            "unauthorized",
            "an admin bearer token is required: Authorization: Bearer <token>",
        ));
    };
    if env_token.is_some_and(|e| env_token_matches(token, e)) {
        return Ok(AdminActor("env".to_owned()));
    }
    match admin_tokens::find_active(db, &admin_tokens::hash(token)).await? {
        Some(row) => {
            if let Err(e) = admin_tokens::touch(db, &row.id, crate::store::now()).await {
                tracing::warn!(error = %e, "could not record admin token use");
            }
            Ok(AdminActor(row.name))
        }
        None => Err(ApiError::unauthorized(
            "unauthorized",
            "the admin token is not valid (unknown or revoked)",
        )),
    }
}

/// The scope's middleware: 401 JSON unless [`authorize`] accepts the caller.
async fn require_admin(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let outcome = match req.app_data::<SharedState>() {
        Some(state) => {
            let header = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            authorize(&state.db, state.config.admin_token.as_ref(), header).await
        }
        None => Err(ApiError::Internal(anyhow::anyhow!("AppState is not registered"))),
    };
    match outcome {
        Ok(actor) => {
            req.extensions_mut().insert(actor);
            Ok(next.call(req).await?.map_into_left_body())
        }
        Err(e) => {
            let mut res = e.error_response();
            if matches!(e, ApiError::Unauthorized { .. }) {
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"connect-keeper admin\""),
                );
            }
            Ok(req.into_response(res).map_into_right_body())
        }
    }
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
            .service(resource("/summary").route(get().to(summary)).default_service(na()))
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
        ("q" = Option<String>, Query, description = "case-insensitive substring of the base URL, company or contact e-mail"),
        ("trial_ends_before" = Option<String>, Query, description = "a date (YYYY-MM-DD, midnight UTC) or RFC 3339 instant: effective trial end strictly before it"),
        ("sort" = Option<String>, Query, description = "installed_at (default), -installed_at, trial_end (soonest first, none last), base_url"),
        ("limit" = Option<u32>, Query, description = "1..=500, default 50"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("format" = Option<String>, Query, description = "json (default) or csv"),
    ),
    responses(
        (status = 200, description = "A page of installations", body = vendor::InstallationPage),
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
    let list = vendor::parse_list_query(req.query_string(), accepts_csv(&req))?;
    match list.format {
        Format::Json => Ok(HttpResponse::Ok().json(vendor::list(&state.db, &list).await?)),
        Format::Csv => {
            let stream = vendor::csv_stream(state.db.clone(), list.filter, list.sort);
            let stream = futures::StreamExt::map(stream, |chunk| {
                chunk.map_err(|e| {
                    // The status line is already sent: all we can do is log and cut the body.
                    tracing::error!(error = ?e, "CSV export failed mid-stream");
                    actix_web::error::ErrorInternalServerError("export failed")
                })
            });
            Ok(HttpResponse::Ok()
                .content_type("text/csv; charset=utf-8")
                .insert_header((
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"installations.csv\"",
                ))
                .streaming(stream))
        }
    }
}

/// One installation with its lifecycle history and audit trail
#[utoipa::path(
    get,
    path = "/admin/installations/{client_key}",
    tag = "installations",
    params(("client_key" = String, Path, description = "the tenant's clientKey")),
    responses(
        (status = 200, description = "The installation, its events (oldest first) and audit trail", body = vendor::InstallationDetail),
        (status = 401, description = "Missing or invalid admin token", body = ErrorSchema),
        (status = 404, description = "Unknown client_key", body = ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn get_installation(
    state: SharedState,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(vendor::detail(&state.db, &path).await?))
}

/// Counts by status and license state, and trials ending within 7 days
#[utoipa::path(
    get,
    path = "/admin/summary",
    tag = "installations",
    responses(
        (status = 200, description = "The summary", body = vendor::Summary),
        (status = 401, description = "Missing or invalid admin token", body = ErrorSchema),
    ),
    security(("bearer" = []))
)]
pub async fn summary(state: SharedState) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(vendor::summary(&state.db, crate::store::now()).await?))
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
    paths(list_installations, get_installation, summary, openapi),
    components(schemas(
        vendor::Installation,
        vendor::License,
        vendor::Customer,
        vendor::Contact,
        vendor::GrantItem,
        vendor::Grant,
        vendor::Event,
        vendor::AuditEntry,
        vendor::InstallationDetail,
        vendor::InstallationPage,
        vendor::Summary,
        vendor::StatusCounts,
        vendor::LicenseCounts,
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
    fn env_token_comparison() {
        let s = SecretString::from("s3cret-token".to_owned());
        assert!(env_token_matches("s3cret-token", &s));
        assert!(!env_token_matches("s3cret-toke", &s));
        assert!(!env_token_matches("", &s));
    }

    #[test]
    fn openapi_lists_the_routes() {
        let doc = ApiDoc::openapi();
        for p in ["/admin/installations", "/admin/installations/{client_key}", "/admin/summary"] {
            assert!(doc.paths.paths.contains_key(p), "{p}");
        }
    }
}
