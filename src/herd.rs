//! The herd's decisions, without I/O: which report a server keeps and whom it tells.
//!
//! Every path a report can take into a store (a client's IAMAT, a flooded AT line, a sync
//! after a reconnect) goes through [`decide`], and [`Report::precedence`] is a total order, so
//! the state of a server depends only on the *set* of reports it has seen, never on their
//! order. That is what makes flooding plus anti-entropy converge: any two servers that have
//! seen the same reports hold the same records, and anti-entropy (which compares contents,
//! see `peer::sync`) only has to make them see the same reports.

use crate::report::Report;

/// What to do with an incoming report, given the stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The incoming report wins: store it and tell the other linked servers.
    Replace,
    /// The stored report is as new or newer: change nothing, tell nobody.
    Keep,
}

/// Newest client timestamp wins; ties are broken by [`Report::precedence`]. An identical
/// report is a duplicate and is kept, not re-stored.
pub fn decide(stored: Option<&Report>, incoming: &Report) -> Decision {
    match stored {
        Some(current) if incoming.precedence(current).is_le() => Decision::Keep,
        _ => Decision::Replace,
    }
}

/// The linked servers a newly stored report goes to: all of them but the one it came from.
pub fn forward_targets<'a>(
    links: impl IntoIterator<Item = &'a String>,
    came_from: Option<&str>,
) -> Vec<&'a str> {
    links
        .into_iter()
        .map(String::as_str)
        .filter(|peer| Some(*peer) != came_from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(line: &str) -> Report {
        Report::from_line(line)
    }

    #[test]
    fn newest_timestamp_wins() {
        let old = report("AT Clark +0.100000000 kiwi +1+2 1621464827.959498503");
        let new = report("AT Bona +9.000000000 kiwi +3+4 1621464827.959498504");
        assert_eq!(decide(None, &old), Decision::Replace);
        assert_eq!(decide(Some(&old), &new), Decision::Replace);
        assert_eq!(decide(Some(&new), &old), Decision::Keep);
        assert_eq!(decide(Some(&new), &new), Decision::Keep);
    }

    #[test]
    fn timestamps_compare_exactly_not_as_floats() {
        // Equal as f64, different as (seconds, nanoseconds).
        let a = report("AT A +0.000000000 kiwi +1+2 1621464827.959498503");
        let b = report("AT A +0.000000000 kiwi +1+2 1621464827.959498504");
        let as_float = |t: &Report| {
            format!("{}.{:09}", t.timestamp.secs, t.timestamp.nanos)
                .parse::<f64>()
                .unwrap()
        };
        assert_eq!(as_float(&a), as_float(&b));
        assert_eq!(decide(Some(&a), &b), Decision::Replace);
        // Equal exactly, written differently: a tie, broken deterministically.
        let c = report("AT A +0.000000000 kiwi +1+2 5.1");
        let d = report("AT A +0.000000000 kiwi +1+2 5.100000000");
        assert_ne!(decide(Some(&c), &d), decide(Some(&d), &c));
    }

    #[test]
    fn equal_timestamps_pick_the_same_winner_in_any_order() {
        let reports = [
            report("AT Bailey +0.500000000 kiwi +1+2 100"),
            report("AT Clark +0.100000000 kiwi +5+6 100"),
            report("AT Clark +0.200000000 kiwi +5+6 100"),
            report("AT Bona +0.300000000 kiwi +3+4 100"),
        ];
        // Fold every permutation through `decide`; all must end at the same report.
        let mut winners = std::collections::HashSet::new();
        let idx = [0usize, 1, 2, 3];
        for a in idx {
            for b in idx {
                for c in idx {
                    for d in idx {
                        let order = [a, b, c, d];
                        let mut seen = order.to_vec();
                        seen.sort();
                        seen.dedup();
                        if seen.len() != 4 {
                            continue;
                        }
                        let mut stored: Option<&Report> = None;
                        for i in order {
                            if decide(stored, &reports[i]) == Decision::Replace {
                                stored = Some(&reports[i]);
                            }
                        }
                        winners.insert(stored.unwrap().at_line());
                    }
                }
            }
        }
        assert_eq!(winners.len(), 1);
        assert_eq!(
            winners.into_iter().next().unwrap(),
            reports[1].at_line(),
            "received first wins"
        );
    }

    #[test]
    fn a_resent_iamat_at_the_same_server_is_not_newer() {
        let first = report("AT Clark +0.100000000 kiwi +1+2 100");
        let resent = report("AT Clark +2.500000000 kiwi +1+2 100");
        assert_eq!(decide(Some(&first), &resent), Decision::Keep);
        assert_eq!(decide(Some(&resent), &first), Decision::Replace);
    }

    #[test]
    fn forwards_to_every_link_but_the_origin() {
        let links = [
            "Bona".to_string(),
            "Campbell".to_string(),
            "Jaquez".to_string(),
        ];
        assert_eq!(
            forward_targets(&links, Some("Bona")),
            ["Campbell", "Jaquez"]
        );
        assert_eq!(
            forward_targets(&links, None),
            ["Bona", "Campbell", "Jaquez"]
        );
    }
}
