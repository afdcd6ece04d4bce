//! The one error type of the HTTP API and its mapping to status codes and JSON bodies.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use common::error::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request validation failed")]
    Validation(BTreeMap<String, String>),
    #[error("malformed request: {0}")]
    BadRequest(String),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("this password is one of the 10,000 most common passwords; choose another")]
    WeakPassword,
    #[error("username is taken")]
    UsernameTaken,
    #[error("email is taken")]
    EmailTaken,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("missing or invalid access token")]
    Unauthorized,
    #[error("this account is disabled")]
    AccountDisabled,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("no such user")]
    UserNotFound,
    #[error("the refresh token is unknown, expired, used or revoked")]
    InvalidRefreshToken,
    #[error("too many attempts; try again in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("the request took too long")]
    RequestTimeout,
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "validation_failed",
            ApiError::BadRequest(_) => "malformed_request",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::WeakPassword => "weak_password",
            ApiError::UsernameTaken => "username_taken",
            ApiError::EmailTaken => "email_taken",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::Unauthorized => "unauthorized",
            ApiError::AccountDisabled => "account_disabled",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::UserNotFound => "user_not_found",
            ApiError::InvalidRefreshToken => "invalid_refresh_token",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::NotFound => "not_found",
            ApiError::Unexpected(_) => "internal_error",
        }
    }

    /// Maps the JSON extractor's failures: syntax errors are 400, well-formed JSON of the
    /// wrong shape (unknown fields, wrong types) is 422.
    pub fn from_json_error(error: &actix_web::error::JsonPayloadError) -> Self {
        use actix_web::error::JsonPayloadError as E;
        match error {
            E::OverflowKnownLength { .. } | E::Overflow { .. } => ApiError::PayloadTooLarge,
            E::ContentType => ApiError::UnsupportedMediaType,
            E::Deserialize(e) if e.is_data() => {
                ApiError::Validation(BTreeMap::from([("body".to_string(), e.to_string())]))
            }
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

impl From<crate::rate_limit::RetryAfter> for ApiError {
    fn from(retry: crate::rate_limit::RetryAfter) -> Self {
        ApiError::RateLimited {
            retry_after_secs: retry.secs(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::WeakPassword => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::UsernameTaken | ApiError::EmailTaken => StatusCode::CONFLICT,
            ApiError::InvalidCredentials
            | ApiError::Unauthorized
            | ApiError::InvalidRefreshToken => StatusCode::UNAUTHORIZED,
            ApiError::AccountDisabled | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::UserNotFound => StatusCode::NOT_FOUND,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let body = match self {
            ApiError::Unexpected(cause) => {
                tracing::error!(error = ?cause, "request failed");
                ErrorBody::new(self.code(), "internal error")
            }
            ApiError::Validation(fields) => {
                ErrorBody::new(self.code(), "request validation failed").with_fields(fields.clone())
            }
            ApiError::InvalidCredentials => {
                ErrorBody::new(self.code(), "username or password is incorrect")
            }
            ApiError::WeakPassword => {
                ErrorBody::new(self.code(), self.to_string()).with_fields(BTreeMap::from([(
                    "password".to_string(),
                    "is too common; choose one that is not among the 10,000 most common passwords"
                        .to_string(),
                )]))
            }
            other => ErrorBody::new(self.code(), other.to_string()),
        };
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized => {
                response.insert_header(("WWW-Authenticate", "Bearer"));
            }
            ApiError::RateLimited { retry_after_secs } => {
                response.insert_header(("Retry-After", retry_after_secs.to_string()));
            }
            // The connection may still carry an unread body; do not reuse it.
            ApiError::RequestTimeout => {
                response.force_close();
            }
            _ => {}
        }
        response.json(body)
    }
}
