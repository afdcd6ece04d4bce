//! Finding other users: `GET /api/users?q=<prefix>` for people pickers (signed in, at most
//! 20, id and username only, never e-mail addresses) and `GET /api/users/by-name/{username}`,
//! which history-service asks, with the caller's own access token, when a member is added by
//! username or a direct message is opened.

use actix_web::{HttpRequest, HttpResponse, web};
use common::domain::Username;
use serde::{Deserialize, Serialize};

use super::authenticate;
use crate::error::ApiError;
use crate::startup::AppState;
use crate::user_store::User;

/// Most users one search answers.
pub const SEARCH_LIMIT: i64 = 20;

/// A user as other users see them.
#[derive(Serialize)]
struct PublicUser<'a> {
    id: &'a str,
    username: &'a str,
}

impl<'a> From<&'a User> for PublicUser<'a> {
    fn from(user: &'a User) -> Self {
        Self {
            id: &user.id,
            username: &user.username,
        }
    }
}

#[derive(Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
}

/// Users whose username starts with `q` (case-insensitive), in username order; disabled
/// accounts are left out. `q` is 1–32 characters of the username alphabet.
#[tracing::instrument(skip_all)]
pub async fn search(
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<SearchQuery>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &request).await?;
    let prefix = query.into_inner().q.unwrap_or_default();
    let valid = (1..=Username::MAX_LEN).contains(&prefix.len())
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        return Err(ApiError::Validation(
            [(
                "q".to_string(),
                "must be 1–32 characters of letters, digits, `_`, `.` and `-`".to_string(),
            )]
            .into(),
        ));
    }
    let users = state
        .users
        .search_by_username_prefix(&prefix.to_ascii_lowercase(), SEARCH_LIMIT)
        .await?;
    let users: Vec<PublicUser<'_>> = users.iter().map(PublicUser::from).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "users": users })))
}

/// The user with this username (any case): `{id, username}`, or 404 `user_not_found`.
#[tracing::instrument(skip_all)]
pub async fn by_name(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &request).await?;
    // A string that is no valid username names nobody.
    let username = Username::parse(path.into_inner()).map_err(|_| ApiError::UserNotFound)?;
    let found = state
        .users
        .find_by_username(&username)
        .await?
        .filter(|found| !found.user.is_disabled())
        .ok_or(ApiError::UserNotFound)?;
    Ok(HttpResponse::Ok().json(PublicUser::from(&found.user)))
}
