//! Who is calling: the access token is verified in one place, [`authenticate`], used by the
//! [`Caller`] extractor of every rooms route and, after admission, by the history routes
//! (which shed before they spend a token check).

use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest, web};
use common::domain::UserRef;
use common::token::{TokenError, request_bearer_token};

use crate::error::ApiError;
use crate::startup::AppState;

/// The verified caller and their token (forwarded to auth-service to look users up).
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: UserRef,
    pub token: String,
}

/// Verifies the request's Bearer token; every refusal is the same 401.
pub async fn authenticate(state: &AppState, request: &HttpRequest) -> Result<Caller, ApiError> {
    let token = request_bearer_token(request).ok_or(ApiError::Unauthorized)?;
    let verified = state.verifier.verify(token).await.map_err(|e| match e {
        TokenError::KeysUnavailable(_) => ApiError::Unavailable(e.into()),
        e => {
            tracing::debug!(error = %e, "token refused");
            ApiError::Unauthorized
        }
    })?;
    Ok(Caller {
        user: verified.user,
        token: token.to_string(),
    })
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(request: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move {
            let state = request
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| ApiError::Unavailable(anyhow::anyhow!("no application state")))?
                .clone();
            authenticate(&state, &request).await
        })
    }
}
