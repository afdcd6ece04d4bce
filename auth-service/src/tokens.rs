//! Token issuing: the Ed25519 signing key, the JWKS that publishes its public half (plus any
//! additional public keys, for rotation), and the access tokens themselves.

use anyhow::{Context, bail};
use common::settings::Profile;
use common::token::{ALGORITHM, AuthenticatedUser, Claims, KeySet, TokenError, TokenPolicy};
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{DecodingKey, EncodingKey, Header};
use secrecy::ExposeSecret;

use crate::settings::JwtSettings;
use crate::signing_key;
use crate::user_store::User;

/// The committed key, for tests and benchmarks only, which pass it explicitly
/// (`AUTH__JWT__PRIVATE_KEY_PEM`). Anyone can read it, so nothing signs with it by default:
/// without a configured key an installation uses a key of its own ([`crate::signing_key`]).
/// The production profile refuses it as the signing key and among the additional keys.
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
        if settings.access_ttl_secs == 0 {
            bail!("jwt.access_ttl_secs must be positive");
        }
        let pem = signing_key::load(settings, profile)?;
        let key = EncodingKey::from_ed_pem(pem.expose_secret().trim().as_bytes())
            .context("the signing key must be an Ed25519 private key in PKCS#8 PEM")?;
        let mut jwk = Jwk::from_encoding_key(&key, ALGORITHM)
            .context("deriving the public key from the signing key")?;
        let thumbprint = jwk.thumbprint(ThumbprintHash::SHA256)?;
        // Compared by public key, so a re-encoded copy of the committed key is caught too.
        if thumbprint == dev_only_kid()? {
            if profile == Profile::Production {
                bail!("the dev-only signing key is refused in production");
            }
            tracing::warn!(
                "signing tokens with the committed test-only key: anyone can forge them"
            );
        }
        let kid = if settings.kid.is_empty() {
            thumbprint
        } else {
            settings.kid.clone()
        };
        publish_as(&mut jwk, kid.clone());
        let mut keys = vec![jwk];
        for extra in additional_public_keys(&settings.additional_public_keys_pem)? {
            let extra_kid = extra.common.key_id.clone().unwrap_or_default();
            if profile == Profile::Production && extra_kid == dev_only_kid()? {
                bail!(
                    "the dev-only key is refused in jwt.additional_public_keys_pem in production"
                );
            }
            if keys
                .iter()
                .all(|k| k.common.key_id.as_deref() != Some(&extra_kid))
            {
                keys.push(extra);
            }
        }
        let jwks = JwkSet { keys };
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

    /// The key id tokens are signed under.
    pub fn kid(&self) -> &str {
        &self.kid
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

/// Sets what the JWKS says about a key: its id, that it signs, and with EdDSA.
fn publish_as(jwk: &mut Jwk, kid: String) {
    jwk.common.key_id = Some(kid);
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(KeyAlgorithm::EdDSA);
}

/// The thumbprint key id of the committed dev-only key.
fn dev_only_kid() -> anyhow::Result<String> {
    let key = EncodingKey::from_ed_pem(DEV_ONLY_KEY_PEM.as_bytes())?;
    Ok(Jwk::from_encoding_key(&key, ALGORITHM)?.thumbprint(ThumbprintHash::SHA256)?)
}

/// Parses concatenated PEM `PUBLIC KEY` blocks into JWKs under their RFC 7638 thumbprints.
fn additional_public_keys(text: &str) -> anyhow::Result<Vec<Jwk>> {
    let mut blocks = Vec::new();
    let mut block = String::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        block.push_str(line);
        block.push('\n');
        if line.starts_with("-----END ") {
            blocks.push(std::mem::take(&mut block));
        }
    }
    if !block.is_empty() {
        bail!("jwt.additional_public_keys_pem ends inside a PEM block");
    }
    blocks
        .iter()
        .enumerate()
        .map(|(i, pem)| {
            if pem.contains("PRIVATE KEY") {
                bail!(
                    "jwt.additional_public_keys_pem block {} is a private key; publish public keys only",
                    i + 1
                );
            }
            let key = DecodingKey::from_ed_pem(pem.as_bytes()).with_context(|| {
                format!(
                    "jwt.additional_public_keys_pem block {} is not an Ed25519 public key",
                    i + 1
                )
            })?;
            let mut jwk = Jwk::from_decoding_key(&key, Some(ALGORITHM))?;
            let kid = jwk.thumbprint(ThumbprintHash::SHA256)?;
            publish_as(&mut jwk, kid);
            Ok(jwk)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No key file: every test either sets a key or runs the production profile.
    fn settings(pem: &str) -> JwtSettings {
        JwtSettings::for_tests(pem, std::path::Path::new(""))
    }

    /// The public half of the dev-only key, as `openssl pkey -pubout` writes it.
    const DEV_ONLY_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAxbw0pcsjwOx+vpKSg1yjg/kFtTcCP3DQU0t2pwra4Ak=
-----END PUBLIC KEY-----
";
    const PREVIOUS_PUBLIC_PEM: &str =
        include_str!("../tests/api/testdata/test-only-previous-key.pub.pem");
    const PREVIOUS_PRIVATE_PEM: &str =
        include_str!("../tests/api/testdata/test-only-previous-key.pem");

    fn with_additional(pem: &str) -> JwtSettings {
        JwtSettings {
            additional_public_keys_pem: pem.to_string(),
            ..settings(DEV_ONLY_KEY_PEM)
        }
    }

    #[test]
    fn production_refuses_the_dev_key_and_a_missing_key() {
        assert!(TokenIssuer::from_settings(&settings(""), Profile::Production).is_err());
        assert!(
            TokenIssuer::from_settings(&settings(DEV_ONLY_KEY_PEM), Profile::Production).is_err()
        );
        // The same key in another encoding (no final newline, CRLF) is the same key.
        let reencoded = DEV_ONLY_KEY_PEM.trim().replace('\n', "\r\n");
        assert!(TokenIssuer::from_settings(&settings(&reencoded), Profile::Production).is_err());
        // Tests may sign with it when they say so.
        assert!(
            TokenIssuer::from_settings(&settings(DEV_ONLY_KEY_PEM), Profile::Development).is_ok()
        );
    }

    #[test]
    fn issued_tokens_verify_and_carry_the_published_kid() {
        let issuer = TokenIssuer::from_settings(&settings(DEV_ONLY_KEY_PEM), Profile::Development)
            .expect("key");
        let user = User {
            id: "01HZY".into(),
            username: "alice".into(),
            email: "a@example.com".into(),
            created_at: chrono::Utc::now(),
            disabled_at: None,
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

    #[test]
    fn additional_public_keys_are_published_under_their_thumbprints_after_the_signing_key() {
        let issuer = TokenIssuer::from_settings(
            &with_additional(&format!("{PREVIOUS_PUBLIC_PEM}\n{DEV_ONLY_PUBLIC_PEM}")),
            Profile::Development,
        )
        .expect("keys");
        let kids: Vec<_> = issuer
            .jwks()
            .keys
            .iter()
            .map(|k| k.common.key_id.clone().expect("kid"))
            .collect();
        // The dev-only public key is the signing key here, so it is not listed twice.
        assert_eq!(kids.len(), 2, "{kids:?}");
        assert_eq!(kids[0], issuer.kid());
        let previous = EncodingKey::from_ed_pem(PREVIOUS_PRIVATE_PEM.as_bytes()).expect("key");
        let previous_kid = Jwk::from_encoding_key(&previous, ALGORITHM)
            .expect("jwk")
            .thumbprint(ThumbprintHash::SHA256)
            .expect("thumbprint");
        assert_eq!(kids[1], previous_kid);
        assert!(issuer.jwks().keys.iter().all(|k| {
            k.common.public_key_use == Some(PublicKeyUse::Signature)
                && k.common.key_algorithm == Some(KeyAlgorithm::EdDSA)
        }));
    }

    #[test]
    fn additional_keys_must_be_whole_ed25519_public_keys() {
        for bad in [
            PREVIOUS_PRIVATE_PEM.to_string(),
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n".to_string(),
            "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n".to_string(),
        ] {
            assert!(
                TokenIssuer::from_settings(&with_additional(&bad), Profile::Development).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn production_refuses_the_dev_key_among_the_additional_keys() {
        let production_key = PREVIOUS_PRIVATE_PEM;
        let with_dev = JwtSettings {
            additional_public_keys_pem: DEV_ONLY_PUBLIC_PEM.to_string(),
            ..settings(production_key)
        };
        assert!(TokenIssuer::from_settings(&with_dev, Profile::Production).is_err());
        assert!(TokenIssuer::from_settings(&with_dev, Profile::Development).is_ok());
        let without = settings(production_key);
        assert!(TokenIssuer::from_settings(&without, Profile::Production).is_ok());
    }
}
