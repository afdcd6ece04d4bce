//! Refresh tokens: opaque random strings that buy new access tokens without the password.
//!
//! A login starts a *family* (one signed-in session); every refresh replaces the presented
//! token with a new one of the same family. Only SHA-256 hashes are stored (`refresh_tokens`),
//! so a copy of the database does not hold usable tokens. Presenting a token that was already
//! replaced means two parties hold the family — the client and whoever copied the token — so
//! the whole family is revoked and both must log in again (theft detection).
//!
//! Concurrency, without transactions (MongoDB-wire servers such as FerretDB 1.x have none and
//! may implement updates as read-then-write): a replacement is claimed by inserting the new
//! token with `parent_id` = the replaced token, under a unique index, so of two concurrent
//! refreshes with one token exactly one insert succeeds; the loser is treated as reuse.
//! Revocation is one write to the family document (`refresh_token_families`), which every
//! refresh reads again after its claim, so a revocation racing with a refresh always wins.
//! Token documents are never the source of truth for revocation; their `rotated`/`revoked`
//! flags are bookkeeping.
//!
//! A family lives `refresh_ttl` from login: rotation hands out new tokens, not more time.

use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use common::domain::InvalidValue;
use common::mongo::is_duplicate_key;
use mongodb::bson::{self, doc};
use mongodb::{Collection, Database};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::indexes::{self, index};

/// A refresh token as the client holds it: 32 random bytes, base64url without padding.
pub struct RefreshToken(SecretString);

impl RefreshToken {
    const BYTES: usize = 32;
    /// Length of the base64url text of [`Self::BYTES`] bytes.
    const TEXT_LEN: usize = 43;

    /// A new token from the thread-local CSPRNG (ChaCha, seeded by the operating system).
    pub fn generate() -> Self {
        let mut bytes = [0u8; Self::BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(SecretString::from(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Accepts only what [`Self::generate`] produces, so nothing else reaches the database.
    pub fn parse(value: String) -> Result<Self, InvalidValue> {
        let shaped = value.len() == Self::TEXT_LEN
            && URL_SAFE_NO_PAD
                .decode(&value)
                .is_ok_and(|bytes| bytes.len() == Self::BYTES);
        if shaped {
            Ok(Self(SecretString::from(value)))
        } else {
            Err(InvalidValue("is not a refresh token".into()))
        }
    }

    /// The text to hand to the client.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// What is stored: the lower-case hex SHA-256 of the token text. The token carries 256
    /// bits of randomness, so a fast unsalted hash cannot be reversed by guessing.
    pub fn hash(&self) -> String {
        format!("{:x}", Sha256::digest(self.0.expose_secret().as_bytes()))
    }
}

/// A token just issued, with the seconds it has left.
pub struct IssuedRefreshToken {
    pub token: RefreshToken,
    pub expires_in: u64,
}

/// The result of a successful rotation.
pub struct Rotated {
    pub user_id: String,
    pub token: IssuedRefreshToken,
}

/// Why a refresh was refused. All are answered with the same 401; the variant is for logs.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("unknown refresh token")]
    Unknown,
    #[error("expired refresh token")]
    Expired,
    #[error("revoked refresh token")]
    Revoked,
    #[error("refresh token presented again after rotation; family {family_id} revoked")]
    Reused { family_id: String, user_id: String },
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenDocument {
    /// Token id (ULID).
    #[serde(rename = "_id")]
    id: String,
    /// Hex SHA-256 of the token; unique.
    token_hash: String,
    /// The token this one replaced; a family's first token names the family instead. Unique,
    /// so a token can be replaced only once.
    parent_id: String,
    family_id: String,
    user_id: String,
    created_at: bson::DateTime,
    /// The family's expiry.
    expires_at: bson::DateTime,
    /// Set once the token has been exchanged.
    rotated: bool,
    /// Set when the family was revoked (bookkeeping; the family document decides).
    revoked: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FamilyDocument {
    /// Family id (ULID).
    #[serde(rename = "_id")]
    id: String,
    user_id: String,
    created_at: bson::DateTime,
    expires_at: bson::DateTime,
    /// The only field ever updated, and only from `false` to `true`.
    revoked: bool,
}

/// Refresh tokens and their families in MongoDB.
#[derive(Clone)]
pub struct RefreshTokenStore {
    tokens: Collection<TokenDocument>,
    families: Collection<FamilyDocument>,
    ttl: Duration,
}

impl RefreshTokenStore {
    pub const TOKENS: &str = "refresh_tokens";
    pub const FAMILIES: &str = "refresh_token_families";

    /// Opens the collections and makes sure their indexes exist.
    pub async fn open(db: &Database, ttl: Duration) -> anyhow::Result<Self> {
        if ttl.is_zero() {
            anyhow::bail!("jwt.refresh_ttl_secs must be positive");
        }
        let tokens = db.collection::<TokenDocument>(Self::TOKENS);
        let families = db.collection::<FamilyDocument>(Self::FAMILIES);
        indexes::ensure(
            &tokens,
            [
                index(doc! {"token_hash": 1}, "token_hash_unique", true),
                index(doc! {"parent_id": 1}, "parent_id_unique", true),
                index(doc! {"family_id": 1}, "family_id", false),
                index(doc! {"expires_at": 1}, "expires_at", false),
            ],
        )
        .await?;
        indexes::ensure(
            &families,
            [index(doc! {"expires_at": 1}, "expires_at", false)],
        )
        .await?;
        Ok(Self {
            tokens,
            families,
            ttl,
        })
    }

    /// Starts a family for a login and returns its first token.
    pub async fn start_family(&self, user_id: &str) -> anyhow::Result<IssuedRefreshToken> {
        let now = Utc::now();
        let expires_at = now + self.ttl;
        let family = FamilyDocument {
            id: ulid::Ulid::new().to_string(),
            user_id: user_id.to_string(),
            created_at: to_bson(now),
            expires_at: to_bson(expires_at),
            revoked: false,
        };
        self.families
            .insert_one(&family)
            .await
            .context("inserting a refresh token family")?;
        let (document, token) = TokenDocument::new(family.id.clone(), &family);
        self.tokens
            .insert_one(&document)
            .await
            .context("inserting a refresh token")?;
        Ok(IssuedRefreshToken {
            token,
            expires_in: self.ttl.as_secs(),
        })
    }

    /// Exchanges `presented` for a new token of the same family.
    pub async fn rotate(&self, presented: &RefreshToken) -> Result<Rotated, RotateError> {
        let current = self
            .tokens
            .find_one(doc! {"token_hash": presented.hash()})
            .await
            .context("looking up a refresh token")?
            .ok_or(RotateError::Unknown)?;
        let family = self
            .family(&current.family_id)
            .await?
            .ok_or(RotateError::Unknown)?;
        if family.revoked {
            return Err(RotateError::Revoked);
        }
        if current.rotated {
            return Err(self.reused(&family).await);
        }
        if seconds_until(current.expires_at) == 0 {
            return Err(RotateError::Expired);
        }

        let (successor, token) = TokenDocument::new(current.id.clone(), &family);
        match self.tokens.insert_one(&successor).await {
            Ok(_) => {}
            // Another refresh with the same token claimed the replacement first.
            Err(error) if is_duplicate_key(&error) => return Err(self.reused(&family).await),
            Err(error) => {
                return Err(anyhow::Error::from(error)
                    .context("inserting a refresh token")
                    .into());
            }
        }
        self.tokens
            .update_one(
                doc! {"_id": &current.id, "rotated": false},
                doc! {"$set": {"rotated": true}},
            )
            .await
            .context("marking a refresh token rotated")?;
        // A reuse detected elsewhere after the first read revokes the family, successor
        // included; read it again now that the successor exists.
        let still_valid = self
            .family(&family.id)
            .await?
            .is_some_and(|family| !family.revoked);
        if !still_valid {
            return Err(RotateError::Revoked);
        }
        Ok(Rotated {
            user_id: family.user_id,
            token: IssuedRefreshToken {
                token,
                expires_in: seconds_until(family.expires_at),
            },
        })
    }

    /// Revokes the family of `presented` (logout). Unknown tokens are ignored.
    pub async fn revoke(&self, presented: &RefreshToken) -> anyhow::Result<()> {
        let found = self
            .tokens
            .find_one(doc! {"token_hash": presented.hash()})
            .await
            .context("looking up a refresh token")?;
        if let Some(token) = found {
            self.revoke_family(&token.family_id).await?;
        }
        Ok(())
    }

    /// Revokes every family of `user_id` (account deleted or disabled): none of their refresh
    /// tokens works again. Returns how many families were still valid.
    pub async fn revoke_user(&self, user_id: &str) -> anyhow::Result<u64> {
        let revoked = self
            .families
            .update_many(
                doc! {"user_id": user_id, "revoked": false},
                doc! {"$set": {"revoked": true}},
            )
            .await
            .context("revoking a user's refresh token families")?;
        self.tokens
            .update_many(
                doc! {"user_id": user_id, "revoked": false},
                doc! {"$set": {"revoked": true}},
            )
            .await
            .context("marking a user's refresh tokens revoked")?;
        Ok(revoked.modified_count)
    }

    /// Deletes expired tokens and families; returns how many documents went.
    pub async fn purge_expired(&self) -> anyhow::Result<u64> {
        let filter = doc! {"expires_at": {"$lte": to_bson(Utc::now())}};
        let tokens = self
            .tokens
            .delete_many(filter.clone())
            .await
            .context("purging expired refresh tokens")?;
        let families = self
            .families
            .delete_many(filter)
            .await
            .context("purging expired refresh token families")?;
        Ok(tokens.deleted_count + families.deleted_count)
    }

    async fn family(&self, id: &str) -> anyhow::Result<Option<FamilyDocument>> {
        self.families
            .find_one(doc! {"_id": id})
            .await
            .context("looking up a refresh token family")
    }

    async fn reused(&self, family: &FamilyDocument) -> RotateError {
        if let Err(error) = self.revoke_family(&family.id).await {
            return RotateError::Unexpected(error);
        }
        RotateError::Reused {
            family_id: family.id.clone(),
            user_id: family.user_id.clone(),
        }
    }

    async fn revoke_family(&self, family_id: &str) -> anyhow::Result<()> {
        self.families
            .update_one(doc! {"_id": family_id}, doc! {"$set": {"revoked": true}})
            .await
            .context("revoking a refresh token family")?;
        self.tokens
            .update_many(
                doc! {"family_id": family_id},
                doc! {"$set": {"revoked": true}},
            )
            .await
            .context("marking a family's refresh tokens revoked")?;
        Ok(())
    }
}

impl TokenDocument {
    /// A fresh token of `family` replacing `parent_id`, and the token text it stands for.
    fn new(parent_id: String, family: &FamilyDocument) -> (Self, RefreshToken) {
        let token = RefreshToken::generate();
        let document = Self {
            id: ulid::Ulid::new().to_string(),
            token_hash: token.hash(),
            parent_id,
            family_id: family.id.clone(),
            user_id: family.user_id.clone(),
            created_at: to_bson(Utc::now()),
            expires_at: family.expires_at,
            rotated: false,
            revoked: false,
        };
        (document, token)
    }
}

fn to_bson(at: chrono::DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(at.timestamp_millis())
}

/// Whole seconds from now until `at`; 0 once it has passed.
fn seconds_until(at: bson::DateTime) -> u64 {
    let millis = at.timestamp_millis() - Utc::now().timestamp_millis();
    u64::try_from(millis / 1000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_256_random_bits_in_base64url_and_parse_back() {
        let token = RefreshToken::generate();
        assert_eq!(token.expose().len(), RefreshToken::TEXT_LEN);
        let bytes = URL_SAFE_NO_PAD.decode(token.expose()).expect("base64url");
        assert_eq!(bytes.len(), 32);
        assert!(RefreshToken::parse(token.expose().to_string()).is_ok());
        assert_ne!(token.expose(), RefreshToken::generate().expose());
    }

    #[test]
    fn only_the_generated_shape_parses() {
        let valid = RefreshToken::generate().expose().to_string();
        for bad in [
            String::new(),
            format!("{valid}="),
            format!("{valid}A"),
            valid[..42].to_string(),
            valid.replace(|c: char| c.is_ascii_alphanumeric(), "+"),
            "{\"$gt\":\"\"}".to_string(),
        ] {
            assert!(RefreshToken::parse(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_stored_hash_is_the_hex_sha256_of_the_token_text() {
        let token = RefreshToken::parse("A".repeat(42) + "Q").expect("valid shape");
        let expected = format!("{:x}", Sha256::digest(token.expose().as_bytes()));
        assert_eq!(token.hash(), expected);
        assert_eq!(token.hash().len(), 64);
        assert!(!token.hash().contains(token.expose()));
    }
}
