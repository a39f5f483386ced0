//! The durable store: one record per client, in sled, newest report wins.
//!
//! # What it promises
//!
//! - [`Store::merge`] is the only way a report enters the store. It applies
//!   [`herd::decide`](crate::herd::decide) under one lock, so concurrent IAMATs, floods and
//!   syncs for the same client cannot interleave; a report that does not win costs no write.
//! - A write is in sled's memory when `merge` returns, and on disk once the
//!   [`Commit`] it returned has been awaited with [`Store::durable`]. Concurrent writers
//!   share one flush (group commit): whoever waits while a flush is running is covered by the
//!   next one, which starts as soon as the current one ends.
//! - Every record carries a change sequence number; [`Store::changes_after`] lists the
//!   records changed after a number, which is what anti-entropy sends a peer. Sequence numbers
//!   never repeat, even across a crash that lost unflushed writes: the high 24 bits are a boot
//!   counter, flushed before the node writes anything.
//! - A store directory is locked (`herd.lock`) while open, so two processes never share it.
//!
//! The byte layout is in the `herd-migrations` crate, next to every older format.
//!
//! # What it does not do
//!
//! It decides nothing about forwarding and knows nothing of peers beyond their cursors.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fs2::FileExt;
use herd_migrations::{codec, Record, CHANGES_TREE, CURSORS_TREE, EPOCH_KEY};
use tokio::sync::{watch, Notify};

use crate::error::{Error, Result};
use crate::herd::{decide, Decision, Origin};
use crate::protocol::location::Location;
use crate::protocol::number::{TimeDiff, Timestamp};
use crate::report::Report;

const BOOT_KEY: &[u8] = b"boot";
const SEQ_BOOT_SHIFT: u32 = 40;

/// A stored client record: the winning report plus what this node knows about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub report: Report,
    /// The receiving server's clock when the report arrived.
    pub received: Timestamp,
    /// The change sequence number of the write that stored it here.
    pub seq: u64,
    /// The peer this node learned it from, if any, and that peer's incarnation then.
    pub learned_from: Option<String>,
    pub learned_incarnation: u64,
}

impl Stored {
    /// Where this node learned the record, as the herd logic takes it.
    pub fn origin(&self) -> Option<Origin<'_>> {
        self.learned_from.as_deref().map(|peer| Origin {
            peer,
            incarnation: self.learned_incarnation,
        })
    }
}

/// What [`Store::merge`] did with a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// The report won and was written; await the commit before acknowledging it.
    Stored(Commit),
    /// The stored record is as new or newer: nothing was written.
    Stale,
}

/// A ticket for one write: [`Store::durable`] waits until a flush covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit(u64);

/// The store of one node. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: sled::Db,
    records: sled::Tree,
    changes: sled::Tree,
    cursors: sled::Tree,
    epoch: u128,
    incarnation: u64,
    /// Held for the read-decide-write of one merge; never across an `.await`.
    next_seq: Mutex<u64>,
    /// Writes made so far, numbered; a [`Commit`] names one.
    written: AtomicU64,
    /// The highest write number known to be on disk.
    flushed: watch::Sender<u64>,
    /// Wakes the committer when someone waits for durability.
    wanted: Notify,
    /// When the merge now writing started (milliseconds on [`Inner::clock`]), or 0.
    writing_since: AtomicU64,
    clock: std::time::Instant,
    _lock: File,
}

impl Store {
    /// Opens (or creates) the store under `dir`, upgrading an older format in place.
    pub fn open(dir: &Path, cache_mib: u64) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create state dir {}", dir.display()), e))?;
        let lock = lock_dir(dir)?;
        let path = dir.join("store");
        let db = open_sled(&path, cache_mib)?;
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
            Err(e) => return Err(Error::store(&path, e)),
        }
        let sled_err = |e: sled::Error| Error::store(&path, e);
        let records = db
            .open_tree(herd_migrations::records_tree(herd_migrations::CURRENT))
            .map_err(sled_err)?;
        let changes = db.open_tree(CHANGES_TREE).map_err(sled_err)?;
        let cursors = db.open_tree(CURSORS_TREE).map_err(sled_err)?;
        let epoch = match db.get(EPOCH_KEY).map_err(sled_err)? {
            Some(e) if e.len() == 16 => {
                u128::from_be_bytes(e.as_ref().try_into().expect("16 bytes"))
            }
            _ => {
                let fresh: u128 = rand::random::<u128>().max(1);
                db.insert(EPOCH_KEY, &fresh.to_be_bytes())
                    .map_err(sled_err)?;
                fresh
            }
        };
        // A new boot number, on disk before any write of this boot can be.
        let boot = match db.get(BOOT_KEY).map_err(sled_err)? {
            Some(b) if b.len() == 8 => {
                u64::from_be_bytes(b.as_ref().try_into().expect("8 bytes")) + 1
            }
            _ => 1,
        };
        db.insert(BOOT_KEY, &boot.to_be_bytes()).map_err(sled_err)?;
        db.flush().map_err(sled_err)?;
        let (flushed, _) = watch::channel(0);
        let store = Store {
            inner: Arc::new(Inner {
                path,
                db,
                records,
                changes,
                cursors,
                epoch,
                incarnation: rand::random::<u64>().max(1),
                next_seq: Mutex::new(boot << SEQ_BOOT_SHIFT),
                written: AtomicU64::new(0),
                flushed,
                wanted: Notify::new(),
                writing_since: AtomicU64::new(0),
                clock: std::time::Instant::now(),
                _lock: lock,
            }),
        };
        spawn_stall_breaker(Arc::downgrade(&store.inner));
        Ok(store)
    }

    /// Where the sled database lives.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// This store's history: drawn when it was created.
    pub fn epoch(&self) -> u128 {
        self.inner.epoch
    }

    /// A random number drawn when this store was opened: it names this run of the node.
    pub fn incarnation(&self) -> u64 {
        self.inner.incarnation
    }

    /// The number of client records. This walks the whole store (sled keeps no count), so it
    /// is for tools and tests, not for a running node's hot paths.
    pub fn len(&self) -> usize {
        self.inner.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.records.is_empty()
    }

    /// The stored record of `client`. A record that cannot be decoded is logged and treated as
    /// absent, so a newer report (or a peer's copy) replaces it.
    pub fn get(&self, client: &[u8]) -> Result<Option<Stored>> {
        let Some(value) = self
            .inner
            .records
            .get(client)
            .map_err(|e| self.sled_error(e))?
        else {
            return Ok(None);
        };
        Ok(self.decode_logged(client, &value))
    }

    /// Offers a report; it is written only if it wins against the stored record.
    pub fn merge(&self, report: &Report, learned_from: Option<Origin<'_>>) -> Result<Merged> {
        let inner = &self.inner;
        let mut next_seq = inner.next_seq.lock().unwrap_or_else(|p| p.into_inner());
        let _writing = WritingGuard::enter(inner);
        let current = self.get(&report.client)?;
        if decide(current.as_ref().map(|s| &s.report), report) == Decision::Keep {
            return Ok(Merged::Stale);
        }
        let seq = *next_seq;
        *next_seq += 1;
        let record = record_of(report, seq, learned_from);
        let value = codec::encode(&record).map_err(|e| Error::store(&inner.path, e))?;
        // Three writes in an order that is safe to cut short (sled recovers a prefix of its
        // log): the new change-log entry first, so a record is never without one; then the
        // record; then the superseded entry, which until removed only makes a sync send the
        // current record twice. Batches are avoided on purpose: they switch on sled's global
        // concurrency control, which stalls under this workload.
        let sled_err = |e| self.sled_error(e);
        inner
            .changes
            .insert(seq.to_be_bytes(), &report.client[..])
            .map_err(sled_err)?;
        inner
            .records
            .insert(&report.client[..], value)
            .map_err(sled_err)?;
        if let Some(old) = &current {
            inner
                .changes
                .remove(old.seq.to_be_bytes())
                .map_err(sled_err)?;
        }
        let ticket = inner.written.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Merged::Stored(Commit(ticket)))
    }

    /// A ticket covering every write made so far. A report that lost against a stored one
    /// awaits it before being answered: the record it lost against may not be durable yet.
    pub fn pending(&self) -> Commit {
        Commit(self.inner.written.load(Ordering::SeqCst))
    }

    /// Waits until `commit` is on disk. Concurrent callers share flushes.
    pub async fn durable(&self, commit: Commit) -> Result<()> {
        let mut flushed = self.inner.flushed.subscribe();
        loop {
            if *flushed.borrow_and_update() >= commit.0 {
                return Ok(());
            }
            self.inner.wanted.notify_one();
            if flushed.changed().await.is_err() {
                return Err(Error::store(
                    &self.inner.path,
                    "store closed before the write was flushed",
                ));
            }
        }
    }

    /// The group committer: flushes whenever someone waits, covering every write made before
    /// the flush began. Runs until the store's last handle is dropped or `stop` fires. With
    /// `power_safe`, each flush is followed by syncing the store's files
    /// ([`StoreFiles::sync`](crate::fsync::StoreFiles::sync), `durability = "flush"`);
    /// without, sled's flush alone answers (`"os"`).
    pub async fn run_committer(self, power_safe: bool, stop: tokio_util::sync::CancellationToken) {
        let files = Arc::new(Mutex::new(crate::fsync::StoreFiles::new(&self.inner.path)));
        loop {
            tokio::select! {
                _ = self.inner.wanted.notified() => {}
                _ = stop.cancelled() => return,
            }
            let target = self.inner.written.load(Ordering::SeqCst);
            if *self.inner.flushed.borrow() >= target {
                continue;
            }
            let store = self.clone();
            let files = Arc::clone(&files);
            let flushed = tokio::task::spawn_blocking(move || {
                store.inner.db.flush().map_err(|e| e.to_string())?;
                if power_safe {
                    let mut files = files.lock().unwrap_or_else(|p| p.into_inner());
                    files.sync().map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            });
            match flushed.await {
                Ok(Ok(())) => {
                    self.inner.flushed.send_replace(target);
                }
                Ok(Err(e)) => {
                    tracing::error!(store = %self.inner.path.display(), error = %e, "store flush failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    self.inner.wanted.notify_one();
                }
                Err(e) => tracing::error!(error = %e, "store flush task failed"),
            }
        }
    }

    /// Flushes in the background every `every`, for `durability = "none"`.
    pub async fn run_periodic_flush(
        self,
        every: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let target = self.inner.written.load(Ordering::SeqCst);
            let store = self.clone();
            if let Ok(Ok(_)) = tokio::task::spawn_blocking(move || store.inner.db.flush()).await {
                self.inner.flushed.send_replace(target);
            }
        }
    }

    /// Flushes everything now and syncs the store's files (shutdown).
    pub fn flush(&self) -> Result<()> {
        self.inner.db.flush().map_err(|e| self.sled_error(e))?;
        crate::fsync::sync_store_files(&self.inner.path).map_err(|e| {
            Error::io(
                format!("sync store files in {}", self.inner.path.display()),
                e,
            )
        })?;
        Ok(())
    }

    /// Up to `limit` records changed after sequence number `after`, in sequence order.
    pub fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<Stored>> {
        let mut out = Vec::with_capacity(limit.min(1024));
        let start = after.saturating_add(1).to_be_bytes();
        for entry in self.inner.changes.range(start..) {
            let (_, client) = entry.map_err(|e| self.sled_error(e))?;
            if let Some(stored) = self.get(&client)? {
                out.push(stored);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The last sequence number written, or 0.
    pub fn last_seq(&self) -> Result<u64> {
        Ok(
            match self.inner.changes.last().map_err(|e| self.sled_error(e))? {
                Some((k, _)) => u64::from_be_bytes(k.as_ref().try_into().unwrap_or_default()),
                None => 0,
            },
        )
    }

    /// How far this node has applied `peer`'s change log: (its epoch, its sequence number).
    pub fn cursor(&self, peer: &str) -> Result<Option<(u128, u64)>> {
        let Some(v) = self
            .inner
            .cursors
            .get(peer)
            .map_err(|e| self.sled_error(e))?
        else {
            return Ok(None);
        };
        if v.len() != 24 {
            tracing::warn!(peer, "ignoring a malformed sync cursor");
            return Ok(None);
        }
        let epoch = u128::from_be_bytes(v[..16].try_into().expect("16 bytes"));
        let seq = u64::from_be_bytes(v[16..].try_into().expect("8 bytes"));
        Ok(Some((epoch, seq)))
    }

    /// Records that every change of `peer`'s store `epoch` up to `seq` has been applied here.
    pub fn set_cursor(&self, peer: &str, epoch: u128, seq: u64) -> Result<()> {
        let mut v = [0u8; 24];
        v[..16].copy_from_slice(&epoch.to_be_bytes());
        v[16..].copy_from_slice(&seq.to_be_bytes());
        self.inner
            .cursors
            .insert(peer, &v[..])
            .map_err(|e| self.sled_error(e))?;
        Ok(())
    }

    /// Every record, in client ID order (for inspection and summaries).
    pub fn iter(&self) -> impl Iterator<Item = Result<(Bytes, Stored)>> + '_ {
        self.inner
            .records
            .iter()
            .filter_map(move |entry| match entry {
                Err(e) => Some(Err(self.sled_error(e))),
                Ok((client, value)) => self
                    .decode_logged(&client, &value)
                    .map(|s| Ok((Bytes::copy_from_slice(&client), s))),
            })
    }

    fn decode_logged(&self, client: &[u8], value: &[u8]) -> Option<Stored> {
        match decode_record(client, value) {
            Ok(s) => Some(s),
            Err(why) => {
                tracing::warn!(store = %self.inner.path.display(), client = %crate::logging::Escaped(client), why, "skipping an undecodable record");
                None
            }
        }
    }

    fn sled_error(&self, e: sled::Error) -> Error {
        Error::store(&self.inner.path, e)
    }
}

/// Marks a merge as in progress, for the stall breaker.
struct WritingGuard<'a>(&'a Inner);

impl<'a> WritingGuard<'a> {
    fn enter(inner: &'a Inner) -> WritingGuard<'a> {
        let now = inner.clock.elapsed().as_millis() as u64;
        inner.writing_since.store(now.max(1), Ordering::SeqCst);
        WritingGuard(inner)
    }
}

impl Drop for WritingGuard<'_> {
    fn drop(&mut self) {
        self.0.writing_since.store(0, Ordering::SeqCst);
    }
}

/// How long a single merge may sit inside sled before the stall breaker acts.
const STALL: std::time::Duration = std::time::Duration::from_millis(250);

/// Works around a deadlock in sled 0.34 (upstream issue #1412): under sustained overwrites a
/// writer can hold sled's segment lock while it waits for a file truncation that is queued
/// on sled's I/O thread pool, whose threads are all blocked on that same lock. The pool
/// only grows when its queue is deeper than seven, so nothing ever runs the truncation.
///
/// This thread watches for a merge that has been inside sled for longer than [`STALL`] and
/// then queues a few flushes on that pool (`flush_async`, polled once), which makes sled start
/// another I/O thread; that thread takes the truncation first (the queue is FIFO) and the
/// writer proceeds. The flushes themselves are harmless. It exits when the store is dropped.
fn spawn_stall_breaker(inner: std::sync::Weak<Inner>) {
    let spawned = std::thread::Builder::new().name("herd-store-watch".into()).spawn(move || {
        let mut last_poke = 0u64;
        loop {
        std::thread::sleep(STALL / 2);
        let Some(inner) = inner.upgrade() else { return };
        let since = inner.writing_since.load(Ordering::SeqCst);
        let now = inner.clock.elapsed().as_millis() as u64;
        let stalled = since != 0 && now.saturating_sub(since) >= STALL.as_millis() as u64;
        // Each poke leaves a few flushes queued; one per stall episode is enough.
        if stalled && now.saturating_sub(last_poke) >= 4 * STALL.as_millis() as u64 {
            last_poke = now;
            tracing::warn!(store = %inner.path.display(), stalled_ms = now - since, "store write stalled inside sled; waking its I/O pool");
            for _ in 0..8 {
                use futures::FutureExt;
                let _ = inner.db.flush_async().now_or_never();
            }
        }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the store watchdog");
    }
}

/// The stored form of a report written under change number `seq`.
pub fn record_of(report: &Report, seq: u64, learned_from: Option<Origin<'_>>) -> Record {
    let received = report.received().unwrap_or_default();
    Record {
        server: report.server.clone(),
        time_diff_nanos: report.time_diff.0,
        location: report.location_text.to_vec(),
        latitude: report.location.latitude,
        longitude: report.location.longitude,
        timestamp: report.timestamp_text.to_vec(),
        timestamp_secs: report.timestamp.secs,
        timestamp_nanos: report.timestamp.nanos,
        received_secs: received.secs,
        received_nanos: received.nanos,
        at: report.at_line(),
        seq,
        learned_from: learned_from.map(|o| o.peer.to_owned()),
        learned_incarnation: learned_from.map_or(0, |o| o.incarnation),
    }
}

/// Rebuilds a stored record; a record whose fields disagree with each other is corrupt.
pub fn decode_record(client: &[u8], value: &[u8]) -> std::result::Result<Stored, String> {
    let r: Record = codec::decode(value).map_err(|e| e.to_string())?;
    let report = Report {
        server: r.server,
        time_diff: TimeDiff(r.time_diff_nanos),
        client: Bytes::copy_from_slice(client),
        location: Location::parse(&r.location).ok_or("bad location")?,
        location_text: Bytes::from(r.location),
        timestamp: Timestamp::parse(&r.timestamp).ok_or("bad timestamp")?,
        timestamp_text: Bytes::from(r.timestamp),
    };
    if report.at_line() != r.at {
        return Err("AT line does not match the record's fields".into());
    }
    Ok(Stored {
        report,
        received: Timestamp {
            secs: r.received_secs,
            nanos: r.received_nanos,
        },
        seq: r.seq,
        learned_from: r.learned_from,
        learned_incarnation: r.learned_incarnation,
    })
}

/// Takes the directory's lock file, or says who holds it.
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("herd.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("open lock file {}", path.display()), e))?;
    file.try_lock_exclusive().map_err(|_| Error::StoreLocked {
        path: dir.to_owned(),
    })?;
    Ok(file)
}

/// Opens sled; a store sled cannot open (or panics on) is moved aside and a fresh one made,
/// so a corrupt store never makes the node crash in a loop. The peers refill it.
fn open_sled(path: &Path, cache_mib: u64) -> Result<sled::Db> {
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(cache_mib * 1024 * 1024);
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
    let why = match attempt {
        Ok(Ok(db)) => match db.get(herd_migrations::FORMAT_KEY) {
            Ok(_) => return Ok(db),
            Err(e) => e.to_string(),
        },
        Ok(Err(e)) => e.to_string(),
        Err(_) => "sled panicked while recovering it".to_owned(),
    };
    let stamp = Timestamp::now();
    let aside = path.with_file_name(format!("store.corrupt-{}.{:09}", stamp.secs, stamp.nanos));
    std::fs::rename(path, &aside)
        .map_err(|e| Error::io(format!("move corrupt store {} aside", path.display()), e))?;
    tracing::error!(store = %path.display(), moved_to = %aside.display(), error = %why, "store could not be opened; moved aside, starting empty");
    eprintln!(
        "herd: store {} could not be opened ({why}); moved to {}; starting empty",
        path.display(),
        aside.display()
    );
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_mib * 1024 * 1024)
        .open()
        .map_err(|e| Error::store(path, e))
}

/// Opens a stopped node's store for reading, without taking part in the herd: no boot
/// counter, no upgrade. Fails clearly if a node holds it.
pub fn open_for_inspection(
    dir: &Path,
) -> Result<Vec<(Bytes, std::result::Result<Stored, String>)>> {
    let _lock = lock_dir_existing(dir)?;
    let path = dir.join("store");
    if !path.exists() {
        return Err(Error::store(&path, "no store here"));
    }
    // sled writes to a database it opens (a snapshot, at least), so read a scratch copy: the
    // store itself, perhaps one kept aside for inspection, stays byte for byte as it was.
    let scratch = Scratch::copy_of(&path)?;
    let db = sled::Config::new()
        .path(&scratch.0)
        .open()
        .map_err(|e| Error::store(&path, e))?;
    let version = herd_migrations::version(&db).map_err(|e| Error::store(&path, e))?;
    let version = version.unwrap_or(herd_migrations::CURRENT);
    if version != herd_migrations::CURRENT {
        return Err(Error::store(
            &path,
            format!(
                "store format {version}; this build reads {} (start a node on it to upgrade)",
                herd_migrations::CURRENT
            ),
        ));
    }
    let tree = db
        .open_tree(herd_migrations::records_tree(version))
        .map_err(|e| Error::store(&path, e))?;
    let mut out = Vec::new();
    for entry in tree.iter() {
        let (client, value) = entry.map_err(|e| Error::store(&path, e))?;
        out.push((
            Bytes::copy_from_slice(&client),
            decode_record(&client, &value),
        ));
    }
    Ok(out)
}

/// A temporary copy of a store directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn copy_of(store: &Path) -> Result<Scratch> {
        let stamp = Timestamp::now();
        let name = format!(
            "herd-inspect-{}-{}{:09}",
            std::process::id(),
            stamp.secs,
            stamp.nanos
        );
        let scratch = Scratch(std::env::temp_dir().join(name));
        copy_tree(store, &scratch.0).map_err(|e| {
            Error::io(
                format!("copy {} to {}", store.display(), scratch.0.display()),
                e,
            )
        })?;
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn lock_dir_existing(dir: &Path) -> Result<File> {
    if !dir.is_dir() {
        return Err(Error::store(dir, "no such state directory"));
    }
    lock_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(line: &str) -> Report {
        Report::from_line(line)
    }

    #[tokio::test]
    async fn newest_wins_and_stale_costs_no_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(store.clone().run_committer(true, stop.clone()));
        let old = report("AT A +0.100000000 kiwi +1+2 100");
        let new = report("AT B +0.100000000 kiwi +1+2 200");
        let Merged::Stored(c) = store.merge(&new, None).unwrap() else {
            panic!()
        };
        store.durable(c).await.unwrap();
        let seq = store.last_seq().unwrap();
        let b = Some(Origin {
            peer: "B",
            incarnation: 1,
        });
        assert_eq!(store.merge(&old, b).unwrap(), Merged::Stale);
        assert_eq!(store.merge(&new, b).unwrap(), Merged::Stale);
        assert_eq!(
            store.last_seq().unwrap(),
            seq,
            "a stale report must not write"
        );
        assert_eq!(store.get(b"kiwi").unwrap().unwrap().report, new);
        stop.cancel();
    }

    #[test]
    fn the_change_log_holds_one_entry_per_client() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        store
            .merge(&report("AT A +0.100000000 a +1+2 1"), None)
            .unwrap();
        store
            .merge(&report("AT A +0.100000000 b +1+2 1"), None)
            .unwrap();
        let first = store.last_seq().unwrap();
        store
            .merge(&report("AT A +0.100000000 a +1+2 2"), None)
            .unwrap();
        let all = store.changes_after(0, 100).unwrap();
        let clients: Vec<_> = all.iter().map(|s| s.report.client.clone()).collect();
        assert_eq!(
            clients,
            [Bytes::from_static(b"b"), Bytes::from_static(b"a")]
        );
        assert_eq!(store.changes_after(first, 100).unwrap().len(), 1);
    }

    #[test]
    fn sequence_numbers_never_repeat_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let store = Store::open(dir.path(), 8).unwrap();
            store
                .merge(&report("AT A +0.100000000 a +1+2 1"), None)
                .unwrap();
            store.last_seq().unwrap()
        };
        let store = Store::open(dir.path(), 8).unwrap();
        store
            .merge(&report("AT A +0.100000000 b +1+2 1"), None)
            .unwrap();
        assert!(store.last_seq().unwrap() > before);
    }

    #[test]
    fn a_second_open_is_refused_while_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _store = Store::open(dir.path(), 8).unwrap();
        assert!(matches!(
            Store::open(dir.path(), 8),
            Err(Error::StoreLocked { .. })
        ));
        assert!(matches!(
            open_for_inspection(dir.path()),
            Err(Error::StoreLocked { .. })
        ));
    }

    #[test]
    fn cursors_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        assert_eq!(store.cursor("Bona").unwrap(), None);
        store.set_cursor("Bona", 7, 9).unwrap();
        assert_eq!(store.cursor("Bona").unwrap(), Some((7, 9)));
    }
}
