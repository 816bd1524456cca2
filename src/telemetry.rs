//! Tracing: a pretty or JSON subscriber (`LOG_FORMAT`, levels from `RUST_LOG`) and request
//! spans that carry the tenant's client key once it is known.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use tracing::Span;
use tracing_actix_web::RootSpanBuilder;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::error::ApiError;

/// Installs the global subscriber once; later calls (tests) are ignored.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,actix_server=warn"));
    // Colour only on a terminal: escape codes in a redirected file or a log collector are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        // The span list alone: the current span is its last entry, so "span" would repeat it.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// The request span and the one line logged when a request is refused or fails.
///
/// The span is kept small so every line logged inside a request stays short: method, route
/// pattern (never the path with its query, which can carry a `jwt` or an `access-token`),
/// request id, status, and the tenant's client key once the lifecycle handlers or the guard
/// know it ([`record_client_key`]). A request answered with an error status logs one line with
/// the status and, when known, the error code: `INFO` for a client error (4xx: the caller's mistake, routine for a
/// public endpoint); `WARN` with the message for a server error (5xx: a dependency failed),
/// except an internal error, which `error::ApiError` already logs at `ERROR` with its cause
/// chain. Successful requests log nothing (the request metrics count them).
pub struct KeeperRootSpan;

impl RootSpanBuilder for KeeperRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        use actix_web::HttpMessage;
        let route = request.match_pattern();
        let request_id = request
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        tracing::info_span!(
            "request",
            method = %request.method(),
            route = route.as_deref().unwrap_or("unmatched"),
            request_id = %request_id,
            client_key = tracing::field::Empty,
            status = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        let (status, error) = match outcome {
            Ok(response) => (response.status(), response.response().error()),
            Err(e) => (e.as_response_error().status_code(), Some(e)),
        };
        span.record("status", status.as_u16());
        let api_error = error.and_then(|e| e.as_error::<ApiError>());
        let code = api_error.map(ApiError::code);
        if status.is_client_error() {
            match code {
                Some(code) => {
                    tracing::info!(status = status.as_u16(), error = code, "request refused")
                }
                None => tracing::info!(status = status.as_u16(), "request refused"),
            }
        } else if status.is_server_error() && !matches!(api_error, Some(ApiError::Internal(_))) {
            // Our own words (which service failed), never the caller's input.
            let message = error.map(ToString::to_string).unwrap_or_default();
            tracing::warn!(status = status.as_u16(), error = code.unwrap_or_default(), %message, "request failed");
        }
    }
}

/// Puts the tenant into the current request span.
pub fn record_client_key(req: &actix_web::HttpRequest, client_key: &str) {
    use actix_web::HttpMessage;
    if let Some(span) = req.extensions().get::<tracing_actix_web::RootSpan>() {
        span.record("client_key", client_key);
    }
}
