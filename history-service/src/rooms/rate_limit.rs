//! Room creation per user and hour (`rooms.create_per_hour`). Counted in memory per instance:
//! behind several instances a user may create that many rooms per instance, which is enough
//! to stop a loop from filling the directory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Users remembered at most; beyond, windows that ended are forgotten first and, if that is
/// not enough, the new user is refused until some do.
const MAX_USERS: usize = 100_000;

pub struct CreationLimit {
    per_window: u32,
    window: Duration,
    /// Per user: when their window started and how many rooms they created in it.
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl CreationLimit {
    pub fn per_hour(per_hour: u32) -> Self {
        Self {
            per_window: per_hour,
            window: Duration::from_secs(3600),
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one creation by `user`; `Err(seconds to wait)` when they reached the limit.
    pub fn take(&self, user: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut windows = match self.windows.lock() {
            Ok(windows) => windows,
            Err(poisoned) => poisoned.into_inner(),
        };
        if windows.len() >= MAX_USERS && !windows.contains_key(user) {
            windows.retain(|_, (start, _)| now.duration_since(*start) < self.window);
            if windows.len() >= MAX_USERS {
                return Err(60);
            }
        }
        let (start, count) = windows.entry(user.to_string()).or_insert((now, 0));
        if now.duration_since(*start) >= self.window {
            *start = now;
            *count = 0;
        }
        if *count >= self.per_window {
            let left = self.window.saturating_sub(now.duration_since(*start));
            return Err(left.as_secs().max(1));
        }
        *count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_beyond_the_limit_waits_and_others_do_not() {
        let limit = CreationLimit::per_hour(2);
        assert!(limit.take("a").is_ok());
        assert!(limit.take("a").is_ok());
        let wait = limit.take("a").expect_err("third refused");
        assert!((3500..=3600).contains(&wait));
        assert!(limit.take("b").is_ok());
    }
}
