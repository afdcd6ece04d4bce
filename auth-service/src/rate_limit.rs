//! Abuse limits on login and sign-up: how many attempts one client address, and one username
//! from any address, may make in a window before being answered 429.
//!
//! The limiters are `governor`'s keyed GCRA limiters held in memory, so each instance counts
//! on its own; behind a load balancer with `n` instances a client gets up to `n` times the
//! budget. Every login *attempt* is charged before the password is checked, successful ones
//! included: charging only failures would need a look-ahead the limiter cannot make
//! atomically, and `n` concurrent guesses would all be checked before the first failure is
//! recorded. A refused attempt is not charged, so waiting out `Retry-After` always works.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use anyhow::Context;
use common::domain::Username;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::settings::LimitSettings;

type Keyed<K, C> =
    RateLimiter<K, DefaultKeyedStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A refusal: the client may try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(Duration);

impl RetryAfter {
    /// Whole seconds for the `Retry-After` header, rounded up and at least 1, so a client
    /// that waits exactly that long is let through.
    pub fn secs(&self) -> u64 {
        let secs = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        secs.max(1)
    }
}

/// The login and sign-up limiters of one instance.
pub struct AbuseLimits<C: Clock = DefaultClock> {
    /// `None` when limits are turned off.
    limiters: Option<Limiters<C>>,
}

struct Limiters<C: Clock> {
    login_per_ip: Keyed<IpAddr, C>,
    login_per_username: Keyed<String, C>,
    signup_per_ip: Keyed<IpAddr, C>,
}

impl AbuseLimits<DefaultClock> {
    pub fn from_settings(settings: &LimitSettings) -> anyhow::Result<Self> {
        Self::with_clock(settings, DefaultClock::default())
    }
}

impl<C: Clock + Clone> AbuseLimits<C> {
    pub fn with_clock(settings: &LimitSettings, clock: C) -> anyhow::Result<Self> {
        if !settings.enabled {
            tracing::warn!("login and sign-up limits are turned off");
            return Ok(Self { limiters: None });
        }
        let login = |max| quota(max, settings.login_window_secs);
        let limiters = Limiters {
            login_per_ip: RateLimiter::dashmap_with_clock(
                login(settings.login_per_ip).context("limits.login_per_ip")?,
                clock.clone(),
            ),
            login_per_username: RateLimiter::dashmap_with_clock(
                login(settings.login_per_username).context("limits.login_per_username")?,
                clock.clone(),
            ),
            signup_per_ip: RateLimiter::dashmap_with_clock(
                quota(settings.signup_per_ip, settings.signup_window_secs)
                    .context("limits.signup_per_ip")?,
                clock,
            ),
        };
        Ok(Self {
            limiters: Some(limiters),
        })
    }

    /// Charges one login attempt to the client address and, when the username is well-formed,
    /// to that username, whether or not such a user exists (so a 429 reveals nothing).
    pub fn check_login(&self, ip: IpAddr, username: Option<&Username>) -> Result<(), RetryAfter> {
        let Some(limiters) = &self.limiters else {
            return Ok(());
        };
        self.charge(&limiters.login_per_ip, &address_key(ip))?;
        if let Some(username) = username {
            self.charge(&limiters.login_per_username, &username.normalized())?;
        }
        Ok(())
    }

    /// Charges one sign-up to the client address.
    pub fn check_signup(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        match &self.limiters {
            Some(limiters) => self.charge(&limiters.signup_per_ip, &address_key(ip)),
            None => Ok(()),
        }
    }

    /// Forgets keys whose budget is full again; run periodically so the maps only hold
    /// clients seen within the last window.
    pub fn retain_recent(&self) {
        if let Some(limiters) = &self.limiters {
            limiters.login_per_ip.retain_recent();
            limiters.login_per_username.retain_recent();
            limiters.signup_per_ip.retain_recent();
            limiters.login_per_ip.shrink_to_fit();
            limiters.login_per_username.shrink_to_fit();
            limiters.signup_per_ip.shrink_to_fit();
        }
    }

    /// Keys currently tracked, over all limiters.
    pub fn tracked_keys(&self) -> usize {
        self.limiters.as_ref().map_or(0, |l| {
            l.login_per_ip.len() + l.login_per_username.len() + l.signup_per_ip.len()
        })
    }

    fn charge<K>(&self, limiter: &Keyed<K, C>, key: &K) -> Result<(), RetryAfter>
    where
        K: Clone + std::hash::Hash + Eq,
    {
        limiter
            .check_key(key)
            .map_err(|not_until| RetryAfter(not_until.wait_time_from(limiter.clock().now())))
    }
}

/// `max` attempts at once, refilled one every `window / max`.
fn quota(max: u32, window_secs: u64) -> anyhow::Result<Quota> {
    let max = NonZeroU32::new(max).context("must be at least 1")?;
    let period = Duration::from_secs(window_secs) / max.get();
    Quota::with_period(period)
        .map(|quota| quota.allow_burst(max))
        .context("the window must be positive")
}

/// The key of a client address. IPv6 clients usually hold a whole /64, so they are counted
/// per /64; IPv4-mapped IPv6 addresses count as the IPv4 address.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn settings() -> LimitSettings {
        LimitSettings {
            enabled: true,
            login_per_username: 3,
            login_per_ip: 5,
            login_window_secs: 60,
            signup_per_ip: 2,
            signup_window_secs: 3600,
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    fn user(name: &str) -> Username {
        Username::parse(name.to_string()).expect("username")
    }

    #[test]
    fn a_username_gets_its_budget_from_any_address_then_waits_a_refill_period() {
        let clock = FakeRelativeClock::default();
        let limits = AbuseLimits::with_clock(&settings(), clock.clone()).expect("limits");
        let alice = user("alice");
        for i in 0..3 {
            let from = ip(&format!("10.0.0.{i}"));
            assert_eq!(limits.check_login(from, Some(&alice)), Ok(()));
        }
        let refused = limits
            .check_login(ip("10.0.0.9"), Some(&user("ALICE")))
            .expect_err("fourth attempt refused, in any case");
        assert_eq!(refused.secs(), 20, "one attempt per 60 s / 3");
        assert_eq!(
            limits.check_login(ip("10.0.0.9"), Some(&user("bob"))),
            Ok(())
        );

        clock.advance(Duration::from_secs(19));
        assert!(limits.check_login(ip("10.0.0.9"), Some(&alice)).is_err());
        clock.advance(Duration::from_secs(1));
        assert_eq!(limits.check_login(ip("10.0.0.9"), Some(&alice)), Ok(()));
    }

    #[test]
    fn an_address_gets_its_budget_whatever_the_usernames_and_refusals_are_free() {
        let clock = FakeRelativeClock::default();
        let limits = AbuseLimits::with_clock(&settings(), clock.clone()).expect("limits");
        let attacker = ip("192.0.2.1");
        for i in 0..5 {
            assert_eq!(
                limits.check_login(attacker, Some(&user(&format!("user{i}")))),
                Ok(())
            );
        }
        for _ in 0..20 {
            assert!(limits.check_login(attacker, None).is_err());
        }
        // The refused attempts did not push the wait further out.
        clock.advance(Duration::from_secs(12));
        assert_eq!(limits.check_login(attacker, None), Ok(()));
        assert_eq!(limits.check_login(ip("192.0.2.2"), None), Ok(()));
    }

    #[test]
    fn sign_ups_are_limited_per_address_separately_from_logins() {
        let limits =
            AbuseLimits::with_clock(&settings(), FakeRelativeClock::default()).expect("limits");
        let client = ip("198.51.100.7");
        assert!(limits.check_signup(client).is_ok());
        assert!(limits.check_signup(client).is_ok());
        let refused = limits.check_signup(client).expect_err("third refused");
        assert_eq!(refused.secs(), 1800);
        assert!(limits.check_login(client, None).is_ok());
        assert!(limits.check_signup(ip("198.51.100.8")).is_ok());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            address_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(address_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn forgotten_keys_are_only_those_with_a_full_budget() {
        let clock = FakeRelativeClock::default();
        let limits = AbuseLimits::with_clock(&settings(), clock.clone()).expect("limits");
        limits
            .check_login(ip("10.0.0.1"), Some(&user("alice")))
            .expect("allowed");
        limits.retain_recent();
        assert_eq!(limits.tracked_keys(), 2);
        clock.advance(Duration::from_secs(61));
        limits.retain_recent();
        assert_eq!(limits.tracked_keys(), 0);
    }

    #[test]
    fn turned_off_limits_allow_everything_and_zero_budgets_are_refused_at_start() {
        let off = LimitSettings {
            enabled: false,
            ..settings()
        };
        let limits = AbuseLimits::from_settings(&off).expect("limits");
        for _ in 0..100 {
            assert!(limits.check_signup(ip("10.0.0.1")).is_ok());
        }
        let zero = LimitSettings {
            login_per_ip: 0,
            ..settings()
        };
        assert!(AbuseLimits::from_settings(&zero).is_err());
        let no_window = LimitSettings {
            login_window_secs: 0,
            ..settings()
        };
        assert!(AbuseLimits::from_settings(&no_window).is_err());
    }
}
