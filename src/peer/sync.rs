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
//! Payloads are bincode (through the store's one codec) in URL-safe base64. The asker keeps
//! its open requests in order, and an answer that does not match one is a protocol violation
//! that drops the link. The answerer ([`Answerer`]) keeps only what it needs to refuse a
//! question that repeats a range of the same round (per depth, the last range named: a round
//! names each range once, in ascending order), and prices every question ([`Cost`]: ranges
//! named, records read) so that the link serves a peer at a bounded rate ([`Pace`]).
//!
//! Why it cannot miss a record: a round compares what both stores hold *now*; there is no
//! cursor to skip past. A write racing a round either is seen by it or leaves the two
//! fingerprints different, which the next round (at most `sync_interval_secs` later) sees.
//! Below the root only 16 bits of each fingerprint are sent, a different 16 bits each round,
//! so a collision that hides a difference in one round does not hide it in the next.

pub mod local;

use std::cell::Cell;
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
/// The largest record count a root fingerprint may claim: far beyond any store (2^40).
pub const MAX_COUNT: u64 = 1 << 40;
/// Summing this many in-memory bucket fingerprints is priced as reading one record.
pub const BUCKETS_PER_RECORD: u64 = 1024;
/// Depths a range may have: 0, 2, ..., [`MAX_DEPTH`].
const DEPTHS: usize = MAX_DEPTH as usize / 2 + 1;

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
    #[error("a question repeats {0}")]
    Repeated(String),
    #[error("the store failed: {0}")]
    Store(String),
}

impl Violation {
    /// A short name for the metric's `kind` label.
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::Undecodable(_) => "undecodable",
            Violation::Unasked(_) => "unasked",
            Violation::Malformed(_) => "malformed",
            Violation::OverBudget(_) => "over_budget",
            Violation::Repeated(_) => "repeated",
            Violation::Store(_) => "store",
        }
    }
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
    /// The asker's whole store, with retention on: it expired every record older than
    /// `cutoff` (seconds) before taking the fingerprint, and the answerer does the same before
    /// comparing, so two stores that expire a moment apart compare what both hold.
    RootWithin {
        count: u64,
        sum: u64,
        window: u8,
        cutoff: u64,
    },
}

/// The retention cutoff a peer's question carries, if it is the root question of a round
/// with retention on: the answerer expires up to it (at most as far as its own window says)
/// before answering.
pub fn cutoff_of(kind: SyncKind, payload: &[u8]) -> Option<u64> {
    if kind != SyncKind::Query {
        return None;
    }
    match decode::<Query>(payload) {
        Ok(Query::RootWithin { cutoff, .. }) => Some(cutoff),
        _ => None,
    }
}

/// The record count a peer's question claims for its whole store, if it is the root question
/// of a round: a peer that holds records, asking a store that holds none, is refilled by
/// this side's own round instead (see `docs/sync.md`, "Refilling an empty store").
pub fn root_count(kind: SyncKind, payload: &[u8]) -> Option<u64> {
    if kind != SyncKind::Query {
        return None;
    }
    match decode::<Query>(payload) {
        Ok(Query::Root { count, .. } | Query::RootWithin { count, .. }) => Some(count),
        _ => None,
    }
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
    /// The stores differ, but the answerer takes no new clients now (a limit is reached, or
    /// it cannot write): the asker sends nothing. The answerer's own rounds still fetch the
    /// updates of the clients it holds.
    Full,
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

/// What one [`Job::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Whether the job is finished.
    pub done: bool,
    /// Records written.
    pub sent: u64,
    /// Records read from the store to write them (a selective send scans its whole range).
    pub read: u64,
}

impl Job {
    /// Appends the next step's lines to `out`.
    pub fn step(&mut self, store: &Store, out: &mut Vec<u8>) -> crate::error::Result<Step> {
        match self {
            Job::All { node, resume } => {
                let (lines, next) = store.lines(*node, resume.as_deref(), STREAM_BATCH)?;
                for line in &lines {
                    out.extend_from_slice(line);
                    out.push(b'\n');
                }
                *resume = next;
                let n = lines.len() as u64;
                Ok(Step {
                    done: resume.is_none(),
                    sent: n,
                    read: n,
                })
            }
            Job::Some { node, keys } => {
                let scanned = Cell::new(0u64);
                let lines = store.lines_where(*node, |kh| {
                    scanned.set(scanned.get() + 1);
                    keys.binary_search(&(kh as u32)).is_ok()
                })?;
                for line in &lines {
                    out.extend_from_slice(line);
                    out.push(b'\n');
                }
                Ok(Step {
                    done: true,
                    sent: lines.len() as u64,
                    read: scanned.get(),
                })
            }
            Job::Line(line) => {
                out.extend_from_slice(line);
                Ok(Step {
                    done: true,
                    sent: 0,
                    read: 0,
                })
            }
        }
    }
}

/// What serving a question cost, for [`Pace`]: ranges it named, records it read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub ranges: u64,
    pub records: u64,
}

/// Reads fingerprints and lists for an answer, counting what they cost.
struct Meter<'a> {
    store: &'a Store,
    buckets: u64,
    records: u64,
}

impl Meter<'_> {
    fn fingerprint(&mut self, node: Node) -> Result<Fingerprint, Violation> {
        let fp = self.store.fingerprint(node)?;
        match node.buckets() {
            Some(buckets) => self.buckets += buckets.len() as u64,
            None => self.records += fp.count,
        }
        Ok(fp)
    }

    /// The answerer's list of a small range.
    fn list(&mut self, node: Node, window: u8) -> Result<Vec<Item>, Violation> {
        let list = list(self.store, node, window)?;
        self.records += list.len() as u64 + 1;
        Ok(list)
    }

    fn cost(&self, ranges: u64) -> Cost {
        Cost {
            ranges,
            records: self.records + self.buckets.div_ceil(BUCKETS_PER_RECORD),
        }
    }
}

/// The answering side of one link session: what it remembers of the peer's current round.
///
/// An honest asker names every range at most once per round, and at each depth in ascending
/// order (it descends into the ranges of each answer in key order, and answers come back in
/// the order asked), so the answerer needs only the last range named per depth to refuse a
/// repeat: a question that names a range at or before the last one at its depth, that asks
/// the root twice, or that goes back to an earlier round, is a [`Violation::Repeated`].
#[derive(Debug, Default)]
pub struct Answerer {
    round: u64,
    root_asked: bool,
    /// Per depth / 2: the last range whose quarters a `Q` compared, this round.
    last_split: [Option<u64>; DEPTHS],
    /// Per depth / 2: the last range a `W` named, this round.
    last_wanted: [Option<u64>; DEPTHS],
}

impl Answerer {
    /// Answers one question of the peer's round: the jobs that make up the answer (records
    /// first, if any, then the `A` line) and what computing it cost. The records the jobs
    /// will read are priced as they are stepped ([`Step::read`]).
    pub fn answer(
        &mut self,
        store: &Store,
        kind: SyncKind,
        round: u64,
        payload: &[u8],
    ) -> Result<(Vec<Job>, Cost), Violation> {
        if kind == SyncKind::Answer {
            return Err(Violation::Unasked(round));
        }
        if round < self.round {
            return Err(Violation::Repeated(format!(
                "round {round}, after round {}",
                self.round
            )));
        }
        if round > self.round {
            *self = Answerer {
                round,
                ..Answerer::default()
            };
        }
        let mut meter = Meter {
            store,
            buckets: 0,
            records: 0,
        };
        match kind {
            SyncKind::Query => match decode::<Query>(payload)? {
                Query::Root { count, sum, window }
                | Query::RootWithin {
                    count, sum, window, ..
                } => {
                    if window > 3 || count > MAX_COUNT || (count == 0 && sum != 0) {
                        return Err(Violation::Malformed("an impossible root fingerprint"));
                    }
                    if std::mem::replace(&mut self.root_asked, true) {
                        return Err(Violation::Repeated(format!("the root in round {round}")));
                    }
                    let jobs = answer_root(&mut meter, Fingerprint { count, sum }, window, round)?;
                    Ok((jobs, meter.cost(1)))
                }
                Query::Groups {
                    window,
                    depth,
                    groups,
                } => {
                    if window > 3
                        || !(2..=MAX_DEPTH).contains(&depth)
                        || !depth.is_multiple_of(2)
                        || groups.is_empty()
                        || groups.len() > MAX_GROUPS
                    {
                        return Err(Violation::Malformed("bad depth or number of ranges"));
                    }
                    let ranges = groups.len() as u64;
                    let last = &mut self.last_split[usize::from(depth / 2 - 1)];
                    let job = answer_groups(&mut meter, last, window, depth, groups, round)?;
                    Ok((vec![job], meter.cost(ranges)))
                }
            },
            SyncKind::Want => {
                let want: Want = decode(payload)?;
                if want.ranges.is_empty() || want.ranges.len() > MAX_GROUPS {
                    return Err(Violation::Malformed("bad number of ranges wanted"));
                }
                let ranges = want.ranges.len() as u64;
                let mut jobs = Vec::with_capacity(want.ranges.len() + 1);
                for (node, keys) in want.ranges {
                    if !node.is_valid() || keys.is_empty() || keys.len() > MAX_ITEMS {
                        return Err(Violation::Malformed("bad want"));
                    }
                    let last = &mut self.last_wanted[usize::from(node.depth / 2)];
                    if last.is_some_and(|l| node.index <= l) {
                        return Err(Violation::Repeated(format!(
                            "range {}/{} (wanted) in round {round}",
                            node.depth, node.index
                        )));
                    }
                    *last = Some(node.index);
                    let mut keys: Vec<u32> = keys.iter().map(|k| u32::from_be_bytes(*k)).collect();
                    keys.sort_unstable();
                    jobs.push(Job::Some { node, keys });
                }
                jobs.push(Job::Line(encode("A", round, &Answer::Sent)));
                Ok((jobs, meter.cost(ranges)))
            }
            SyncKind::Answer => unreachable!("refused above"),
        }
    }
}

fn answer_root(
    meter: &mut Meter<'_>,
    theirs: Fingerprint,
    window: u8,
    round: u64,
) -> Result<Vec<Job>, Violation> {
    let mine = meter.fingerprint(Node::ROOT)?;
    let mut jobs = Vec::new();
    let answer = if mine == theirs {
        RootAnswer::Same
    } else if !meter.store.takes_new_clients() {
        // Whatever the asker would send, this store could not take; it was refused once by
        // the merge and would be sent again every round.
        RootAnswer::Full
    } else if mine.count == 0 {
        RootAnswer::Empty
    } else if theirs.count == 0 {
        jobs.push(Job::All {
            node: Node::ROOT,
            resume: None,
        });
        RootAnswer::Sent
    } else if mine.count <= LEAF {
        RootAnswer::Items(meter.list(Node::ROOT, window)?)
    } else {
        RootAnswer::Descend
    };
    jobs.push(Job::Line(encode("A", round, &Answer::Root(answer))));
    Ok(jobs)
}

/// Compares the asker's quarters of each range in `groups` (at `depth - 2`) with this
/// store's; `last` is the last range compared at that depth this round.
fn answer_groups(
    meter: &mut Meter<'_>,
    last: &mut Option<u64>,
    window: u8,
    depth: u8,
    groups: Vec<(u64, [[u8; 2]; 4])>,
    round: u64,
) -> Result<Job, Violation> {
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
        if last.is_some_and(|l| index <= l) {
            return Err(Violation::Repeated(format!(
                "range {}/{index} in round {round}",
                depth - 2
            )));
        }
        *last = Some(index);
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
            let mine = meter.fingerprint(child)?;
            let status = if mine.short(window) == theirs[i] {
                Status::Same
            } else if mine.count == 0 {
                Status::Empty
            } else if mine.count <= LEAF || child.children().is_none() {
                lists.push(meter.list(child, window)?);
                Status::Items
            } else {
                Status::Descend
            };
            bits |= (status as u8) << (2 * i);
        }
        statuses.push(bits);
    }
    Ok(Job::Line(encode(
        "A",
        round,
        &Answer::Groups { statuses, lists },
    )))
}

/// Answers one question with no memory of the round (tools and tests that play a peer):
/// [`Answerer::answer`] without the cost.
pub fn answer(
    store: &Store,
    kind: SyncKind,
    round: u64,
    payload: &[u8],
) -> Result<Vec<Job>, Violation> {
    Answerer::default()
        .answer(store, kind, round, payload)
        .map(|(jobs, _)| jobs)
}

/// How fast a link serves its peer's questions: two token buckets, one of ranges named and
/// one of records read, each refilled at its rate and holding at most one second of it.
///
/// A question is served whole and its cost charged after, so a bucket may go into debt;
/// while either is in debt the link takes no further question of the peer and steps no
/// answer of it ([`Pace::wait`]), until the debt is paid. An honest peer's large round (a
/// wiped store's refill) is paced, not refused; a peer that asks the same costly question
/// over and over gets one second's worth each second.
#[derive(Debug)]
pub struct Pace {
    ranges: Bucket,
    records: Bucket,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u64, now: Instant) -> Bucket {
        let rate = rate.max(1) as f64;
        Bucket {
            rate,
            tokens: rate,
            at: now,
        }
    }

    fn charge(&mut self, n: u64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate) - n as f64;
        self.at = now;
    }

    /// When the debt will be paid, if there is one.
    fn paid_at(&self) -> Option<Instant> {
        (self.tokens < 0.0).then(|| self.at + Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

impl Pace {
    pub fn new(ranges_per_sec: u64, records_per_sec: u64, now: Instant) -> Pace {
        Pace {
            ranges: Bucket::new(ranges_per_sec, now),
            records: Bucket::new(records_per_sec, now),
        }
    }

    pub fn charge(&mut self, cost: Cost, now: Instant) {
        self.ranges.charge(cost.ranges, now);
        self.records.charge(cost.records, now);
    }

    /// `None` when the peer's questions may be served at `now`; else when they may again.
    pub fn wait(&self, now: Instant) -> Option<Instant> {
        let until = self.ranges.paid_at().max(self.records.paid_at())?;
        (until > now).then_some(until)
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
    /// Whether the root question claimed no record: the answerer sends everything it holds.
    from_empty: bool,
    pub stats: RoundStats,
}

impl Round {
    /// Starts round `id` against `store`: the first question. With retention on, `cutoff` is
    /// the one the store has just expired up to; the answerer compares at the same one.
    pub fn start(
        store: &Store,
        id: u64,
        cutoff: Option<u64>,
    ) -> Result<(Round, Vec<Job>), Violation> {
        let root = store.fingerprint(Node::ROOT)?;
        let window = (id % 4) as u8;
        let round = Round {
            id,
            window,
            open: VecDeque::from([Open::Root]),
            started: Instant::now(),
            budget: 1_000_000 + 2 * root.count,
            wanting: Want::default(),
            from_empty: root.count == 0,
            stats: RoundStats {
                questions: 1,
                ..RoundStats::default()
            },
        };
        let query = match cutoff {
            None => Query::Root {
                count: root.count,
                sum: root.sum,
                window,
            },
            Some(cutoff) => Query::RootWithin {
                count: root.count,
                sum: root.sum,
                window,
                cutoff,
            },
        };
        let line = encode("Q", id, &query);
        Ok((round, vec![Job::Line(line)]))
    }

    /// Whether every question has been answered.
    pub fn is_done(&self) -> bool {
        self.open.is_empty()
    }

    /// Whether this round asked with no record and its root question is still open: the
    /// answerer is sending (or about to send) everything it holds, ahead of its answer.
    pub fn awaits_everything(&self) -> bool {
        self.from_empty && matches!(self.open.front(), Some(Open::Root))
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
                RootAnswer::Same | RootAnswer::Sent | RootAnswer::Full => {}
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
        // A store that takes no new clients would refuse those it does not hold, round after
        // round: it asks only for newer reports of the ones it holds (listing all of its own
        // here, however many).
        let full = !store.takes_new_clients();
        let limit = if full { usize::MAX } else { MAX_MINE };
        let Some(mine) = store.items(node, limit)? else {
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
        for t in theirs.iter().filter(|_| !full) {
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
