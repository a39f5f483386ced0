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
//! - a directory is synced when its set of (name, inode) changed; the store's parent once.
//!
//! `SledEngine::flush` (`src/store/engine.rs`) runs it after sled's flush when
//! `durability = "flush"`; the flusher thread flushes once per group commit and at shutdown,
//! so one sync covers every batch waiting. With `durability = "os"` it does not run, which is
//! what `tests/power_loss.rs` shows losing answered reports. [`sync_store_files`] syncs
//! everything, remembering nothing.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// sled's log, written in place: synced on every call.
const LOG: &str = "db";

/// What a file looked like when it was last synced: inode, length, mtime.
type Signature = (u64, u64, i64, i64);

/// sled's directory and what of it is known to be durable.
#[derive(Debug)]
pub struct StoreFiles {
    dir: PathBuf,
    /// Per directory (the store's, its `blobs`): name → signature at the last sync.
    synced: BTreeMap<PathBuf, BTreeMap<OsString, Signature>>,
    parent_synced: bool,
}

impl StoreFiles {
    /// Nothing of `dir` (sled's directory) is known to be durable yet.
    pub fn new(dir: &Path) -> StoreFiles {
        StoreFiles {
            dir: dir.to_owned(),
            synced: BTreeMap::new(),
            parent_synced: false,
        }
    }

    /// `fdatasync`s what changed since the last call (and the log always), then `fsync`s each
    /// directory whose names changed. Files come before directories, so a name made durable
    /// never points at contents that are not. A file that vanishes meanwhile is skipped.
    pub fn sync(&mut self) -> std::io::Result<()> {
        let blobs = self.dir.join("blobs");
        for d in [self.dir.clone(), blobs.clone()] {
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && d == blobs => continue,
                Err(e) => return Err(e),
            };
            let before = self.synced.get(&d);
            let mut now = BTreeMap::new();
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
                let changed = before.and_then(|b| b.get(&name)) != Some(&sig);
                if changed || (d == self.dir && name == LOG) {
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
                File::open(&d)?.sync_all()?;
            }
            self.synced.insert(d, now);
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
        assert_eq!(files.synced[&store.join("blobs")].len(), 1);
        std::fs::remove_file(store.join("blobs").join("1")).unwrap();
        files.sync().unwrap();
        assert!(files.synced[&store.join("blobs")].is_empty());
        sync_store_files(&store).unwrap();
        assert!(sync_store_files(&dir.path().join("absent")).is_err());
    }
}
