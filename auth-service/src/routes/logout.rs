use actix_web::{HttpResponse, web};

use super::RefreshTokenBody;
use crate::error::ApiError;
use crate::refresh_tokens::RefreshToken;
use crate::startup::AppState;

/// Ends the session of a refresh token: its whole family is revoked. Idempotent: an unknown,
/// expired, already revoked or malformed token gets the same 204. Access tokens already
/// issued stay valid until they expire.
#[tracing::instrument(skip_all)]
pub async fn logout(
    state: web::Data<AppState>,
    body: web::Json<RefreshTokenBody>,
) -> Result<HttpResponse, ApiError> {
    let presented = body.into_inner().into_text()?;
    if let Ok(token) = RefreshToken::parse(presented) {
        state.refresh_tokens.revoke(&token).await?;
    }
    Ok(HttpResponse::NoContent().finish())
}
