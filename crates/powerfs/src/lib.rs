//! powerfs: a FUSE passthrough file system that forgets, on command, everything that was not
//! made durable, as a power cut would.
//!
//! A [`Mount`] serves a backing directory at a mount point. Writes, truncations and name
//! changes reach the backing directory at once, so the mounted view behaves like any file
//! system; what is *durable* is tracked separately (see `state.rs` and `docs/powerfs.md`):
//!
//! - a file's contents and size become durable on `fsync`/`fdatasync` of that file;
//! - a create, mkdir, unlink, rmdir or rename becomes durable on `fsync` of its directory
//!   (which commits every earlier name change too, as a journal does);
//! - [`Mount::sync_all`] makes everything durable (FUSE forwards no `syncfs`).
//!
//! [`Mount::power_cut`] rolls the backing directory back to its durable state, optionally
//! keeping a prefix of the last unsynced write (a torn write). The `powerfs` binary wraps a
//! mount with a control socket (`src/control.rs`).
//!
//! It is a test tool: the backing directory itself is never synced, so powerfs simulates power
//! loss, it does not protect against it. Mounting needs root (or a user allowed to mount
//! FUSE through `fusermount3`, from Debian's `fuse3`) and `/dev/fuse`; [`unavailable`] says which is
//! missing.

pub mod control;
mod fuse;
mod state;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use state::Cut;
use state::State;

/// Why powerfs could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// FUSE cannot be used on this machine (the reason names what is missing).
    #[error("FUSE is unavailable: {0}")]
    Unavailable(String),
    /// A file operation on `path` failed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why FUSE cannot be mounted here, or `None` if it can: needs `/dev/fuse` that this process
/// can open, and root (which mounts directly) or `fusermount3` on the `PATH` (Debian's
/// `fuse3`).
pub fn unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse does not exist".into());
    }
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join("fusermount3").is_file())
    });
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && !on_path {
        return Some("not root, and fusermount3 is not installed (Debian package fuse3)".into());
    }
    if let Err(e) = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        return Some(format!("cannot open /dev/fuse: {e}"));
    }
    None
}

/// A mounted powerfs. Dropping it unmounts.
pub struct Mount {
    state: Arc<Mutex<State>>,
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

impl Mount {
    /// Mounts a view of `backing` at `mountpoint` (both existing directories). The backing
    /// directory's current contents are taken as durable. It gets a hidden `.powerfs-trash`
    /// directory, where removed files wait until their removal is durable.
    pub fn new(backing: &Path, mountpoint: &Path) -> Result<Mount, Error> {
        if let Some(why) = unavailable() {
            return Err(Error::Unavailable(why));
        }
        let state = State::new(backing).map_err(|source| Error::Io {
            what: "serve backing directory",
            path: backing.to_owned(),
            source,
        })?;
        let state = Arc::new(Mutex::new(state));
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("powerfs".into()),
            fuser::MountOption::Subtype("powerfs".into()),
        ];
        // Root mounts with mount(2) directly and unmounts with umount(2); anyone else goes
        // through fusermount3. (fusermount3's auto_unmount is not used: its watcher does not
        // outlive the mount call here, and unmounting would then wait forever.)
        config.acl = fuser::SessionACL::Owner;
        let fs = fuse::PowerFs {
            state: Arc::clone(&state),
        };
        let session = fuser::spawn_mount(fs, mountpoint, &config).map_err(|source| Error::Io {
            what: "mount powerfs at",
            path: mountpoint.to_owned(),
            source,
        })?;
        Ok(Mount {
            state,
            session: Some(session),
            mountpoint: mountpoint.to_owned(),
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Drops everything not made durable, as if the power had gone. With `tear = Some(n)`,
    /// the first `n` bytes of the last write (if it was not synced) survive. Processes using
    /// the mount should be dead first: their open files are forgotten.
    pub fn power_cut(&self, tear: Option<usize>) -> Cut {
        self.state().power_cut(tear)
    }

    /// Makes everything durable, as `syncfs` would.
    pub fn sync_all(&self) {
        self.state().sync_all();
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Unmounts and waits for the file system's thread to end.
    pub fn unmount(mut self) -> Result<(), Error> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), Error> {
        match self.session.take() {
            Some(session) => session.umount_and_join().map_err(|source| Error::Io {
                what: "unmount",
                path: self.mountpoint.clone(),
                source,
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("powerfs: {e}");
        }
    }
}
