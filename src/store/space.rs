//! Disk space: how much is free where the store lives, how much the store takes, and a ballast
//! file that keeps a little space back for the store's own recovery.
//!
//! sled cannot write once its disk is full, and cannot even open a store whose log moved
//! since its last snapshot (opening writes a new one). So the node stops writing well before
//! the disk is full (the writer's floor, a quarter of `min_free_mib`), and keeps a ballast
//! file beside the store: when a write fails for lack of space anyway (another process
//! filled the disk), or a start finds the disk full, the ballast is deleted and the space it
//! held lets sled open the store again and serve what it holds.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fs2::FileExt;

/// The largest ballast file kept.
const MAX_BALLAST: u64 = 16 << 20;

/// Bytes free to unprivileged writers on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    fs2::available_space(dir)
}

/// Bytes the files under `dir` take on disk (allocated blocks, not apparent sizes).
pub fn used_bytes(dir: &Path) -> u64 {
    fn walk(dir: &Path, total: &mut u64) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                walk(&entry.path(), total);
            } else {
                *total += meta.blocks() * 512;
            }
        }
    }
    let mut total = 0;
    walk(dir, &mut total);
    total
}

/// The ballast file beside a store.
#[derive(Debug)]
pub struct Ballast {
    path: PathBuf,
    size: u64,
}

impl Ballast {
    /// The ballast of the store in `dir`, sized for a node that keeps `min_free` bytes free.
    pub fn new(dir: &Path, min_free: u64) -> Ballast {
        Ballast {
            path: dir.join("store.ballast"),
            size: (min_free / 4).min(MAX_BALLAST),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Makes the ballast if it is missing and `free` leaves room for it beyond `keep`; true if
    /// it exists afterwards.
    pub fn ensure(&self, free: u64, keep: u64) -> bool {
        if self.size == 0 {
            return false;
        }
        if self.exists() {
            return true;
        }
        if free < self.size.saturating_add(keep) {
            return false;
        }
        let made = crate::private_files::open_private(&self.path, false)
            .and_then(|file| file.allocate(self.size).map(|()| file));
        match made {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(ballast = %self.path.display(), error = %e, "cannot make the store's ballast file");
                let _ = std::fs::remove_file(&self.path);
                false
            }
        }
    }

    /// Deletes the ballast, giving its space back; true if there was one.
    pub fn release(&self) -> bool {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {
                tracing::warn!(ballast = %self.path.display(), bytes = self.size, "released the store's ballast file to make room");
                true
            }
            Err(_) => false,
        }
    }
}
