//! What the benchmarks measure with: a latency histogram (`hdrhistogram`, 3 significant
//! digits, 1 µs to 60 s) summarised as the report's percentile fields, a progress bar on
//! stderr (`indicatif`; hidden when stderr is not a terminal), the stop flag that
//! SIGINT and SIGTERM set, the median of repeated rounds, and a cheap deterministic
//! random generator.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

/// Latencies in microseconds.
#[derive(Debug)]
pub(crate) struct Latency(Histogram<u64>);

/// The percentile fields of a report, in µs (0 when nothing was recorded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Summary {
    pub(crate) p50_us: u64,
    pub(crate) p90_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    pub(crate) max_us: u64,
    pub(crate) mean_us: f64,
}

impl Summary {
    /// One line for the human-readable summaries.
    pub(crate) fn line(&self) -> String {
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {:.1}",
            self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us, self.mean_us
        )
    }
}

impl Default for Latency {
    fn default() -> Latency {
        Latency::new()
    }
}

impl Latency {
    pub(crate) fn new() -> Latency {
        // The bounds and precision are constants that hdrhistogram accepts.
        Latency(Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"))
    }

    /// Records one latency; below 1 µs counts as 1, above 60 s as 60 s.
    pub(crate) fn record(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, 60_000_000));
    }

    /// Latencies recorded.
    pub(crate) fn count(&self) -> u64 {
        self.0.len()
    }

    pub(crate) fn summary(&self) -> Summary {
        if self.0.is_empty() {
            return Summary::default();
        }
        Summary {
            p50_us: self.0.value_at_quantile(0.5),
            p90_us: self.0.value_at_quantile(0.9),
            p99_us: self.0.value_at_quantile(0.99),
            p999_us: self.0.value_at_quantile(0.999),
            max_us: self.0.max(),
            mean_us: (self.0.mean() * 10.0).round() / 10.0,
        }
    }
}

/// A progress bar for one phase; drawn only for phases longer than a second.
#[derive(Debug)]
pub(crate) struct Progress {
    bar: ProgressBar,
    total: Duration,
}

impl Progress {
    pub(crate) fn new(phase: &str, total: Duration) -> Progress {
        let bar = if total > Duration::from_secs(1) {
            let bar = ProgressBar::new(total.as_millis() as u64);
            let style = ProgressStyle::with_template("{prefix:>8} [{bar:30}] {elapsed:>4} {msg}")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(phase.to_owned());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress { bar, total }
    }

    /// Moves the bar to `done` of the phase, with a short status message.
    pub(crate) fn set(&self, done: Duration, msg: impl FnOnce() -> String) {
        if self.bar.is_hidden() {
            return;
        }
        self.bar
            .set_position(done.min(self.total).as_millis() as u64);
        self.bar.set_message(msg());
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Prints `line` on stderr without tearing the bar (drawn or hidden).
    pub(crate) fn note(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }
}

/// The stderr line (after `c10m-bench SUB: `) that a generator run with `--json` prints
/// when its measured window opens, and [`PHASE_MEASURED`] when it closes: `compare`
/// watches its log for them to sample CPU use over exactly that window.
pub(crate) const PHASE_MEASURING: &str = "phase: measuring";
/// See [`PHASE_MEASURING`].
pub(crate) const PHASE_MEASURED: &str = "phase: measured";

/// `idle_us` of a `window` in percent (0 for an empty window).
pub(crate) fn idle_pct(idle_us: u64, window: c10m_stack::Duration) -> f64 {
    let w = window.total_micros();
    if w == 0 {
        return 0.0;
    }
    (100.0 * idle_us as f64 / w as f64).clamp(0.0, 100.0)
}

/// The flag that Ctrl-C (SIGINT) and SIGTERM set: the run stops early, cleanly, and still
/// reports what it measured.
pub(crate) fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    c10m_dataplane::stop_on_signal(stop.clone())
        .map_err(|e| anyhow::anyhow!("cannot install signal handlers: {e}"))?;
    Ok(stop)
}

pub(crate) fn stopped(stop: &AtomicBool) -> bool {
    stop.load(Ordering::Relaxed)
}

/// The median of `v` (the mean of the middle two for an even count); 0 when empty.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// xorshift64: deterministic, and cheap enough to leave what is measured in charge of the
/// timing. The seed must not be 0.
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_share_of_a_window() {
        let w = c10m_stack::Duration::from_millis(10);
        assert_eq!(idle_pct(2_500, w), 25.0);
        assert_eq!(idle_pct(20_000, w), 100.0, "clamped");
        assert_eq!(idle_pct(5, c10m_stack::Duration::from_micros(0)), 0.0);
    }

    #[test]
    fn percentiles_are_ordered_and_clamped() {
        let mut l = Latency::new();
        assert_eq!(l.summary().max_us, 0);
        for us in 1..=1000 {
            l.record(us);
        }
        l.record(0);
        l.record(u64::MAX);
        let s = l.summary();
        assert_eq!(l.count(), 1002);
        assert!(s.p50_us >= 490 && s.p50_us <= 510, "{s:?}");
        assert!(s.p50_us <= s.p99_us && s.p99_us <= s.p999_us && s.p999_us <= s.max_us);
        assert!(s.max_us >= 59_000_000, "{s:?}");
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
