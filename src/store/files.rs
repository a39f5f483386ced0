//! The store's files: the directory lock, opening sled (and telling a corrupt store from one
//! that cannot be read), and read-only inspection of a stopped node's store.

use std::fs::File;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use fs2::FileExt;

use super::{decode_record, Stored};
use crate::error::{Error, Result};
use crate::protocol::number::Timestamp;

/// Takes the directory's lock file, or says who holds it.
pub(super) fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("herd.lock");
    let file = crate::private_files::open_private(&path, false)
        .map_err(|e| Error::io(format!("open lock file {}", path.display()), e))?;
    file.try_lock_exclusive().map_err(|_| Error::StoreLocked {
        path: dir.to_owned(),
    })?;
    Ok(file)
}

/// Whether sled's error is the operating system refusing (permissions, a full disk, too many
/// open files) rather than the files' contents being wrong. Only the contents being wrong may
/// move a store aside; an OS error carries an errno, a corrupt file does not.
fn is_os_error(e: &sled::Error) -> Option<&std::io::Error> {
    match e {
        sled::Error::Io(io) if io.raw_os_error().is_some() => Some(io),
        _ => None,
    }
}

/// sled's configuration for the store at `path`. `flush_every_ms` is how often sled's own
/// flusher thread writes what it holds to its files (and cleans its segments); `None` keeps
/// sled's default of 500 ms.
pub(super) fn sled_config(
    path: &Path,
    cache_mib: u64,
    flush_every_ms: Option<u64>,
) -> sled::Config {
    let mut config = sled::Config::new()
        .path(path)
        .cache_capacity(cache_mib * 1024 * 1024);
    if let Some(every) = flush_every_ms {
        config = config.flush_every_ms(Some(every.max(1)));
    }
    config
}

/// An open store, and where a store that could not be opened was moved to (its readable
/// records are to be salvaged).
pub(super) struct Opened {
    pub db: sled::Db,
    pub moved_aside: Option<PathBuf>,
}

/// Opens sled, discarding nothing that can be read:
///
/// - a snapshot sled was still writing (`snap.*.generating`, renamed by sled only once whole,
///   so left behind only by a failed write, e.g. on a full disk) is removed first: sled would
///   otherwise take it for the newest snapshot and call the store corrupt;
/// - the operating system refusing (permissions, a full disk, too many open files, an I/O
///   error) is an error naming the store and the errno: the store is left as it is;
/// - a snapshot sled finds corrupt is set aside (`store.snapshot-aside-<time>.<name>` beside
///   the store) and the store opened again from its log, which sled replays whole without one;
/// - only a store that still cannot be opened, on a disk with at least `min_free` bytes free
///   (on a fuller one an I/O error inside sled cannot be ruled out), is moved aside whole to
///   `store.corrupt-<time>`, and a fresh one made; the caller salvages what it can read.
pub(super) fn open_sled(path: &Path, config: &sled::Config, min_free: u64) -> Result<Opened> {
    remove_unfinished_snapshots(path)?;
    let why = match try_open(path, config)? {
        Ok(db) => {
            return Ok(Opened {
                db,
                moved_aside: None,
            })
        }
        Err(why) => why,
    };
    let snapshots = snapshot_files(path);
    if !snapshots.is_empty() {
        let stamp = Timestamp::now();
        for snap in &snapshots {
            let name = snap.file_name().unwrap_or_default().to_string_lossy();
            let aside = path.with_file_name(format!(
                "store.snapshot-aside-{}.{:09}.{name}",
                stamp.secs, stamp.nanos
            ));
            std::fs::rename(snap, &aside)
                .map_err(|e| Error::io(format!("set aside snapshot {}", snap.display()), e))?;
            tracing::warn!(store = %path.display(), snapshot = %snap.display(), moved_to = %aside.display(), error = %why, "store could not be opened from its snapshot; set the snapshot aside, opening from the log");
        }
        match try_open(path, config)? {
            Ok(db) => {
                tracing::info!(store = %path.display(), "store opened from its log");
                return Ok(Opened {
                    db,
                    moved_aside: None,
                });
            }
            Err(again) => {
                tracing::error!(store = %path.display(), error = %again, "store cannot be opened from its log either");
            }
        }
    }
    let free = super::space::free_bytes(path.parent().unwrap_or(path)).unwrap_or(0);
    if free < min_free {
        return Err(Error::StoreIo {
            path: path.to_owned(),
            doing: format!(
                "open it ({why}) with only {free} bytes free on its disk, which may be the cause; \
                 not moving it aside: free space and start again"
            ),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        });
    }
    let stamp = Timestamp::now();
    let aside = path.with_file_name(format!("store.corrupt-{}.{:09}", stamp.secs, stamp.nanos));
    std::fs::rename(path, &aside)
        .map_err(|e| Error::io(format!("move corrupt store {} aside", path.display()), e))?;
    tracing::error!(store = %path.display(), moved_to = %aside.display(), error = %why, "store could not be opened; moved aside, salvaging what it holds into a fresh one");
    eprintln!(
        "herd: store {} could not be opened ({why}); moved to {}; salvaging its readable records",
        path.display(),
        aside.display()
    );
    let db = config
        .open()
        .map_err(|e| super::engine::sled_error(path, "create a fresh store", e))?;
    Ok(Opened {
        db,
        moved_aside: Some(aside),
    })
}

/// One attempt: the database, or why its contents are wrong; an OS error is returned as the
/// error it is.
fn try_open(path: &Path, config: &sled::Config) -> Result<std::result::Result<sled::Db, String>> {
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
    Ok(Err(match attempt {
        Ok(Ok(db)) => match db.get(herd_migrations::FORMAT_KEY) {
            Ok(_) => return Ok(Ok(db)),
            Err(e) => {
                if let Some(io) = is_os_error(&e) {
                    return Err(os_error(path, io));
                }
                e.to_string()
            }
        },
        Ok(Err(e)) => {
            if let Some(io) = is_os_error(&e) {
                return Err(os_error(path, io));
            }
            e.to_string()
        }
        Err(_) => "sled panicked while recovering it".to_owned(),
    }))
}

/// sled's snapshot files in the store directory, finished or not.
fn snapshot_files(path: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("snap."))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn remove_unfinished_snapshots(path: &Path) -> Result<()> {
    for snap in snapshot_files(path) {
        if snap.to_string_lossy().ends_with(".generating") {
            std::fs::remove_file(&snap).map_err(|e| {
                Error::io(format!("remove unfinished snapshot {}", snap.display()), e)
            })?;
            tracing::warn!(snapshot = %snap.display(), "removed a snapshot sled had not finished writing");
        }
    }
    Ok(())
}

fn os_error(path: &Path, io: &std::io::Error) -> Error {
    Error::StoreIo {
        path: path.to_owned(),
        doing: "open it".into(),
        source: std::io::Error::from_raw_os_error(io.raw_os_error().unwrap_or(0)),
    }
}

/// Opens a stopped node's store for reading, without taking part in the herd: no upgrade.
/// Fails clearly if a node holds it.
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
        let (key, value) = entry.map_err(|e| Error::store(&path, e))?;
        let client = herd_migrations::client_of_key(&key).unwrap_or_default();
        out.push((
            Bytes::copy_from_slice(client),
            decode_record(client, &value),
        ));
    }
    // Client order reads better than hash order.
    out.sort_by(|a, b| a.0.cmp(&b.0));
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
