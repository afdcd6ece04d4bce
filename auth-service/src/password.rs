//! Passwords: the length rule, and bcrypt hashing and verification on the blocking pool so a
//! hash (hundreds of milliseconds at cost 12) never stalls the async workers.

use std::sync::atomic::{AtomicU64, Ordering};

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

/// Hashing at the configured cost, and verification that costs the same whether or not the
/// user exists.
pub struct Passwords {
    cost: u32,
    /// Hash of a random password at the configured cost, verified when there is no user so
    /// that a login for an unknown username takes as long as a wrong password.
    dummy_hash: String,
    /// Completed bcrypt verifications. bcrypt refuses a malformed hash before doing any work,
    /// so only real verifications are counted; this is how the tests see that an unknown
    /// user costs one verification without timing anything.
    verifications: AtomicU64,
}

impl Passwords {
    /// Computes the dummy hash, which takes one hash at `cost`.
    pub async fn new(cost: u32) -> anyhow::Result<Self> {
        let dummy = Password::parse(ulid::Ulid::new().to_string())
            .map_err(|e| anyhow::anyhow!("dummy password: {e}"))?;
        Ok(Self {
            cost,
            dummy_hash: hash(dummy, cost).await?,
            verifications: AtomicU64::new(0),
        })
    }

    pub async fn hash(&self, password: Password) -> anyhow::Result<String> {
        hash(password, self.cost).await
    }

    /// Verifies `candidate` against the user's hash, or against the dummy hash when there is
    /// no user (`None`), which then never matches.
    pub async fn verify(
        &self,
        candidate: SecretString,
        user_hash: Option<String>,
    ) -> anyhow::Result<bool> {
        let is_user = user_hash.is_some();
        let hash = user_hash.unwrap_or_else(|| self.dummy_hash.clone());
        let matches = verify(candidate, hash).await?;
        self.verifications.fetch_add(1, Ordering::Relaxed);
        Ok(matches && is_user)
    }

    /// How many bcrypt verifications this instance has completed.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// The bcrypt cost embedded in the dummy hash (`$2b$<cost>$…`).
    pub fn dummy_cost(&self) -> Option<u32> {
        self.dummy_hash.split('$').nth(2)?.parse().ok()
    }
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

    #[tokio::test]
    async fn a_missing_user_costs_one_verification_at_the_configured_cost_and_never_matches() {
        let passwords = Passwords::new(5).await.expect("dummy hash");
        assert_eq!(passwords.dummy_cost(), Some(5));
        assert!(
            !passwords
                .verify("anything at all".to_string().into(), None)
                .await
                .expect("runs")
        );
        assert_eq!(passwords.verifications(), 1);

        let stored = passwords
            .hash(Password::parse("correct horse".into()).expect("valid"))
            .await
            .expect("hashes");
        assert!(
            passwords
                .verify("correct horse".to_string().into(), Some(stored))
                .await
                .expect("runs")
        );
        assert_eq!(passwords.verifications(), 2);
    }

    #[tokio::test]
    async fn a_malformed_hash_is_an_error_and_not_counted_as_a_verification() {
        let passwords = Passwords::new(4).await.expect("dummy hash");
        assert!(
            passwords
                .verify("candidate".to_string().into(), Some("not a hash".into()))
                .await
                .is_err()
        );
        assert_eq!(passwords.verifications(), 0);
    }
}
