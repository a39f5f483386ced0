//! Private files: a node's state and logs hold every client's last known location, so what
//! `herd serve` creates is readable by its own user only, and the files it opens by name are
//! never reached through a symbolic link.
//!
//! Promises: [`create_private_dir`] makes missing directories mode 0700; [`open_private`]
//! creates files mode 0600 and refuses a symbolic link in the last path component (`O_NOFOLLOW`)
//! with an error that says so; [`restrict_umask`] makes every file and directory the process
//! creates afterwards (sled's included) private too; [`loosely_readable`] reports a file that
//! its group or other users can read; [`check_node_paths`] refuses, before a node starts, a
//! state or log directory that others may write to (they could swap the store or the log for
//! a link) and a store, lock or log path that is a symbolic link.

use std::fs::File;
use std::io;
use std::path::Path;

/// Mode of the directories herd creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files herd creates.
pub const FILE_MODE: u32 = 0o600;

/// Sets the process umask to 077, so that files and directories created afterwards by any
/// code in the process (the store's files, written by sled, among them) get no group or other
/// permissions. Called once, before a node creates anything.
pub fn restrict_umask() {
    #[cfg(unix)]
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates `dir` and any missing parents with mode 0700. Existing directories keep their mode.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder.create(dir)
}

/// Opens `path` for writing (appending if `append`), creating it with mode 0600. A symbolic
/// link at `path` is refused, never followed: someone able to plant one could otherwise make
/// the node append to, or lock, a file of their choosing.
pub fn open_private(path: &Path, append: bool) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).write(true);
    if append {
        options.append(true);
    } else {
        options.truncate(false);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE).custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path).map_err(|e| {
        #[cfg(unix)]
        if e.raw_os_error() == Some(libc::ELOOP) {
            return io::Error::new(
                e.kind(),
                "it is a symbolic link, which herd refuses to follow",
            );
        }
        e
    })
}

/// Checks the directories and paths a node is about to use, creating missing directories
/// (mode 0700): `state_dir` and `log_dir` themselves (not their ancestors) must not be
/// writable by their group or other users unless `allow_shared` (`[store] allow_shared_dir`),
/// and `state_dir/store`, `state_dir/herd.lock` and `log_dir/NAME.log` must not be symbolic
/// links. The error names the path and what is wrong with it.
pub fn check_node_paths(
    state_dir: &Path,
    log_dir: &Path,
    name: &str,
    allow_shared: bool,
) -> Result<(), crate::error::Error> {
    use crate::error::Error;
    for (what, dir) in [("state directory", state_dir), ("log directory", log_dir)] {
        create_private_dir(dir)
            .map_err(|e| Error::io(format!("create {what} {}", dir.display()), e))?;
        let mode =
            mode_of(dir).map_err(|e| Error::io(format!("read {what} {}", dir.display()), e))?;
        if mode & 0o022 != 0 && !allow_shared {
            return Err(Error::UnsafePath {
                path: dir.to_owned(),
                message: format!(
                    "the {what} is mode {mode:04o}: its group or other users may write to it, and so replace the files in it (chmod 700 it, or set [store] allow_shared_dir = true)"
                ),
            });
        }
    }
    for path in [
        state_dir.join("store"),
        state_dir.join("herd.lock"),
        log_dir.join(format!("{name}.log")),
    ] {
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::UnsafePath {
                path,
                message: "it is a symbolic link, which herd refuses to follow".into(),
            });
        }
    }
    Ok(())
}

/// The permission bits of a directory (following a link to it).
fn mode_of(path: &Path) -> io::Result<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Ok(std::fs::metadata(path)?.permissions().mode() & 0o7777)
    }
    #[cfg(not(unix))]
    {
        std::fs::metadata(path).map(|_| 0)
    }
}

/// The permission bits of `path` if its group or other users may read it, else `None`.
pub fn loosely_readable(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o044 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn directories_and_files_are_private_and_links_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("f.log");
        drop(open_private(&file, true).unwrap());
        assert_eq!(mode(&file), 0o600);

        let target = tmp.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = open_private(&link, true).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }

    #[test]
    fn shared_directories_and_linked_paths_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (state, logs) = (tmp.path().join("state"), tmp.path().join("logs"));
        check_node_paths(&state, &logs, "N", false).unwrap();
        assert_eq!((mode(&state), mode(&logs)), (0o700, 0o700));
        for (dir, bits) in [(&state, 0o777), (&logs, 0o770), (&state, 0o1777)] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(bits)).unwrap();
            let e = check_node_paths(&state, &logs, "N", false).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            let text = e.to_string();
            assert!(
                text.contains(&dir.display().to_string()) && text.contains(&format!("{bits:04o}")),
                "{text}"
            );
            check_node_paths(&state, &logs, "N", true).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        for path in [
            state.join("store"),
            state.join("herd.lock"),
            logs.join("N.log"),
        ] {
            std::os::unix::fs::symlink(tmp.path(), &path).unwrap();
            let e = check_node_paths(&state, &logs, "N", true).unwrap_err();
            assert!(
                e.to_string().contains(&path.display().to_string())
                    && e.to_string().contains("symbolic link"),
                "{e}"
            );
            std::fs::remove_file(&path).unwrap();
        }
        check_node_paths(&state, &logs, "N", false).unwrap();
    }

    #[test]
    fn group_or_world_readable_files_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("secret");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(loosely_readable(&file), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(loosely_readable(&file), Some(0o640));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o604)).unwrap();
        assert_eq!(loosely_readable(&file), Some(0o604));
    }
}
