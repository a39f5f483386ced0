//! Makes sled's files durable against a power cut, not only against a process crash.
//!
//! sled 0.34.7's `Db::flush` writes its log with `pwrite` and `sync_file_range` (on Linux):
//! the data reaches the page cache and is queued to the device, which survives `kill -9` of
//! the process, but neither the drive's cache nor a file's grown size is made durable, so a
//! power cut (or a kernel crash) can lose an acknowledged write. [`sync_store_files`] adds what
//! is missing: `fdatasync` of every file sled keeps, and `fsync` of every directory in which
//! sled creates, renames or removes files, plus the directory holding the store, so that
//! names created since the last call are durable too.
//!
//! It is called after every group commit's flush (`durability = "flush"`) and on shutdown;
//! with `durability = "os"` it is not, which is what `tests/power_loss.rs` shows losing
//! acknowledged reports.

use std::fs::File;
use std::path::Path;

/// `fdatasync`s every regular file in sled's directory `dir` (and in its `blobs`
/// subdirectory), then `fsync`s `dir`, `dir/blobs` and `dir`'s parent.
///
/// Files are synced before directories so that a name made durable never points at contents
/// that are not. A file that vanishes while this runs (sled removes old snapshots) is skipped.
pub fn sync_store_files(dir: &Path) -> std::io::Result<()> {
    let blobs = dir.join("blobs");
    for d in [dir, blobs.as_path()] {
        let entries = match std::fs::read_dir(d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && d == blobs => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            match File::open(entry.path()) {
                Ok(f) => f.sync_data()?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }
    if blobs.is_dir() {
        File::open(&blobs)?.sync_all()?;
    }
    File::open(dir)?.sync_all()?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
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
        sync_store_files(&store).unwrap();
        std::fs::create_dir(store.join("blobs")).unwrap();
        std::fs::write(store.join("blobs").join("1"), b"y").unwrap();
        sync_store_files(&store).unwrap();
        assert!(sync_store_files(&dir.path().join("absent")).is_err());
    }
}
