use actix_web::{HttpResponse, web};

use super::{RefreshTokenBody, token_pair};
use crate::error::ApiError;
use crate::refresh_tokens::{RefreshToken, RotateError};
use crate::startup::AppState;

/// Exchanges a refresh token for a new access token and a new refresh token; the presented
/// one stops working. Every refusal is the same 401 `invalid_refresh_token`.
#[tracing::instrument(skip_all)]
pub async fn refresh(
    state: web::Data<AppState>,
    body: web::Json<RefreshTokenBody>,
) -> Result<HttpResponse, ApiError> {
    let presented = body.into_inner().into_text()?;
    let presented = RefreshToken::parse(presented).map_err(|_| ApiError::InvalidRefreshToken)?;

    let rotated = match state.refresh_tokens.rotate(&presented).await {
        Ok(rotated) => rotated,
        Err(RotateError::Unexpected(error)) => return Err(error.into()),
        Err(RotateError::Reused { family_id, user_id }) => {
            tracing::warn!(%family_id, %user_id, "refresh token reused; session revoked");
            return Err(ApiError::InvalidRefreshToken);
        }
        Err(refused) => {
            tracing::debug!(reason = %refused, "refresh refused");
            return Err(ApiError::InvalidRefreshToken);
        }
    };
    let user = state
        .users
        .find_by_id(&rotated.user_id)
        .await?
        .ok_or(ApiError::InvalidRefreshToken)?;
    if user.is_disabled() {
        // Its families were revoked when it was disabled; this one was started meanwhile.
        state.refresh_tokens.revoke_user(&user.id).await?;
        return Err(ApiError::InvalidRefreshToken);
    }
    let access = state.tokens.issue(&user)?;
    tracing::info!(user_id = %user.id, "tokens refreshed");
    Ok(token_pair(access, rotated.token))
}
