//! The one HTTP error type.
//!
//! Policy: every error answer is `{"error": code, "message": text}` with the status
//! docs/admin-api.md#errors lists. Internal errors are logged with their cause chain and answered
//! with a generic message, so a stack trace, SQL text or secret can never reach a client.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::connect::jwt::JwtError;
use crate::marketplace::SyncError;
use crate::registry;
use crate::registry::lifecycle::CallbackError;

#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
    pub message: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 — a body or query that cannot be accepted; the message names the field.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 401 — missing or invalid credentials.
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// 403 — authenticated but not allowed (disabled tenant, unlicensed).
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// 503 — a dependency needed to answer is down; the caller may retry.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// 502 — an outside service (the Marketplace) failed.
    #[error("{message}")]
    BadGateway { code: &'static str, message: String },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }
    pub fn invalid_field(field: &str, why: impl std::fmt::Display) -> Self {
        ApiError::BadRequest {
            code: "invalid_request",
            message: format!("{field}: {why}"),
        }
    }
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Unauthorized {
            code,
            message: message.into(),
        }
    }
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Forbidden {
            code,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::NotFound(message.into())
    }

    pub fn code(&self) -> &str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::Unauthorized { code, .. }
            | ApiError::Forbidden { code, .. }
            | ApiError::BadGateway { code, .. }
            | ApiError::Unavailable { code, .. } => code,
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Internal(_) => "internal_error",
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::Internal(e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(e.into())
    }
}

/// The one place a registry outcome becomes an HTTP answer (the status codes of
/// docs/admin-api.md#errors).
impl From<registry::Error> for ApiError {
    fn from(e: registry::Error) -> Self {
        match e {
            registry::Error::Invalid { field, why } => ApiError::invalid_field(field, why),
            registry::Error::NotFound { .. } => ApiError::NotFound(e.to_string()),
            registry::Error::Conflict(message) => ApiError::Conflict(message),
            registry::Error::AccessToken(r) if r.is_conflict() => ApiError::Conflict(r.to_string()),
            registry::Error::AccessToken(r) => {
                ApiError::bad_request("invalid_access_token", r.to_string())
            }
            registry::Error::Unauthenticated(why) => ApiError::unauthorized("unauthorized", why),
            registry::Error::Database(e) => ApiError::from(e),
            registry::Error::Internal(e) => ApiError::Internal(e),
        }
    }
}

/// A Marketplace sync that failed: 400 without credentials, 409 while another runs, 502 when
/// the Marketplace refused, failed or timed out.
impl From<SyncError> for ApiError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::NotConfigured => ApiError::BadRequest {
                code: "marketplace_not_configured",
                message: e.to_string(),
            },
            SyncError::InProgress | SyncError::LeaseLost => ApiError::Conflict(e.to_string()),
            SyncError::Marketplace(m) => ApiError::BadGateway {
                code: "marketplace_unavailable",
                message: m.to_string(),
            },
            SyncError::Database(d) => {
                ApiError::Internal(anyhow::Error::new(d).context("Marketplace sync"))
            }
        }
    }
}

/// A lifecycle callback refused: 401 for the token, 503 when the signing key could not be
/// fetched (the caller may retry), 400 for the body.
impl From<CallbackError> for ApiError {
    fn from(e: CallbackError) -> Self {
        match e {
            CallbackError::Token(JwtError::KeyUnavailable) => ApiError::Unavailable {
                code: "install_keys_unavailable",
                message: "the signed-install key could not be fetched; try again".into(),
            },
            CallbackError::Token(e) => ApiError::unauthorized("invalid_token", e.to_string()),
            CallbackError::IssMismatch | CallbackError::Replayed => {
                ApiError::unauthorized("invalid_token", e.to_string())
            }
            CallbackError::NotJson(_) => ApiError::bad_request("invalid_json", e.to_string()),
            CallbackError::MissingField(_) => ApiError::bad_request("missing_field", e.to_string()),
            CallbackError::Registry(e) => e.into(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = match self {
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                "the server failed to handle the request".to_owned()
            }
            other => other.to_string(),
        };
        json_error(self.status_code(), self.code(), &message)
    }
}

pub fn json_error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody {
        error: code,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::error::{Entity, Refusal};

    fn status(e: impl Into<ApiError>) -> u16 {
        e.into().status_code().as_u16()
    }

    #[test]
    fn registry_errors_map_to_the_documented_statuses() {
        assert_eq!(status(registry::Error::from(Refusal::Unknown)), 400);
        assert_eq!(status(registry::Error::from(Refusal::Expired)), 400);
        assert_eq!(status(registry::Error::from(Refusal::Revoked)), 400);
        assert_eq!(status(registry::Error::from(Refusal::RedeemedByOther)), 409);
        assert_eq!(status(registry::Error::from(Refusal::BoundToOther)), 409);
        assert_eq!(
            status(registry::Error::invalid("token", "is required")),
            400
        );
        for entity in [Entity::Installation, Entity::Grant, Entity::AccessToken] {
            assert_eq!(status(registry::Error::not_found(entity, "x")), 404);
        }
        let e = ApiError::from(registry::Error::invalid(
            "days",
            "must be between 1 and 365",
        ));
        assert_eq!(e.code(), "invalid_request");
        assert!(e.to_string().starts_with("days:"), "{e}");
        let e = ApiError::from(registry::Error::from(Refusal::Expired));
        assert_eq!(e.code(), "invalid_access_token");
        assert_eq!(
            status(registry::Error::Database(sqlx::Error::RowNotFound)),
            500
        );
    }

    #[test]
    fn callback_errors_map_to_the_documented_statuses() {
        assert_eq!(status(CallbackError::Token(JwtError::Missing)), 401);
        assert_eq!(status(CallbackError::Token(JwtError::KeyUnavailable)), 503);
        assert_eq!(status(CallbackError::IssMismatch), 401);
        let e = ApiError::from(CallbackError::MissingField("clientKey"));
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            ("missing_field", "clientKey: is required")
        );
        let e = ApiError::from(CallbackError::NotJson("the body is not valid JSON"));
        assert_eq!(e.code(), "invalid_json");
    }
}
