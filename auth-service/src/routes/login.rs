use actix_web::{HttpResponse, web};
use common::domain::Username;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;

use super::{FieldErrors, token_pair};
use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::password::Password;
use crate::startup::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    username: Option<Value>,
    password: Option<Value>,
}

/// Unknown users and wrong passwords get the same answer after the same work: a user that does
/// not exist is checked against a dummy hash of the configured cost. Attempts are limited per
/// client address and per username before any of that work.
#[tracing::instrument(skip_all, fields(client = %client.0))]
pub async fn login(
    state: web::Data<AppState>,
    client: ClientIp,
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

    let username = Username::parse(username).ok();
    state.limits.check_login(client.0, username.as_ref())?;

    // Shape checks that fail still cost one verification, like every other failure.
    let well_formed = Password::parse(candidate.clone()).is_ok();
    let credentials = match &username {
        Some(username) if well_formed => state.users.find_by_username(username).await?,
        _ => None,
    };
    let (hash, user) = match credentials {
        Some(c) => (Some(c.password_hash), Some(c.user)),
        None => (None, None),
    };
    let matches = state
        .passwords
        .verify(SecretString::from(candidate), hash)
        .await?;
    let user = match user {
        Some(user) if matches && well_formed => user,
        _ => return Err(ApiError::InvalidCredentials),
    };
    let access = state.tokens.issue(&user)?;
    let refresh = state.refresh_tokens.start_family(&user.id).await?;
    tracing::info!(user_id = %user.id, "user logged in");
    Ok(token_pair(access, refresh))
}
