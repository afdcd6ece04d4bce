//! Usernames to users, asked of auth-service (`GET /api/users/by-name/{username}`) with the
//! caller's own access token: the same trust as every other call, no service credential.

use std::time::Duration;

use anyhow::Context;
use common::domain::{UserId, UserRef, Username};
use serde::Deserialize;

#[derive(Clone)]
pub struct UserDirectory {
    http: reqwest::Client,
    base_url: String,
}

#[derive(Deserialize)]
struct FoundUser {
    id: String,
    username: String,
}

impl UserDirectory {
    /// `base_url` is auth-service's (`auth.url`); each lookup takes at most `timeout`.
    pub fn new(base_url: &str, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(timeout).build()?,
            base_url: base_url.trim_end_matches('/').to_string(),
        })
    }

    /// The user named `username`, `None` when there is none. An error means auth-service
    /// could not answer.
    pub async fn by_name(
        &self,
        username: &Username,
        token: &str,
    ) -> anyhow::Result<Option<UserRef>> {
        // Usernames are `[A-Za-z0-9_.-]`: nothing to escape in a path segment.
        let url = format!("{}/api/users/by-name/{username}", self.base_url);
        let response = self
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .context("asking auth-service for a user")?;
        match response.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            status => anyhow::bail!("auth-service answered {status} to a user lookup"),
        }
        let found: FoundUser = response
            .json()
            .await
            .context("auth-service's user lookup answer")?;
        let user = UserRef {
            id: UserId::parse(found.id).context("auth-service's user id")?,
            username: Username::parse(found.username).context("auth-service's username")?,
        };
        Ok(Some(user))
    }
}
