use actix_web::{HttpRequest, HttpResponse, web};
use common::token::request_bearer_token;

use crate::error::ApiError;
use crate::startup::AppState;

#[tracing::instrument(skip_all)]
pub async fn me(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let token = request_bearer_token(&request).ok_or(ApiError::Unauthorized)?;
    let verified = state.tokens.verify(token).map_err(|e| {
        tracing::debug!(error = %e, "token refused");
        ApiError::Unauthorized
    })?;
    let user = state
        .users
        .find_by_id(verified.user.id.as_str())
        .await?
        .ok_or(ApiError::Unauthorized)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "user": user })))
}

/// The public keys verifiers use; cacheable for a few minutes.
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "public, max-age=300"))
        .json(state.tokens.jwks())
}
