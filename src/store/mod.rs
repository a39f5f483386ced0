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
//! - **Admission.** The writer refuses, without writing ([`Merged::Refused`]): client IDs
//!   longer than `max_client_id_bytes`, reports older than the retention window, new clients
//!   while a limit is reached (`max_records`, `max_store_mib`, free space below
//!   `min_free_mib`), and everything while the disk is below its floor (a quarter of it).
//! - **A failed write is left behind.** After a write or flush fails, the batch is answered
//!   with errors, the engine is reopened from its files (retried until it opens), and the
//!   heads, the memory of lines and the fingerprints are rebuilt from what it holds: nothing
//!   later rests on a write that was not made durable. [`Store::health`] says meanwhile that
//!   it cannot write.
//! - **Retention** (`retain_secs`): the writer expires clients older than the window once a
//!   second, and on [`Store::expire`], keeping per bucket a bound on its oldest timestamp so
//!   that only buckets that may hold an expired record are scanned.
//! - Opening never discards what can be read (`files::open_sled`); a store moved aside anyway
//!   is salvaged ([`salvage`]) before the node serves.
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
pub mod salvage;
pub mod seen;
pub mod space;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
/// How often the writer wakes without work: to check the disk, expire, or retry a reopen.
const TICK: Duration = Duration::from_millis(100);
/// How stale the writer's idea of the free space may be.
const FREE_CHECK: Duration = Duration::from_millis(50);
/// How stale its idea of the store's size may be (a walk of the few files of sled's directory).
const SIZE_CHECK: Duration = Duration::from_millis(100);
/// How often retention expires clients, at most.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts to reopen the store after a failed write.
const MAX_REOPEN_BACKOFF: Duration = Duration::from_secs(2);

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
    /// The store's admission rules refused it: nothing was written.
    Refused(Refusal),
}

/// Why the store refused a report without looking at what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Its client ID is longer than `max_client_id_bytes`.
    ClientIdTooLong,
    /// Its timestamp is older than the retention window (`retain_secs`).
    Expired,
    /// A new client, while the store takes no new clients (records, size or free space at
    /// their limits).
    NewClient,
    /// Nothing can be written: the disk is below the writer's floor.
    NoSpace,
}

impl Refusal {
    /// Its name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ClientIdTooLong => "client_id_too_long",
            Refusal::Expired => "expired",
            Refusal::NewClient => "new_client",
            Refusal::NoSpace => "no_space",
        }
    }
}

/// Whether the store can write, as a readiness probe wants to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writable {
    /// Every report is taken as newest-wins says.
    Yes,
    /// Known clients update; new clients are refused (a limit is reached).
    KnownClientsOnly,
    /// Nothing can be written (the disk is full, or the store is being reopened after a failed
    /// write); every acknowledged report can still be read once it is open.
    No,
}

/// The store's health: whether it writes, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub writable: Writable,
    /// Why it is not [`Writable::Yes`] (empty when it is).
    pub reason: String,
    /// Bytes free on the store's disk, when last looked at (`None` for a store in memory).
    pub free_bytes: Option<u64>,
    /// Bytes the store's files take on disk, when last looked at.
    pub store_bytes: Option<u64>,
}

/// What the store admits, from `[store]`.
#[derive(Debug, Clone, Copy)]
struct Admission {
    max_client_id_bytes: usize,
    max_records: u64,
    max_store_bytes: u64,
    min_free: u64,
    /// Below this, nothing is written.
    floor: u64,
    retain_secs: u64,
}

impl Admission {
    fn of(config: &StoreConfig) -> Admission {
        let min_free = config.min_free_mib.saturating_mul(1 << 20);
        Admission {
            max_client_id_bytes: config.max_client_id_bytes,
            max_records: config.max_records,
            max_store_bytes: config.max_store_mib.saturating_mul(1 << 20),
            min_free,
            floor: min_free / 4,
            retain_secs: config.retain_secs,
        }
    }
}

/// Where a store on disk lives, for the writer's checks of its space.
struct Disk {
    /// The state directory (holding `store`, the lock and the ballast).
    dir: PathBuf,
    ballast: space::Ballast,
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
    /// Hears of every report the admission rules refused, with the peer it came from.
    on_refused: OnceLock<RefusedHook>,
    admission: Admission,
    /// `None` for a store in memory.
    disk: Option<Disk>,
    health: Mutex<Health>,
    /// Whether the writer flushes on its ticks (`durability = "none"` over an engine without a
    /// flusher of its own).
    flush_on_tick: bool,
    /// A sync that failed, for the writer to act on (the syncer sets it).
    sync_failed: Mutex<Option<String>>,
    /// Why a sync failed, until the engine is reopened: every later commit fails too (once a
    /// sync has failed, a later one that succeeds proves nothing about the pages the failed one
    /// was to write).
    sync_poison: Mutex<Option<String>>,
    /// The recent mean time of a sync, in microseconds: it decides whether a sync runs beside
    /// the writer or on it.
    sync_mean_us: AtomicU64,
}

/// See [`Store::on_refused`].
pub type RefusedHook = Box<dyn Fn(Refusal, Option<&str>) + Send + Sync>;

enum Op {
    Merge(Box<Submission>),
    /// Reads a record in queue order: after every write submitted before it, before any after.
    Get {
        client: Bytes,
        reply: oneshot::Sender<Result<Option<Stored>>>,
    },
    /// Completes once everything before it is durable.
    Flush(oneshot::Sender<Result<()>>),
    /// Time to check the disk, expire, retry a reopen, or flush (`durability = "none"`).
    Tick,
    /// Expires every client whose newest report is older than the cutoff (seconds), if
    /// retention is on; answers how many were expired.
    Expire {
        cutoff: u64,
        reply: oneshot::Sender<Result<u64>>,
    },
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
        let sled_config = files::sled_config(&path, config.cache_mib, background);
        let admission = Admission::of(config);
        let ballast = space::Ballast::new(dir, admission.min_free);
        let opened = match files::open_sled(&path, &sled_config, admission.floor) {
            // A full disk: the ballast's space lets sled write the snapshot opening needs.
            Err(Error::StoreIo { source, .. })
                if source.raw_os_error() == Some(libc::ENOSPC) && ballast.release() =>
            {
                files::open_sled(&path, &sled_config, admission.floor)?
            }
            other => other?,
        };
        let files::Opened { db, moved_aside } = opened;
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
        let opener: engine::Opener = {
            let path = path.clone();
            Box::new(move || {
                let files::Opened { db, moved_aside } =
                    files::open_sled(&path, &sled_config, admission.floor)?;
                let tree = db
                    .open_tree(herd_migrations::records_tree(herd_migrations::CURRENT))
                    .map_err(|e| engine::sled_error(&path, "open its records", e))?;
                if let Some(aside) = moved_aside {
                    // The writer is reopening (nothing else writes): salvage straight into the
                    // fresh tree, the newest readable report of each client.
                    let salvaged = salvage::newest_per_client(&aside)
                        .map_err(|e| Error::io(format!("salvage {}", aside.display()), e))?;
                    for report in &salvaged {
                        let value = codec::encode(&record_of(report, None))
                            .map_err(|e| Error::store(&path, e))?;
                        tree.insert(record_key(&report.client), value)
                            .map_err(|e| engine::sled_error(&path, "write a salvaged record", e))?;
                    }
                    db.flush()
                        .map_err(|e| engine::sled_error(&path, "flush the salvaged records", e))?;
                    tracing::error!(store = %path.display(), moved_to = %aside.display(), records = salvaged.len(), "the reopened store had to be moved aside; salvaged its readable records");
                }
                Ok((db, tree))
            })
        };
        let mut engine = SledEngine::new(path.clone(), db, tree, opener);
        if config.durability == Durability::Flush {
            engine = engine.power_safe();
        }
        let engine = Arc::new(engine);
        let store = Store::start(
            path,
            engine,
            config,
            false,
            Some(Disk {
                dir: dir.to_owned(),
                ballast,
            }),
            Some(lock),
        );
        if let Some(aside) = moved_aside {
            store.salvage_from(&aside)?;
        }
        Ok(store)
    }

    /// Merges every report still readable in the store kept aside at `aside`, through the
    /// writer (newest wins), and flushes.
    fn salvage_from(&self, aside: &Path) -> Result<()> {
        let reports = salvage::reports_in(aside)
            .map_err(|e| Error::io(format!("salvage the store in {}", aside.display()), e))?;
        let found = reports.len();
        // The queue and its answers need no runtime: block on them here, before the node serves.
        let (stored, refused) = futures::executor::block_on(async {
            let mut pending = Vec::with_capacity(reports.len());
            for report in reports {
                pending.push(self.submit(report, None).await?);
            }
            let (mut stored, mut refused) = (0u64, 0u64);
            for p in pending {
                match p.outcome().await? {
                    Merged::Stored => stored += 1,
                    Merged::Refused(_) => refused += 1,
                    Merged::Stale => {}
                }
            }
            self.flush().await?;
            Ok::<_, Error>((stored, refused))
        })?;
        let records = self.records()?.len();
        tracing::warn!(store = %self.path().display(), from = %aside.display(), reports_found = found, writes = stored, refused, records, "salvaged the readable records of the store moved aside");
        eprintln!(
            "herd: salvaged {records} client records ({found} readable reports) from {}",
            aside.display()
        );
        Ok(())
    }

    /// A store over any engine (tests use [`engine::MemEngine`]), with the default limits and
    /// no retention. With `durability = "none"` the writer flushes it every `flush_every`,
    /// between batches.
    pub fn with_engine(
        engine: Arc<dyn Engine>,
        durability: Durability,
        flush_every: Duration,
    ) -> Store {
        let config = StoreConfig {
            durability,
            flush_every_ms: flush_every.as_millis() as u64,
            ..StoreConfig::default()
        };
        Store::with_engine_config(engine, &config)
    }

    /// A store over any engine, as `config` says (but for disk space: it has no disk). With
    /// `durability = "none"` the writer flushes it every `flush_every_ms`, between batches.
    pub fn with_engine_config(engine: Arc<dyn Engine>, config: &StoreConfig) -> Store {
        let flush_on_tick = config.durability == Durability::None;
        Store::start(
            PathBuf::from("<memory>"),
            engine,
            config,
            flush_on_tick,
            None,
            None,
        )
    }

    /// `flush_on_tick`: whether the writer flushes, with `durability = "none"`, because the
    /// engine does not flush in the background itself.
    fn start(
        path: PathBuf,
        engine: Arc<dyn Engine>,
        config: &StoreConfig,
        flush_on_tick: bool,
        disk: Option<Disk>,
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
            durability: config.durability,
            on_flush: OnceLock::new(),
            on_refused: OnceLock::new(),
            admission: Admission::of(config),
            disk,
            health: Mutex::new(Health {
                writable: Writable::Yes,
                reason: String::new(),
                free_bytes: None,
                store_bytes: None,
            }),
            flush_on_tick,
            sync_failed: Mutex::new(None),
            sync_poison: Mutex::new(None),
            sync_mean_us: AtomicU64::new(0),
        });
        let (queue, rx) = mpsc::channel(QUEUE);
        let every = if flush_on_tick {
            TICK.min(Duration::from_millis(config.flush_every_ms.max(1)))
        } else {
            TICK
        };
        spawn_ticker(every, queue.downgrade());
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

    /// Sets what hears of every report the admission rules refused (with the peer it came
    /// from). Set once; later calls are ignored.
    pub fn on_refused(&self, hook: RefusedHook) {
        let _ = self.inner.shared.on_refused.set(hook);
    }

    /// Whether the store can write now, and why not.
    pub fn health(&self) -> Health {
        self.inner
            .shared
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the store takes reports for clients it does not hold now (no limit reached, and
    /// it can write).
    pub fn takes_new_clients(&self) -> bool {
        let max = self.inner.shared.admission.max_records;
        let records = self.count().unwrap_or(0);
        self.health().writable == Writable::Yes && (max == 0 || records < max)
    }

    /// The retention window in seconds (0: off).
    pub fn retain_secs(&self) -> u64 {
        self.inner.shared.admission.retain_secs
    }

    /// The retention cutoff now: reports with older timestamps (seconds) are expired. `None`
    /// without retention.
    pub fn retention_cutoff(&self) -> Option<u64> {
        let retain = self.retain_secs();
        (retain > 0).then(|| Timestamp::now().secs.saturating_sub(retain))
    }

    /// Expires, through the writer, every client whose newest report is older than `cutoff`
    /// (seconds; retention must be on); returns how many. Everything submitted before it is
    /// applied first.
    pub async fn expire(&self, cutoff: u64) -> Result<u64> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .queue
            .send(Op::Expire { cutoff, reply })
            .await
            .map_err(|_| closed())?;
        rx.await.unwrap_or_else(|_| Err(closed()))
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

    /// Whether the writer has applied every report submitted so far (by clients or peers).
    pub fn caught_up(&self) -> bool {
        let submitted = *self
            .inner
            .next_ticket
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.is_applied(Ticket(submitted))
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
        let (records, next) = self.page(node, resume, limit)?;
        let lines = records.into_iter().map(|s| s.report.at_line().clone());
        Ok((lines.collect(), next))
    }

    /// Up to `limit` records from `resume` on (a key this returned, or `None` for the start),
    /// in key order, with where to resume, if anything is left. Each page is read when asked
    /// for: a record that exists throughout a walk is returned once, as it is (or newer) when
    /// the walk began.
    pub fn records_page(
        &self,
        resume: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Stored>, Option<Vec<u8>>)> {
        self.page(Node::ROOT, resume, limit)
    }

    fn page(
        &self,
        node: Node,
        resume: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Stored>, Option<Vec<u8>>)> {
        let mut records = Vec::new();
        let mut next = None;
        self.scan_node(node, resume, &mut |key, value| {
            if records.len() == limit {
                next = Some(key.to_vec());
                return false;
            }
            let client = herd_migrations::client_of_key(key).unwrap_or_default();
            if let Some(stored) = self.inner.shared.decode_logged(client, value) {
                records.push(stored);
            }
            true
        })?;
        Ok((records, next))
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

    /// Applies one submission: admit, read, decide, write at most once.
    ///
    /// Newest-wins looks past the client timestamp only when two are equal, so the stored
    /// record is decoded whole only then. Its head (timestamp and item hash) comes from
    /// `heads` when the client was written recently, else from the engine: a record starts
    /// with both. A report whose AT line was stored before (a flood's second copy, from
    /// another peer) is stale without reading anything.
    fn apply(&self, s: &mut Submission, w: &mut Writer) -> Result<Merged> {
        let rules = &self.admission;
        if s.report.client.len() > rules.max_client_id_bytes {
            return Ok(Merged::Refused(Refusal::ClientIdTooLong));
        }
        if rules.retain_secs > 0
            && s.report.timestamp.secs < w.now_secs.saturating_sub(rules.retain_secs)
        {
            return Ok(Merged::Refused(Refusal::Expired));
        }
        match &w.mode {
            Mode::Broken(why) => {
                return Err(Error::store(
                    &self.path,
                    format!("cannot write until the store is reopened ({why})"),
                ))
            }
            Mode::NoSpace => return Ok(Merged::Refused(Refusal::NoSpace)),
            _ => {}
        }
        let seen = self.seen.get();
        if seen.is_some_and(|seen| seen.holds(s.report.at_line())) {
            return Ok(Merged::Stale);
        }
        let incoming = s.report.timestamp;
        let remembered = w.heads.get(s.key_hash, &s.key);
        let mut stored = match remembered {
            Some(_) => None,
            None => self.engine.get(&s.key)?,
        };
        let head = remembered.or_else(|| stored.as_deref().and_then(Head::decode));
        let replaced = match head {
            Some(head) if head.timestamp > incoming => return Ok(Merged::Stale),
            Some(head) if head.timestamp < incoming => Some(head.item),
            // No record at all: a new client.
            None if stored.is_none() => {
                if self.admission.max_records > 0 && !self.leaves.ready() {
                    // The record limit needs the count, which the build gives: finish it now
                    // (a write into a bucket not built yet is counted by the build, not here).
                    while !self.leaves.ready() {
                        self.build_step(&mut w.mins)?;
                    }
                    tracing::info!(store = %self.path.display(), records = self.leaves.total(), "store fingerprints built");
                }
                if w.refuses_new_clients(self) {
                    return Ok(Merged::Refused(Refusal::NewClient));
                }
                None
            }
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
        w.written();
        self.engine.put(&s.key, std::mem::take(&mut s.value))?;
        self.leaves.replace(s.key_hash, replaced, s.item);
        let bucket = bucket_of(s.key_hash);
        if bucket < self.leaves.built() {
            w.mins[bucket] = w.mins[bucket].min(incoming.secs);
        }
        if let Some(seen) = seen {
            seen.remember(s.report.at_line());
        }
        w.heads.insert(
            s.key_hash,
            std::mem::take(&mut s.key),
            Head {
                timestamp: incoming,
                item: s.item,
            },
        );
        Ok(Merged::Stored)
    }

    /// Expires every record older than `cutoff` (seconds) in the buckets built so far that
    /// may hold one; returns how many.
    fn expire(&self, w: &mut Writer, cutoff: u64) -> Result<u64> {
        let mut expired = 0;
        for bucket in 0..self.leaves.built() {
            if w.mins[bucket] >= cutoff {
                continue;
            }
            let lo = ((bucket as u64) << (64 - fingerprint::BUCKET_DEPTH)).to_be_bytes();
            let hi = (bucket + 1 < BUCKETS)
                .then(|| (((bucket + 1) as u64) << (64 - fingerprint::BUCKET_DEPTH)).to_be_bytes());
            let mut old = Vec::new();
            let mut newest_min = u64::MAX;
            self.engine
                .scan(&lo, hi.as_ref().map(|h| &h[..]), &mut |key, value| {
                    if let (Some(kh), Ok((item, secs))) =
                        (key_hash_of(key), codec::decode_prefix::<(u64, u64)>(value))
                    {
                        if secs < cutoff {
                            old.push((key.to_vec(), kh, item));
                        } else {
                            newest_min = newest_min.min(secs);
                        }
                    }
                    true
                })?;
            for (key, kh, item) in old {
                w.written();
                self.engine.remove(&key)?;
                self.leaves.remove(kh, item);
                w.heads.forget(kh, &key);
                expired += 1;
            }
            w.mins[bucket] = newest_min;
        }
        Ok(expired)
    }

    /// Builds the next run of buckets' fingerprints (and their oldest timestamps) from the
    /// store.
    fn build_step(&self, mins: &mut [u64]) -> Result<()> {
        let first = self.leaves.built();
        let end = (first + BUILD_STEP).min(BUCKETS);
        let mut fps = vec![Fingerprint::default(); end - first];
        let lo = ((first as u64) << (64 - fingerprint::BUCKET_DEPTH)).to_be_bytes();
        let hi = (end < BUCKETS)
            .then(|| ((end as u64) << (64 - fingerprint::BUCKET_DEPTH)).to_be_bytes());
        self.engine
            .scan(&lo, hi.as_ref().map(|h| &h[..]), &mut |key, value| {
                if let (Some(kh), Ok((item, secs))) =
                    (key_hash_of(key), codec::decode_prefix::<(u64, u64)>(value))
                {
                    fps[bucket_of(kh) - first].add(item);
                    let min = &mut mins[bucket_of(kh)];
                    *min = (*min).min(secs);
                }
                true
            })?;
        for (i, fp) in fps.into_iter().enumerate() {
            self.leaves.set_built(first + i, fp);
        }
        Ok(())
    }

    /// Floods a report that won (at once: before the flush and sync its acknowledgement
    /// waits for), and counts what did not.
    fn tell(&self, report: &Report, from: Option<&str>, outcome: &Result<Merged>) {
        match outcome {
            Ok(Merged::Stored) => {
                if let Some(hook) = self.on_stored.get() {
                    hook(report, from);
                }
            }
            Ok(Merged::Stale) => {
                if let Some(stale) = self.on_stale.get() {
                    stale();
                }
            }
            Ok(Merged::Refused(why)) => {
                if let Some(refused) = self.on_refused.get() {
                    refused(*why, from);
                }
            }
            Err(_) => {}
        }
    }

    /// Tells the waiting submitters their outcomes.
    fn answer(&self, done: Vec<Done>) {
        for d in done {
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

    /// sled's flush; timed (metrics) unless a sync follows, which is then what is timed.
    fn timed_flush(&self) -> Result<()> {
        let started = Instant::now();
        let result = self.engine.flush();
        if self.durability != Durability::Flush {
            if let Some(hook) = self.on_flush.get() {
                hook(started.elapsed());
            }
        }
        result
    }

    fn timed_sync(&self) -> Result<()> {
        let started = Instant::now();
        let result = self.engine.sync();
        let took = started.elapsed();
        if let Some(hook) = self.on_flush.get() {
            hook(took);
        }
        // A moving mean over about the last eight syncs.
        let us = took.as_micros().min(u128::from(u32::MAX)) as u64;
        let mean = self.sync_mean_us.load(Ordering::Relaxed);
        self.sync_mean_us
            .store(mean - mean / 8 + us / 8, Ordering::Relaxed);
        result
    }

    /// Syncs (if `sync`) unless an earlier sync failed, then answers `done` and `barriers`;
    /// on the writer or the sync thread.
    fn sync_and_answer(
        &self,
        sync: bool,
        done: Vec<Done>,
        barriers: Vec<oneshot::Sender<Result<()>>>,
    ) -> Result<()> {
        let mut poison = self.sync_poison.lock().unwrap_or_else(|p| p.into_inner());
        let result = match poison.as_ref() {
            Some(why) => Err(Error::store(
                &self.path,
                format!("not durable: an earlier sync failed ({why})"),
            )),
            None if sync => self.timed_sync(),
            None => Ok(()),
        };
        if let (Err(e), None) = (&result, poison.as_ref()) {
            tracing::error!(store = %self.path.display(), error = %e, "store sync failed");
            *poison = Some(e.to_string());
            *self.sync_failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        }
        drop(poison);
        match &result {
            Ok(()) => self.answer(done),
            Err(e) => self.fail(done, e),
        }
        for barrier in barriers {
            let _ = barrier.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(Error::store(&self.path, format!("flush failed: {e}"))),
            });
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
/// Bytes of keys per generation of [`Heads`], at most (client IDs can be long).
const HEAD_BYTES: usize = 4 << 20;

/// The heads of the records the writer wrote last, so a client that reports again and again
/// costs one engine write and no engine read. The writer is the store's only writer, so what
/// it remembers is what the engine holds. Two generations bound it: when the current one is
/// full it becomes the previous one, and the previous one is forgotten.
struct Heads {
    current: std::collections::HashMap<u64, (Vec<u8>, Head)>,
    previous: std::collections::HashMap<u64, (Vec<u8>, Head)>,
    /// Bytes of keys in `current`.
    bytes: usize,
}

impl Heads {
    fn new() -> Heads {
        Heads {
            current: std::collections::HashMap::with_capacity(HEADS),
            previous: std::collections::HashMap::new(),
            bytes: 0,
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
        let full = self.current.len() >= HEADS || self.bytes >= HEAD_BYTES;
        if full && !self.current.contains_key(&key_hash) {
            self.previous = std::mem::replace(
                &mut self.current,
                std::collections::HashMap::with_capacity(HEADS),
            );
            self.bytes = 0;
        }
        self.bytes += key.len();
        // Two clients whose keys share a hash: the newer one is remembered, the other is read.
        if let Some((old, _)) = self.current.insert(key_hash, (key, head)) {
            self.bytes -= old.len();
        }
    }

    /// Forgets `key` (its record was removed).
    fn forget(&mut self, key_hash: u64, key: &[u8]) {
        if self
            .current
            .get(&key_hash)
            .is_some_and(|(k, _)| &k[..] == key)
        {
            if let Some((old, _)) = self.current.remove(&key_hash) {
                self.bytes -= old.len();
            }
        }
        if self
            .previous
            .get(&key_hash)
            .is_some_and(|(k, _)| &k[..] == key)
        {
            self.previous.remove(&key_hash);
        }
    }
}

/// One applied submission, waiting to be completed.
struct Done {
    reply: Option<oneshot::Sender<Result<Merged>>>,
    outcome: Result<Merged>,
}

/// One batch: what it applied, and who waits for its flush.
#[derive(Default)]
struct Batch {
    done: Vec<Done>,
    barriers: Vec<oneshot::Sender<Result<()>>>,
}

/// What the writer knows beside the store: the heads it wrote last, how old each bucket's
/// oldest record may be, and whether it may write.
struct Writer {
    heads: Heads,
    /// Per bucket, a timestamp (seconds) no newer than its oldest record's (`u64::MAX`: empty
    /// as far as known). Retention scans only the buckets that may hold an expired record.
    mins: Vec<u64>,
    mode: Mode,
    /// The clock's seconds when the current batch began.
    now_secs: u64,
    free: Option<u64>,
    store_bytes: Option<u64>,
    free_checked: Option<Instant>,
    sized: Option<Instant>,
    expired_at: Instant,
    reopen_at: Instant,
    backoff: Duration,
    /// Whether anything was written since the last flush of the engine.
    unflushed: bool,
    /// Whether anything was written since the last sync was handed to the syncer, and since
    /// when: a batch that only peers wait for (none do) is not synced on its own, but no later
    /// than [`UNSYNCED_MAX`] after.
    unsynced: Option<Instant>,
    syncer: Syncer,
}

/// Whether the writer may write.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Mode {
    Normal,
    /// Known clients only, and why.
    KnownOnly(&'static str),
    /// Nothing is written: the disk is below the floor.
    NoSpace,
    /// A write or flush failed; the engine is reopened before anything is written again.
    Broken(String),
}

const MIN_REOPEN_BACKOFF: Duration = Duration::from_millis(100);

impl Writer {
    fn new(syncer: Syncer) -> Writer {
        let now = Instant::now();
        Writer {
            heads: Heads::new(),
            mins: vec![u64::MAX; BUCKETS],
            mode: Mode::Normal,
            now_secs: Timestamp::now().secs,
            free: None,
            store_bytes: None,
            free_checked: None,
            sized: None,
            expired_at: now,
            reopen_at: now,
            backoff: MIN_REOPEN_BACKOFF,
            unflushed: false,
            unsynced: None,
            syncer,
        }
    }

    /// Notes a write: it needs a flush, and a sync.
    fn written(&mut self) {
        self.unflushed = true;
        self.unsynced.get_or_insert_with(Instant::now);
    }

    /// Flushes the engine if anything was written since the last flush, then hands the
    /// syncer what waits for durability: with `durability = "flush"` a sync if anything was
    /// written since the last one handed over; the syncer answers in order, so what waits here
    /// without a sync of its own still waits for the syncs before it.
    fn commit(
        &mut self,
        shared: &Shared,
        done: Vec<Done>,
        barriers: Vec<oneshot::Sender<Result<()>>>,
    ) -> Result<()> {
        if self.unflushed {
            if let Err(e) = shared.timed_flush() {
                tracing::error!(store = %shared.path.display(), error = %e, "store flush failed");
                shared.fail(done, &e);
                for barrier in barriers {
                    let _ = barrier.send(Err(Error::store(
                        &shared.path,
                        format!("flush failed: {e}"),
                    )));
                }
                return Err(e);
            }
            self.unflushed = false;
        }
        if shared.durability != Durability::Flush {
            // Nothing is synced, so nothing queued on the syncer can be ahead of this batch:
            // answered here, without a hand-off.
            self.unsynced = None;
            shared.answer(done);
            for barrier in barriers {
                let _ = barrier.send(Ok(()));
            }
            return Ok(());
        }
        let sync = self.unsynced.take().is_some();
        // A quick sync costs less than handing it over; a slow one is worth running beside the
        // writer while it applies the next batch. On the writer only when nothing handed over
        // waits, so that answers keep their order.
        let slow = shared.sync_mean_us.load(Ordering::Relaxed) >= PIPELINE_SYNCS_FROM_US;
        if slow || !self.syncer.idle() {
            self.syncer.send(Commit::Batch {
                sync,
                done,
                barriers,
            });
            return Ok(());
        }
        // A failed sync here is seen by the writer's next check, as one on the sync thread.
        let _ = shared.sync_and_answer(sync, done, barriers);
        Ok(())
    }

    /// Whether a new client is refused now.
    fn refuses_new_clients(&self, shared: &Shared) -> bool {
        let max = shared.admission.max_records;
        matches!(self.mode, Mode::KnownOnly(_)) || (max > 0 && shared.leaves.total() >= max)
    }

    /// Looks at the disk (free space at most every [`FREE_CHECK`], the store's size every
    /// [`SIZE_CHECK`]) and the record count, and sets the mode they call for.
    fn assess(&mut self, shared: &Shared) {
        if matches!(self.mode, Mode::Broken(_)) {
            return;
        }
        let now = Instant::now();
        let rules = &shared.admission;
        let mut sized_now = false;
        if let Some(disk) = &shared.disk {
            if self.free_checked.is_none_or(|t| now - t >= FREE_CHECK) {
                self.free = space::free_bytes(&disk.dir).ok();
                self.free_checked = Some(now);
            }
            if self.sized.is_none_or(|t| now - t >= SIZE_CHECK) {
                self.store_bytes = Some(space::used_bytes(&shared.path));
                self.sized = Some(now);
                sized_now = true;
            }
        }
        let mode = match (self.free, self.store_bytes) {
            (Some(free), _) if rules.min_free > 0 && free < rules.floor => Mode::NoSpace,
            (Some(free), _) if rules.min_free > 0 && free < rules.min_free => {
                Mode::KnownOnly("free space on the store's disk is below min_free_mib")
            }
            (_, Some(bytes)) if rules.max_store_bytes > 0 && bytes >= rules.max_store_bytes => {
                Mode::KnownOnly("the store's files have reached max_store_mib")
            }
            _ if rules.max_records > 0 && shared.leaves.total() >= rules.max_records => {
                Mode::KnownOnly("the store holds max_records clients")
            }
            _ => Mode::Normal,
        };
        self.set_mode(shared, mode);
        if sized_now && self.mode == Mode::Normal {
            if let (Some(disk), Some(free)) = (&shared.disk, self.free) {
                disk.ballast.ensure(free, rules.min_free);
            }
        }
    }

    /// Changes the mode, logging it once per change, and publishes the store's health.
    fn set_mode(&mut self, shared: &Shared, mode: Mode) {
        let store = shared.path.display();
        if mode != self.mode {
            match &mode {
                Mode::Normal => {
                    tracing::info!(store = %store, free_bytes = self.free, "store writable again: taking every report")
                }
                Mode::KnownOnly(why) => {
                    tracing::warn!(store = %store, free_bytes = self.free, store_bytes = self.store_bytes, records = shared.leaves.total(), "store refuses new clients: {why}; known clients still update")
                }
                Mode::NoSpace => {
                    tracing::error!(store = %store, free_bytes = self.free, floor_bytes = shared.admission.floor, "store cannot write: free space on its disk is below a quarter of min_free_mib; every report is answered \"? \" until there is room")
                }
                Mode::Broken(why) => {
                    tracing::error!(store = %store, error = %why, "store cannot write: a write failed; reopening it, answering \"? \" meanwhile")
                }
            }
            if mode == Mode::NoSpace {
                if let Some(disk) = &shared.disk {
                    disk.ballast.release();
                }
            }
            self.mode = mode;
        }
        let (writable, reason) = match &self.mode {
            Mode::Normal => (Writable::Yes, String::new()),
            Mode::KnownOnly(why) => (Writable::KnownClientsOnly, (*why).to_owned()),
            Mode::NoSpace => (
                Writable::No,
                "free space on the store's disk is below a quarter of min_free_mib".to_owned(),
            ),
            Mode::Broken(why) => (
                Writable::No,
                format!("reopening after a failed write: {why}"),
            ),
        };
        let health = Health {
            writable,
            reason,
            free_bytes: self.free,
            store_bytes: self.store_bytes,
        };
        let mut published = shared.health.lock().unwrap_or_else(|p| p.into_inner());
        if *published != health {
            *published = health;
        }
    }

    /// A write or flush failed: what the engine holds in memory may differ from its files, so
    /// nothing is written until it is reopened (at once, then with growing pauses).
    fn broken(&mut self, shared: &Shared, why: &Error) {
        if matches!(self.mode, Mode::Broken(_)) {
            return;
        }
        self.set_mode(shared, Mode::Broken(why.to_string()));
        if let Some(disk) = &shared.disk {
            let free = space::free_bytes(&disk.dir).unwrap_or(0);
            if free < shared.admission.min_free.max(disk.ballast.size()) {
                disk.ballast.release();
            }
        }
        self.backoff = MIN_REOPEN_BACKOFF;
        self.try_reopen(shared);
    }

    /// Takes a sync failure the syncer reported, if any: the store is broken from here on.
    fn check_syncs(&mut self, shared: &Shared) {
        let failed = shared
            .sync_failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(why) = failed {
            self.broken(shared, &Error::store(&shared.path, why));
        }
    }

    /// Reopens the engine; on success everything the writer and the store keep in memory about
    /// its contents is rebuilt from what it holds now, so no decision rests on a write whose
    /// flush failed.
    fn try_reopen(&mut self, shared: &Shared) {
        // No sync may run on the engine being replaced.
        self.syncer.drain();
        match shared.engine.reopen() {
            Ok(()) => {
                // Syncs may succeed again (the sync thread is idle: drained above).
                *shared.sync_poison.lock().unwrap_or_else(|p| p.into_inner()) = None;
                shared
                    .sync_failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                self.heads = Heads::new();
                self.mins.fill(u64::MAX);
                self.unflushed = false;
                self.unsynced = None;
                if let Some(seen) = shared.seen.get() {
                    seen.clear();
                }
                shared.leaves.reset();
                tracing::warn!(store = %shared.path.display(), "store reopened; rebuilding its fingerprints");
                self.free_checked = None;
                self.sized = None;
                self.set_mode(shared, Mode::Normal);
                self.assess(shared);
            }
            Err(e) => {
                tracing::warn!(store = %shared.path.display(), error = %e, retry_ms = self.backoff.as_millis() as u64, "store cannot be reopened yet");
                self.reopen_at = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_REOPEN_BACKOFF);
            }
        }
    }

    /// On a tick: retries a reopen that is due, and expires what retention says (at most every
    /// [`EXPIRE_EVERY`]). Returns whether anything was removed.
    fn on_tick(&mut self, shared: &Shared) -> bool {
        self.check_syncs(shared);
        if matches!(self.mode, Mode::Broken(_)) {
            if Instant::now() >= self.reopen_at {
                self.try_reopen(shared);
            }
            return false;
        }
        let retain = shared.admission.retain_secs;
        if retain == 0 || self.expired_at.elapsed() < EXPIRE_EVERY {
            return false;
        }
        self.expired_at = Instant::now();
        let cutoff = Timestamp::now().secs.saturating_sub(retain);
        self.expire(shared, cutoff).is_ok_and(|n| n > 0)
    }

    /// Expires up to `cutoff`, unless the store cannot write.
    fn expire(&mut self, shared: &Shared, cutoff: u64) -> Result<u64> {
        if shared.admission.retain_secs == 0
            || !matches!(self.mode, Mode::Normal | Mode::KnownOnly(_))
        {
            return Ok(0);
        }
        match shared.expire(self, cutoff) {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(store = %shared.path.display(), expired = n, cutoff, "expired clients past the retention window");
                }
                Ok(n)
            }
            Err(e) => {
                self.broken(shared, &e);
                Err(e)
            }
        }
    }
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
    let mut w = Writer::new(Syncer::start(Arc::clone(&shared)));
    w.assess(&shared);
    // Writes applied since the last flush (for the periodic flush of `durability = "none"`).
    let mut dirty = false;
    let mut closing = None;
    while closing.is_none() {
        let building = shared.leaves.built() < BUCKETS && !matches!(w.mode, Mode::Broken(_));
        let first = if building {
            match rx.try_recv() {
                Ok(op) => Some(op),
                Err(mpsc::error::TryRecvError::Empty) => {
                    if let Err(e) = shared.build_step(&mut w.mins) {
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
        w.now_secs = Timestamp::now().secs;
        w.check_syncs(&shared);
        w.assess(&shared);
        let mut batch = Batch::default();
        let mut last = None;
        let mut tick = false;
        let mut failed = None;
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(op) = next {
            match op {
                Op::Merge(mut s) => {
                    let outcome = shared.apply(&mut s, &mut w);
                    if let Err(e) = &outcome {
                        if !matches!(w.mode, Mode::Broken(_)) {
                            tracing::error!(store = %shared.path.display(), error = %e, "cannot store a report");
                            failed.get_or_insert_with(|| e.to_string());
                        }
                    }
                    last = Some(s.ticket);
                    let Submission {
                        report,
                        from,
                        reply,
                        ..
                    } = *s;
                    // Floods as soon as applied: a peer's copy is replication, not the
                    // acknowledgement, which waits for the sync.
                    shared.tell(&report, from.as_deref(), &outcome);
                    batch.done.push(Done { reply, outcome });
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
                Op::Expire { cutoff, reply } => {
                    let expired = w.expire(&shared, cutoff);
                    dirty |= expired.as_ref().is_ok_and(|n| *n > 0);
                    let _ = reply.send(expired);
                }
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
        if tick && w.on_tick(&shared) {
            dirty = true;
        }
        if let Mode::Broken(why) = &w.mode {
            // Nothing was written: every outcome is already an error; no flush can succeed.
            let why = Error::store(&shared.path, why);
            shared.answer(std::mem::take(&mut batch.done));
            for barrier in batch.barriers {
                let _ = barrier.send(Err(Error::store(
                    &shared.path,
                    format!("not written: {why}"),
                )));
            }
            continue;
        }
        if let Some(why) = failed {
            // A write failed: nothing of this batch is acknowledged, and the engine is reopened.
            let e = Error::store(&shared.path, why);
            shared.fail(std::mem::take(&mut batch.done), &e);
            for barrier in batch.barriers {
                let _ = barrier.send(Err(Error::store(&shared.path, format!("not written: {e}"))));
            }
            w.broken(&shared, &e);
            continue;
        }
        if periodic {
            shared.answer(std::mem::take(&mut batch.done));
            let due = tick && dirty && shared.flush_on_tick;
            if due || !batch.barriers.is_empty() || closing.is_some() {
                dirty = false;
                w.unflushed = false;
                w.unsynced = None;
                if let Err(e) = finish(&shared, batch) {
                    w.broken(&shared, &e);
                }
            }
            continue;
        }
        dirty = false;
        let waited_for = batch.done.iter().any(|d| d.reply.is_some()) || !batch.barriers.is_empty();
        let overdue = w
            .unsynced
            .is_some_and(|since| since.elapsed() >= UNSYNCED_MAX);
        if !waited_for && !overdue && closing.is_none() {
            // Only peers' reports (or reads): their flush and sync come with the next batch
            // someone waits for, or once they are UNSYNCED_MAX old.
            shared.answer(batch.done);
            continue;
        }
        if let Err(e) = w.commit(&shared, batch.done, batch.barriers) {
            w.broken(&shared, &e);
        }
    }
    // Closing (or every handle dropped): one last flush and sync cover everything applied.
    if !matches!(w.mode, Mode::Broken(_)) {
        w.unflushed = true;
        w.unsynced.get_or_insert_with(Instant::now);
        let _ = w.commit(&shared, Vec::new(), Vec::new());
    }
    w.syncer.stop();
    if let Some(tx) = closing {
        let _ = tx.send(());
    }
}

/// The longest a written report that no acknowledgement waits for (a peer's copy, an expiry)
/// stays unsynced, give or take a writer tick.
const UNSYNCED_MAX: Duration = Duration::from_millis(100);

/// What the writer hands the syncer, in order.
enum Commit {
    /// Sync (if `sync`), then answer: what waits for everything applied before it to be
    /// durable.
    Batch {
        sync: bool,
        done: Vec<Done>,
        barriers: Vec<oneshot::Sender<Result<()>>>,
    },
    /// Tells the sender once everything before it is done.
    Drain(std::sync::mpsc::Sender<()>),
}

/// The sync thread: syncs beside the writer, which goes on applying and flooding the next
/// batch meanwhile (pipelined group commit), and answers each batch once a sync that began
/// after its flush has completed. Commits queued while one sync ran share the next one.
///
/// Used while syncs are slow (a recent mean of [`PIPELINE_SYNCS_FROM_US`] or more): a quick
/// sync runs on the writer, since handing it over costs more than it saves. After a failed
/// sync every later commit fails too, on either thread, until the writer has reopened the
/// engine.
struct Syncer {
    tx: Option<std::sync::mpsc::Sender<Commit>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Batches handed over and not yet answered.
    pending: Arc<AtomicUsize>,
}

/// The mean sync time from which syncs run beside the writer: below it, a hand-off to the sync
/// thread (a wake-up each way) costs more than the overlap saves.
const PIPELINE_SYNCS_FROM_US: u64 = 200;

impl Syncer {
    fn start(shared: Arc<Shared>) -> Syncer {
        let (tx, rx) = std::sync::mpsc::channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let left = Arc::clone(&pending);
        let thread = std::thread::Builder::new()
            .name("herd-store-sync".into())
            .spawn(move || run_syncer(&shared, &rx, &left))
            .expect("start the store sync thread");
        Syncer {
            tx: Some(tx),
            thread: Some(thread),
            pending,
        }
    }

    fn send(&self, commit: Commit) {
        if let Some(tx) = &self.tx {
            if matches!(commit, Commit::Batch { .. }) {
                self.pending.fetch_add(1, Ordering::AcqRel);
            }
            let _ = tx.send(commit);
        }
    }

    /// Whether every batch handed over has been answered.
    fn idle(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }

    /// Waits until everything handed over is done.
    fn drain(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.send(Commit::Drain(tx));
        let _ = rx.recv();
    }

    /// Finishes what was handed over and stops the thread.
    fn stop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run_syncer(shared: &Shared, rx: &std::sync::mpsc::Receiver<Commit>, pending: &AtomicUsize) {
    let mut next = None;
    loop {
        let Some(first) = next.take().or_else(|| rx.recv().ok()) else {
            return;
        };
        let (mut sync, mut done, mut barriers) = match first {
            Commit::Batch {
                sync,
                done,
                barriers,
            } => (sync, done, barriers),
            Commit::Drain(tx) => {
                let _ = tx.send(());
                continue;
            }
        };
        let mut batches = 1;
        // Everything queued meanwhile shares this sync.
        while let Ok(more) = rx.try_recv() {
            match more {
                Commit::Batch {
                    sync: s,
                    done: d,
                    barriers: b,
                } => {
                    sync |= s;
                    done.extend(d);
                    barriers.extend(b);
                    batches += 1;
                }
                marker => {
                    next = Some(marker);
                    break;
                }
            }
        }
        let _ = shared.sync_and_answer(sync, done, barriers);
        pending.fetch_sub(batches, Ordering::AcqRel);
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

/// Flushes and syncs on the writer, then answers the batch's barriers (`durability =
/// "none"`, whose answers do not wait).
fn finish(shared: &Shared, batch: Batch) -> Result<()> {
    let result = shared.timed_flush().and_then(|()| shared.timed_sync());
    if let Err(e) = &result {
        tracing::error!(store = %shared.path.display(), error = %e, "store flush failed");
    }
    match &result {
        Ok(()) => shared.answer(batch.done),
        Err(e) => shared.fail(batch.done, e),
    }
    for barrier in batch.barriers {
        let _ = barrier.send(match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::store(&shared.path, format!("flush failed: {e}"))),
        });
    }
    result
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
