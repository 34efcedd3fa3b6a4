//! API errors: JSON bodies with the right status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use omega_consensus::{ClusterError, Rejection};
use serde_json::json;

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after_ms: Option<u64>,
    extra: Option<serde_json::Value>,
    challenge: Option<&'static str>,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after_ms: None,
            extra: None,
            challenge: None,
        }
    }

    /// Adds a `WWW-Authenticate` challenge (for a 401).
    pub fn with_challenge(mut self, challenge: &'static str) -> ApiError {
        self.challenge = Some(challenge);
        self
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 429 with a Retry-After.
    pub fn too_many(retry_after_ms: u64) -> ApiError {
        ApiError {
            retry_after_ms: Some(retry_after_ms),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed attempts; try again later",
            )
        }
    }

    /// 503 with a Retry-After: a bounded resource is full.
    pub fn busy(message: impl Into<String>, retry_after_ms: u64) -> ApiError {
        ApiError {
            retry_after_ms: Some(retry_after_ms),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    /// Its HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What the client is told.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Adds fields to the JSON body.
    pub fn with(mut self, extra: serde_json::Value) -> ApiError {
        self.extra = Some(extra);
        self
    }

    /// 500, logged; the client sees no internals.
    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        tracing::error!(%error, "request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl From<ClusterError> for ApiError {
    fn from(error: ClusterError) -> ApiError {
        match error {
            // The detail (openraft's own wording, addresses) goes to the
            // log; the client gets a sentence it can act on.
            ClusterError::NoLeader(detail) => {
                tracing::warn!(%detail, "no leader with a quorum");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the cluster cannot answer now: no quorum of members is reachable; retry later",
                )
            }
            ClusterError::Remote(detail) => {
                tracing::warn!(%detail, "the leader failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the cluster cannot answer now: the leader failed to answer; retry later",
                )
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<std::io::Error> for ApiError {
    fn from(error: std::io::Error) -> ApiError {
        ApiError::internal(error)
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> ApiError {
        let status = match &rejection {
            Rejection::NameTaken(_)
            | Rejection::LeaseHeld { .. }
            | Rejection::IllegalTransition { .. }
            | Rejection::Quota(_) => StatusCode::CONFLICT,
            Rejection::NotFound { .. } => StatusCode::NOT_FOUND,
            Rejection::TokenUsed | Rejection::TokenExpired | Rejection::StaleFencing { .. } => StatusCode::FORBIDDEN,
            Rejection::Invalid(_) => StatusCode::BAD_REQUEST,
            Rejection::Full(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, rejection.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let (Some(serde_json::Value::Object(fields)), Some(object)) = (self.extra, body.as_object_mut()) {
            object.extend(fields);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(challenge) = self.challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Some(retry_after_ms) = self.retry_after_ms {
            let seconds = retry_after_ms.div_ceil(1000).max(1);
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

impl From<omega_transcode::TranscodeError> for ApiError {
    fn from(error: omega_transcode::TranscodeError) -> ApiError {
        use omega_transcode::TranscodeError;
        match error {
            TranscodeError::Busy(_) | TranscodeError::ProcessesBusy(_) => ApiError::busy(error.to_string(), 5_000),
            TranscodeError::NotFound(message) => ApiError::not_found(message),
            TranscodeError::Timeout(..) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, error.to_string()),
            TranscodeError::Unreadable { .. } | TranscodeError::NoStreams(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
            }
            TranscodeError::Ffmpeg(_) | TranscodeError::Spawn { .. } | TranscodeError::Io { .. } => {
                tracing::warn!(%error, "transcoding failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("transcoding failed: {error}"),
                )
            }
        }
    }
}
