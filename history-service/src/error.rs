//! The one error type of the HTTP API: each variant is one status and one error code of the
//! JSON error body (`{"error":{"code","message"}}`).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use common::error::ErrorBody;

use crate::reads::Shed;
use crate::rooms::policy::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Validation(String),
    #[error("missing or invalid access token")]
    Unauthorized,
    #[error("not found")]
    NotFound,
    /// Refused by the permission table (see [`crate::rooms::policy`]).
    #[error("{}", refusal_message(*.0))]
    Refused(Refusal),
    #[error("no user has that name")]
    UserNotFound,
    #[error("a room with that id exists")]
    RoomExists,
    #[error("that message is not in this room")]
    InvalidMarker,
    #[error("the message is deleted")]
    MessageDeleted,
    #[error("the message can no longer be edited")]
    EditWindowPassed,
    #[error("the message has the most distinct reactions it may have")]
    TooManyReactions,
    #[error("emoji must be exactly one emoji")]
    InvalidEmoji,
    #[error("too many rooms created; retry later")]
    RateLimited { retry_after_s: u64 },
    #[error("history is temporarily unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Refused or abandoned by load shedding (see [`crate::reads`]).
    #[error(transparent)]
    Shed(#[from] Shed),
}

fn refusal_message(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::NotFound => "not found",
        Refusal::Forbidden => "your role in this room does not allow that",
        Refusal::Banned => "you are banned from this room",
        Refusal::Archived => "the room is archived",
        Refusal::Owner => "the owner cannot be removed",
        Refusal::LastOwner => "the last owner must hand over or archive the room first",
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        ApiError::Refused(refusal)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        ApiError::Unavailable(error)
    }
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "validation_failed",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound => "not_found",
            ApiError::Refused(refusal) => match refusal {
                Refusal::NotFound => "not_found",
                Refusal::Forbidden => "forbidden",
                Refusal::Banned => "banned",
                Refusal::Archived => "archived",
                Refusal::Owner => "owner",
                Refusal::LastOwner => "last_owner",
            },
            ApiError::UserNotFound => "user_not_found",
            ApiError::RoomExists => "room_exists",
            ApiError::InvalidMarker => "invalid_marker",
            ApiError::MessageDeleted => "message_deleted",
            ApiError::EditWindowPassed => "edit_window_passed",
            ApiError::TooManyReactions => "too_many_reactions",
            ApiError::InvalidEmoji => "invalid_emoji",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) | ApiError::Shed(_) => "unavailable",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::InvalidMarker | ApiError::InvalidEmoji => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::MessageDeleted | ApiError::EditWindowPassed | ApiError::TooManyReactions => {
                StatusCode::CONFLICT
            }
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound | ApiError::UserNotFound => StatusCode::NOT_FOUND,
            ApiError::Refused(refusal) => match refusal {
                Refusal::NotFound => StatusCode::NOT_FOUND,
                Refusal::Forbidden | Refusal::Banned => StatusCode::FORBIDDEN,
                Refusal::Archived | Refusal::Owner | Refusal::LastOwner => StatusCode::CONFLICT,
            },
            ApiError::RoomExists => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Shed(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Unavailable(cause) = self {
            tracing::error!(error = format!("{cause:#}"), "request failed");
        }
        // Shed requests are counted in `history_*_shed_total`; one log line each would let a
        // flood flood the logs too.
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized => {
                response.insert_header(("WWW-Authenticate", "Bearer"));
            }
            ApiError::Shed(shed) => {
                response.insert_header(("Retry-After", shed.retry_after_s.to_string()));
            }
            ApiError::RateLimited { retry_after_s } => {
                response.insert_header(("Retry-After", retry_after_s.to_string()));
            }
            _ => {}
        }
        response.json(ErrorBody::new(self.code(), self.to_string()))
    }
}
