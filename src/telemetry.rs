//! Tracing: a pretty or JSON subscriber (`LOG_FORMAT`, levels from `RUST_LOG`) and request
//! spans that carry the tenant's client key once it is known.
//!
//! The log policy (docs/operations.md#logs): no log line, at any level and in either format,
//! holds a JWT, an access token, a shared secret or an admin token, and text from sites and
//! the Marketplace cannot forge lines or send terminal escapes.
//! * The request span ([`KeeperRootSpan`]) records no URL (an iframe URL carries `jwt=…`, a
//!   descriptor install URL `access-token=…`) and no header.
//! * Field values are written with control characters escaped: pretty lines through
//!   [`escaping_fields`], JSON lines (whose encoder escapes C0 controls already) through
//!   [`EscapingStdout`] for DEL and C1 controls.

use std::fmt::Write as _;
use std::io;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use tracing::Span;
use tracing::field::Field;
use tracing_actix_web::RootSpanBuilder;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

use crate::config::LogFormat;
use crate::error::ApiError;
use crate::sanitize::EscapingWriter;

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
        LogFormat::Pretty => builder.fmt_fields(escaping_fields()).try_init(),
        // The span list alone: the current span is its last entry, so "span" would repeat it.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(|| EscapingStdout(io::stdout()))
            .try_init(),
    };
}

/// The field formatter of the pretty format: `name=value` pairs separated by spaces, the
/// message without its name, every value with control characters escaped (a `%` value is
/// written as its `Display`, which tracing would otherwise print raw — a newline in a site's
/// name would start a forged log line).
pub fn escaping_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    tracing_subscriber::fmt::format::debug_fn(
        |w: &mut Writer<'_>, field: &Field, value: &dyn std::fmt::Debug| {
            if field.name() != "message" {
                write!(w, "{}=", field.name())?;
            }
            write!(EscapingWriter(w), "{value:?}")
        },
    )
    .delimited(" ")
}

/// Stdout for JSON lines, with DEL and the C1 controls (U+0080–U+009F, which some terminals
/// obey) written as JSON `\u` escapes. They can only occur inside JSON strings, where the
/// escape means the same character; the JSON encoder already escapes the C0 controls.
pub struct EscapingStdout(pub io::Stdout);

impl io::Write for EscapingStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // tracing-subscriber hands over one whole formatted line per call: a UTF-8 sequence is
        // never split between two calls.
        escape_json_line(buf, &mut self.0)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Writes `line` to `out` with DEL and the C1 controls as JSON `\u` escapes.
fn escape_json_line(line: &[u8], out: &mut impl io::Write) -> io::Result<()> {
    let mut escaped = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        match (line[i], line.get(i + 1)) {
            (0x7f, _) => {
                escaped.extend_from_slice(b"\\u007f");
                i += 1;
            }
            (0xc2, Some(&b)) if (0x80..=0x9f).contains(&b) => {
                escaped.extend_from_slice(format!("\\u{b:04x}").as_bytes());
                i += 2;
            }
            (b, _) => {
                escaped.push(b);
                i += 1;
            }
        }
    }
    out.write_all(&escaped)
}

/// The HTTP method as logged: one of the standard methods, or `OTHER` (a client can invent
/// any number of methods; each would otherwise be logged as sent).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
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
            method = method_label(request.method()),
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
        span.record(
            "client_key",
            tracing::field::display(crate::sanitize::Escaped(client_key)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_bounded() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(
            method_label(&Method::from_bytes(b"FROBNICATE").unwrap()),
            "OTHER"
        );
    }

    #[test]
    fn pretty_fields_escape_control_characters() {
        use tracing_subscriber::fmt::MakeWriter;
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        impl<'a> MakeWriter<'a> for Buf {
            type Writer = Buf;
            fn make_writer(&'a self) -> Buf {
                self.clone()
            }
        }
        let buf = Buf::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buf.clone())
            .with_ansi(false)
            .fmt_fields(escaping_fields())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let company = "Acme\x1b[2J\nforged line";
            tracing::info!(company = %company, "synced {}", "x\ny");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains("company=Acme\\x1b[2J\\nforged line"),
            "{text}"
        );
        assert!(text.contains("synced x\\ny"), "{text}");
    }

    #[test]
    fn json_lines_escape_del_and_c1() {
        let mut out = Vec::new();
        let line = "{\"company\":\"a\u{7f}b\u{9b}2Jc é\"}\n";
        escape_json_line(line.as_bytes(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "{\"company\":\"a\\u007fb\\u009b2Jc é\"}\n");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["company"], "a\u{7f}b\u{9b}2Jc é");
    }
}
