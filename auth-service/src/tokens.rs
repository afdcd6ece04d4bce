//! Token issuing: the Ed25519 signing key, the JWKS that publishes its public half, and the
//! access tokens themselves.

use anyhow::{Context, bail};
use common::settings::Profile;
use common::token::{ALGORITHM, AuthenticatedUser, Claims, KeySet, TokenError, TokenPolicy};
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{EncodingKey, Header};
use secrecy::ExposeSecret;

use crate::settings::JwtSettings;
use crate::user_store::User;

/// The committed development key. Anyone can read it, so the production profile refuses it.
pub const DEV_ONLY_KEY_PEM: &str = include_str!("../config/dev-only-signing-key.pem");

/// Signs access tokens and publishes the verification key.
pub struct TokenIssuer {
    key: EncodingKey,
    kid: String,
    jwks: JwkSet,
    verification_keys: KeySet,
    policy: TokenPolicy,
    ttl_secs: u64,
}

/// A freshly signed access token.
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
}

impl TokenIssuer {
    pub fn from_settings(settings: &JwtSettings, profile: Profile) -> anyhow::Result<Self> {
        let configured = settings.private_key_pem.expose_secret().trim();
        let pem = if configured.is_empty() {
            if profile == Profile::Production {
                bail!("AUTH__JWT__PRIVATE_KEY_PEM must be set in production");
            }
            tracing::warn!("signing tokens with the committed dev-only key");
            DEV_ONLY_KEY_PEM.trim()
        } else {
            configured
        };
        if profile == Profile::Production && pem == DEV_ONLY_KEY_PEM.trim() {
            bail!("the dev-only signing key is refused in production");
        }
        if settings.access_ttl_secs == 0 {
            bail!("jwt.access_ttl_secs must be positive");
        }
        let key = EncodingKey::from_ed_pem(pem.as_bytes())
            .context("the signing key must be an Ed25519 private key in PKCS#8 PEM")?;
        let mut jwk = Jwk::from_encoding_key(&key, ALGORITHM)
            .context("deriving the public key from the signing key")?;
        let kid = if settings.kid.is_empty() {
            jwk.thumbprint(ThumbprintHash::SHA256)?
        } else {
            settings.kid.clone()
        };
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::EdDSA);
        let jwks = JwkSet { keys: vec![jwk] };
        Ok(Self {
            verification_keys: KeySet::from_jwks(&jwks),
            key,
            kid,
            jwks,
            policy: TokenPolicy {
                issuer: settings.issuer.clone(),
                audience: settings.audience.clone(),
                leeway_secs: 5,
            },
            ttl_secs: settings.access_ttl_secs,
        })
    }

    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    pub fn issue(&self, user: &User) -> anyhow::Result<IssuedToken> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user.id.clone(),
            name: user.username.clone(),
            iat: now,
            exp: now + self.ttl_secs,
            nbf: None,
            iss: self.policy.issuer.clone(),
            aud: self.policy.audience.clone(),
            jti: ulid::Ulid::new().to_string(),
        };
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.key)?;
        Ok(IssuedToken {
            token,
            expires_in: self.ttl_secs,
        })
    }

    /// Verifies a token this service issued (for `/api/auth/me`).
    pub fn verify(&self, token: &str) -> Result<AuthenticatedUser, TokenError> {
        self.verification_keys.verify(token, &self.policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn settings(pem: &str) -> JwtSettings {
        JwtSettings {
            private_key_pem: SecretString::from(pem.to_string()),
            kid: String::new(),
            issuer: "iss".into(),
            audience: "aud".into(),
            access_ttl_secs: 60,
        }
    }

    #[test]
    fn production_refuses_the_dev_key_and_a_missing_key() {
        assert!(TokenIssuer::from_settings(&settings(""), Profile::Production).is_err());
        assert!(
            TokenIssuer::from_settings(&settings(DEV_ONLY_KEY_PEM), Profile::Production).is_err()
        );
        assert!(TokenIssuer::from_settings(&settings(""), Profile::Development).is_ok());
    }

    #[test]
    fn issued_tokens_verify_and_carry_the_published_kid() {
        let issuer = TokenIssuer::from_settings(&settings(""), Profile::Development).expect("key");
        let user = User {
            id: "01HZY".into(),
            username: "alice".into(),
            email: "a@example.com".into(),
            created_at: chrono::Utc::now(),
        };
        let issued = issuer.issue(&user).expect("signs");
        let header = jsonwebtoken::decode_header(&issued.token).expect("header");
        assert_eq!(
            header.kid.as_deref(),
            issuer.jwks().keys[0].common.key_id.as_deref()
        );
        let verified = issuer.verify(&issued.token).expect("verifies");
        assert_eq!(verified.user.username.as_str(), "alice");
    }
}
