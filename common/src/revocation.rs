//! Access tokens that must no longer be honoured although their signature and expiry are fine:
//! those of users who deleted their account or were disabled, issued before that happened.
//!
//! Access tokens are self-contained, so a service learns of such a change only through the
//! `account.<user_id>` events auth-service publishes ([`crate::event::AccountEvent`]). Each
//! service that verifies tokens applies them here, and [`crate::token::JwksVerifier`] refuses a
//! token whose user was revoked at or after the token's `iat`.
//!
//! An entry only has to outlive the tokens it refuses: it is kept for the retention given at
//! construction (longer than any access token's lifetime), and the table holds at most
//! `capacity` entries, dropping the oldest revocation first when it is full of live entries.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::domain::UserId;
use crate::event::{AccountChange, AccountEvent};

/// Users whose tokens issued up to a time are refused.
pub struct Revocations {
    /// Keyed by user id.
    entries: Mutex<HashMap<String, Revoked>>,
    retention: Duration,
    capacity: usize,
}

#[derive(Clone, Copy)]
struct Revoked {
    /// Tokens issued at or before this second (Unix time) are refused.
    up_to_secs: i64,
    /// When this entry may be forgotten: every token it refuses has expired by then.
    forget_at: Instant,
}

impl Revocations {
    /// How long an entry is kept by default: a day, far beyond the access tokens' lifetime.
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
    /// Most users remembered at once by default (about 100 bytes each).
    pub const DEFAULT_CAPACITY: usize = 100_000;

    pub fn new(retention: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            retention,
            capacity: capacity.max(1),
        }
    }

    /// Applies an account event. Returns whether the user's live sessions must end now.
    pub fn apply(&self, event: &AccountEvent) -> bool {
        match event.change {
            AccountChange::Deleted | AccountChange::Disabled => {
                self.revoke(&event.user_id, event.at);
                true
            }
            // Tokens issued before the account was disabled stay refused; tokens issued after
            // it was enabled again are newer than the entry and pass.
            AccountChange::Enabled => false,
        }
    }

    /// Refuses `user`'s tokens issued at or before `at`.
    pub fn revoke(&self, user: &UserId, at: DateTime<Utc>) {
        let now = Instant::now();
        let mut entries = self.lock();
        if !entries.contains_key(user.as_str()) && entries.len() >= self.capacity {
            entries.retain(|_, revoked| revoked.forget_at > now);
            if entries.len() >= self.capacity {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, revoked)| revoked.forget_at)
                    .map(|(user, _)| user.clone());
                if let Some(oldest) = oldest {
                    tracing::warn!(
                        capacity = self.capacity,
                        "revocation table full: forgetting the oldest entry"
                    );
                    entries.remove(&oldest);
                }
            }
        }
        let up_to_secs = at.timestamp();
        let entry = entries.entry(user.to_string()).or_insert(Revoked {
            up_to_secs,
            forget_at: now + self.retention,
        });
        entry.up_to_secs = entry.up_to_secs.max(up_to_secs);
        entry.forget_at = now + self.retention;
    }

    /// Whether a token of `user` issued at `issued_at` (Unix seconds) is refused.
    pub fn is_revoked(&self, user: &str, issued_at: u64) -> bool {
        let entries = self.lock();
        let Some(revoked) = entries.get(user) else {
            return false;
        };
        revoked.forget_at > Instant::now()
            && i64::try_from(issued_at).unwrap_or(i64::MAX) <= revoked.up_to_secs
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Revoked>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Revocations {
    fn default() -> Self {
        Self::new(Self::DEFAULT_RETENTION, Self::DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::parse(id.to_string()).expect("valid user id")
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).expect("valid time")
    }

    #[test]
    fn tokens_issued_up_to_the_change_are_refused_and_later_ones_pass() {
        let revocations = Revocations::default();
        let ends_sessions = revocations.apply(&AccountEvent::new(
            user("u1"),
            AccountChange::Disabled,
            at(1_000),
        ));
        assert!(ends_sessions);
        assert!(revocations.is_revoked("u1", 999));
        assert!(revocations.is_revoked("u1", 1_000));
        assert!(!revocations.is_revoked("u1", 1_001));
        assert!(!revocations.is_revoked("u2", 999));
    }

    #[test]
    fn enabling_again_keeps_the_old_tokens_refused() {
        let revocations = Revocations::default();
        revocations.apply(&AccountEvent::new(
            user("u1"),
            AccountChange::Disabled,
            at(1_000),
        ));
        let ends_sessions = revocations.apply(&AccountEvent::new(
            user("u1"),
            AccountChange::Enabled,
            at(1_100),
        ));
        assert!(!ends_sessions);
        assert!(revocations.is_revoked("u1", 1_000));
        assert!(!revocations.is_revoked("u1", 1_101));
    }

    #[test]
    fn an_older_event_arriving_late_does_not_shorten_a_revocation() {
        let revocations = Revocations::default();
        revocations.revoke(&user("u1"), at(2_000));
        revocations.revoke(&user("u1"), at(1_000));
        assert!(revocations.is_revoked("u1", 1_500));
    }

    #[test]
    fn entries_are_forgotten_after_the_retention() {
        let revocations = Revocations::new(Duration::ZERO, 10);
        revocations.revoke(&user("u1"), at(1_000));
        assert!(!revocations.is_revoked("u1", 999));
    }

    #[test]
    fn a_full_table_forgets_its_oldest_entry_first() {
        let revocations = Revocations::new(Duration::from_secs(3600), 2);
        revocations.revoke(&user("u1"), at(1_000));
        std::thread::sleep(Duration::from_millis(2));
        revocations.revoke(&user("u2"), at(1_000));
        std::thread::sleep(Duration::from_millis(2));
        revocations.revoke(&user("u3"), at(1_000));
        assert!(!revocations.is_revoked("u1", 999));
        assert!(revocations.is_revoked("u2", 999));
        assert!(revocations.is_revoked("u3", 999));
        assert_eq!(revocations.lock().len(), 2);
    }
}
