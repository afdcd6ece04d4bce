use actix_web::{HttpResponse, web};
use common::domain::{Email, Username};
use serde::Deserialize;
use serde_json::Value;

use super::FieldErrors;
use crate::error::ApiError;
use crate::password::{self, Password};
use crate::startup::AppState;
use crate::user_store::InsertError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    username: Option<Value>,
    email: Option<Value>,
    password: Option<Value>,
}

#[tracing::instrument(skip_all)]
pub async fn signup(
    state: web::Data<AppState>,
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

    let hash = password::hash(password, state.bcrypt_cost).await?;
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
