//! The serving error type and its one mapping to gRPC and HTTP statuses.
//!
//! | error | gRPC | HTTP |
//! |---|---|---|
//! | `InvalidArgument` (malformed ref, missing join key, unequal columns, wrong type, empty request) | INVALID_ARGUMENT | 400 |
//! | `NotFound` (unknown namespace, view, feature or service) | NOT_FOUND | 404 |
//! | `TooLarge` (rows, features or bytes over the configured limits) | RESOURCE_EXHAUSTED | 413 |
//! | `DeadlineExceeded` (the client's deadline passed) | DEADLINE_EXCEEDED | 504 |
//! | `Unavailable` (online store unreachable or timing out) | UNAVAILABLE | 503 |
//! | `Unauthenticated` (no token, or one that does not verify) | UNAUTHENTICATED | 401 |
//! | `PermissionDenied` (RBAC refused, or the store's ACL refused) | PERMISSION_DENIED | 403 |
//! | `Internal` | INTERNAL | 500 |

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::online::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServingError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("deadline exceeded after {0:?}")]
    DeadlineExceeded(std::time::Duration),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Internal(String),
}

impl ServingError {
    /// A short, stable label for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            ServingError::InvalidArgument(_) => "invalid_argument",
            ServingError::NotFound(_) => "not_found",
            ServingError::TooLarge(_) => "resource_exhausted",
            ServingError::DeadlineExceeded(_) => "deadline_exceeded",
            ServingError::Unavailable(_) => "unavailable",
            ServingError::Unauthenticated(_) => "unauthenticated",
            ServingError::PermissionDenied(_) => "permission_denied",
            ServingError::Internal(_) => "internal",
        }
    }

    pub fn http_status(&self) -> StatusCode {
        match self {
            ServingError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            ServingError::NotFound(_) => StatusCode::NOT_FOUND,
            ServingError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ServingError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            ServingError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServingError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ServingError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            ServingError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ServingError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) | StoreError::Timeout(_) => {
                ServingError::Unavailable(e.to_string())
            }
            StoreError::Denied(_) => ServingError::PermissionDenied(e.to_string()),
            StoreError::Failed(_) => ServingError::Internal(e.to_string()),
        }
    }
}

impl From<crate::ingest::IngestError> for ServingError {
    fn from(e: crate::ingest::IngestError) -> Self {
        use crate::ingest::IngestError;
        match e {
            IngestError::Invalid(m) => ServingError::InvalidArgument(m),
            IngestError::NotFound(m) => ServingError::NotFound(m),
            IngestError::PermissionDenied(m) => ServingError::PermissionDenied(m),
            IngestError::Unavailable(m) => ServingError::Unavailable(m),
            IngestError::Failed(m) => ServingError::Internal(m),
        }
    }
}

impl From<crate::auth::AuthError> for ServingError {
    fn from(e: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError;
        match e {
            AuthError::Unauthenticated(_) => ServingError::Unauthenticated(e.to_string()),
            AuthError::Forbidden(m) => ServingError::PermissionDenied(m),
            AuthError::Unavailable(_) => ServingError::Unavailable(e.to_string()),
        }
    }
}

impl From<ServingError> for tonic::Status {
    fn from(e: ServingError) -> Self {
        let message = e.to_string();
        match e {
            ServingError::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            ServingError::NotFound(_) => tonic::Status::not_found(message),
            ServingError::TooLarge(_) => tonic::Status::resource_exhausted(message),
            ServingError::DeadlineExceeded(_) => tonic::Status::deadline_exceeded(message),
            ServingError::Unavailable(_) => tonic::Status::unavailable(message),
            ServingError::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            ServingError::PermissionDenied(_) => tonic::Status::permission_denied(message),
            ServingError::Internal(_) => tonic::Status::internal(message),
        }
    }
}

/// HTTP errors are JSON: `{"error": {"code": "not_found", "message": "..."}}`.
impl IntoResponse for ServingError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code(), "message": self.to_string() }
        });
        let mut response = (self.http_status(), axum::Json(body)).into_response();
        if matches!(self, ServingError::Unauthenticated(_)) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
