//! The storage seam: the few operations the store needs from an ordered key-value engine.
//!
//! Production runs on [`SledEngine`]; tests run the same store code on [`MemEngine`], which
//! can lose everything not flushed (a crash), fail a flush, or stall a call, on command. The
//! store's policy (newest wins, fingerprints for anti-entropy) lives above this trait and
//! never sees which engine it has.
//!
//! Every call is made through [`Watched`], which notes how long each call has been inside the
//! engine; a watchdog thread reports any call stuck longer than [`STALL`] and asks the engine
//! to [`Engine::unstall`] itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A stored value, shared without copying.
pub type Value = sled::IVec;

/// An ordered map of byte strings with an explicit flush.
pub trait Engine: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Value>>;
    fn put(&self, key: &[u8], value: Vec<u8>) -> Result<()>;
    /// Calls `visit` on every entry with `lo <= key < hi` (no `hi`: to the end), in key order,
    /// until it returns `false`.
    fn scan(
        &self,
        lo: &[u8],
        hi: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &Value) -> bool,
    ) -> Result<()>;
    /// Removes `key`, if present.
    fn remove(&self, key: &[u8]) -> Result<()>;
    /// Makes every `put` that returned before this call survive a crash of the process (sled:
    /// written to its files). Called only by the writer, between writes.
    fn flush(&self) -> Result<()>;
    /// Makes everything flushed before this call survive a power cut (sled: `fdatasync` of
    /// its files, `fsync` of their directories). May run on another thread beside writes and
    /// flushes.
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    /// Forgets everything not made durable and reads the store again from what is: after a
    /// write or flush failed, what the engine holds in memory is no longer what its files hold.
    /// Until it succeeds, every call fails.
    fn reopen(&self) -> Result<()>;
    /// Called by the watchdog when a call has been stuck for [`STALL`].
    fn unstall(&self) {}
}

/// sled's error as the herd's: an I/O error is told apart from anything else (corruption, a
/// bug), because only the latter may ever justify moving a store aside.
pub fn sled_error(path: &Path, doing: &str, e: sled::Error) -> Error {
    match e {
        sled::Error::Io(source) => Error::StoreIo {
            path: path.to_owned(),
            doing: doing.to_owned(),
            source,
        },
        other => Error::store(path, format!("{doing}: {other}")),
    }
}

/// Opens sled's database and the records tree, for [`SledEngine::reopen`].
pub type Opener = Box<dyn Fn() -> Result<(sled::Db, sled::Tree)> + Send + Sync>;

/// The production engine: one sled tree, flushed through its database.
pub struct SledEngine {
    path: PathBuf,
    /// `None` while a reopen has not succeeded.
    open: RwLock<Option<Sled>>,
    opener: Opener,
    /// With `durability = "flush"`: sled's files, synced after every flush.
    files: Option<Mutex<crate::fsync::StoreFiles>>,
}

struct Sled {
    db: sled::Db,
    tree: sled::Tree,
}

impl SledEngine {
    /// The engine over an open database; `opener` opens it again after a failure.
    pub fn new(path: PathBuf, db: sled::Db, tree: sled::Tree, opener: Opener) -> SledEngine {
        SledEngine {
            path,
            open: RwLock::new(Some(Sled { db, tree })),
            opener,
            files: None,
        }
    }

    /// Makes every flush also `fdatasync` sled's files and `fsync` their directories, so a
    /// flushed write survives a power cut, not only a process crash (`durability = "flush"`;
    /// see `src/fsync.rs`).
    pub fn power_safe(mut self) -> SledEngine {
        self.files = Some(Mutex::new(crate::fsync::StoreFiles::new(&self.path)));
        self
    }

    fn with<T>(&self, call: impl FnOnce(&Sled) -> Result<T>) -> Result<T> {
        let open = self.open.read().unwrap_or_else(|p| p.into_inner());
        match open.as_ref() {
            Some(sled) => call(sled),
            None => Err(Error::store(
                &self.path,
                "not open: reopening after a failed write",
            )),
        }
    }
}

impl Engine for SledEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        self.with(|s| {
            s.tree
                .get(key)
                .map_err(|e| sled_error(&self.path, "read", e))
        })
    }

    fn put(&self, key: &[u8], value: Vec<u8>) -> Result<()> {
        self.with(|s| {
            s.tree
                .insert(key, value)
                .map(drop)
                .map_err(|e| sled_error(&self.path, "write", e))
        })
    }

    fn remove(&self, key: &[u8]) -> Result<()> {
        self.with(|s| {
            s.tree
                .remove(key)
                .map(drop)
                .map_err(|e| sled_error(&self.path, "remove", e))
        })
    }

    fn scan(
        &self,
        lo: &[u8],
        hi: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &Value) -> bool,
    ) -> Result<()> {
        // A clone of the tree, so a long scan does not hold off a reopen's lock.
        let tree = self.with(|s| Ok(s.tree.clone()))?;
        let range = match hi {
            Some(hi) => tree.range(lo..hi),
            None => tree.range(lo..),
        };
        for entry in range {
            let (k, v) = entry.map_err(|e| sled_error(&self.path, "scan", e))?;
            if !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.with(|s| {
            s.db.flush()
                .map_err(|e| sled_error(&self.path, "flush", e))
                .map(drop)
        })
    }

    fn sync(&self) -> Result<()> {
        if let Some(files) = &self.files {
            files
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .sync()
                .map_err(|e| {
                    Error::io(
                        format!("sync the store's files in {}", self.path.display()),
                        e,
                    )
                })?;
        }
        Ok(())
    }

    /// sled 0.34 refuses every write for good once one write to its log failed (its global
    /// error), and may hold in memory pages whose writes never reached the disk. The only way
    /// back is to drop the database (its file lock goes with it) and open it again from its
    /// files.
    fn reopen(&self) -> Result<()> {
        let mut open = self.open.write().unwrap_or_else(|p| p.into_inner());
        drop(open.take());
        let (db, tree) = (self.opener)()?;
        *open = Some(Sled { db, tree });
        if let Some(files) = &self.files {
            *files.lock().unwrap_or_else(|p| p.into_inner()) =
                crate::fsync::StoreFiles::new(&self.path);
        }
        Ok(())
    }

    /// A flush can wait for an I/O buffer that nothing seals while no write comes; a small
    /// write to the metadata tree gets the log moving again.
    ///
    /// It queues no flushes on sled's I/O pool. It once queued eight, meant to make the pool
    /// start another thread (it does so only when more than seven tasks wait): but each one
    /// blocks a pool thread until the log is stable, and once all seven of the pool's standing
    /// threads were blocked so, the very write they waited for sat queued behind them, and the
    /// stalled flush never returned (seen under load, with gdb: the writer and all seven I/O
    /// threads waiting in `make_stable`).
    fn unstall(&self) {
        let Ok(open) = self.open.try_read() else {
            return;
        };
        let Some(s) = open.as_ref() else { return };
        let _ = s.db.insert(b"unstall", &[][..]);
    }
}

/// What [`MemEngine`] should do wrong, and when.
#[derive(Debug, Default)]
struct Faults {
    /// Puts left before the engine "crashes": every later call fails until [`MemEngine::restart`].
    crash_after: Option<u64>,
    crashed: bool,
    /// Flushes left to fail.
    failing_flushes: u32,
    /// Syncs left to fail.
    failing_syncs: u32,
    /// The next call sleeps this long first.
    stall: Option<Duration>,
}

#[derive(Default)]
struct Mem {
    live: BTreeMap<Vec<u8>, Value>,
    /// What a crash of the process keeps: everything flushed.
    durable: BTreeMap<Vec<u8>, Value>,
    /// What a power cut keeps: everything synced.
    synced: BTreeMap<Vec<u8>, Value>,
    /// Syncs wait while this is set.
    hold_syncs: bool,
    /// How long every sync takes (a slow disk), on command.
    slow_syncs: Option<Duration>,
    /// Syncs so far.
    syncs: u64,
    faults: Faults,
    /// Reads so far.
    gets: u64,
    /// Reopens so far.
    reopens: u64,
}

/// An engine in memory that keeps, beside what it holds, what it had at its last flush, so a
/// test can crash it between any two writes and restart it on what a disk would have kept.
#[derive(Default)]
pub struct MemEngine {
    mem: Mutex<Mem>,
}

impl MemEngine {
    pub fn new() -> MemEngine {
        MemEngine::default()
    }

    /// After `puts` more puts succeed, the engine crashes: that put and every later call fail.
    pub fn crash_after(&self, puts: u64) {
        self.lock().faults.crash_after = Some(puts);
    }

    /// Crashes now: everything since the last flush is lost once restarted.
    pub fn crash(&self) {
        self.lock().faults.crashed = true;
    }

    /// The next `n` flushes fail (and keep nothing).
    pub fn fail_flushes(&self, n: u32) {
        self.lock().faults.failing_flushes = n;
    }

    /// The next `n` syncs fail (and keep nothing).
    pub fn fail_syncs(&self, n: u32) {
        self.lock().faults.failing_syncs = n;
    }

    /// While `held`, every sync waits inside the engine (a slow disk, on command).
    pub fn hold_syncs(&self, held: bool) {
        self.lock().hold_syncs = held;
    }

    /// Makes every sync take `took` (a slow disk's `fdatasync`).
    pub fn slow_syncs(&self, took: Duration) {
        self.lock().slow_syncs = Some(took);
    }

    /// How many syncs have completed.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// The engine a power cut leaves: what was synced, and nothing else.
    pub fn power_cut(&self) -> MemEngine {
        let synced = self.lock().synced.clone();
        MemEngine {
            mem: Mutex::new(Mem {
                live: synced.clone(),
                durable: synced.clone(),
                synced,
                ..Mem::default()
            }),
        }
    }

    /// The next call of any kind sleeps for `d` inside the engine.
    pub fn stall_next(&self, d: Duration) {
        self.lock().faults.stall = Some(d);
    }

    /// The engine a restart finds: what was flushed, and nothing else.
    pub fn restart(&self) -> MemEngine {
        let (durable, synced) = {
            let mem = self.lock();
            (mem.durable.clone(), mem.synced.clone())
        };
        MemEngine {
            mem: Mutex::new(Mem {
                live: durable.clone(),
                durable,
                synced,
                ..Mem::default()
            }),
        }
    }

    /// How many times it was reopened.
    pub fn reopens(&self) -> u64 {
        self.lock().reopens
    }

    /// How many reads it has answered.
    pub fn gets(&self) -> u64 {
        self.lock().gets
    }

    /// Everything it holds now, for comparing stores.
    pub fn contents(&self) -> BTreeMap<Vec<u8>, Value> {
        self.lock().live.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a pending stall (outside the lock) and refuses calls after a crash.
    fn enter(&self) -> Result<std::sync::MutexGuard<'_, Mem>> {
        let stall = self.lock().faults.stall.take();
        if let Some(d) = stall {
            std::thread::sleep(d);
        }
        let mem = self.lock();
        if mem.faults.crashed {
            return Err(crashed());
        }
        Ok(mem)
    }
}

fn crashed() -> Error {
    Error::store("<memory>", "the engine has crashed")
}

impl Engine for MemEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        let mut mem = self.enter()?;
        mem.gets += 1;
        Ok(mem.live.get(key).cloned())
    }

    fn put(&self, key: &[u8], value: Vec<u8>) -> Result<()> {
        let mut mem = self.enter()?;
        if let Some(left) = mem.faults.crash_after.as_mut() {
            if *left == 0 {
                mem.faults.crashed = true;
                return Err(crashed());
            }
            *left -= 1;
        }
        mem.live.insert(key.to_vec(), Value::from(value));
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<()> {
        self.enter()?.live.remove(key);
        Ok(())
    }

    /// What a restart would find: what was flushed, and nothing else. A crash is over.
    fn reopen(&self) -> Result<()> {
        let mut mem = self.lock();
        mem.live = mem.durable.clone();
        mem.faults.crashed = false;
        mem.faults.crash_after = None;
        mem.reopens += 1;
        Ok(())
    }

    fn scan(
        &self,
        lo: &[u8],
        hi: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &Value) -> bool,
    ) -> Result<()> {
        // A copy of the range, so `visit` runs without the lock, as it would over sled.
        let entries: Vec<(Vec<u8>, Value)> = {
            let mem = self.enter()?;
            let range = match hi {
                Some(hi) => mem.live.range(lo.to_vec()..hi.to_vec()),
                None => mem.live.range(lo.to_vec()..),
            };
            range.map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        for (k, v) in &entries {
            if !visit(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let mut mem = self.enter()?;
        if mem.faults.failing_flushes > 0 {
            mem.faults.failing_flushes -= 1;
            return Err(Error::store("<memory>", "flush failed (injected)"));
        }
        mem.durable = mem.live.clone();
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        // What the sync covers is what was flushed when it began.
        let snapshot = self.enter()?.durable.clone();
        let slow = self.lock().slow_syncs;
        if let Some(took) = slow {
            std::thread::sleep(took);
        }
        while self.lock().hold_syncs {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut mem = self.enter()?;
        if mem.faults.failing_syncs > 0 {
            mem.faults.failing_syncs -= 1;
            return Err(Error::store("<memory>", "sync failed (injected)"));
        }
        mem.synced = snapshot;
        mem.syncs += 1;
        Ok(())
    }
}

/// How long one engine call may take before the watchdog reports it.
pub const STALL: Duration = Duration::from_millis(250);

/// How many calls can be watched at once; more concurrent calls go unwatched.
const SLOTS: usize = 64;

/// An engine whose every call is timed by a watchdog thread.
pub struct Watched {
    engine: Arc<dyn Engine>,
    watch: Arc<Watch>,
}

struct Watch {
    /// Per slot: when the call in it started (milliseconds since `clock`, plus one), or 0.
    slots: [AtomicU64; SLOTS],
    clock: Instant,
    /// Stalls reported so far.
    stalls: AtomicU64,
    path: PathBuf,
}

/// Frees a watch slot when the call ends.
struct Slot<'a>(Option<&'a AtomicU64>);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.0 {
            slot.store(0, Ordering::Release);
        }
    }
}

impl Watched {
    /// Wraps `engine` and starts its watchdog thread, which ends when this is dropped.
    pub fn new(engine: Arc<dyn Engine>, path: PathBuf) -> Watched {
        let watch = Arc::new(Watch {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
            clock: Instant::now(),
            stalls: AtomicU64::new(0),
            path,
        });
        spawn_watchdog(Arc::downgrade(&watch), Arc::downgrade(&engine));
        Watched { engine, watch }
    }

    /// How many stalled calls the watchdog has reported.
    pub fn stalls(&self) -> u64 {
        self.watch.stalls.load(Ordering::Relaxed)
    }

    fn enter(&self) -> Slot<'_> {
        let now = self.watch.clock.elapsed().as_millis() as u64 + 1;
        for slot in &self.watch.slots {
            if slot
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return Slot(Some(slot));
            }
        }
        Slot(None)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        let _slot = self.enter();
        self.engine.get(key)
    }

    pub fn put(&self, key: &[u8], value: Vec<u8>) -> Result<()> {
        let _slot = self.enter();
        self.engine.put(key, value)
    }

    pub fn scan(
        &self,
        lo: &[u8],
        hi: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &Value) -> bool,
    ) -> Result<()> {
        let _slot = self.enter();
        self.engine.scan(lo, hi, visit)
    }

    pub fn remove(&self, key: &[u8]) -> Result<()> {
        let _slot = self.enter();
        self.engine.remove(key)
    }

    pub fn flush(&self) -> Result<()> {
        let _slot = self.enter();
        self.engine.flush()
    }

    /// Not watched: a slow disk makes a slow sync, which is no sled stall to unstall (asking
    /// sled to unstall queues flushes on its I/O pool, and while a sync holds up the writer that
    /// only crowds the pool).
    pub fn sync(&self) -> Result<()> {
        self.engine.sync()
    }

    pub fn reopen(&self) -> Result<()> {
        let _slot = self.enter();
        self.engine.reopen()
    }
}

fn spawn_watchdog(watch: Weak<Watch>, engine: Weak<dyn Engine>) {
    let spawned = std::thread::Builder::new()
        .name("herd-store-watch".into())
        .spawn(move || {
            // One report (and one unstall) per stuck call, not one per tick.
            let mut reported = [0u64; SLOTS];
            loop {
                std::thread::sleep(STALL / 4);
                let (Some(watch), Some(engine)) = (watch.upgrade(), engine.upgrade()) else {
                    return;
                };
                let now = watch.clock.elapsed().as_millis() as u64 + 1;
                for (i, slot) in watch.slots.iter().enumerate() {
                    let since = slot.load(Ordering::Acquire);
                    let stuck = since != 0 && now - since >= STALL.as_millis() as u64;
                    if stuck && reported[i] != since {
                        reported[i] = since;
                        watch.stalls.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(store = %watch.path.display(), stalled_ms = now - since, "a store call is stuck inside the storage engine; waking it");
                        engine.unstall();
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the store watchdog");
    }
}
