//! HTTP routes of auth-service.

mod account;
mod health;
mod login;
mod logout;
mod me;
mod refresh;
mod signup;
mod users;

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use common::token::request_bearer_token;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::refresh_tokens::IssuedRefreshToken;
use crate::startup::AppState;
use crate::tokens::IssuedToken;
use crate::user_store::User;

pub use account::Admins;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/auth/signup", web::post().to(signup::signup))
        .route("/api/auth/login", web::post().to(login::login))
        .route("/api/auth/refresh", web::post().to(refresh::refresh))
        .route("/api/auth/logout", web::post().to(logout::logout))
        .route("/api/auth/me", web::get().to(me::me))
        .route("/api/auth/me", web::delete().to(account::delete_me))
        .route(
            "/api/auth/users/{user_id}/disable",
            web::post().to(account::disable),
        )
        .route(
            "/api/auth/users/{user_id}/enable",
            web::post().to(account::enable),
        )
        .route("/api/users", web::get().to(users::search))
        .route(
            "/api/users/by-name/{username}",
            web::get().to(users::by_name),
        )
        .route("/.well-known/jwks.json", web::get().to(me::jwks))
        .route("/health/live", web::get().to(health::live))
        .route("/health/ready", web::get().to(health::ready));
}

/// The user a request's bearer token names: 401 `unauthorized` when the token is missing or
/// invalid or the user no longer exists, 403 `account_disabled` when the account is disabled.
async fn authenticate(state: &AppState, request: &HttpRequest) -> Result<User, ApiError> {
    let token = request_bearer_token(request).ok_or(ApiError::Unauthorized)?;
    let verified = state.tokens.verify(token).map_err(|e| {
        tracing::debug!(error = %e, "token refused");
        ApiError::Unauthorized
    })?;
    let user = state
        .users
        .find_by_id(verified.user.id.as_str())
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if user.is_disabled() {
        return Err(ApiError::AccountDisabled);
    }
    Ok(user)
}

/// The answer of login and refresh: an access token and the refresh token that replaces it.
fn token_pair(access: IssuedToken, refresh: IssuedRefreshToken) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({
            "access_token": access.token,
            "token_type": "Bearer",
            "expires_in": access.expires_in,
            "refresh_token": refresh.token.expose(),
            "refresh_expires_in": refresh.expires_in,
        }))
}

/// The body of refresh and logout.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshTokenBody {
    refresh_token: Option<Value>,
}

impl RefreshTokenBody {
    /// The token text, or a 422 when it is missing or not a string.
    fn into_text(self) -> Result<String, ApiError> {
        let mut errors = FieldErrors::default();
        let text = errors.string("refresh_token", self.refresh_token);
        errors.into_result()?;
        text.ok_or_else(|| anyhow::anyhow!("validated field missing").into())
    }
}

/// Collects per-field problems of a JSON request whose fields arrive as raw JSON values, so a
/// non-string (`{"$ne": null}`, a number, an array) is reported on its field instead of
/// failing the whole body.
#[derive(Default)]
struct FieldErrors(BTreeMap<String, String>);

impl FieldErrors {
    /// The field's string value, or `None` after recording why there is none.
    fn string(&mut self, name: &str, value: Option<Value>) -> Option<String> {
        match value {
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.0
                    .insert(name.to_string(), "must be a string".to_string());
                None
            }
            None => {
                self.0.insert(name.to_string(), "is required".to_string());
                None
            }
        }
    }

    /// Runs a domain parser over a field, recording its message on failure.
    fn parse<T>(
        &mut self,
        name: &str,
        value: Option<String>,
        parse: impl FnOnce(String) -> Result<T, common::domain::InvalidValue>,
    ) -> Option<T> {
        match parse(value?) {
            Ok(parsed) => Some(parsed),
            Err(e) => {
                self.0.insert(name.to_string(), e.0);
                None
            }
        }
    }

    fn into_result(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}
