use actix_web::{HttpRequest, HttpResponse, web};

use super::authenticate;
use crate::error::ApiError;
use crate::startup::AppState;

#[tracing::instrument(skip_all)]
pub async fn me(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let user = authenticate(&state, &request).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "user": user })))
}

/// The public keys verifiers use; cacheable for a few minutes.
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "public, max-age=300"))
        .json(state.tokens.jwks())
}
