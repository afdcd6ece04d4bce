use actix_web::{HttpResponse, web};
use common::domain::{Email, Username};
use serde::Deserialize;
use serde_json::Value;

use super::FieldErrors;
use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::password::Password;
use crate::startup::AppState;
use crate::user_store::InsertError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    username: Option<Value>,
    email: Option<Value>,
    password: Option<Value>,
}

/// Sign-ups are limited per client address; only well-formed ones are charged, as only they
/// cost a hash. One of the most common passwords is refused with 422 `weak_password`.
#[tracing::instrument(skip_all, fields(client = %client.0))]
pub async fn signup(
    state: web::Data<AppState>,
    client: ClientIp,
    body: web::Json<SignupRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut errors = FieldErrors::default();
    let username = errors.string("username", body.username);
    let email = errors.string("email", body.email);
    let password = errors.string("password", body.password);
    let username = errors.parse("username", username, Username::parse);
    let email = errors.parse("email", email, Email::parse);
    let password = errors.parse("password", password, Password::parse);
    errors.into_result()?;
    let (Some(username), Some(email), Some(password)) = (username, email, password) else {
        return Err(anyhow::anyhow!("validated fields missing").into());
    };

    if password.is_common() {
        return Err(ApiError::WeakPassword);
    }
    state.limits.check_signup(client.0)?;
    let hash = state.passwords.hash(password).await?;
    let user = state
        .users
        .insert(&username, &email, hash)
        .await
        .map_err(|e| match e {
            InsertError::UsernameTaken => ApiError::UsernameTaken,
            InsertError::EmailTaken => ApiError::EmailTaken,
            InsertError::Unexpected(e) => ApiError::Unexpected(e),
        })?;
    tracing::info!(user_id = %user.id, "user signed up");
    Ok(HttpResponse::Created().json(serde_json::json!({ "user": user })))
}
