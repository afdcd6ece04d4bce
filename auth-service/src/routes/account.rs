//! Ending and suspending accounts: `DELETE /api/auth/me` (the user, confirming with their
//! password) and `POST /api/auth/users/{user_id}/disable|enable` (administrators).
//!
//! Each stores the change first, then revokes the user's refresh-token families, then hands
//! an [`AccountEvent`] to the publisher, so the gateways and history-service stop honouring
//! the user's access tokens without waiting for them to expire.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use common::domain::{UserId, Username};
use common::event::{AccountChange, AccountEvent};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;

use super::{FieldErrors, authenticate};
use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::password::Password;
use crate::startup::AppState;
use crate::user_store::User;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteAccountRequest {
    password: Option<Value>,
}

/// Deletes the caller's account after checking their password. The password check is limited
/// like a login (per client address and username), so a stolen access token does not buy
/// unlimited guesses. An administrator cannot delete their own account while listed in
/// `admin.usernames`: anyone could then sign up under the freed name and be an administrator.
#[tracing::instrument(skip_all, fields(client = %client.0))]
pub async fn delete_me(
    state: web::Data<AppState>,
    client: ClientIp,
    request: HttpRequest,
    body: Result<web::Json<DeleteAccountRequest>, actix_web::Error>,
) -> Result<HttpResponse, actix_web::Error> {
    let user = authenticate(&state, &request).await?;
    let body = match body {
        Ok(body) => body.into_inner(),
        // No body at all is a missing field, like `{}`.
        Err(_) if has_no_body(&request) => DeleteAccountRequest::default(),
        Err(error) => return Err(error),
    };
    let mut errors = FieldErrors::default();
    let candidate = errors.string("password", body.password);
    errors.into_result()?;
    let candidate =
        candidate.ok_or_else(|| ApiError::from(anyhow::anyhow!("validated field missing")))?;
    if state.admins.contains(&user) {
        return Err(ApiError::Forbidden(
            "an administrator's account cannot be deleted while it is listed in admin.usernames",
        )
        .into());
    }
    let username = Username::parse(user.username.clone()).ok();
    state
        .limits
        .check_login(client.0, username.as_ref())
        .map_err(ApiError::from)?;
    let well_formed = Password::parse(candidate.clone()).is_ok();
    let hash = state
        .users
        .credentials_by_id(&user.id)
        .await
        .map_err(ApiError::from)?
        .map(|credentials| credentials.password_hash);
    let matches = state
        .passwords
        .verify(SecretString::from(candidate), hash)
        .await
        .map_err(ApiError::from)?;
    if !(matches && well_formed) {
        return Err(ApiError::InvalidCredentials.into());
    }

    let at = now();
    state.users.delete(&user.id).await.map_err(ApiError::from)?;
    state
        .refresh_tokens
        .revoke_user(&user.id)
        .await
        .map_err(ApiError::from)?;
    publish(&state, &user.id, AccountChange::Deleted, at)?;
    tracing::info!(user_id = %user.id, "account deleted");
    Ok(HttpResponse::NoContent().finish())
}

/// Disables an account (administrators only): its owner can no longer log in or refresh, and
/// its sessions are revoked. Idempotent.
#[tracing::instrument(skip_all)]
pub async fn disable(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_disabled(&state, &request, path.into_inner(), true).await
}

/// Enables a disabled account again (administrators only). Idempotent.
#[tracing::instrument(skip_all)]
pub async fn enable(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_disabled(&state, &request, path.into_inner(), false).await
}

async fn set_disabled(
    state: &AppState,
    request: &HttpRequest,
    user_id: String,
    disabled: bool,
) -> Result<HttpResponse, ApiError> {
    let admin = authenticate(state, request).await?;
    if !state.admins.contains(&admin) {
        return Err(ApiError::Forbidden("only administrators may do this"));
    }
    let user_id = UserId::parse(user_id).map_err(|_| ApiError::UserNotFound)?;
    let at = now();
    let found = state
        .users
        .set_disabled(user_id.as_str(), disabled.then_some(at))
        .await?;
    if !found {
        return Err(ApiError::UserNotFound);
    }
    let change = if disabled {
        state.refresh_tokens.revoke_user(user_id.as_str()).await?;
        AccountChange::Disabled
    } else {
        AccountChange::Enabled
    };
    publish(state, user_id.as_str(), change, at)?;
    tracing::info!(admin = %admin.id, user_id = %user_id, ?change, "account changed");
    Ok(HttpResponse::NoContent().finish())
}

fn publish(
    state: &AppState,
    user_id: &str,
    change: AccountChange,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    let user_id = UserId::parse(user_id.to_string())
        .map_err(|e| anyhow::anyhow!("stored user id {user_id:?} is not valid: {e}"))?;
    state.events.publish(AccountEvent::new(user_id, change, at));
    Ok(())
}

/// Now, at the millisecond precision the database stores, so the event carries the stored
/// time.
fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// Whether the request came without a body (no length, or length 0, and not chunked).
fn has_no_body(request: &HttpRequest) -> bool {
    let headers = request.headers();
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return false;
    }
    match headers.get(header::CONTENT_LENGTH) {
        None => true,
        Some(length) => length.to_str().is_ok_and(|length| length.trim() == "0"),
    }
}

/// The administrators named in `admin.usernames`, case-folded.
pub struct Admins(std::collections::HashSet<String>);

impl Admins {
    pub fn from_settings(usernames: &[String]) -> anyhow::Result<Self> {
        usernames
            .iter()
            .map(|name| {
                Username::parse(name.trim().to_string())
                    .map(|username| username.normalized())
                    .map_err(|e| anyhow::anyhow!("admin.usernames: {name:?} {e}"))
            })
            .collect::<anyhow::Result<_>>()
            .map(Self)
    }

    pub fn contains(&self, user: &User) -> bool {
        Username::parse(user.username.clone())
            .is_ok_and(|username| self.0.contains(&username.normalized()))
    }
}
