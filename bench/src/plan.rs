//! Scenario sizes for each profile. The same plan runs against every target.

use std::time::Duration;

use crate::cli::Profile;

pub struct Plan {
    /// Users signed up on each target; connection `i` uses user `i % users`. Enough that no
    /// user holds more than 10 connections (the gateway allows 20 per user).
    pub users: usize,
    /// Connections opened at once while building up a fleet.
    pub connect_concurrency: usize,
    /// Longest wait for a target to finish storing a backlog after a scenario that sends.
    pub store_settle: Duration,
    pub idle: IdlePlan,
    pub connect: ConnectPlan,
    pub persistence: PersistencePlan,
    pub fanout: FanoutPlan,
    pub auth: AuthPlan,
    pub storm: StormPlan,
    pub rooms: RoomsPlan,
}

pub struct IdlePlan {
    /// Connection counts at which memory is read, rising.
    pub levels: Vec<usize>,
    /// Levels the issue asks for that this machine's open-files limit rules out.
    pub skipped: Vec<usize>,
    pub rooms: usize,
    /// Wait after reaching a level before reading memory.
    pub settle: Duration,
}

pub struct ConnectPlan {
    /// Open-loop connects per second for the latency measurement.
    pub rate: f64,
    pub paced_count: usize,
    /// Closed-loop connects (as fast as `concurrency` allows) for the throughput measurement.
    pub burst_count: usize,
    pub burst_concurrency: usize,
    pub rooms: usize,
}

pub struct PersistencePlan {
    /// Connections sending, each in a room of its own. Enough that none sends more than 10
    /// messages per second at the highest rate: the gateway rate-limits each connection (20/s)
    /// like it would a real client.
    pub senders: usize,
    /// Messages per second, rising.
    pub rates: Vec<f64>,
    pub step: Duration,
    /// Longest wait after a step for the database to catch up.
    pub drain: Duration,
    pub poll: Duration,
    /// Lag p99 below which a rate counts as sustained.
    pub lag_limit_ms: f64,
}

pub struct FanoutPlan {
    pub clients: usize,
    pub rooms: usize,
    /// Messages sent per second (all rooms together), rising.
    pub rates: Vec<f64>,
    pub step: Duration,
    pub drain: Duration,
    pub body_bytes: usize,
    /// p99 up to which a rate counts as served.
    pub p99_limit_ms: f64,
    /// Share of the frames that are reactions in ours' second, mixed run (0: no mixed run).
    pub reaction_share: f64,
}

pub struct AuthPlan {
    /// Users on the default-cost instance (each signup costs one full hash).
    pub users: usize,
    /// Concurrent login loops; more than the cores so bcrypt is saturated.
    pub login_workers: usize,
    pub phase: Duration,
    /// Probes per second for each probed endpoint.
    pub probe_rate: f64,
}

pub struct StormPlan {
    /// Rooms filled with history before the storm.
    pub rooms: usize,
    /// Messages stored in each room before the storm.
    pub messages_per_room: usize,
    /// Messages a plain join answers: the room's last 50 on both targets (ours:
    /// `recent_on_join` of chat-gateway's settings; the peer: its code).
    pub recent: usize,
    /// Documents per `insert_many` while filling (FerretDB is slow per call).
    pub insert_batch: usize,
    /// Connections that join, one room each (round robin), opened before the storm.
    pub clients: usize,
    /// Join frames sent per second, open loop.
    pub rate: f64,
    /// A `since` join asks for the messages after the one this many places from the end of
    /// its room, so its catch-up is small.
    pub since_back: usize,
    /// A join not answered within this time of its send counts as unanswered.
    pub deadline: Duration,
    /// How often history-service's readiness is polled during the storm.
    pub ready_poll: Duration,
    /// Longest wait, after a target's storm, for its processes to go quiet.
    pub settle: Duration,
}

/// The room list scenario.
#[derive(Debug, Clone)]
pub struct RoomsPlan {
    /// Rooms the listed user is a member of.
    pub rooms: usize,
    /// Older messages stored in each of those rooms before the lists are measured.
    pub messages_per_room: usize,
    /// Documents per `insert_many` while filling.
    pub insert_batch: usize,
    /// Lists measured per user.
    pub requests: usize,
}

/// Spare descriptors for everything besides the connections (HTTP pools, MongoDB, stdio).
const SPARE_FILES: u64 = 1_000;

impl Plan {
    /// The plan for `profile`, with idle levels capped so that neither this process nor a
    /// server (same limit, inherited from the runner) runs out of file descriptors.
    pub fn new(profile: Profile, open_files: u64) -> Self {
        let cap = open_files.saturating_sub(SPARE_FILES) as usize;
        match profile {
            Profile::Quick => Self {
                users: 100,
                connect_concurrency: 64,
                store_settle: Duration::from_secs(20),
                idle: idle(&[200, 1_000], cap),
                connect: ConnectPlan {
                    rate: 200.0,
                    paced_count: 400,
                    burst_count: 400,
                    burst_concurrency: 32,
                    rooms: 10,
                },
                persistence: PersistencePlan {
                    senders: 40,
                    rates: vec![50.0, 200.0],
                    step: Duration::from_secs(3),
                    drain: Duration::from_secs(5),
                    poll: Duration::from_millis(50),
                    lag_limit_ms: 1_000.0,
                },
                fanout: FanoutPlan {
                    clients: 200,
                    rooms: 10,
                    rates: vec![10.0, 50.0],
                    step: Duration::from_secs(3),
                    drain: Duration::from_secs(3),
                    body_bytes: 64,
                    p99_limit_ms: 250.0,
                    reaction_share: 0.2,
                },
                auth: AuthPlan {
                    users: 4,
                    login_workers: 8,
                    phase: Duration::from_secs(3),
                    probe_rate: 20.0,
                },
                storm: StormPlan {
                    rooms: 10,
                    messages_per_room: 200,
                    recent: 50,
                    insert_batch: 1_000,
                    clients: 500,
                    rate: 250.0,
                    since_back: 20,
                    deadline: Duration::from_secs(10),
                    ready_poll: Duration::from_millis(200),
                    settle: Duration::from_secs(30),
                },
                rooms: RoomsPlan {
                    rooms: 20,
                    messages_per_room: 100,
                    insert_batch: 1_000,
                    requests: 100,
                },
            },
            Profile::Full => Self {
                users: 2_000,
                connect_concurrency: 128,
                store_settle: Duration::from_secs(90),
                idle: idle(&[1_000, 5_000, 10_000, 50_000], cap),
                connect: ConnectPlan {
                    rate: 1_000.0,
                    paced_count: 3_000,
                    burst_count: 5_000,
                    burst_concurrency: 64,
                    rooms: 100,
                },
                persistence: PersistencePlan {
                    senders: 400,
                    rates: vec![
                        50.0, 100.0, 250.0, 500.0, 750.0, 1_000.0, 1_500.0, 2_000.0, 2_500.0,
                        3_000.0, 4_000.0,
                    ],
                    step: Duration::from_secs(10),
                    drain: Duration::from_secs(15),
                    poll: Duration::from_millis(50),
                    lag_limit_ms: 1_000.0,
                },
                fanout: FanoutPlan {
                    clients: 10_000.min(cap),
                    rooms: 100,
                    rates: vec![
                        5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 300.0, 350.0, 400.0, 500.0, 600.0,
                        800.0, 1_200.0, 1_600.0,
                    ],
                    step: Duration::from_secs(10),
                    drain: Duration::from_secs(5),
                    body_bytes: 64,
                    p99_limit_ms: 250.0,
                    reaction_share: 0.2,
                },
                auth: AuthPlan {
                    users: 8,
                    login_workers: 16,
                    phase: Duration::from_secs(10),
                    probe_rate: 50.0,
                },
                storm: StormPlan {
                    rooms: 100,
                    messages_per_room: 1_000,
                    recent: 50,
                    insert_batch: 1_000,
                    clients: 10_000.min(cap),
                    rate: 1_000.0,
                    since_back: 20,
                    deadline: Duration::from_secs(10),
                    ready_poll: Duration::from_millis(200),
                    settle: Duration::from_secs(120),
                },
                rooms: RoomsPlan {
                    rooms: 500,
                    messages_per_room: 10_000,
                    insert_batch: 2_000,
                    requests: 1_000,
                },
            },
        }
    }
}

/// Keeps the wanted levels that fit under `cap`; if some do not, `cap` itself is measured.
fn idle(wanted: &[usize], cap: usize) -> IdlePlan {
    let mut levels: Vec<usize> = wanted.iter().copied().filter(|&n| n <= cap).collect();
    let skipped: Vec<usize> = wanted.iter().copied().filter(|&n| n > cap).collect();
    if !skipped.is_empty() && levels.last().is_none_or(|&last| last < cap) {
        levels.push(cap);
    }
    IdlePlan {
        levels,
        skipped,
        rooms: 100,
        settle: Duration::from_secs(3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_levels_stop_at_the_open_files_limit() {
        let plan = Plan::new(Profile::Full, 20_000);
        assert_eq!(plan.idle.levels, vec![1_000, 5_000, 10_000, 19_000]);
        assert_eq!(plan.idle.skipped, vec![50_000]);
        let plan = Plan::new(Profile::Full, 1_000_000);
        assert_eq!(plan.idle.levels, vec![1_000, 5_000, 10_000, 50_000]);
        assert!(plan.idle.skipped.is_empty());
    }
}
