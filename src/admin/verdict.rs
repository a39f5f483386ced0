//! Whether a herd has converged, from one round of answers: the one judgement that `/herd` shows
//! and `herd check` exits by.
//!
//! - **converged**: every server answered with the fingerprint of its whole store, and all the
//!   fingerprints are equal: every store holds the same records.
//! - **differ**: every server answered, but not all alike. The servers are grouped by
//!   fingerprint, largest group first; the servers outside the largest group are the ones that
//!   differ (every server, when the largest groups are of one size).
//! - **unreachable**: some server did not answer (or has no admin address, or its store is
//!   still starting and has no fingerprint yet): nothing can be said of it. The others are
//!   still grouped, so a page or a message can say whether they agree among themselves.
//!
//! Pure: no I/O, no clock. The answers are asked for elsewhere ([`super::summary`]).

use std::collections::BTreeMap;
use std::fmt;

use super::summary::{Fetched, Root};

/// Servers that hold the same records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub root: Root,
    /// Its servers, in name order.
    pub servers: Vec<String>,
}

/// The judgement on one round of answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Servers that could not be judged, with the reason.
    pub unreachable: Vec<(String, String)>,
    /// The servers that answered, grouped by fingerprint, largest group first (then by name).
    pub groups: Vec<Group>,
}

/// The verdict in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Word {
    Converged,
    Differ,
    Unreachable,
}

impl Word {
    pub fn as_str(self) -> &'static str {
        match self {
            Word::Converged => "converged",
            Word::Differ => "differ",
            Word::Unreachable => "unreachable",
        }
    }
}

impl fmt::Display for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Verdict {
    /// Judges one round: each server's answer, a summary or why there is none.
    pub fn of<'a>(answers: impl IntoIterator<Item = &'a (String, Fetched)>) -> Verdict {
        let mut unreachable = Vec::new();
        let mut by_root: BTreeMap<Root, Vec<String>> = BTreeMap::new();
        for (name, answer) in answers {
            match answer {
                Ok(summary) => match &summary.root {
                    Some(root) => by_root.entry(root.clone()).or_default().push(name.clone()),
                    None => unreachable.push((
                        name.clone(),
                        format!("its store is {} (no fingerprint yet)", summary.state),
                    )),
                },
                Err(why) => unreachable.push((name.clone(), why.clone())),
            }
        }
        unreachable.sort();
        let mut groups: Vec<Group> = by_root
            .into_iter()
            .map(|(root, mut servers)| {
                servers.sort();
                Group { root, servers }
            })
            .collect();
        groups.sort_by(|a, b| {
            b.servers
                .len()
                .cmp(&a.servers.len())
                .then_with(|| a.servers.cmp(&b.servers))
        });
        Verdict {
            unreachable,
            groups,
        }
    }

    pub fn word(&self) -> Word {
        if !self.unreachable.is_empty() {
            Word::Unreachable
        } else if self.groups.len() > 1 {
            Word::Differ
        } else {
            Word::Converged
        }
    }

    pub fn converged(&self) -> bool {
        self.word() == Word::Converged
    }

    /// The servers that answered but differ from the largest group (all of them, when no one
    /// group is the largest), in name order.
    pub fn differing(&self) -> Vec<&str> {
        let [first, second, ..] = self.groups.as_slice() else {
            return Vec::new();
        };
        let tie = first.servers.len() == second.servers.len();
        let mut out: Vec<&str> = self.groups[usize::from(!tie)..]
            .iter()
            .flat_map(|g| g.servers.iter().map(String::as_str))
            .collect();
        out.sort_unstable();
        out
    }

    /// What a person reads: the word and who, then one line per group and per server that
    /// could not be judged.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        match self.word() {
            Word::Converged => {
                let (servers, records) = self
                    .groups
                    .first()
                    .map_or((0, 0), |g| (g.servers.len(), g.root.count));
                lines.push(format!(
                    "converged: {servers} {} {} the same {}",
                    plural(servers, "server", "servers"),
                    plural(servers, "holds", "hold"),
                    records_text(records),
                ));
                return lines;
            }
            Word::Differ => lines.push(format!("differ: {}", self.differing().join(", "))),
            Word::Unreachable => {
                let names: Vec<&str> = self.unreachable.iter().map(|(n, _)| n.as_str()).collect();
                lines.push(format!("unreachable: {}", names.join(", ")));
            }
        }
        for (name, why) in &self.unreachable {
            lines.push(format!("  {name} did not answer: {why}"));
        }
        for group in &self.groups {
            lines.push(format!(
                "  {} {} {} (fingerprint {})",
                group.servers.join(", "),
                plural(group.servers.len(), "holds", "hold"),
                records_text(group.root.count),
                group.root.sum,
            ));
        }
        lines
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// "1 record", "12 records".
pub fn records_text(n: u64) -> String {
    format!("{n} {}", if n == 1 { "record" } else { "records" })
}

#[cfg(test)]
mod tests {
    use super::super::summary::Summary;
    use super::*;

    fn answered(name: &str, count: u64, sum: &str) -> (String, Fetched) {
        (
            name.to_owned(),
            Ok(Summary {
                name: name.to_owned(),
                state: "ready".into(),
                records: Some(count),
                root: Some(Root {
                    count,
                    sum: sum.into(),
                }),
                requests_per_sec: 0.0,
                links: Vec::new(),
                history: Vec::new(),
            }),
        )
    }

    #[test]
    fn equal_roots_everywhere_have_converged() {
        let answers = [answered("A", 2, "aa"), answered("B", 2, "aa")];
        let v = Verdict::of(&answers);
        assert_eq!(v.word(), Word::Converged);
        assert!(v.converged() && v.differing().is_empty());
        assert_eq!(v.lines(), ["converged: 2 servers hold the same 2 records"]);
    }

    #[test]
    fn the_servers_outside_the_largest_group_differ() {
        let answers = [
            answered("A", 3, "aa"),
            answered("C", 2, "cc"),
            answered("B", 3, "aa"),
        ];
        let v = Verdict::of(&answers);
        assert_eq!(v.word(), Word::Differ);
        assert_eq!(v.differing(), ["C"]);
        assert_eq!(
            v.lines(),
            [
                "differ: C",
                "  A, B hold 3 records (fingerprint aa)",
                "  C holds 2 records (fingerprint cc)",
            ]
        );
        // Equal counts are not equal records: the sums tell.
        let v = Verdict::of(&[answered("A", 1, "aa"), answered("B", 1, "bb")]);
        assert_eq!(v.word(), Word::Differ);
        assert_eq!(v.differing(), ["A", "B"], "a tie names everyone");
    }

    #[test]
    fn a_server_without_an_answer_or_a_fingerprint_is_unreachable() {
        let mut starting = answered("C", 0, "00");
        if let Ok(s) = &mut starting.1 {
            s.root = None;
            s.state = "starting".into();
        }
        let answers = [
            answered("A", 1, "aa"),
            (
                "B".to_owned(),
                Err("cannot connect to http://x/herd.json".into()),
            ),
            starting,
        ];
        let v = Verdict::of(&answers);
        assert_eq!(v.word(), Word::Unreachable);
        assert!(!v.converged());
        let lines = v.lines();
        assert_eq!(lines[0], "unreachable: B, C");
        assert_eq!(
            lines[1],
            "  B did not answer: cannot connect to http://x/herd.json"
        );
        assert!(lines[2].contains("starting"), "{lines:?}");
        assert_eq!(lines[3], "  A holds 1 record (fingerprint aa)");
    }

    #[test]
    fn no_answer_at_all_is_not_convergence() {
        let v = Verdict::of(&[("A".to_owned(), Err("down".to_owned()))]);
        assert_eq!(v.word(), Word::Unreachable);
        assert!(v.groups.is_empty() && v.differing().is_empty());
    }
}
