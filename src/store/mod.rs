//! The durable store: one record per client, newest report wins, written by one thread.
//!
//! # What it promises
//!
//! - [`Store::submit`] is the only way a report enters the store. Submissions go, in order,
//!   through one bounded queue to one **writer thread**, which reads the current record,
//!   applies [`herd::decide`](crate::herd::decide), and writes the winner with **one** engine
//!   write. Nothing else writes, so no lock is needed and no engine call ever runs on a tokio
//!   worker while holding something others wait for. A report that does not win costs no
//!   write.
//! - **Group commit.** With `durability = "flush"` the writer applies a batch (everything that
//!   queued while it was busy, up to 1,024), flushes once, and only then completes it: the new
//!   reports are flooded to the linked servers, then their submitters are told. Everything that
//!   arrives during a flush forms the next batch. With `"none"` a batch completes as soon as it
//!   is applied, and sled's own flusher thread writes the store out every `flush_every_ms`
//!   beside the writer, which never stops for it (an engine without a flusher of its own, the
//!   tests' memory engine, is flushed by the writer when a tick arrives).
//! - A submission returns, in submission order, a ticket, and [`Store::is_applied`] tells
//!   whether the writer has applied it. [`Store::get_in_order`] reads through the writer's
//!   queue, so a WHATSAT pipelined behind an IAMAT sees exactly the writes submitted before it.
//! - Once asked ([`Store::remember_lines`], a node with links), it remembers the AT lines it
//!   stored last: a second copy of a report is stale without a read, and a link reader can ask
//!   [`Store::holds_line`] to drop one before parsing it.
//! - The fingerprints anti-entropy compares ([`fingerprint`]) are kept up to date by the
//!   writer on every write, after being built once at start while the node already serves.
//! - [`Store::close`] applies everything submitted before it, flushes, and stops the writer; a
//!   submission after it fails.
//! - A store directory is locked (`herd.lock`) while open, so two processes never share it.
//! - Every engine call is watched: one stuck longer than [`engine::STALL`] is logged, counted
//!   and the engine is asked to unstall itself.
//!
//! The byte layout is in the `herd-migrations` crate, next to every older format.
//!
//! # What it does not do
//!
//! It decides nothing about forwarding (the `on_stored` hook it is given does) and knows
//! nothing of peers.

pub mod engine;
mod files;
pub mod fingerprint;
mod seen;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herd_migrations::v3::RecordRef;
use herd_migrations::{codec, key_hash, record_key, Record};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{Durability, StoreConfig};
use crate::error::{Error, Result};
use crate::herd::{decide, Decision};
use crate::protocol::location::Location;
use crate::protocol::number::{TimeDiff, Timestamp};
use crate::report::Report;
use engine::{Engine, SledEngine, Watched};
use fingerprint::{bucket_of, Fingerprint, Leaves, Node, BUCKETS};
use seen::Seen;

pub use files::open_for_inspection;

/// Submissions waiting for the writer, at most; a submitter past it waits for room.
const QUEUE: usize = 4096;
/// The most submissions the writer applies before handing a batch on.
const MAX_BATCH: usize = 1024;
/// Buckets built per step of the start-up build, between batches of writes.
const BUILD_STEP: usize = 256;

/// A stored client record: the winning report plus what this node knows about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub report: Report,
    /// The receiving server's clock when the report arrived.
    pub received: Timestamp,
    /// The peer this node learned it from, if any.
    pub learned_from: Option<String>,
    /// The record's item hash (what anti-entropy adds up).
    pub item: u64,
}

/// A record as anti-entropy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemInfo {
    pub key_hash: u64,
    pub item: u64,
    /// Its client timestamp's seconds.
    pub secs: u64,
}

/// What the store did with a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// The report won and was written (and, with `durability = "flush"`, flushed).
    Stored,
    /// The stored record is as new or newer: nothing was written.
    Stale,
}

/// Called by the store for every report that won, once it is durable as configured, with
/// the peer it came from: the node floods it from here.
pub type OnStored = Box<dyn Fn(&Report, Option<&str>) + Send + Sync>;

/// A submission's place in the writer's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Ticket(u64);

/// A submitted report's outcome, once the writer is done with it (and has flushed it).
pub struct Pending {
    pub ticket: Ticket,
    outcome: oneshot::Receiver<Result<Merged>>,
}

impl Pending {
    pub async fn outcome(self) -> Result<Merged> {
        self.outcome.await.unwrap_or_else(|_| Err(closed()))
    }
}

fn closed() -> Error {
    Error::store("<store>", "the store is closed")
}

/// The store of one node. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Op>,
    /// Numbers submissions in queue order (held only to number and enqueue, never across an
    /// `.await`).
    next_ticket: Mutex<u64>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    _lock: Option<std::fs::File>,
}

/// What the writer thread and the readers share.
struct Shared {
    path: PathBuf,
    engine: Watched,
    leaves: Leaves,
    applied: watch::Sender<Ticket>,
    on_stored: OnceLock<OnStored>,
    /// The AT lines stored last, once [`Store::remember_lines`] asked for them.
    seen: OnceLock<Seen>,
    /// Hears of every report that did not win (metrics).
    on_stale: OnceLock<Box<dyn Fn() + Send + Sync>>,
    durability: Durability,
    /// Seconds each flush took, for whoever wants to know (metrics).
    on_flush: OnceLock<Box<dyn Fn(Duration) + Send + Sync>>,
}

enum Op {
    Merge(Box<Submission>),
    /// Reads a record in queue order: after every write submitted before it, before any after.
    Get {
        client: Bytes,
        reply: oneshot::Sender<Result<Option<Stored>>>,
    },
    /// Completes once everything before it is durable.
    Flush(oneshot::Sender<Result<()>>),
    /// Time for the periodic flush of `durability = "none"`.
    Tick,
    /// Applies everything before it, flushes, and stops the writer.
    Close(oneshot::Sender<()>),
}

struct Submission {
    ticket: Ticket,
    key: Vec<u8>,
    key_hash: u64,
    item: u64,
    value: Vec<u8>,
    report: Report,
    from: Option<String>,
    reply: Option<oneshot::Sender<Result<Merged>>>,
}

impl Store {
    /// Opens (or creates) the store under `dir`, upgrading an older format in place, and
    /// starts its writer.
    pub fn open(dir: &Path, config: &StoreConfig) -> Result<Store> {
        crate::private_files::create_private_dir(dir)
            .map_err(|e| Error::io(format!("create state dir {}", dir.display()), e))?;
        let lock = files::lock_dir(dir)?;
        let path = dir.join("store");
        // With `durability = "none"` sled's own flusher thread writes the store out every
        // `flush_every_ms`, beside the writer, which never stops for it.
        let background = (config.durability == Durability::None).then_some(config.flush_every_ms);
        let db = files::open_sled(&path, config.cache_mib, background)?;
        match herd_migrations::upgrade(&db) {
            Ok(herd_migrations::Outcome::Upgraded { from, records }) => {
                tracing::info!(store = %path.display(), from, to = herd_migrations::CURRENT, records, "store format upgraded");
            }
            Ok(_) => {}
            Err(e @ herd_migrations::MigrationError::TooNew { .. }) => {
                return Err(Error::StoreTooNew {
                    path,
                    message: e.to_string(),
                })
            }
            Err(herd_migrations::MigrationError::Sled(e)) => {
                return Err(engine::sled_error(&path, "upgrade it", e))
            }
            Err(e) => return Err(Error::store(&path, e)),
        }
        let tree = db
            .open_tree(herd_migrations::records_tree(herd_migrations::CURRENT))
            .map_err(|e| engine::sled_error(&path, "open its records", e))?;
        let mut engine = SledEngine::new(path.clone(), db, tree);
        if config.durability == Durability::Flush {
            engine = engine.power_safe();
        }
        let engine = Arc::new(engine);
        Ok(Store::start(
            path,
            engine,
            config.durability,
            None,
            Some(lock),
        ))
    }

    /// A store over any engine (tests use [`engine::MemEngine`]). With `durability = "none"`
    /// the writer flushes it every `flush_every`, between batches.
    pub fn with_engine(
        engine: Arc<dyn Engine>,
        durability: Durability,
        flush_every: Duration,
    ) -> Store {
        let ticks = (durability == Durability::None).then_some(flush_every);
        Store::start(PathBuf::from("<memory>"), engine, durability, ticks, None)
    }

    /// `ticks`: how often the writer flushes, with `durability = "none"`, if the engine does
    /// not flush in the background itself.
    fn start(
        path: PathBuf,
        engine: Arc<dyn Engine>,
        durability: Durability,
        ticks: Option<Duration>,
        lock: Option<std::fs::File>,
    ) -> Store {
        let (applied, _) = watch::channel(Ticket(0));
        let shared = Arc::new(Shared {
            engine: Watched::new(engine, path.clone()),
            path,
            leaves: Leaves::new(),
            applied,
            on_stored: OnceLock::new(),
            seen: OnceLock::new(),
            on_stale: OnceLock::new(),
            durability,
            on_flush: OnceLock::new(),
        });
        let (queue, rx) = mpsc::channel(QUEUE);
        if let Some(every) = ticks {
            spawn_ticker(every, queue.downgrade());
        }
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("herd-store-writer".into())
                .spawn(move || run_writer(shared, rx))
                .expect("start the store writer thread")
        };
        Store {
            inner: Arc::new(Inner {
                shared,
                queue,
                next_ticket: Mutex::new(0),
                writer: Mutex::new(Some(writer)),
                _lock: lock,
            }),
        }
    }

    /// Sets what happens to every report that wins (the node floods it). Set once, before
    /// the first submission; later calls are ignored.
    pub fn on_stored(&self, hook: OnStored) {
        let _ = self.inner.shared.on_stored.set(hook);
    }

    /// From now on, remembers the AT lines it stores last, so that a second copy of one (a
    /// node with links gets most reports over two of them) is stale without a read, and
    /// [`Store::holds_line`] can tell a link reader to drop it unparsed. A node without links
    /// gets no second copies and does not pay for this.
    pub fn remember_lines(&self) {
        let _ = self.inner.shared.seen.set(Seen::default());
    }

    /// Whether `line` is the AT line of a report this store holds or held, as far as it
    /// remembers: such a line can never win again.
    pub fn holds_line(&self, line: &[u8]) -> bool {
        self.inner.shared.seen.get().is_some_and(|s| s.holds(line))
    }

    /// Sets what hears of every report that did not win (it was as old as, or older than, the
    /// stored one). Set once; later calls are ignored.
    pub fn on_stale(&self, hook: Box<dyn Fn() + Send + Sync>) {
        let _ = self.inner.shared.on_stale.set(hook);
    }

    /// Sets what hears how long each flush took.
    pub fn on_flush(&self, hook: Box<dyn Fn(Duration) + Send + Sync>) {
        let _ = self.inner.shared.on_flush.set(hook);
    }

    /// Where the sled database lives.
    pub fn path(&self) -> &Path {
        &self.inner.shared.path
    }

    /// Queues a report for the writer, waiting only for room in the queue. `from` is the peer
    /// it came from. The returned [`Pending`] resolves once the report is applied (and, with
    /// `durability = "flush"`, flushed and flooded).
    pub async fn submit(&self, report: Report, from: Option<&str>) -> Result<Pending> {
        let (tx, rx) = oneshot::channel();
        let ticket = self.enqueue(report, from, Some(tx)).await?;
        Ok(Pending {
            ticket,
            outcome: rx,
        })
    }

    /// Queues a report whose outcome nobody waits for (a flood or a sync from a peer).
    pub async fn offer(&self, report: Report, from: Option<&str>) -> Result<Ticket> {
        self.enqueue(report, from, None).await
    }

    /// Submits and waits for the outcome.
    pub async fn merge(&self, report: Report, from: Option<&str>) -> Result<Merged> {
        self.submit(report, from).await?.outcome().await
    }

    async fn enqueue(
        &self,
        report: Report,
        from: Option<&str>,
        reply: Option<oneshot::Sender<Result<Merged>>>,
    ) -> Result<Ticket> {
        // Encoded here, on the submitter's thread, so the writer only reads, decides and writes.
        // One hash of the client ID gives both its bucket and its key.
        let key_hash = key_hash(&report.client);
        let key = herd_migrations::record_key_with(key_hash, &report.client);
        let record = record_of(&report, from);
        let item = record.item;
        let value = codec::encode(&record).map_err(|e| Error::store(self.path(), e))?;
        let permit = self.inner.queue.reserve().await.map_err(|_| closed())?;
        let mut next = self
            .inner
            .next_ticket
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *next += 1;
        let ticket = Ticket(*next);
        permit.send(Op::Merge(Box::new(Submission {
            ticket,
            key,
            key_hash,
            item,
            value,
            report,
            from: from.map(str::to_owned),
            reply,
        })));
        Ok(ticket)
    }

    /// Reads `client`'s record in submission order: it sees every report submitted before
    /// this call (applied, perhaps not yet flushed) and none submitted after. Waits only for
    /// room in the queue; the returned future resolves once the writer has read it.
    pub async fn get_in_order(
        &self,
        client: Bytes,
    ) -> Result<impl std::future::Future<Output = Result<Option<Stored>>>> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .queue
            .send(Op::Get { client, reply })
            .await
            .map_err(|_| closed())?;
        Ok(async move { rx.await.unwrap_or_else(|_| Err(closed())) })
    }

    /// Waits until the writer has applied `ticket` (not necessarily flushed it).
    pub async fn wait_applied(&self, ticket: Ticket) {
        let mut applied = self.inner.shared.applied.subscribe();
        let _ = applied.wait_for(|a| *a >= ticket).await;
    }

    /// Whether the writer has applied `ticket`.
    pub fn is_applied(&self, ticket: Ticket) -> bool {
        *self.inner.shared.applied.borrow() >= ticket
    }

    /// Waits until everything submitted before this call is durable.
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .queue
            .send(Op::Flush(tx))
            .await
            .map_err(|_| closed())?;
        rx.await.unwrap_or_else(|_| Err(closed()))
    }

    /// Applies and flushes everything submitted before this call, then stops the writer thread.
    /// Later submissions fail.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.queue.send(Op::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let writer = self.inner.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
    }

    /// The stored record of `client`. A record that cannot be decoded is logged and treated as
    /// absent, so a newer report (or a peer's copy) replaces it.
    pub fn get(&self, client: &[u8]) -> Result<Option<Stored>> {
        let shared = &self.inner.shared;
        let Some(value) = shared.engine.get(&record_key(client))? else {
            return Ok(None);
        };
        Ok(shared.decode_logged(client, &value))
    }

    /// Whether the fingerprints have been built since start (anti-entropy waits for it).
    pub fn ready(&self) -> bool {
        self.inner.shared.leaves.ready()
    }

    /// The number of client records, in O(1), once [`Store::ready`]; `None` before.
    pub fn count(&self) -> Option<u64> {
        let leaves = &self.inner.shared.leaves;
        leaves.ready().then(|| leaves.total())
    }

    /// How many engine calls the watchdog has seen stuck.
    pub fn stalls(&self) -> u64 {
        self.inner.shared.engine.stalls()
    }

    /// The fingerprint of `node`: from memory for a node no deeper than a bucket, else by
    /// scanning its range.
    pub fn fingerprint(&self, node: Node) -> Result<Fingerprint> {
        let shared = &self.inner.shared;
        if let Some(fp) = shared.leaves.fingerprint(node) {
            return Ok(fp);
        }
        let mut fp = Fingerprint::default();
        let mut bad = None;
        self.scan_node(node, None, &mut |_, value| {
            match codec::decode_prefix::<u64>(value) {
                Ok(item) => fp.add(item),
                Err(e) => bad = Some(e),
            }
            true
        })?;
        if let Some(e) = bad {
            tracing::warn!(store = %shared.path.display(), error = %e, "a record's item hash is unreadable");
        }
        Ok(fp)
    }

    /// What anti-entropy needs of every record in `node`, or `None` if there are more than
    /// `limit`.
    pub fn items(&self, node: Node, limit: usize) -> Result<Option<Vec<ItemInfo>>> {
        let mut out = Vec::new();
        let mut over = false;
        self.scan_node(node, None, &mut |key, value| {
            if out.len() == limit {
                over = true;
                return false;
            }
            let head = codec::decode_prefix::<(u64, u64)>(value);
            if let (Some(key_hash), Ok((item, secs))) = (key_hash_of(key), head) {
                out.push(ItemInfo {
                    key_hash,
                    item,
                    secs,
                });
            }
            true
        })?;
        Ok((!over).then_some(out))
    }

    /// Up to `limit` AT lines of the records in `node` from `resume` on (a key this returned,
    /// or `None` for the start), with where to resume, if anything is left.
    pub fn lines(
        &self,
        node: Node,
        resume: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Bytes>, Option<Vec<u8>>)> {
        let mut lines = Vec::new();
        let mut next = None;
        self.scan_node(node, resume, &mut |key, value| {
            if lines.len() == limit {
                next = Some(key.to_vec());
                return false;
            }
            let client = herd_migrations::client_of_key(key).unwrap_or_default();
            if let Some(stored) = self.inner.shared.decode_logged(client, value) {
                lines.push(stored.report.at_line().clone());
            }
            true
        })?;
        Ok((lines, next))
    }

    /// The AT lines of the records in `node` whose key hash `keep` accepts.
    pub fn lines_where(&self, node: Node, keep: impl Fn(u64) -> bool) -> Result<Vec<Bytes>> {
        let mut lines = Vec::new();
        self.scan_node(node, None, &mut |key, value| {
            if key_hash_of(key).is_some_and(&keep) {
                let client = herd_migrations::client_of_key(key).unwrap_or_default();
                if let Some(stored) = self.inner.shared.decode_logged(client, value) {
                    lines.push(stored.report.at_line().clone());
                }
            }
            true
        })?;
        Ok(lines)
    }

    fn scan_node(
        &self,
        node: Node,
        resume: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &engine::Value) -> bool,
    ) -> Result<()> {
        let (lo, hi) = node.range();
        let lo = lo.to_be_bytes();
        let hi = hi.map(u64::to_be_bytes);
        let from = resume.map_or(&lo[..], |r| r.max(&lo[..]));
        self.inner
            .shared
            .engine
            .scan(from, hi.as_ref().map(|h| &h[..]), visit)
    }

    /// Every record, in key order (for tools and tests).
    pub fn records(&self) -> Result<Vec<Stored>> {
        let mut out = Vec::new();
        self.scan_node(Node::ROOT, None, &mut |key, value| {
            let client = herd_migrations::client_of_key(key).unwrap_or_default();
            if let Some(s) = self.inner.shared.decode_logged(client, value) {
                out.push(s);
            }
            true
        })?;
        Ok(out)
    }
}

fn key_hash_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(..8)?.try_into().ok()?))
}

impl Shared {
    fn decode_logged(&self, client: &[u8], value: &[u8]) -> Option<Stored> {
        match decode_record(client, value) {
            Ok(s) => Some(s),
            Err(why) => {
                tracing::warn!(store = %self.path.display(), client = %crate::logging::Escaped(client), why, "skipping an undecodable record");
                None
            }
        }
    }

    /// Applies one submission: read, decide, write at most once.
    ///
    /// Newest-wins looks past the client timestamp only when two are equal, so the stored
    /// record is decoded whole only then. Its head (timestamp and item hash) comes from
    /// `heads` when the client was written recently, else from the engine: a record starts
    /// with both. A report whose AT line was stored before (a flood's second copy, from
    /// another peer) is stale without reading anything.
    fn apply(&self, s: &mut Submission, heads: &mut Heads) -> Result<Merged> {
        let seen = self.seen.get();
        if seen.is_some_and(|seen| seen.holds(s.report.at_line())) {
            return Ok(Merged::Stale);
        }
        let incoming = s.report.timestamp;
        let remembered = heads.get(s.key_hash, &s.key);
        let mut stored = match remembered {
            Some(_) => None,
            None => self.engine.get(&s.key)?,
        };
        let head = remembered.or_else(|| stored.as_deref().and_then(Head::decode));
        let replaced = match head {
            Some(head) if head.timestamp > incoming => return Ok(Merged::Stale),
            Some(head) if head.timestamp < incoming => Some(head.item),
            // No record at all.
            None if stored.is_none() => None,
            // A tie, or a head that does not decode: the whole order decides.
            _ => {
                if stored.is_none() {
                    stored = self.engine.get(&s.key)?;
                }
                let current = stored.and_then(|v| self.decode_logged(&s.report.client, &v));
                if decide(current.as_ref().map(|c| &c.report), &s.report) == Decision::Keep {
                    return Ok(Merged::Stale);
                }
                current.map(|c| c.item)
            }
        };
        self.engine.put(&s.key, std::mem::take(&mut s.value))?;
        self.leaves.replace(s.key_hash, replaced, s.item);
        if let Some(seen) = seen {
            seen.remember(s.report.at_line());
        }
        heads.insert(
            s.key_hash,
            std::mem::take(&mut s.key),
            Head {
                timestamp: incoming,
                item: s.item,
            },
        );
        Ok(Merged::Stored)
    }

    /// Builds the next run of buckets' fingerprints from the store.
    fn build_step(&self) -> Result<()> {
        let first = self.leaves.built();
        let end = (first + BUILD_STEP).min(BUCKETS);
        let mut fps = vec![Fingerprint::default(); end - first];
        let lo = ((first as u64) << (64 - fingerprint::BUCKET_DEPTH)).to_be_bytes();
        let hi = (end < BUCKETS)
            .then(|| ((end as u64) << (64 - fingerprint::BUCKET_DEPTH)).to_be_bytes());
        self.engine
            .scan(&lo, hi.as_ref().map(|h| &h[..]), &mut |key, value| {
                if let (Some(kh), Ok(item)) = (key_hash_of(key), codec::decode_prefix::<u64>(value))
                {
                    fps[bucket_of(kh) - first].add(item);
                }
                true
            })?;
        for (i, fp) in fps.into_iter().enumerate() {
            self.leaves.set_built(first + i, fp);
        }
        Ok(())
    }

    /// Tells the waiting submitters, and floods what won (once durable as configured).
    fn complete(&self, done: Vec<Done>) {
        let hook = self.on_stored.get();
        for d in done {
            match (&d.outcome, hook) {
                (Ok(Merged::Stored), Some(hook)) => hook(&d.report, d.from.as_deref()),
                (Ok(Merged::Stale), _) => {
                    if let Some(stale) = self.on_stale.get() {
                        stale();
                    }
                }
                _ => {}
            }
            if let Some(reply) = d.reply {
                let _ = reply.send(d.outcome);
            }
        }
    }

    fn fail(&self, done: Vec<Done>, why: &Error) {
        for d in done {
            if let Some(reply) = d.reply {
                let _ = reply.send(Err(Error::store(&self.path, format!("not durable: {why}"))));
            }
        }
    }

    fn timed_flush(&self) -> Result<()> {
        let started = Instant::now();
        let result = self.engine.flush();
        if let Some(hook) = self.on_flush.get() {
            hook(started.elapsed());
        }
        result
    }
}

/// What newest-wins needs first of a stored record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Head {
    timestamp: Timestamp,
    /// Its item hash (what the fingerprints add up).
    item: u64,
}

impl Head {
    /// The head of an encoded record: a record starts with its item hash and timestamp.
    fn decode(value: &[u8]) -> Option<Head> {
        let (item, secs, nanos) = codec::decode_prefix::<(u64, u64, u32)>(value).ok()?;
        Some(Head {
            timestamp: Timestamp { secs, nanos },
            item,
        })
    }
}

/// Clients per generation of [`Heads`].
const HEADS: usize = 16 * 1024;

/// The heads of the records the writer wrote last, so a client that reports again and again
/// costs one engine write and no engine read. The writer is the store's only writer, so what
/// it remembers is what the engine holds. Two generations bound it: when the current one is
/// full it becomes the previous one, and the previous one is forgotten.
struct Heads {
    current: std::collections::HashMap<u64, (Vec<u8>, Head)>,
    previous: std::collections::HashMap<u64, (Vec<u8>, Head)>,
}

impl Heads {
    fn new() -> Heads {
        Heads {
            current: std::collections::HashMap::with_capacity(HEADS),
            previous: std::collections::HashMap::new(),
        }
    }

    /// The head of the record under `key` (whose hash is `key_hash`), if remembered.
    ///
    /// The newer generation that knows the hash answers: the previous one may hold an older
    /// head of a client whose newer one the current generation has since lost to another
    /// client with the same key hash.
    fn get(&self, key_hash: u64, key: &[u8]) -> Option<Head> {
        let (k, head) = self
            .current
            .get(&key_hash)
            .or_else(|| self.previous.get(&key_hash))?;
        (&k[..] == key).then_some(*head)
    }

    /// Remembers `head` as what the engine now holds under `key`.
    fn insert(&mut self, key_hash: u64, key: Vec<u8>, head: Head) {
        if self.current.len() >= HEADS && !self.current.contains_key(&key_hash) {
            self.previous = std::mem::replace(
                &mut self.current,
                std::collections::HashMap::with_capacity(HEADS),
            );
        }
        // Two clients whose keys share a hash: the newer one is remembered, the other is read.
        self.current.insert(key_hash, (key, head));
    }
}

/// One applied submission, waiting to be completed.
struct Done {
    report: Report,
    from: Option<String>,
    reply: Option<oneshot::Sender<Result<Merged>>>,
    outcome: Result<Merged>,
}

/// One batch: what it applied, and who waits for its flush.
#[derive(Default)]
struct Batch {
    done: Vec<Done>,
    barriers: Vec<oneshot::Sender<Result<()>>>,
}

/// The writer thread: applies submissions in queue order, batch by batch, flushes once per
/// batch, then completes the batch; it builds the fingerprints at start between batches.
///
/// Flushing here, between batches, rather than on a thread of its own beside the writes, is on
/// purpose: with sled 0.34, a `flush` racing a stream of inserts from another thread was seen
/// to wait forever in `make_stable` (in a 1,000,000-record load and once at a node's shutdown);
/// a flush with no insert in flight never was. Group commit still holds: everything that
/// queued while one flush ran is applied, and covered by the next, as one batch.
fn run_writer(shared: Arc<Shared>, mut rx: mpsc::Receiver<Op>) {
    let periodic = shared.durability == Durability::None;
    let mut heads = Heads::new();
    // Writes applied since the last flush (for the periodic flush of `durability = "none"`).
    let mut dirty = false;
    let mut closing = None;
    while closing.is_none() {
        let first = if shared.leaves.built() < BUCKETS {
            match rx.try_recv() {
                Ok(op) => Some(op),
                Err(mpsc::error::TryRecvError::Empty) => {
                    if let Err(e) = shared.build_step() {
                        tracing::error!(store = %shared.path.display(), error = %e, "cannot read the store to build its fingerprints; retrying");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    if shared.leaves.ready() {
                        tracing::info!(store = %shared.path.display(), records = shared.leaves.total(), "store fingerprints built");
                    }
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            }
        } else {
            rx.blocking_recv()
        };
        let Some(first) = first else { break };
        let mut batch = Batch::default();
        let mut last = None;
        let mut tick = false;
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(op) = next {
            match op {
                Op::Merge(mut s) => {
                    let outcome = shared.apply(&mut s, &mut heads);
                    if let Err(e) = &outcome {
                        tracing::error!(store = %shared.path.display(), error = %e, "cannot store a report");
                    }
                    last = Some(s.ticket);
                    let Submission {
                        report,
                        from,
                        reply,
                        ..
                    } = *s;
                    batch.done.push(Done {
                        report,
                        from,
                        reply,
                        outcome,
                    });
                }
                Op::Get { client, reply } => {
                    let found = shared
                        .engine
                        .get(&record_key(&client))
                        .map(|v| v.and_then(|v| shared.decode_logged(&client, &v)));
                    let _ = reply.send(found);
                }
                Op::Flush(tx) => batch.barriers.push(tx),
                Op::Tick => tick = true,
                Op::Close(tx) => {
                    closing = Some(tx);
                    break;
                }
            }
            taken += 1;
            if taken == MAX_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        if let Some(ticket) = last {
            shared.applied.send_replace(ticket);
            dirty = true;
        }
        if periodic {
            shared.complete(std::mem::take(&mut batch.done));
            if (tick && dirty) || !batch.barriers.is_empty() || closing.is_some() {
                finish(&shared, batch);
                dirty = false;
            }
        } else if !batch.done.is_empty() || !batch.barriers.is_empty() {
            finish(&shared, batch);
        }
    }
    // Closing (or every handle dropped): one last flush covers everything applied.
    finish(&shared, Batch::default());
    if let Some(tx) = closing {
        let _ = tx.send(());
    }
}

/// Queues a [`Op::Tick`] every `every` until the store's handles are gone.
fn spawn_ticker(every: Duration, queue: mpsc::WeakSender<Op>) {
    let spawned = std::thread::Builder::new()
        .name("herd-store-tick".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let Some(queue) = queue.upgrade() else { return };
            // A full queue means a batch is coming anyway; its tick can wait.
            let _ = queue.try_send(Op::Tick);
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the store's flush ticker");
    }
}

/// Flushes once, then completes the batch: floods and answers on success, errors on failure.
fn finish(shared: &Shared, batch: Batch) {
    let result = shared.timed_flush();
    if let Err(e) = &result {
        tracing::error!(store = %shared.path.display(), error = %e, "store flush failed");
    }
    match &result {
        Ok(()) => shared.complete(batch.done),
        Err(e) => shared.fail(batch.done, e),
    }
    for barrier in batch.barriers {
        let _ = barrier.send(match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::store(&shared.path, format!("flush failed: {e}"))),
        });
    }
}

/// The stored form of a report, learned from peer `from` (or from a client), borrowing the
/// report's fields: it is only encoded.
pub fn record_of<'a>(report: &'a Report, from: Option<&'a str>) -> RecordRef<'a> {
    let received = report.received().unwrap_or_default();
    let at = report.at_line();
    RecordRef {
        item: herd_migrations::item_hash(at),
        server: &report.server,
        time_diff_nanos: report.time_diff.0,
        location: &report.location_text,
        latitude: report.location.latitude,
        longitude: report.location.longitude,
        timestamp: &report.timestamp_text,
        timestamp_secs: report.timestamp.secs,
        timestamp_nanos: report.timestamp.nanos,
        received_secs: received.secs,
        received_nanos: received.nanos,
        at,
        learned_from: from,
    }
}

/// Rebuilds a stored record. The record was validated when it was made, so nothing in it is
/// parsed again; what bincode cannot decode is corrupt.
pub fn decode_record(client: &[u8], value: &[u8]) -> std::result::Result<Stored, String> {
    let r: Record = codec::decode(value).map_err(|e| e.to_string())?;
    let report = Report::from_stored(
        r.server,
        TimeDiff(r.time_diff_nanos),
        Bytes::copy_from_slice(client),
        Bytes::from(r.location),
        Location {
            latitude: r.latitude,
            longitude: r.longitude,
        },
        Bytes::from(r.timestamp),
        Timestamp {
            secs: r.timestamp_secs,
            nanos: r.timestamp_nanos,
        },
        Bytes::from(r.at),
    );
    Ok(Stored {
        report,
        received: Timestamp {
            secs: r.received_secs,
            nanos: r.received_nanos,
        },
        learned_from: r.learned_from,
        item: r.item,
    })
}

#[cfg(test)]
mod tests;
