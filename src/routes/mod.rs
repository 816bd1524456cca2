//! HTTP routes, thin: extract, call, map. Protection is mounted on scopes, not per handler.

use actix_web::dev::ServiceResponse;
use actix_web::http::{StatusCode, header};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{HttpResponse, web};

use crate::error::json_error;

pub mod admin;
pub mod auth_throttle;
pub mod forge;
pub mod lifecycle;
pub mod limits;
pub mod ops;
pub mod product;

/// Sets headers on an answer, replacing any the handler set: each browser-facing scope (the
/// iframe page, the dashboard) states its policy as one table.
pub(crate) fn set_headers(
    h: &mut header::HeaderMap,
    policy: &[(header::HeaderName, &'static str)],
) {
    for (name, value) in policy {
        h.insert(name.clone(), header::HeaderValue::from_static(value));
    }
}

/// Largest request body accepted anywhere (413 beyond 1 MiB: docs/admin-api.md#errors).
pub const MAX_BODY: usize = 1 << 20;

/// The whole service: every route at the root and, when `APP_BASE_URL` has a path (e.g.
/// `/acme`), under that path too — so it works behind a proxy that strips the prefix and one
/// that keeps it. Unknown routes answer a JSON 404.
pub fn mount(cfg: &mut web::ServiceConfig, base_path: &str) {
    cfg.app_data(web::PayloadConfig::new(MAX_BODY))
        .app_data(web::JsonConfig::default().limit(MAX_BODY));
    if !base_path.is_empty() {
        cfg.service(web::scope(base_path).configure(configure));
    }
    cfg.configure(configure).default_service(web::to(|| async {
        json_error(StatusCode::NOT_FOUND, "not_found", "no such route")
    }));
}

/// Every route of the service. Library users can mount parts of it themselves: see
/// [`lifecycle::configure`].
///
/// actix tries resources in the order they are registered, so the product routes (every
/// request of every site's iframe) come before the lifecycle callbacks and the admin scope;
/// no two of these patterns overlap, so the order changes nothing else.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(ops::configure)
        .configure(product::configure)
        .configure(lifecycle::configure)
        .configure(forge::configure)
        // before the admin API: its `/admin` scope would otherwise take `/admin/ui/…`
        .configure(crate::dashboard::configure)
        .configure(admin::configure);
}

/// For `.default_service` of a resource: the route exists, the method does not.
pub async fn method_not_allowed() -> HttpResponse {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

/// Turns framework-made error answers without a JSON body (413 from the payload limit, a 400 from a
/// query extractor, 404/405) into the `{"error","message"}` shape of docs/admin-api.md#errors.
pub fn json_errors<B: 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler_client(|res: ServiceResponse<B>| {
        let is_json = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
        if is_json {
            return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
        }
        let status = res.status();
        let (code, message) = match status {
            StatusCode::PAYLOAD_TOO_LARGE => {
                ("payload_too_large", "the request body is over 1 MiB")
            }
            StatusCode::NOT_FOUND => ("not_found", "no such route"),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method_not_allowed",
                "this route does not accept that method",
            ),
            StatusCode::UNAUTHORIZED => ("unauthorized", "authentication required"),
            _ => ("bad_request", "the request could not be read"),
        };
        let (req, _) = res.into_parts();
        let res = json_error(status, code, message);
        Ok(ErrorHandlerResponse::Response(
            ServiceResponse::new(req, res).map_into_right_body(),
        ))
    })
}
