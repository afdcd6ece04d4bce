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
use crate::user_store::User;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    username: Option<Value>,
    password: Option<Value>,
}

/// Unknown users and wrong passwords get the same answer after the same work: a user that does
/// not exist is checked against a dummy hash of the configured cost, and a failed check
/// against a hash of a lower cost spends the dummy check too. A successful login re-hashes a
/// password stored at a lower cost than the configured one. Attempts are limited per client
/// address and per username before any of that work.
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
    let password = Password::parse(candidate.clone()).ok();
    let credentials = match (&username, &password) {
        (Some(username), Some(_)) => state.users.find_by_username(username).await?,
        _ => None,
    };
    let (hash, user) = match credentials {
        Some(c) => (Some(c.password_hash), Some(c.user)),
        None => (None, None),
    };
    let matches = state
        .passwords
        .verify(SecretString::from(candidate), hash.clone())
        .await?;
    let (user, password, hash) = match (user, password, hash) {
        (Some(user), Some(password), Some(hash)) if matches => (user, password, hash),
        _ => return Err(ApiError::InvalidCredentials),
    };
    // Only after the right password, so a disabled account cannot be told apart otherwise.
    if user.is_disabled() {
        return Err(ApiError::AccountDisabled);
    }
    if state.passwords.is_below_cost(&hash) {
        rehash(&state, &user, password, &hash).await;
    }
    let access = state.tokens.issue(&user)?;
    let refresh = state.refresh_tokens.start_family(&user.id).await?;
    tracing::info!(user_id = %user.id, "user logged in");
    Ok(token_pair(access, refresh))
}

/// Stores the password hashed at the configured cost in place of a cheaper hash from before
/// the cost was raised. Best effort: the login succeeds whether or not this works.
async fn rehash(state: &AppState, user: &User, password: Password, old: &str) {
    let stored = match state.passwords.hash(password).await {
        Ok(new) => state.users.replace_password_hash(&user.id, old, new).await,
        Err(error) => Err(error),
    };
    match stored {
        Ok(true) => tracing::info!(user_id = %user.id, "password re-hashed at the configured cost"),
        Ok(false) => {
            tracing::debug!(user_id = %user.id, "password hash changed meanwhile; not re-hashed")
        }
        Err(error) => {
            tracing::warn!(user_id = %user.id, error = format!("{error:#}"), "re-hashing a password failed")
        }
    }
}
