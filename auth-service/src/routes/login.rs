use actix_web::{HttpResponse, web};
use common::domain::Username;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;

use super::FieldErrors;
use crate::error::ApiError;
use crate::password::{self, Password};
use crate::startup::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    username: Option<Value>,
    password: Option<Value>,
}

/// Unknown users and wrong passwords get the same answer after the same work: a user that does
/// not exist is checked against a dummy hash of the configured cost.
#[tracing::instrument(skip_all)]
pub async fn login(
    state: web::Data<AppState>,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut errors = FieldErrors::default();
    let username = errors.string("username", body.username);
    let candidate = errors.string("password", body.password);
    errors.into_result()?;
    let (Some(username), Some(candidate)) = (username, candidate) else {
        return Err(anyhow::anyhow!("validated fields missing").into());
    };

    // Shape checks that fail still cost one verification, like every other failure.
    let well_formed = Password::parse(candidate.clone()).is_ok();
    let credentials = match Username::parse(username) {
        Ok(username) if well_formed => state.users.find_by_username(&username).await?,
        _ => None,
    };
    let (hash, user) = match credentials {
        Some(c) => (c.password_hash, Some(c.user)),
        None => (state.dummy_hash.clone(), None),
    };
    let matches = password::verify(SecretString::from(candidate), hash).await?;
    let user = match user {
        Some(user) if matches && well_formed => user,
        _ => return Err(ApiError::InvalidCredentials),
    };
    let issued = state.tokens.issue(&user)?;
    tracing::info!(user_id = %user.id, "user logged in");
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({
            "access_token": issued.token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
        })))
}
