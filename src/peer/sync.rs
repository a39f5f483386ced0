//! Anti-entropy: two linked servers compare the *contents* of their stores and send each
//! other only the records that differ. `docs/sync.md` is the full description; in short:
//!
//! Records sort by the hash of their client ID, so a store is a trie over the 64-bit
//! key-hash space. A [`Node`] of that trie is a range, and its [`Fingerprint`] (record count
//! and the wrapping sum of the records' item hashes) is kept up to date by the store on every
//! write. One side, the *asker*, runs a **round**: it sends the root's fingerprint; wherever
//! the other side's fingerprint of a range differs, the asker sends the fingerprints of the
//! range's four quarters, and so on down, until the other side holds at most [`LEAF`] records
//! in a differing range and lists them (key, item hash, timestamp). The asker then sends the
//! records of its own that are newer or missing there, and asks for the ones that are newer
//! or missing here. Everything received goes through the ordinary newest-wins merge.
//!
//! ```text
//! SYNC Q <round> <payload>   asker → answerer: fingerprints (the root's, or four per range)
//! SYNC W <round> <payload>   asker → answerer: send me the records with these keys
//! SYNC A <round> <payload>   answerer → asker: the answer to the oldest open Q or W
//! AT ...                     records, either way, as ordinary AT lines
//! ```
//!
//! Payloads are bincode (through the store's one codec) in URL-safe base64. The answerer keeps
//! no state between messages; the asker keeps its open requests in order, and an answer that
//! does not match one is a protocol violation that drops the link.
//!
//! Why it cannot miss a record: a round compares what both stores hold *now*; there is no
//! cursor to skip past. A write racing a round either is seen by it or leaves the two
//! fingerprints different, which the next round (at most `sync_interval_secs` later) sees.
//! Below the root only 16 bits of each fingerprint are sent, a different 16 bits each round,
//! so a collision that hides a difference in one round does not hide it in the next.

pub mod local;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use herd_migrations::codec;
use serde::{Deserialize, Serialize};

use crate::protocol::request::SyncKind;
use crate::store::fingerprint::{Fingerprint, Node, MAX_DEPTH};
use crate::store::{ItemInfo, Store};

/// A range holding at most this many records on the answerer's side is listed, not split.
pub const LEAF: u64 = 4;
/// The most records one list may hold.
pub const MAX_ITEMS: usize = 64;
/// How many of its own records the asker compares with a list before it just sends them all.
const MAX_MINE: usize = 256;
/// Ranges per query message: keeps every line far below the peer line limit.
pub const MAX_GROUPS: usize = 2048;
/// Records written per step of a stream, between which floods and other work proceed.
pub const STREAM_BATCH: usize = 256;

/// Why a peer's sync traffic is refused: the link is dropped.
#[derive(Debug, thiserror::Error)]
pub enum Violation {
    #[error("undecodable sync message: {0}")]
    Undecodable(String),
    #[error("sync answer for round {0} with no such question open")]
    Unasked(u64),
    #[error("malformed sync message: {0}")]
    Malformed(&'static str),
    #[error("the round asked for more ranges than a round may ({0})")]
    OverBudget(u64),
    #[error("the store failed: {0}")]
    Store(String),
}

impl From<crate::error::Error> for Violation {
    fn from(e: crate::error::Error) -> Violation {
        Violation::Store(e.to_string())
    }
}

/// One record as a list names it: the low 32 bits of its key hash, 16 bits of its item hash
/// (the round's window), and its timestamp's seconds, so the asker knows which side is newer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Item {
    key: [u8; 4],
    item: [u8; 2],
    /// Seconds, saturated at `u32::MAX` (the year 2106).
    secs: [u8; 4],
}

impl Item {
    fn of(info: &ItemInfo, window: u8) -> Item {
        Item {
            key: low_key(info.key_hash),
            item: short(info.item, window),
            secs: secs32(info.secs),
        }
    }
}

fn secs32(secs: u64) -> [u8; 4] {
    u32::try_from(secs).unwrap_or(u32::MAX).to_be_bytes()
}

fn low_key(key_hash: u64) -> [u8; 4] {
    (key_hash as u32).to_be_bytes()
}

fn short(item: u64, window: u8) -> [u8; 2] {
    Fingerprint {
        count: 0,
        sum: item,
    }
    .short(window)
}

#[derive(Debug, Serialize, Deserialize)]
enum Query {
    /// The asker's whole store.
    Root { count: u64, sum: u64, window: u8 },
    /// For each range (its parent's index at `depth - 2`, as a delta from the previous one,
    /// ascending), the asker's fingerprints of its four quarters at `depth`.
    Groups {
        window: u8,
        depth: u8,
        groups: Vec<(u64, [[u8; 2]; 4])>,
    },
}

/// What the answerer holds in one range, compared with the asker's fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Same = 0,
    /// Differs, and holds more than [`LEAF`] records: split it.
    Descend = 1,
    /// Differs; here is the answerer's list.
    Items = 2,
    /// The answerer holds nothing there: send it all.
    Empty = 3,
}

impl Status {
    fn from_bits(bits: u8) -> Status {
        match bits & 3 {
            0 => Status::Same,
            1 => Status::Descend,
            2 => Status::Items,
            _ => Status::Empty,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum RootAnswer {
    Same,
    Descend,
    Items(Vec<Item>),
    Empty,
    /// The asker had nothing, so the answerer has sent it everything, before this answer.
    Sent,
}

#[derive(Debug, Serialize, Deserialize)]
enum Answer {
    Root(RootAnswer),
    /// Per group, the four quarters' statuses, two bits each; then the lists of every
    /// quarter whose status is `Items`, in order.
    Groups {
        statuses: Vec<u8>,
        lists: Vec<Vec<Item>>,
    },
    /// The wanted records have been sent.
    Sent,
}

/// Records wanted: per range, the low 32 bits of their key hashes.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Want {
    ranges: Vec<(Node, Vec<[u8; 4]>)>,
}

fn encode<T: Serialize>(kind: &str, round: u64, msg: &T) -> Vec<u8> {
    let bytes = codec::encode(msg).expect("sync messages always encode");
    format!("SYNC {kind} {round} {}\n", URL_SAFE_NO_PAD.encode(bytes)).into_bytes()
}

fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Violation> {
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| Violation::Undecodable(e.to_string()))?;
    codec::decode(&bytes).map_err(|e| Violation::Undecodable(e.to_string()))
}

/// Work a link does on the store's behalf, in order, a bounded step at a time.
#[derive(Debug)]
pub enum Job {
    /// Send every record in `node`, from `resume` on.
    All { node: Node, resume: Option<Vec<u8>> },
    /// Send the records in `node` whose key hash ends in one of `keys` (sorted).
    Some { node: Node, keys: Vec<u32> },
    /// Send this line.
    Line(Vec<u8>),
}

impl Job {
    /// Appends the next step's lines to `out`; returns `(done, records written)`.
    pub fn step(&mut self, store: &Store, out: &mut Vec<u8>) -> crate::error::Result<(bool, u64)> {
        match self {
            Job::All { node, resume } => {
                let (lines, next) = store.lines(*node, resume.as_deref(), STREAM_BATCH)?;
                for line in &lines {
                    out.extend_from_slice(line);
                    out.push(b'\n');
                }
                *resume = next;
                Ok((resume.is_none(), lines.len() as u64))
            }
            Job::Some { node, keys } => {
                let lines =
                    store.lines_where(*node, |kh| keys.binary_search(&(kh as u32)).is_ok())?;
                for line in &lines {
                    out.extend_from_slice(line);
                    out.push(b'\n');
                }
                Ok((true, lines.len() as u64))
            }
            Job::Line(line) => {
                out.extend_from_slice(line);
                Ok((true, 0))
            }
        }
    }
}

/// Answers one question of a peer's round. Holds no state: everything needed is in the
/// message and the store. Returns the jobs that make up the answer (records first, if any,
/// then the `A` line).
pub fn answer(
    store: &Store,
    kind: SyncKind,
    round: u64,
    payload: &[u8],
) -> Result<Vec<Job>, Violation> {
    match kind {
        SyncKind::Query => match decode::<Query>(payload)? {
            Query::Root { count, sum, window } => {
                let mine = store.fingerprint(Node::ROOT)?;
                let mut jobs = Vec::new();
                let answer = if mine == (Fingerprint { count, sum }) {
                    RootAnswer::Same
                } else if mine.count == 0 {
                    RootAnswer::Empty
                } else if count == 0 {
                    jobs.push(Job::All {
                        node: Node::ROOT,
                        resume: None,
                    });
                    RootAnswer::Sent
                } else if mine.count <= LEAF {
                    RootAnswer::Items(list(store, Node::ROOT, window)?)
                } else {
                    RootAnswer::Descend
                };
                jobs.push(Job::Line(encode("A", round, &Answer::Root(answer))));
                Ok(jobs)
            }
            Query::Groups {
                window,
                depth,
                groups,
            } => {
                if !(2..=MAX_DEPTH).contains(&depth)
                    || !depth.is_multiple_of(2)
                    || groups.len() > MAX_GROUPS
                {
                    return Err(Violation::Malformed("bad depth or too many ranges"));
                }
                let mut statuses = Vec::with_capacity(groups.len());
                let mut lists = Vec::new();
                let mut parent: Option<u64> = None;
                for (delta, theirs) in groups {
                    let index = match parent {
                        None => delta,
                        Some(p) if delta > 0 => p
                            .checked_add(delta)
                            .ok_or(Violation::Malformed("range index overflows"))?,
                        Some(_) => return Err(Violation::Malformed("ranges not ascending")),
                    };
                    parent = Some(index);
                    let parent_node = Node {
                        depth: depth - 2,
                        index,
                    };
                    let children = parent_node
                        .is_valid()
                        .then(|| parent_node.children())
                        .flatten()
                        .ok_or(Violation::Malformed("no such range"))?;
                    let mut bits = 0u8;
                    for (i, child) in children.into_iter().enumerate() {
                        let mine = store.fingerprint(child)?;
                        let status = if mine.short(window) == theirs[i] {
                            Status::Same
                        } else if mine.count == 0 {
                            Status::Empty
                        } else if mine.count <= LEAF || child.children().is_none() {
                            lists.push(list(store, child, window)?);
                            Status::Items
                        } else {
                            Status::Descend
                        };
                        bits |= (status as u8) << (2 * i);
                    }
                    statuses.push(bits);
                }
                Ok(vec![Job::Line(encode(
                    "A",
                    round,
                    &Answer::Groups { statuses, lists },
                ))])
            }
        },
        SyncKind::Want => {
            let want: Want = decode(payload)?;
            if want.ranges.len() > MAX_GROUPS {
                return Err(Violation::Malformed("too many ranges wanted"));
            }
            let mut jobs = Vec::with_capacity(want.ranges.len() + 1);
            for (node, keys) in want.ranges {
                if !node.is_valid() || keys.len() > MAX_ITEMS {
                    return Err(Violation::Malformed("bad want"));
                }
                let mut keys: Vec<u32> = keys.iter().map(|k| u32::from_be_bytes(*k)).collect();
                keys.sort_unstable();
                jobs.push(Job::Some { node, keys });
            }
            jobs.push(Job::Line(encode("A", round, &Answer::Sent)));
            Ok(jobs)
        }
        SyncKind::Answer => Err(Violation::Unasked(round)),
    }
}

/// The answerer's list of a small range.
fn list(store: &Store, node: Node, window: u8) -> Result<Vec<Item>, Violation> {
    let items = store.items(node, MAX_ITEMS)?.ok_or(Violation::Malformed(
        "a range to list holds too many records",
    ))?;
    Ok(items.iter().map(|i| Item::of(i, window)).collect())
}

/// What an asker is waiting for, oldest first.
#[derive(Debug)]
enum Open {
    Root,
    /// The parents (at `depth - 2`) whose quarters were sent.
    Groups {
        depth: u8,
        parents: Vec<u64>,
    },
    Want,
}

/// What a round found, for the log and the metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct RoundStats {
    /// Questions (Q and W) sent.
    pub questions: u64,
    /// Ranges found different at the bottom (listed or empty on one side).
    pub differing: u64,
    /// Records asked for.
    pub wanted: u64,
}

/// One round this side asks: its open questions, in order.
#[derive(Debug)]
pub struct Round {
    pub id: u64,
    window: u8,
    open: VecDeque<Open>,
    started: Instant,
    /// Ranges this round may still ask about.
    budget: u64,
    /// Records to ask for, sent as one W at the end of handling an answer.
    wanting: Want,
    pub stats: RoundStats,
}

impl Round {
    /// Starts round `id` against `store`: the first question.
    pub fn start(store: &Store, id: u64) -> Result<(Round, Vec<Job>), Violation> {
        let root = store.fingerprint(Node::ROOT)?;
        let window = (id % 4) as u8;
        let round = Round {
            id,
            window,
            open: VecDeque::from([Open::Root]),
            started: Instant::now(),
            budget: 1_000_000 + 2 * root.count,
            wanting: Want::default(),
            stats: RoundStats {
                questions: 1,
                ..RoundStats::default()
            },
        };
        let line = encode(
            "Q",
            id,
            &Query::Root {
                count: root.count,
                sum: root.sum,
                window,
            },
        );
        Ok((round, vec![Job::Line(line)]))
    }

    /// Whether every question has been answered.
    pub fn is_done(&self) -> bool {
        self.open.is_empty()
    }

    /// Whether the round has run longer than `deadline`.
    pub fn is_overdue(&self, deadline: Duration) -> bool {
        self.started.elapsed() > deadline
    }

    /// Takes the answer to the oldest open question; returns what to send next.
    pub fn on_answer(
        &mut self,
        store: &Store,
        round: u64,
        payload: &[u8],
    ) -> Result<Vec<Job>, Violation> {
        if round != self.id {
            return Err(Violation::Unasked(round));
        }
        let open = self.open.pop_front().ok_or(Violation::Unasked(round))?;
        let answer: Answer = decode(payload)?;
        let mut jobs = Vec::new();
        match (open, answer) {
            (Open::Root, Answer::Root(a)) => match a {
                RootAnswer::Same | RootAnswer::Sent => {}
                RootAnswer::Descend => self.descend(store, 2, &[0], &mut jobs)?,
                RootAnswer::Items(theirs) => {
                    self.stats.differing += 1;
                    self.resolve(store, Node::ROOT, theirs, &mut jobs)?
                }
                RootAnswer::Empty => {
                    self.stats.differing += 1;
                    jobs.push(Job::All {
                        node: Node::ROOT,
                        resume: None,
                    })
                }
            },
            (Open::Groups { depth, parents }, Answer::Groups { statuses, lists }) => {
                if statuses.len() != parents.len() {
                    return Err(Violation::Malformed("answer does not match the question"));
                }
                let mut lists = lists.into_iter();
                let mut deeper = Vec::new();
                for (parent, bits) in parents.iter().zip(statuses) {
                    let children = Node {
                        depth: depth - 2,
                        index: *parent,
                    }
                    .children()
                    .ok_or(Violation::Malformed("no such range"))?;
                    for (i, child) in children.into_iter().enumerate() {
                        match Status::from_bits(bits >> (2 * i)) {
                            Status::Same => {}
                            Status::Descend => {
                                if child.children().is_none() {
                                    return Err(Violation::Malformed(
                                        "split below the deepest range",
                                    ));
                                }
                                deeper.push(child.index);
                            }
                            Status::Items => {
                                self.stats.differing += 1;
                                let theirs = lists
                                    .next()
                                    .ok_or(Violation::Malformed("a list is missing"))?;
                                self.resolve(store, child, theirs, &mut jobs)?;
                            }
                            Status::Empty => {
                                self.stats.differing += 1;
                                jobs.push(Job::All {
                                    node: child,
                                    resume: None,
                                });
                            }
                        }
                    }
                }
                if lists.next().is_some() {
                    return Err(Violation::Malformed("more lists than listed ranges"));
                }
                if !deeper.is_empty() {
                    self.descend(store, depth + 2, &deeper, &mut jobs)?;
                }
            }
            (Open::Want, Answer::Sent) => {}
            _ => return Err(Violation::Malformed("answer of the wrong kind")),
        }
        self.flush_wants(&mut jobs);
        Ok(jobs)
    }

    /// Sends what this answer made us want, in W messages of at most [`MAX_GROUPS`] ranges.
    fn flush_wants(&mut self, jobs: &mut Vec<Job>) {
        let ranges = std::mem::take(&mut self.wanting.ranges);
        for chunk in ranges.chunks(MAX_GROUPS) {
            let want = Want {
                ranges: chunk.to_vec(),
            };
            jobs.push(Job::Line(encode("W", self.id, &want)));
            self.open.push_back(Open::Want);
            self.stats.questions += 1;
        }
    }

    /// Asks about the quarters (at `depth`) of `parents` (at `depth - 2`, ascending).
    fn descend(
        &mut self,
        store: &Store,
        depth: u8,
        parents: &[u64],
        jobs: &mut Vec<Job>,
    ) -> Result<(), Violation> {
        let needed = parents.len() as u64;
        if needed > self.budget {
            return Err(Violation::OverBudget(self.budget));
        }
        self.budget -= needed;
        for chunk in parents.chunks(MAX_GROUPS) {
            let mut groups = Vec::with_capacity(chunk.len());
            let mut previous = None;
            for &index in chunk {
                let children = Node {
                    depth: depth - 2,
                    index,
                }
                .children()
                .ok_or(Violation::Malformed("no such range"))?;
                let mut fps = [[0u8; 2]; 4];
                for (i, child) in children.into_iter().enumerate() {
                    fps[i] = store.fingerprint(child)?.short(self.window);
                }
                groups.push((index - previous.unwrap_or(0), fps));
                previous = Some(index);
            }
            let query = Query::Groups {
                window: self.window,
                depth,
                groups,
            };
            jobs.push(Job::Line(encode("Q", self.id, &query)));
            self.open.push_back(Open::Groups {
                depth,
                parents: chunk.to_vec(),
            });
            self.stats.questions += 1;
        }
        Ok(())
    }

    /// Compares the answerer's list of `node` with this store's records there: sends ours
    /// where ours is newer or missing there, asks for theirs where theirs is newer or missing
    /// here (both, on a tie of seconds: the merge decides).
    fn resolve(
        &mut self,
        store: &Store,
        node: Node,
        theirs: Vec<Item>,
        jobs: &mut Vec<Job>,
    ) -> Result<(), Violation> {
        if theirs.len() > MAX_ITEMS {
            return Err(Violation::Malformed("a list is too long"));
        }
        let Some(mine) = store.items(node, MAX_MINE)? else {
            // Far more here than there: send everything, ask for all of theirs.
            jobs.push(Job::All { node, resume: None });
            self.want(node, theirs.iter().map(|t| t.key).collect());
            return Ok(());
        };
        let mut send = Vec::new();
        let mut want = Vec::new();
        for m in &mine {
            let key = low_key(m.key_hash);
            match theirs.iter().find(|t| t.key == key) {
                None => send.push(m.key_hash as u32),
                Some(t) if t.item == short(m.item, self.window) => {}
                Some(t) => {
                    let mine = secs32(m.secs);
                    if mine >= t.secs {
                        send.push(m.key_hash as u32);
                    }
                    if mine <= t.secs {
                        want.push(t.key);
                    }
                }
            }
        }
        for t in &theirs {
            if !mine.iter().any(|m| low_key(m.key_hash) == t.key) {
                want.push(t.key);
            }
        }
        if !send.is_empty() {
            send.sort_unstable();
            jobs.push(Job::Some { node, keys: send });
        }
        self.want(node, want);
        Ok(())
    }

    fn want(&mut self, node: Node, keys: Vec<[u8; 4]>) {
        if keys.is_empty() {
            return;
        }
        self.stats.wanted += keys.len() as u64;
        self.wanting.ranges.push((node, keys));
    }
}

#[cfg(test)]
mod tests;
