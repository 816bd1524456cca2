//! Tracing: a pretty or JSON subscriber (`LOG_FORMAT`, levels from `RUST_LOG`) and request
//! spans that carry the tenant's client key once it is known.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

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
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Request spans with an empty `client_key` field that the lifecycle handlers and the guard
/// fill in with [`record_client_key`].
pub struct KeeperRootSpan;

impl RootSpanBuilder for KeeperRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        tracing_actix_web::root_span!(request, client_key = tracing::field::Empty)
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// Puts the tenant into the current request span.
pub fn record_client_key(req: &actix_web::HttpRequest, client_key: &str) {
    use actix_web::HttpMessage;
    if let Some(span) = req.extensions().get::<tracing_actix_web::RootSpan>() {
        span.record("client_key", client_key);
    }
}
