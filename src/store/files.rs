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

/// Opens sled. A store whose contents sled cannot make sense of (or panics on) is moved aside
/// and a fresh one made, so a corrupt store never makes the node crash in a loop; the peers
/// refill it. A store the OS will not let us read or write is left untouched: that is an error
/// naming the file and the errno, not a reason to throw data away.
/// `flush_every_ms` is how often sled's own flusher thread writes what it holds to its files
/// (and cleans its segments); `None` keeps sled's default of 500 ms.
pub(super) fn open_sled(
    path: &Path,
    cache_mib: u64,
    flush_every_ms: Option<u64>,
) -> Result<sled::Db> {
    let mut config = sled::Config::new()
        .path(path)
        .cache_capacity(cache_mib * 1024 * 1024);
    if let Some(every) = flush_every_ms {
        config = config.flush_every_ms(Some(every.max(1)));
    }
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
    let why = match attempt {
        Ok(Ok(db)) => match db.get(herd_migrations::FORMAT_KEY) {
            Ok(_) => return Ok(db),
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
    config
        .open()
        .map_err(|e| super::engine::sled_error(path, "create a fresh store", e))
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
