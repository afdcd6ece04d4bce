//! Passwords: the length rule, and bcrypt hashing and verification on the blocking pool so a
//! hash (hundreds of milliseconds at cost 12) never stalls the async workers.

use anyhow::Context;
use common::domain::InvalidValue;
use secrecy::{ExposeSecret, SecretString};

/// A password that satisfies the length rule: 8–72 bytes. bcrypt ignores bytes past 72, so
/// longer passwords are refused instead of silently truncated.
pub struct Password(SecretString);

impl Password {
    pub const MIN_BYTES: usize = 8;
    pub const MAX_BYTES: usize = 72;

    pub fn parse(value: String) -> Result<Self, InvalidValue> {
        if value.len() < Self::MIN_BYTES {
            return Err(InvalidValue(format!(
                "must be at least {} bytes",
                Self::MIN_BYTES
            )));
        }
        if value.len() > Self::MAX_BYTES {
            return Err(InvalidValue(format!(
                "must be at most {} bytes",
                Self::MAX_BYTES
            )));
        }
        Ok(Self(SecretString::from(value)))
    }
}

/// Hashes with bcrypt at `cost` on the blocking pool.
pub async fn hash(password: Password, cost: u32) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || bcrypt::hash(password.0.expose_secret(), cost))
        .await
        .context("password hashing task failed")?
        .context("bcrypt hashing failed")
}

/// Verifies a candidate against a stored hash on the blocking pool.
pub async fn verify(candidate: SecretString, hash: String) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || bcrypt::verify(candidate.expose_secret(), &hash))
        .await
        .context("password verification task failed")?
        .context("bcrypt verification failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_outside_8_to_72_bytes_are_refused() {
        assert!(Password::parse("1234567".into()).is_err());
        assert!(Password::parse("12345678".into()).is_ok());
        assert!(Password::parse("a".repeat(72)).is_ok());
        assert!(Password::parse("a".repeat(73)).is_err());
        // 36 two-byte characters are 72 bytes; 37 are 74.
        assert!(Password::parse("é".repeat(36)).is_ok());
        assert!(Password::parse("é".repeat(37)).is_err());
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hash = hash(Password::parse("correct horse".into()).expect("valid"), 4)
            .await
            .expect("hashes");
        assert!(
            verify("correct horse".to_string().into(), hash.clone())
                .await
                .expect("runs")
        );
        assert!(
            !verify("wrong horse!".to_string().into(), hash)
                .await
                .expect("runs")
        );
    }
}
