//! Users for the scenarios: signup and login over HTTP. Both targets expose the same routes
//! (`POST /api/auth/signup`, `POST /api/auth/login`); ours answers `access_token`, the peer
//! `token`.

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};

pub const PASSWORD: &str = "bench-password-1";

/// An HTTP client suited to many short requests to one host.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build()?)
}

/// Names `count` users `<prefix>0..` (3–32 characters of `[A-Za-z0-9_.-]`).
pub fn usernames(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i}")).collect()
}

/// Signs up every user (an existing one is fine), `concurrency` requests at a time.
pub async fn sign_up_all(
    http: &reqwest::Client,
    base: &str,
    usernames: &[String],
    concurrency: usize,
) -> anyhow::Result<()> {
    stream::iter(usernames)
        .map(|username| sign_up(http, base, username))
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await
}

async fn sign_up(http: &reqwest::Client, base: &str, username: &str) -> anyhow::Result<()> {
    let response = http
        .post(format!("{base}/api/auth/signup"))
        .json(&json!({
            "username": username,
            "email": format!("{username}@bench.example.com"),
            "password": PASSWORD,
        }))
        .send()
        .await
        .with_context(|| format!("signup of {username} at {base}"))?;
    let status = response.status();
    if !(status.is_success() || status == reqwest::StatusCode::CONFLICT) {
        let body = response.text().await.unwrap_or_default();
        bail!("signup of {username} at {base} answered {status}: {body}");
    }
    Ok(())
}

/// Logs in once; returns the access token.
pub async fn log_in(http: &reqwest::Client, base: &str, username: &str) -> anyhow::Result<String> {
    let response = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .with_context(|| format!("login of {username} at {base}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("login of {username} at {base} answered {status}: {body}");
    }
    let body: Value = response.json().await?;
    body.get("access_token")
        .or_else(|| body.get("token"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .context("login answer without a token")
}

/// Logs every user in, `concurrency` at a time; tokens come back in the users' order.
pub async fn log_in_all(
    http: &reqwest::Client,
    base: &str,
    usernames: &[String],
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    stream::iter(usernames)
        .map(|username| log_in(http, base, username))
        .buffered(concurrency)
        .try_collect()
        .await
}
