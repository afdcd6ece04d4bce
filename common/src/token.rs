//! Access tokens: the claims auth-service signs and the verification every other service does.
//!
//! Tokens are EdDSA (Ed25519) JWTs with a `kid` header. Only auth-service holds the private
//! key; verifiers fetch the public keys from its JWKS endpoint at start and again when a token
//! names a `kid` they do not know (at most once per [`JwksVerifier::REFRESH_INTERVAL`], so
//! random `kid`s cannot turn verifiers into a request amplifier).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::domain::{UserId, UserRef, Username};
use crate::revocation::Revocations;

/// The only signing algorithm accepted.
pub const ALGORITHM: Algorithm = Algorithm::EdDSA;

/// Claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Username at the time of issue.
    pub name: String,
    pub iat: u64,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub iss: String,
    pub aud: String,
    /// Unique token id.
    pub jti: String,
}

/// A verified token's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    pub user: UserRef,
    /// Expiry (seconds since the Unix epoch).
    pub expires_at: u64,
    /// Issue time (seconds since the Unix epoch): a revocation refuses tokens issued before it.
    pub issued_at: u64,
}

/// Why a token was refused. Callers answer every variant with the same 401; the variant is
/// for logs.
#[derive(Debug, Error)]
pub enum TokenError {
    #[error("no token was presented")]
    Missing,
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the token's algorithm is not accepted")]
    WrongAlgorithm,
    #[error("the token names no key or an unknown key")]
    UnknownKey,
    #[error("the token is invalid: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("the keys could not be fetched: {0}")]
    KeysUnavailable(String),
    #[error("the user's account was deleted or disabled after the token was issued")]
    Revoked,
}

/// Expected issuer and audience.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenPolicy {
    pub issuer: String,
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
}

fn default_leeway() -> u64 {
    5
}

/// Where a service finds auth-service and what its tokens must say (`<PREFIX>__AUTH__*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthServerSettings {
    /// Base URL of auth-service; its `/.well-known/jwks.json` holds the verification keys.
    pub url: String,
    pub issuer: String,
    pub audience: String,
}

impl AuthServerSettings {
    /// A verifier for these settings, with the keys fetched once now if auth-service answers
    /// (otherwise on the first token).
    pub async fn verifier(&self) -> anyhow::Result<JwksVerifier> {
        let verifier = JwksVerifier::new(
            JwksVerifier::jwks_url(&self.url),
            TokenPolicy {
                issuer: self.issuer.clone(),
                audience: self.audience.clone(),
                leeway_secs: default_leeway(),
            },
        )?;
        if let Err(error) = verifier.refresh().await {
            tracing::warn!(%error, "token keys not loaded yet; retrying on demand");
        }
        Ok(verifier)
    }
}

/// Extracts the token from an `Authorization: Bearer …` header value.
pub fn bearer_token(header_value: &str) -> Option<&str> {
    let (scheme, token) = header_value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The token of an actix-web request's `Authorization: Bearer …` header.
#[cfg(feature = "actix")]
pub fn request_bearer_token(request: &actix_web::HttpRequest) -> Option<&str> {
    request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
}

/// Verifies tokens against a fixed set of keys.
#[derive(Clone)]
pub struct KeySet {
    keys: HashMap<String, DecodingKey>,
}

impl KeySet {
    /// Keeps the Ed25519 keys of a JWKS that carry a `kid`; others are ignored.
    pub fn from_jwks(jwks: &JwkSet) -> Self {
        let keys = jwks
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some((kid, key))
            })
            .collect();
        Self { keys }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid)
    }

    /// Verifies `token` with the key its `kid` names.
    pub fn verify(
        &self,
        token: &str,
        policy: &TokenPolicy,
    ) -> Result<AuthenticatedUser, TokenError> {
        let kid = header_kid(token)?;
        let key = self.get(&kid).ok_or(TokenError::UnknownKey)?;
        verify_with(key, token, policy)
    }
}

/// Reads the `kid` of a token after checking its algorithm, without trusting anything else.
fn header_kid(token: &str) -> Result<String, TokenError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
    if header.alg != ALGORITHM {
        return Err(TokenError::WrongAlgorithm);
    }
    header.kid.ok_or(TokenError::UnknownKey)
}

fn verify_with(
    key: &DecodingKey,
    token: &str,
    policy: &TokenPolicy,
) -> Result<AuthenticatedUser, TokenError> {
    let mut validation = Validation::new(ALGORITHM);
    validation.set_issuer(&[&policy.issuer]);
    validation.set_audience(&[&policy.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = policy.leeway_secs;
    validation.validate_nbf = true;
    let data = jsonwebtoken::decode::<Claims>(token, key, &validation)?;
    let claims = data.claims;
    let id = UserId::parse(claims.sub).map_err(|e| TokenError::Malformed(e.to_string()))?;
    let username =
        Username::parse(claims.name).map_err(|e| TokenError::Malformed(e.to_string()))?;
    Ok(AuthenticatedUser {
        user: UserRef { id, username },
        expires_at: claims.exp,
        issued_at: claims.iat,
    })
}

/// Verifies tokens with keys fetched from a JWKS URL.
#[derive(Clone)]
pub struct JwksVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    policy: TokenPolicy,
    http: reqwest::Client,
    keys: RwLock<KeySet>,
    /// When the last fetch was attempted and whether it succeeded.
    last_fetch: tokio::sync::Mutex<Option<(Instant, bool)>>,
    /// Users whose earlier tokens are refused (account deleted or disabled).
    revocations: Arc<Revocations>,
}

impl JwksVerifier {
    /// Shortest time between two fetches triggered by unknown `kid`s.
    pub const REFRESH_INTERVAL: Duration = Duration::from_secs(10);
    /// Shortest time between two fetches after a failed one (auth-service starting up).
    pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

    /// A verifier with no keys yet; [`JwksVerifier::refresh`] or the first token fetches them.
    pub fn new(url: String, policy: TokenPolicy) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                url,
                policy,
                http,
                keys: RwLock::new(KeySet {
                    keys: HashMap::new(),
                }),
                last_fetch: tokio::sync::Mutex::new(None),
                revocations: Arc::new(Revocations::default()),
            }),
        })
    }

    /// The JWKS URL of an auth-service base URL.
    pub fn jwks_url(auth_base_url: &str) -> String {
        format!(
            "{}/.well-known/jwks.json",
            auth_base_url.trim_end_matches('/')
        )
    }

    /// Fetches the key set now.
    pub async fn refresh(&self) -> Result<usize, TokenError> {
        let mut last = self.inner.last_fetch.lock().await;
        self.fetch_locked(&mut last).await
    }

    async fn fetch_locked(&self, last: &mut Option<(Instant, bool)>) -> Result<usize, TokenError> {
        let result = self.fetch().await;
        *last = Some((Instant::now(), result.is_ok()));
        result
    }

    async fn fetch(&self) -> Result<usize, TokenError> {
        let unavailable = |e: reqwest::Error| TokenError::KeysUnavailable(e.to_string());
        let jwks: JwkSet = self
            .inner
            .http
            .get(&self.inner.url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)?;
        let keys = KeySet::from_jwks(&jwks);
        let count = keys.len();
        tracing::info!(keys = count, url = %self.inner.url, "fetched token verification keys");
        *self.write_keys() = keys;
        Ok(count)
    }

    fn write_keys(&self) -> std::sync::RwLockWriteGuard<'_, KeySet> {
        self.inner
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lookup(&self, kid: &str) -> Option<DecodingKey> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(kid)
            .cloned()
    }

    /// The account revocations this verifier honours; services apply the `account.*` events
    /// they consume to it.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.inner.revocations
    }

    /// Whether keys have been loaded (readiness).
    pub fn has_keys(&self) -> bool {
        !self
            .inner
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }

    /// Verifies a token, fetching the key set again if the `kid` is unknown. While the last
    /// fetch failed, an unknown `kid` is [`TokenError::KeysUnavailable`] (the token may well
    /// be valid), not [`TokenError::UnknownKey`]. A token of a user revoked after it was
    /// issued is [`TokenError::Revoked`].
    pub async fn verify(&self, token: &str) -> Result<AuthenticatedUser, TokenError> {
        let user = self.verify_signed(token).await?;
        if self
            .inner
            .revocations
            .is_revoked(user.user.id.as_str(), user.issued_at)
        {
            return Err(TokenError::Revoked);
        }
        Ok(user)
    }

    /// Checks signature and claims (not revocations).
    async fn verify_signed(&self, token: &str) -> Result<AuthenticatedUser, TokenError> {
        let kid = header_kid(token)?;
        if let Some(key) = self.lookup(&kid) {
            return verify_with(&key, token, &self.inner.policy);
        }
        let last_fetch_failed = {
            let mut last = self.inner.last_fetch.lock().await;
            // Another caller may have fetched while this one waited for the lock.
            if self.lookup(&kid).is_none()
                && last.is_none_or(|(at, ok)| {
                    let wait = if ok {
                        Self::REFRESH_INTERVAL
                    } else {
                        Self::RETRY_INTERVAL
                    };
                    at.elapsed() >= wait
                })
            {
                self.fetch_locked(&mut last).await?;
            }
            matches!(*last, Some((_, false)))
        };
        let key = self.lookup(&kid).ok_or_else(|| {
            if last_fetch_failed {
                TokenError::KeysUnavailable("the last attempt failed; retrying shortly".into())
            } else {
                TokenError::UnknownKey
            }
        })?;
        verify_with(&key, token, &self.inner.policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_is_taken_from_the_header_value() {
        assert_eq!(bearer_token("Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }

    #[test]
    fn tokens_with_another_algorithm_are_refused_before_any_key_lookup() {
        // {"alg":"none","typ":"JWT","kid":"k"} . {"sub":"u"} . (no signature)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoiayJ9.eyJzdWIiOiJ1In0.";
        assert!(matches!(
            header_kid(none),
            Err(TokenError::Malformed(_) | TokenError::WrongAlgorithm)
        ));
        // {"alg":"HS256","typ":"JWT","kid":"k"}
        let hs = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImsifQ.eyJzdWIiOiJ1In0.c2ln";
        assert!(matches!(header_kid(hs), Err(TokenError::WrongAlgorithm)));
        assert!(matches!(
            header_kid("garbage"),
            Err(TokenError::Malformed(_))
        ));
    }
}
