//! Connections refused (or closed early to make room), counted per source address and reason,
//! so the log says what happened without writing one record per connection: a flood of
//! refusals must not become a flood of log lines.
//!
//! What it promises: the first refusal after a quiet interval is reported at once (the caller
//! logs it in full, so an operator sees the problem start); every refusal is counted in the
//! interval's [`Summary`], which names the reasons, how many sources there were and the busiest
//! of them. Memory is bounded: at most [`MAX_SOURCES`] addresses are told apart per interval,
//! the rest are counted together.
//!
//! Sans-IO: the caller decides when an interval ends (a timer in its accept loop, and once more
//! when it stops) and logs what [`Refusals::end_interval`] returns.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;

/// The most source addresses told apart in one interval.
pub const MAX_SOURCES: usize = 1024;
/// How many of the busiest sources a summary names.
pub const TOP: usize = 5;

/// The refusals of the current interval.
#[derive(Debug, Default)]
pub struct Refusals {
    by_source: HashMap<IpAddr, u64>,
    /// Counted from addresses past [`MAX_SOURCES`].
    other_sources: u64,
    by_reason: BTreeMap<&'static str, u64>,
    total: u64,
    /// Nothing was refused in the previous interval: the next refusal is reported at once.
    noisy: bool,
}

/// What one interval's refusals add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Every refusal of the interval (the one reported at once included).
    pub total: u64,
    /// `reason=count` for each reason, space-separated.
    pub reasons: String,
    /// How many source addresses (at least; past [`MAX_SOURCES`] they are not told apart).
    pub sources: usize,
    /// The busiest sources, `address=count`, space-separated, busiest first.
    pub top: String,
}

impl Refusals {
    pub fn new() -> Refusals {
        Refusals::default()
    }

    /// Counts one refusal of a connection from `ip` for `reason`. True when it is the first
    /// after an interval with none: the caller logs it in full.
    pub fn count(&mut self, ip: IpAddr, reason: &'static str) -> bool {
        let ip = ip.to_canonical();
        let first = self.total == 0 && !self.noisy;
        self.total += 1;
        *self.by_reason.entry(reason).or_insert(0) += 1;
        let known = self.by_source.len() < MAX_SOURCES || self.by_source.contains_key(&ip);
        if known {
            *self.by_source.entry(ip).or_insert(0) += 1;
        } else {
            self.other_sources += 1;
        }
        first
    }

    /// Ends the interval: its summary, unless nothing was refused beyond the one already
    /// reported at once.
    pub fn end_interval(&mut self) -> Option<Summary> {
        let was_noisy = self.noisy;
        self.noisy = self.total > 0;
        let reported_at_once = usize::from(!was_noisy);
        if self.total as usize <= reported_at_once {
            self.clear();
            return None;
        }
        let mut reasons = String::new();
        for (reason, n) in &self.by_reason {
            let _ = write!(reasons, "{}{reason}={n}", sep(&reasons));
        }
        let mut busiest: Vec<(&IpAddr, &u64)> = self.by_source.iter().collect();
        busiest.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut top = String::new();
        for (ip, n) in busiest.iter().take(TOP) {
            let _ = write!(top, "{}{ip}={n}", sep(&top));
        }
        if self.other_sources > 0 {
            let _ = write!(top, "{}others={}", sep(&top), self.other_sources);
        }
        let summary = Summary {
            total: self.total,
            reasons,
            sources: self.by_source.len() + usize::from(self.other_sources > 0),
            top,
        };
        self.clear();
        Some(summary)
    }

    fn clear(&mut self) {
        self.by_source.clear();
        self.other_sources = 0;
        self.by_reason.clear();
        self.total = 0;
    }
}

fn sep(s: &str) -> &'static str {
    if s.is_empty() {
        ""
    } else {
        " "
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_first_is_reported_at_once_and_the_interval_is_summarised() {
        let mut r = Refusals::new();
        assert!(r.count(ip("10.0.0.1"), "per_source"));
        for _ in 0..9 {
            assert!(!r.count(ip("10.0.0.1"), "per_source"));
        }
        assert!(!r.count(ip("::ffff:10.0.0.2"), "max_connections"));
        let s = r.end_interval().unwrap();
        assert_eq!(s.total, 11);
        assert_eq!(s.reasons, "max_connections=1 per_source=10");
        assert_eq!(s.sources, 2);
        assert_eq!(s.top, "10.0.0.1=10 10.0.0.2=1");
        // Still refusing: nothing is reported at once, everything is summarised.
        assert!(!r.count(ip("10.0.0.1"), "per_source"));
        assert_eq!(r.end_interval().unwrap().total, 1);
        // A quiet interval re-arms the report at once.
        assert_eq!(r.end_interval(), None);
        assert!(r.count(ip("10.0.0.1"), "per_source"));
        // A lone refusal, already reported, needs no summary.
        assert_eq!(r.end_interval(), None);
    }

    #[test]
    fn sources_are_bounded_and_the_busiest_named() {
        let mut r = Refusals::new();
        for i in 0..(MAX_SOURCES as u32 + 10) {
            r.count(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), "per_source");
        }
        for _ in 0..3 {
            r.count(ip("10.0.0.7"), "per_source");
        }
        let s = r.end_interval().unwrap();
        assert_eq!(s.total, MAX_SOURCES as u64 + 13);
        assert_eq!(s.sources, MAX_SOURCES + 1);
        assert!(s.top.starts_with("10.0.0.7=4 "), "{}", s.top);
        assert!(s.top.ends_with(" others=10"), "{}", s.top);
        assert_eq!(s.top.split(' ').count(), TOP + 1);
    }
}
