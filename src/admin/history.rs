//! A node's own recent history, for the plots of `/herd`: one [`Sample`] every
//! [`SAMPLE_EVERY`], the newest [`KEEP`] of them (a quarter of an hour), in memory only.
//!
//! A sample is the difference between two readings of the node's running totals
//! ([`Totals`], from its telemetry) divided by the time between them: requests per second, and
//! the mean of each timing over the interval (acknowledgement, flood, flush). A timing with
//! nothing timed in the interval is `None`, not zero: "no report was flooded here" is not "a
//! flood took no time". Each node samples itself; nothing here asks another node.
//!
//! Not a goal: surviving a restart (the history starts empty with the process), or percentiles
//! (a mean per interval is what the totals allow, and what the plots show).

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::telemetry::{Timing, Totals};

/// How often a node samples itself.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How many samples a node keeps: fifteen minutes at one per [`SAMPLE_EVERY`].
pub const KEEP: usize = 180;

/// One interval of a node's life.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When the interval ended, in Unix seconds.
    pub at: u64,
    /// Client requests answered per second (every kind).
    pub requests_per_sec: f64,
    /// Mean time from an IAMAT's arrival to its acknowledgement, in milliseconds.
    pub ack_ms: Option<f64>,
    /// Mean age of the reports flooded here from peers on arrival, in milliseconds.
    pub flood_ms: Option<f64>,
    /// Mean time of one flush of the store to disk (fsync included), in milliseconds.
    pub fsync_ms: Option<f64>,
}

impl Sample {
    /// The interval from `before` to `after`, `elapsed` long, ending at `at` (Unix seconds).
    /// Totals that went backwards (they cannot, within one process) count as nothing.
    pub fn between(before: &Totals, after: &Totals, elapsed: Duration, at: u64) -> Sample {
        let secs = elapsed.as_secs_f64();
        let requests = after.requests.saturating_sub(before.requests);
        Sample {
            at,
            requests_per_sec: if secs > 0.0 {
                requests as f64 / secs
            } else {
                0.0
            },
            ack_ms: mean_ms(&before.ack, &after.ack),
            flood_ms: mean_ms(&before.flood, &after.flood),
            fsync_ms: mean_ms(&before.flush, &after.flush),
        }
    }
}

/// The mean of what was timed between two readings, in milliseconds.
fn mean_ms(before: &Timing, after: &Timing) -> Option<f64> {
    let count = after.count.checked_sub(before.count).filter(|&n| n > 0)?;
    let seconds = (after.seconds - before.seconds).max(0.0);
    Some(seconds * 1000.0 / count as f64)
}

/// The newest samples, oldest first, at most `capacity` of them.
#[derive(Debug, Clone)]
pub struct History {
    samples: VecDeque<Sample>,
    capacity: usize,
}

impl History {
    /// An empty history keeping at most `capacity` samples (at least one).
    pub fn new(capacity: usize) -> History {
        let capacity = capacity.max(1);
        History {
            samples: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Adds the newest sample, forgetting the oldest when full.
    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        debug_assert!(self.samples.len() <= self.capacity);
    }

    /// Every sample kept, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.iter().copied().collect()
    }

    /// The newest sample, if any.
    pub fn latest(&self) -> Option<&Sample> {
        self.samples.back()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(requests: u64, ack: (u64, f64), flood: (u64, f64), flush: (u64, f64)) -> Totals {
        let t = |(count, seconds)| Timing { count, seconds };
        Totals {
            requests,
            ack: t(ack),
            flood: t(flood),
            flush: t(flush),
        }
    }

    #[test]
    fn a_sample_is_rates_and_means_over_its_interval() {
        let before = totals(100, (10, 0.5), (4, 0.2), (7, 0.07));
        let after = totals(150, (20, 0.6), (4, 0.2), (9, 0.09));
        let s = Sample::between(&before, &after, Duration::from_secs(5), 1_000);
        assert_eq!(s.at, 1_000);
        assert_eq!(s.requests_per_sec, 10.0);
        // 0.1 s over 10 acknowledgements: 10 ms each.
        assert!((s.ack_ms.unwrap() - 10.0).abs() < 1e-9, "{s:?}");
        // Nothing was flooded in the interval: no value, not zero.
        assert_eq!(s.flood_ms, None);
        assert!((s.fsync_ms.unwrap() - 10.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn a_sample_of_no_time_or_of_totals_gone_backwards_counts_nothing() {
        let t = totals(5, (1, 0.1), (1, 0.1), (1, 0.1));
        let s = Sample::between(&t, &t, Duration::ZERO, 7);
        assert_eq!(s.requests_per_sec, 0.0);
        assert_eq!((s.ack_ms, s.flood_ms, s.fsync_ms), (None, None, None));
        let s = Sample::between(&t, &Totals::default(), Duration::from_secs(5), 7);
        assert_eq!(s.requests_per_sec, 0.0);
        assert_eq!(s.ack_ms, None);
    }

    #[test]
    fn the_ring_keeps_the_newest_samples_oldest_first() {
        let sample = |at| Sample {
            at,
            requests_per_sec: at as f64,
            ack_ms: None,
            flood_ms: None,
            fsync_ms: None,
        };
        let mut h = History::new(3);
        assert!(h.samples().is_empty() && h.latest().is_none());
        for at in 1..=2 {
            h.push(sample(at));
        }
        assert_eq!(h.samples().iter().map(|s| s.at).collect::<Vec<_>>(), [1, 2]);
        for at in 3..=7 {
            h.push(sample(at));
        }
        assert_eq!(
            h.samples().iter().map(|s| s.at).collect::<Vec<_>>(),
            [5, 6, 7]
        );
        assert_eq!(h.latest().map(|s| s.at), Some(7));
        let mut one = History::new(0);
        one.push(sample(1));
        one.push(sample(2));
        assert_eq!(one.samples(), [sample(2)]);
    }
}
