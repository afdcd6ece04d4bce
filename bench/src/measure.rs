//! Measuring: latency histograms (microseconds, HdrHistogram), open-loop pacing, and the
//! server processes' memory and CPU time from `/proc`.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Highest latency a histogram keeps apart: everything above is recorded as this.
const MAX_MICROS: u64 = 120_000_000;

/// A latency histogram in microseconds, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant bounds are valid")
}

/// Records `latency` (clamped to the histogram's range).
pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = (latency.as_micros() as u64).clamp(1, MAX_MICROS);
    histogram.saturating_record(micros);
}

/// A histogram several tasks record into.
pub struct SharedHistogram(Mutex<Histogram<u64>>);

impl Default for SharedHistogram {
    fn default() -> Self {
        Self(Mutex::new(histogram()))
    }
}

impl SharedHistogram {
    pub fn record(&self, latency: Duration) {
        record(
            &mut self.0.lock().unwrap_or_else(PoisonError::into_inner),
            latency,
        );
    }

    pub fn snapshot(&self) -> Histogram<u64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            count: histogram.len(),
            p50: ms(histogram.value_at_quantile(0.50)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

/// Calls `emit(k, intended)` for `k` in `0..rate * duration`, each at its intended time
/// `start + k / rate`, open loop: a slow server does not slow the schedule down, and
/// latencies measured from `intended` include any time the schedule fell behind.
pub async fn paced(rate: f64, duration: Duration, mut emit: impl FnMut(u64, Instant)) -> u64 {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next = 0;
    while next < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(total);
        while next < due {
            emit(next, start + Duration::from_secs_f64(next as f64 / rate));
            next += 1;
        }
    }
    total
}

/// A server process to measure, with a name for tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPid {
    pub name: String,
    pub pid: u32,
}

impl std::str::FromStr for NamedPid {
    type Err = String;

    /// `name=pid`, e.g. `gateway=4242`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, pid) = s
            .split_once('=')
            .ok_or_else(|| format!("expected name=pid, got `{s}`"))?;
        let pid = pid
            .parse()
            .map_err(|_| format!("`{pid}` is not a process id"))?;
        Ok(Self {
            name: name.to_string(),
            pid,
        })
    }
}

/// Resident memory of `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Total resident memory of `pids` in KiB; `None` if any of them is gone.
pub fn total_rss_kib(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&pid| rss_kib(pid)).sum()
}

/// Clock ticks per second of `/proc/<pid>/stat` times; 100 on every Linux this runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time (user + system) `pid` has used so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after its closing ')' are plain.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / TICKS_PER_SECOND))
}

/// CPU use of a set of processes over an interval, in percent of one core.
pub struct CpuMeter {
    pids: Vec<u32>,
    start: Instant,
    used: Duration,
}

impl CpuMeter {
    pub fn start(pids: &[u32]) -> Self {
        Self {
            pids: pids.to_vec(),
            start: Instant::now(),
            used: Self::used(pids),
        }
    }

    fn used(pids: &[u32]) -> Duration {
        pids.iter().filter_map(|&pid| cpu_time(pid)).sum()
    }

    /// Percent of one core used since [`CpuMeter::start`].
    pub fn percent(&self) -> f64 {
        let elapsed = self.start.elapsed().as_secs_f64();
        if elapsed <= 0.0 {
            return 0.0;
        }
        let used = Self::used(&self.pids).saturating_sub(self.used);
        100.0 * used.as_secs_f64() / elapsed
    }
}

/// The soft limit on open files of this process (`/proc/self/limits`).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_out_in_milliseconds() {
        let mut h = histogram();
        for ms in 1..=100 {
            record(&mut h, Duration::from_millis(ms));
        }
        let latency = Latency::of(&h);
        assert_eq!(latency.count, 100);
        assert!((latency.p50 - 50.0).abs() < 0.1, "{latency:?}");
        assert!((latency.p99 - 99.0).abs() < 0.1, "{latency:?}");
        assert!((latency.max - 100.0).abs() < 0.1, "{latency:?}");
    }

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let me = std::process::id();
        assert!(rss_kib(me).is_some_and(|kib| kib > 0));
        assert!(cpu_time(me).is_some());
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn named_pids_parse() {
        assert_eq!(
            "gateway=42".parse::<NamedPid>(),
            Ok(NamedPid {
                name: "gateway".into(),
                pid: 42
            })
        );
        assert!("42".parse::<NamedPid>().is_err());
    }

    #[tokio::test]
    async fn pacing_emits_every_message_in_order() {
        let mut seen = Vec::new();
        let sent = paced(1000.0, Duration::from_millis(50), |k, _| seen.push(k)).await;
        assert_eq!(sent, 50);
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
    }
}
