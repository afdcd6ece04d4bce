//! Passwords: the length rule, the refusal of the most common passwords for new ones, and
//! bcrypt hashing and verification on the blocking pool so a
//! hash (hundreds of milliseconds at cost 12) never stalls the async workers.
//!
//! At most [`PasswordSettings::max_concurrent_hashes`](crate::settings::PasswordSettings)
//! hashes run at once (by default one fewer than the cores): a burst of logins then queues for
//! a permit instead of taking every core, and the async workers keep a core for health checks,
//! token refreshes and everything else that is cheap.

use std::collections::HashSet;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Semaphore;

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

    /// Whether this is one of the 10,000 most common passwords, ignoring case and surrounding
    /// spaces. New passwords are refused when it is (OWASP ASVS 2.1.7); logins are not
    /// checked, so existing accounts keep working.
    pub fn is_common(&self) -> bool {
        let folded = self.0.expose_secret().trim().to_lowercase();
        COMMON_PASSWORDS.contains(folded.as_str())
    }
}

/// The 10,000 most common passwords, lower-cased: the first 10,000 lines of the list Django
/// 5.2.20 ships for its `CommonPasswordValidator` (PyPI package `django`, BSD-3-Clause;
/// compiled by Royce Williams). `data/README.md` says more.
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect()
});

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
    /// Permits for running hashes.
    permits: Semaphore,
    running: AtomicUsize,
    /// The most hashes seen running at once (for tests).
    peak: AtomicUsize,
}

/// Counts a running hash while alive.
struct Running<'a>(&'a Passwords);

impl<'a> Running<'a> {
    fn start(passwords: &'a Passwords) -> Self {
        let now = passwords.running.fetch_add(1, Ordering::SeqCst) + 1;
        passwords.peak.fetch_max(now, Ordering::SeqCst);
        Self(passwords)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One fewer than the cores this process may use, and at least one.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .saturating_sub(1)
        .max(1)
}

impl Passwords {
    /// Computes the dummy hash, which takes one hash at `cost`. `max_concurrent` hashes run
    /// at once (0 means [`default_concurrency`]).
    pub async fn new(cost: u32, max_concurrent: usize) -> anyhow::Result<Self> {
        let dummy = Password::parse(ulid::Ulid::new().to_string())
            .map_err(|e| anyhow::anyhow!("dummy password: {e}"))?;
        let permits = match max_concurrent {
            0 => default_concurrency(),
            n => n,
        };
        Ok(Self {
            cost,
            dummy_hash: hash(dummy, cost).await?,
            verifications: AtomicU64::new(0),
            permits: Semaphore::new(permits),
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        })
    }

    pub async fn hash(&self, password: Password) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await?;
        let _running = Running::start(self);
        hash(password, self.cost).await
    }

    /// Verifies `candidate` against the user's hash, or against the dummy hash when there is
    /// no user (`None`), which then never matches.
    ///
    /// A hash made at a lower cost than the configured one (an account from before the cost
    /// was raised) checks faster. When such a check fails, the dummy hash is verified as well,
    /// so a failed login costs at least the configured cost whatever the account; a successful
    /// one re-hashes the password at the configured cost (see [`Self::is_below_cost`]).
    pub async fn verify(
        &self,
        candidate: SecretString,
        user_hash: Option<String>,
    ) -> anyhow::Result<bool> {
        let is_user = user_hash.is_some();
        let below_cost = user_hash
            .as_deref()
            .is_some_and(|hash| self.is_below_cost(hash));
        let hash = user_hash.unwrap_or_else(|| self.dummy_hash.clone());
        let matches = self.verify_once(candidate.clone(), hash).await?;
        if below_cost && !matches {
            self.verify_once(candidate, self.dummy_hash.clone()).await?;
        }
        Ok(matches && is_user)
    }

    /// One bcrypt verification under a permit, counted once done.
    async fn verify_once(&self, candidate: SecretString, hash: String) -> anyhow::Result<bool> {
        let matches = {
            let _permit = self.permits.acquire().await?;
            let _running = Running::start(self);
            verify(candidate, hash).await?
        };
        self.verifications.fetch_add(1, Ordering::Relaxed);
        Ok(matches)
    }

    /// Whether `hash` was made at a lower cost than the configured one, so the password
    /// should be hashed again after a successful login. A hash whose cost cannot be read is
    /// not (bcrypt refuses it anyway).
    pub fn is_below_cost(&self, hash: &str) -> bool {
        cost_of(hash).is_some_and(|cost| cost < self.cost)
    }

    /// How many bcrypt verifications this instance has completed.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// The most hashes and verifications that ran at once so far.
    pub fn peak_concurrency(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// The bcrypt cost embedded in the dummy hash.
    pub fn dummy_cost(&self) -> Option<u32> {
        cost_of(&self.dummy_hash)
    }
}

/// The cost embedded in a bcrypt hash (`$2b$<cost>$…`).
pub fn cost_of(hash: &str) -> Option<u32> {
    hash.split('$').nth(2)?.parse().ok()
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

    #[test]
    fn the_most_common_passwords_are_recognised_in_any_case() {
        for common in [
            "password",
            "Password",
            "PASSWORD1",
            "12345678",
            "1234567890",
            "qwertyuiop",
            " iloveyou ",
        ] {
            let password = Password::parse(common.into()).expect("long enough");
            assert!(password.is_common(), "{common}");
        }
        for uncommon in ["correct horse", "vT7#qLm2!xR9", "bench-password-1"] {
            let password = Password::parse(uncommon.into()).expect("long enough");
            assert!(!password.is_common(), "{uncommon}");
        }
        assert_eq!(COMMON_PASSWORDS.len(), 10_000);
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
        let passwords = Passwords::new(5, 0).await.expect("dummy hash");
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
    async fn the_dummy_hash_has_the_configured_cost() {
        for cost in [4, 6] {
            let passwords = Passwords::new(cost, 1).await.expect("dummy hash");
            assert_eq!(passwords.dummy_cost(), Some(cost));
        }
    }

    #[tokio::test]
    async fn a_failed_check_against_a_cheaper_hash_also_spends_one_at_the_configured_cost() {
        let old = hash(Password::parse("correct horse".into()).expect("valid"), 4)
            .await
            .expect("hashes");
        let passwords = Passwords::new(5, 0).await.expect("dummy hash");
        assert!(passwords.is_below_cost(&old));
        assert!(
            !passwords
                .verify("wrong horse!".to_string().into(), Some(old.clone()))
                .await
                .expect("runs")
        );
        assert_eq!(passwords.verifications(), 2, "the check and the dummy");
        assert!(
            passwords
                .verify("correct horse".to_string().into(), Some(old))
                .await
                .expect("runs")
        );
        assert_eq!(passwords.verifications(), 3, "a success needs no padding");

        let current = passwords
            .hash(Password::parse("correct horse".into()).expect("valid"))
            .await
            .expect("hashes");
        assert_eq!(cost_of(&current), Some(5));
        assert!(!passwords.is_below_cost(&current));
        assert!(
            !passwords
                .verify("wrong horse!".to_string().into(), Some(current))
                .await
                .expect("runs")
        );
        assert_eq!(passwords.verifications(), 4);
    }

    #[tokio::test]
    async fn a_malformed_hash_is_an_error_and_not_counted_as_a_verification() {
        let passwords = Passwords::new(4, 0).await.expect("dummy hash");
        assert!(
            passwords
                .verify("candidate".to_string().into(), Some("not a hash".into()))
                .await
                .is_err()
        );
        assert_eq!(passwords.verifications(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_more_hashes_run_at_once_than_the_limit() {
        let passwords = std::sync::Arc::new(Passwords::new(6, 2).await.expect("dummy hash"));
        let stored = passwords
            .hash(Password::parse("correct horse".into()).expect("valid"))
            .await
            .expect("hashes");
        let attempts: Vec<_> = (0..8)
            .map(|_| {
                let (passwords, stored) = (passwords.clone(), stored.clone());
                tokio::spawn(async move {
                    passwords
                        .verify("correct horse".to_string().into(), Some(stored))
                        .await
                })
            })
            .collect();
        for attempt in attempts {
            assert!(attempt.await.expect("task").expect("runs"));
        }
        assert_eq!(passwords.verifications(), 8);
        assert_eq!(passwords.peak_concurrency(), 2);
    }
}
