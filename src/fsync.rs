//! Makes sled's files durable against a power cut, not only against a process crash.
//!
//! sled 0.34.7's `Db::flush` writes its log with `pwrite` and `sync_file_range` (on Linux):
//! the data reaches the page cache and is queued to the device, which survives `kill -9` of
//! the process, but neither the drive's cache nor a file's grown size is made durable, so a
//! power cut (or a kernel crash) can lose an acknowledged write. [`StoreFiles::sync`] adds
//! what is missing: `fdatasync` of sled's files, and `fsync` of every directory in which sled
//! created, renamed or removed files, plus the directory holding the store, so that names are
//! durable too.
//!
//! Every sync costs a device cache flush (milliseconds on a real disk) even when nothing is
//! dirty, so [`StoreFiles`] remembers what it synced last time and skips what has not changed:
//!
//! - the log file `db`, which sled overwrites in place, is synced every time;
//! - any other file (`conf`, `snap.*`, `blobs/*`: sled writes each once, then creates or
//!   renames) is synced when it is new or its inode, length or modification time changed;
//! - a directory is synced when its set of (name, inode) changed; the store's parent once;
//! - a directory is not even listed while its modification time stays what it was (and is
//!   older than a second: the kernel stamps it from a coarse clock) and nothing but the log
//!   changed in it at the last listing.
//!
//! `SledEngine::sync` (`src/store/engine.rs`) runs it on the store's sync thread when
//! `durability = "flush"`, after the writer's flush of sled, once for every group of batches
//! waiting, and at shutdown. With `durability = "os"` it does not run, which is what
//! `tests/power_loss.rs` shows losing answered reports. [`sync_store_files`] syncs
//! everything, remembering nothing.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// sled's log, written in place: synced on every call.
const LOG: &str = "db";

/// What a file looked like when it was last synced: inode, length, mtime.
type Signature = (u64, u64, i64, i64);

/// A directory's modification time, seconds and nanoseconds.
type Mtime = (i64, i64);

/// How old a directory's modification time must be before an unchanged one is trusted: the
/// kernel stamps times from a coarse clock, so a name created in the same tick as the last
/// listing can leave the time as it was.
const SETTLED: Duration = Duration::from_secs(1);

/// One directory as last synced.
#[derive(Debug, Default)]
struct Listing {
    files: BTreeMap<OsString, Signature>,
    /// Its modification time at that listing.
    mtime: Option<Mtime>,
    /// Whether no file of it other than the log changed at that listing either: then, while its
    /// modification time stays the same (and is old enough), nothing in it needs a look.
    settled: bool,
}

/// sled's directory and what of it is known to be durable.
#[derive(Debug)]
pub struct StoreFiles {
    dir: PathBuf,
    /// Per directory (the store's, its `blobs`): what it held at the last sync.
    synced: BTreeMap<PathBuf, Listing>,
    parent_synced: bool,
    /// The log, kept open: synced on every call.
    log: Option<File>,
}

impl StoreFiles {
    /// Nothing of `dir` (sled's directory) is known to be durable yet.
    pub fn new(dir: &Path) -> StoreFiles {
        StoreFiles {
            dir: dir.to_owned(),
            synced: BTreeMap::new(),
            parent_synced: false,
            log: None,
        }
    }

    /// `fdatasync`s the log, and what else changed since the last call, then `fsync`s each
    /// directory whose names changed. Files come before directories, so a name made durable
    /// never points at contents that are not. A file that vanishes meanwhile is skipped.
    ///
    /// A directory whose modification time is what it was at the last listing, and old enough
    /// to be trusted, and in which nothing but the log changed then, is not listed: in steady
    /// state a call is one `fdatasync` of the log and a `stat` per directory.
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.log.is_none() {
            self.log = Some(File::open(self.dir.join(LOG))?);
        }
        if let Some(log) = &self.log {
            log.sync_data()?;
        }
        let blobs = self.dir.join("blobs");
        for d in [self.dir.clone(), blobs.clone()] {
            let md = match std::fs::metadata(&d) {
                Ok(md) => md,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && d == blobs => continue,
                Err(e) => return Err(e),
            };
            let mtime = (md.mtime(), md.mtime_nsec());
            let trusted = std::time::SystemTime::now()
                .duration_since(
                    std::time::UNIX_EPOCH
                        + Duration::new(
                            mtime.0.max(0) as u64,
                            mtime.1.clamp(0, 999_999_999) as u32,
                        ),
                )
                .is_ok_and(|age| age >= SETTLED);
            if let Some(before) = self.synced.get(&d) {
                if before.settled && before.mtime == Some(mtime) && trusted {
                    continue;
                }
            }
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && d == blobs => continue,
                Err(e) => return Err(e),
            };
            let before = self.synced.get(&d).map(|l| &l.files);
            let mut now = BTreeMap::new();
            let mut changed_any = false;
            for entry in entries {
                let entry = entry?;
                let md = match entry.metadata() {
                    Ok(md) => md,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if !md.is_file() {
                    continue;
                }
                let name = entry.file_name();
                let sig = (md.ino(), md.len(), md.mtime(), md.mtime_nsec());
                let is_log = d == self.dir && name == LOG;
                let changed = before.and_then(|b| b.get(&name)) != Some(&sig);
                if changed && !is_log {
                    changed_any = true;
                    match File::open(entry.path()) {
                        Ok(f) => f.sync_data()?,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    }
                }
                now.insert(name, sig);
            }
            let names = |m: &BTreeMap<OsString, Signature>| -> Vec<(OsString, u64)> {
                m.iter().map(|(n, s)| (n.clone(), s.0)).collect()
            };
            if before.map(names) != Some(names(&now)) {
                changed_any = true;
                File::open(&d)?.sync_all()?;
            }
            self.synced.insert(
                d,
                Listing {
                    files: now,
                    mtime: Some(mtime),
                    settled: !changed_any,
                },
            );
        }
        if !self.parent_synced {
            if let Some(parent) = self.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent)?.sync_all()?;
            }
            self.parent_synced = true;
        }
        Ok(())
    }
}

/// Syncs every file of sled's directory `dir` and its directories, remembering nothing.
pub fn sync_store_files(dir: &Path) -> std::io::Result<()> {
    StoreFiles::new(dir).sync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_a_sled_directory_and_tolerates_a_missing_blobs_dir() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        std::fs::write(store.join("db"), b"x").unwrap();
        let mut files = StoreFiles::new(&store);
        files.sync().unwrap();
        std::fs::create_dir(store.join("blobs")).unwrap();
        std::fs::write(store.join("blobs").join("1"), b"y").unwrap();
        files.sync().unwrap();
        assert_eq!(files.synced[&store.join("blobs")].files.len(), 1);
        std::fs::remove_file(store.join("blobs").join("1")).unwrap();
        files.sync().unwrap();
        assert!(files.synced[&store.join("blobs")].files.is_empty());
        sync_store_files(&store).unwrap();
        assert!(sync_store_files(&dir.path().join("absent")).is_err());
    }

    #[test]
    fn a_settled_directory_is_not_listed_until_a_name_in_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        std::fs::write(store.join("db"), b"x").unwrap();
        std::fs::write(store.join("conf"), b"c").unwrap();
        let mut files = StoreFiles::new(&store);
        files.sync().unwrap();
        files.sync().unwrap();
        assert!(files.synced[&store].settled, "nothing but the log changed");
        std::thread::sleep(SETTLED + Duration::from_millis(100));
        // A file that changed in place is not looked at while the directory is settled...
        files.sync().unwrap();
        // ...but a new name changes the directory, and it is listed again.
        std::fs::write(store.join("snap.0001"), b"s").unwrap();
        files.sync().unwrap();
        assert!(files.synced[&store]
            .files
            .contains_key(&OsString::from("snap.0001")));
        assert!(!files.synced[&store].settled);
    }
}
