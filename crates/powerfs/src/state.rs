//! The durability model: what the file system has been told to keep, and how to go back to it.
//!
//! Every operation is carried out on the backing directory at once (so reads, sizes and
//! listings are exactly those of a real file system), and whatever would be lost in a power cut
//! is remembered as the way to undo it:
//!
//! - **File contents and sizes** ([`Undo`]): the first change to a file after it was last
//!   synced records the file's durable length; the first change to each 4 KiB block below that
//!   length saves the block's durable bytes. `fsync`/`fdatasync` of the file forgets them (the
//!   current contents become the durable ones).
//! - **Names** ([`MetaOp`]): creates, mkdirs, unlinks, rmdirs and renames are appended to one
//!   ordered journal. An unlinked file or removed directory (and a rename's replaced target)
//!   is moved into a hidden trash directory, not deleted, until the removal is durable.
//!   `fsync` of a directory commits the journal up to and including the last operation in that
//!   directory; everything before it is committed too, as one journal does.
//!
//! [`State::power_cut`] rolls every unsynced file back to its durable contents, undoes the
//! uncommitted journal newest first, and (if asked) then re-applies a prefix of the last
//! unsynced write, as a write torn by the power cut.
//!
//! Inode numbers are the backing file system's, except that the backing root is always 1
//! (FUSE's root) and a backing inode numbered 1 takes the root's number.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// FUSE's root inode.
pub const ROOT: u64 = 1;
/// The trash directory, as a pseudo inode that names can live under.
const TRASH: u64 = u64::MAX;
/// The trash directory's name under the backing root; hidden from the mounted view.
pub const TRASH_NAME: &str = ".powerfs-trash";
/// The granularity of saved pre-images.
const BLOCK: u64 = 4096;

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// Where a name lives: its directory's inode and its name there.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Loc {
    parent: u64,
    name: OsString,
}

/// The durable state of one file that changed since it was last synced.
#[derive(Debug, Default)]
struct Undo {
    /// The file's length when it was last synced.
    durable_len: u64,
    /// Block number → the block's bytes when the file was last synced (only blocks below
    /// `durable_len` that changed since).
    blocks: BTreeMap<u64, Vec<u8>>,
}

/// A change of names that is not yet durable.
#[derive(Debug)]
enum MetaOp {
    Created {
        ino: u64,
        at: Loc,
        dir: bool,
    },
    Removed {
        ino: u64,
        at: Loc,
        trash: OsString,
    },
    Renamed {
        ino: u64,
        from: Loc,
        to: Loc,
        /// The inode the rename replaced, kept in the trash under this name.
        replaced: Option<(u64, OsString)>,
    },
}

impl MetaOp {
    fn touches(&self, dir: u64) -> bool {
        match self {
            MetaOp::Created { at, .. } | MetaOp::Removed { at, .. } => at.parent == dir,
            MetaOp::Renamed { from, to, .. } => from.parent == dir || to.parent == dir,
        }
    }
}

/// The most recent write, kept so that a power cut can tear it.
#[derive(Debug)]
struct LastWrite {
    ino: u64,
    offset: u64,
    data: Vec<u8>,
}

/// What a power cut did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Files whose unsynced contents were dropped.
    pub files_rolled_back: usize,
    /// Name operations undone.
    pub ops_undone: usize,
    /// Bytes of the last unsynced write that were kept (a torn write), if any.
    pub torn_bytes: Option<usize>,
    /// Anything that could not be rolled back (each names the path).
    pub errors: Vec<String>,
}

/// The whole file system's state; one lock guards it (see `fuse.rs`).
pub struct State {
    backing: PathBuf,
    trash: PathBuf,
    backing_root_ino: u64,
    nodes: HashMap<u64, Loc>,
    handles: HashMap<u64, File>,
    next_fh: u64,
    dirty: HashMap<u64, Undo>,
    journal: Vec<MetaOp>,
    last_write: Option<LastWrite>,
    next_trash: u64,
}

impl State {
    /// Serves `backing`, whose current contents are taken as durable.
    pub fn new(backing: &Path) -> io::Result<State> {
        let backing = backing.canonicalize()?;
        let trash = backing.join(TRASH_NAME);
        if trash.exists() {
            std::fs::remove_dir_all(&trash)?;
        }
        std::fs::DirBuilder::new().mode(0o700).create(&trash)?;
        let backing_root_ino = std::fs::metadata(&backing)?.ino();
        Ok(State {
            backing,
            trash,
            backing_root_ino,
            nodes: HashMap::new(),
            handles: HashMap::new(),
            next_fh: 1,
            dirty: HashMap::new(),
            journal: Vec::new(),
            last_write: None,
            next_trash: 0,
        })
    }

    /// The inode number the mounted view uses for a backing inode.
    pub fn ino_of(&self, md: &Metadata) -> u64 {
        let ino = md.ino();
        if ino == self.backing_root_ino {
            ROOT
        } else if ino == ROOT {
            self.backing_root_ino
        } else {
            ino
        }
    }

    /// The backing path of an inode the kernel has looked up.
    pub fn path(&self, ino: u64) -> io::Result<PathBuf> {
        self.path_of(ino)
    }

    fn path_of(&self, ino: u64) -> io::Result<PathBuf> {
        let mut names = Vec::new();
        let mut at = ino;
        loop {
            match at {
                ROOT => break,
                TRASH => {
                    let mut path = self.trash.clone();
                    path.extend(names.iter().rev());
                    return Ok(path);
                }
                _ => {}
            }
            let loc = self.nodes.get(&at).ok_or_else(|| errno(libc::ENOENT))?;
            names.push(loc.name.clone());
            at = loc.parent;
            if names.len() > 4096 {
                return Err(errno(libc::ELOOP));
            }
        }
        let mut path = self.backing.clone();
        path.extend(names.iter().rev());
        Ok(path)
    }

    fn child(&self, parent: u64, name: &OsStr) -> io::Result<PathBuf> {
        if parent == ROOT && name == TRASH_NAME {
            return Err(errno(libc::ENOENT));
        }
        Ok(self.path_of(parent)?.join(name))
    }

    fn remember(&mut self, md: &Metadata, parent: u64, name: &OsStr) -> u64 {
        let ino = self.ino_of(md);
        if ino != ROOT {
            self.nodes.insert(
                ino,
                Loc {
                    parent,
                    name: name.to_owned(),
                },
            );
        }
        ino
    }

    pub fn lookup(&mut self, parent: u64, name: &OsStr) -> io::Result<(u64, Metadata)> {
        let md = std::fs::symlink_metadata(self.child(parent, name)?)?;
        Ok((self.remember(&md, parent, name), md))
    }

    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> io::Result<Metadata> {
        if let Some(file) = fh.and_then(|fh| self.handles.get(&fh)) {
            return file.metadata();
        }
        std::fs::symlink_metadata(self.path_of(ino)?)
    }

    /// Opens a regular file; the handle always reads and writes (saving pre-images reads).
    pub fn open(&mut self, ino: u64) -> io::Result<u64> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path_of(ino)?)?;
        Ok(self.add_handle(file))
    }

    fn add_handle(&mut self, file: File) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, file);
        fh
    }

    pub fn release(&mut self, fh: u64) {
        self.handles.remove(&fh);
    }

    pub fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        exclusive: bool,
    ) -> io::Result<(u64, Metadata, u64)> {
        let path = self.child(parent, name)?;
        let existed = std::fs::symlink_metadata(&path).is_ok();
        if existed && exclusive {
            return Err(errno(libc::EEXIST));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(mode)
            .open(&path)?;
        let md = file.metadata()?;
        let ino = self.remember(&md, parent, name);
        if !existed {
            self.created(ino, parent, name, false);
        }
        let fh = self.add_handle(file);
        Ok((ino, md, fh))
    }

    fn created(&mut self, ino: u64, parent: u64, name: &OsStr, dir: bool) {
        // A new file's durable contents are empty, should its name become durable first.
        if !dir {
            self.dirty.insert(ino, Undo::default());
        }
        self.journal.push(MetaOp::Created {
            ino,
            at: Loc {
                parent,
                name: name.to_owned(),
            },
            dir,
        });
    }

    pub fn mkdir(&mut self, parent: u64, name: &OsStr, mode: u32) -> io::Result<(u64, Metadata)> {
        let path = self.child(parent, name)?;
        std::fs::DirBuilder::new().mode(mode).create(&path)?;
        let md = std::fs::symlink_metadata(&path)?;
        let ino = self.remember(&md, parent, name);
        self.created(ino, parent, name, true);
        Ok((ino, md))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> io::Result<Vec<u8>> {
        let file = self.handles.get(&fh).ok_or_else(|| errno(libc::EBADF))?;
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    pub fn write(&mut self, ino: u64, fh: u64, offset: u64, data: &[u8]) -> io::Result<()> {
        let file = self.handles.get(&fh).ok_or_else(|| errno(libc::EBADF))?;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| errno(libc::EFBIG))?;
        save_durable(&mut self.dirty, ino, file, offset, end)?;
        file.write_all_at(data, offset)?;
        self.last_write = Some(LastWrite {
            ino,
            offset,
            data: data.to_vec(),
        });
        Ok(())
    }

    /// Truncates or extends a file (`setattr` with a size).
    pub fn set_len(&mut self, ino: u64, fh: Option<u64>, len: u64) -> io::Result<()> {
        let opened;
        let file = match fh.and_then(|fh| self.handles.get(&fh)) {
            Some(f) => f,
            None => {
                opened = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(self.path_of(ino)?)?;
                &opened
            }
        };
        save_durable(&mut self.dirty, ino, file, len, u64::MAX)?;
        file.set_len(len)
    }

    /// `fsync`/`fdatasync` of a file: its current contents and size become durable. Its name
    /// does not: that takes an `fsync` of the directory.
    pub fn fsync(&mut self, ino: u64) {
        self.dirty.remove(&ino);
        if self.last_write.as_ref().is_some_and(|w| w.ino == ino) {
            self.last_write = None;
        }
    }

    /// `fsync` of a directory: commits the journal through the last operation in `dir`.
    pub fn fsyncdir(&mut self, dir: u64) {
        if let Some(last) = self.journal.iter().rposition(|op| op.touches(dir)) {
            self.commit_through(last + 1);
        }
    }

    /// Everything becomes durable (`syncfs`; the control command `sync`).
    pub fn sync_all(&mut self) {
        self.commit_through(self.journal.len());
        self.dirty.clear();
        self.last_write = None;
    }

    fn commit_through(&mut self, count: usize) {
        let committed: Vec<MetaOp> = self.journal.drain(..count).collect();
        for op in committed {
            let gone = match op {
                MetaOp::Removed { ino, trash, .. } => Some((ino, trash)),
                MetaOp::Renamed {
                    replaced: Some(r), ..
                } => Some(r),
                _ => None,
            };
            if let Some((ino, trash)) = gone {
                let path = self.trash.join(&trash);
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                if let Err(e) = removed {
                    eprintln!("powerfs: cannot purge {}: {e}", path.display());
                }
                self.nodes.remove(&ino);
                self.dirty.remove(&ino);
            }
        }
    }

    fn move_to_trash(&mut self, path: &Path, ino: u64) -> io::Result<OsString> {
        let name = OsString::from(format!("{}", self.next_trash));
        self.next_trash += 1;
        std::fs::rename(path, self.trash.join(&name))?;
        self.nodes.insert(
            ino,
            Loc {
                parent: TRASH,
                name: name.clone(),
            },
        );
        Ok(name)
    }

    /// `unlink` (`dir == false`) or `rmdir` (`dir == true`).
    pub fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> io::Result<()> {
        let path = self.child(parent, name)?;
        let md = std::fs::symlink_metadata(&path)?;
        match (dir, md.is_dir()) {
            (true, false) => return Err(errno(libc::ENOTDIR)),
            (false, true) => return Err(errno(libc::EISDIR)),
            (true, true) if std::fs::read_dir(&path)?.next().is_some() => {
                return Err(errno(libc::ENOTEMPTY))
            }
            _ => {}
        }
        let ino = self.ino_of(&md);
        let trash = self.move_to_trash(&path, ino)?;
        self.journal.push(MetaOp::Removed {
            ino,
            at: Loc {
                parent,
                name: name.to_owned(),
            },
            trash,
        });
        Ok(())
    }

    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> io::Result<()> {
        let from = self.child(parent, name)?;
        let to = self.child(new_parent, new_name)?;
        let md = std::fs::symlink_metadata(&from)?;
        if from == to {
            return Ok(());
        }
        let ino = self.ino_of(&md);
        let replaced = match std::fs::symlink_metadata(&to) {
            Ok(_) if no_replace => return Err(errno(libc::EEXIST)),
            Ok(target) => {
                match (md.is_dir(), target.is_dir()) {
                    (true, false) => return Err(errno(libc::ENOTDIR)),
                    (false, true) => return Err(errno(libc::EISDIR)),
                    (true, true) if std::fs::read_dir(&to)?.next().is_some() => {
                        return Err(errno(libc::ENOTEMPTY))
                    }
                    _ => {}
                }
                let target_ino = self.ino_of(&target);
                Some((target_ino, self.move_to_trash(&to, target_ino)?))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Err(e) = std::fs::rename(&from, &to) {
            if let Some((target_ino, trash)) = replaced {
                std::fs::rename(self.trash.join(&trash), &to)?;
                self.nodes.insert(
                    target_ino,
                    Loc {
                        parent: new_parent,
                        name: new_name.to_owned(),
                    },
                );
            }
            return Err(e);
        }
        let to_loc = Loc {
            parent: new_parent,
            name: new_name.to_owned(),
        };
        self.nodes.insert(ino, to_loc.clone());
        self.journal.push(MetaOp::Renamed {
            ino,
            from: Loc {
                parent,
                name: name.to_owned(),
            },
            to: to_loc,
            replaced,
        });
        Ok(())
    }

    /// The entries of a directory (without `.` and `..`), remembering where each lives.
    pub fn readdir(&mut self, ino: u64) -> io::Result<Vec<(u64, bool, OsString)>> {
        let path = self.path_of(ino)?;
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            let name = entry.file_name();
            if ino == ROOT && name == TRASH_NAME {
                continue;
            }
            let md = entry.metadata()?;
            let child = self.remember(&md, ino, &name);
            out.push((child, md.is_dir(), name));
        }
        Ok(out)
    }

    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// Drops everything that was not made durable, as a power cut would; with `tear`, then
    /// keeps the first `tear` bytes of the last unsynced write.
    pub fn power_cut(&mut self, tear: Option<usize>) -> Cut {
        let mut cut = Cut::default();
        // Open handles belong to processes that the power cut ended.
        self.handles.clear();
        let dirty: Vec<(u64, Undo)> = self.dirty.drain().collect();
        for (ino, undo) in dirty {
            // A file whose name is gone for good has nothing to roll back.
            let Ok(path) = self.path_of(ino) else {
                continue;
            };
            match roll_back(&path, &undo) {
                Ok(()) => cut.files_rolled_back += 1,
                Err(e) => cut
                    .errors
                    .push(format!("roll back {}: {e}", path.display())),
            }
        }
        while let Some(op) = self.journal.pop() {
            if let Err(e) = self.undo(op) {
                cut.errors.push(e);
            }
            cut.ops_undone += 1;
        }
        if let (Some(keep), Some(last)) = (tear, self.last_write.take()) {
            let keep = keep.min(last.data.len());
            if let Ok(path) = self.path_of(last.ino) {
                let torn = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.write_all_at(&last.data[..keep], last.offset));
                match torn {
                    Ok(()) => cut.torn_bytes = Some(keep),
                    Err(e) => cut
                        .errors
                        .push(format!("tear into {}: {e}", path.display())),
                }
            }
        }
        self.last_write = None;
        cut
    }

    fn undo(&mut self, op: MetaOp) -> Result<(), String> {
        let fail =
            |what: &str, path: &Path, e: io::Error| format!("{what} {}: {e}", path.display());
        match op {
            MetaOp::Created { ino, at, dir } => {
                let path = self.path_of(at.parent).map(|p| p.join(&at.name));
                let path = path.map_err(|e| format!("undo create of {:?}: {e}", at.name))?;
                let removed = if dir {
                    std::fs::remove_dir(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                self.nodes.remove(&ino);
                removed.map_err(|e| fail("undo create of", &path, e))
            }
            MetaOp::Removed { ino, at, trash } => {
                let from = self.trash.join(&trash);
                let to = self.path_of(at.parent).map(|p| p.join(&at.name));
                let to = to.map_err(|e| format!("undo removal of {:?}: {e}", at.name))?;
                std::fs::rename(&from, &to).map_err(|e| fail("undo removal of", &to, e))?;
                self.nodes.insert(ino, at);
                Ok(())
            }
            MetaOp::Renamed {
                ino,
                from,
                to,
                replaced,
            } => {
                let src = self.path_of(to.parent).map(|p| p.join(&to.name));
                let dst = self.path_of(from.parent).map(|p| p.join(&from.name));
                let (src, dst) = match (src, dst) {
                    (Ok(s), Ok(d)) => (s, d),
                    _ => {
                        return Err(format!(
                            "undo rename of {:?}: lost its directory",
                            from.name
                        ))
                    }
                };
                std::fs::rename(&src, &dst).map_err(|e| fail("undo rename to", &src, e))?;
                self.nodes.insert(ino, from);
                if let Some((old, trash)) = replaced {
                    std::fs::rename(self.trash.join(&trash), &src)
                        .map_err(|e| fail("restore replaced", &src, e))?;
                    self.nodes.insert(old, to);
                }
                Ok(())
            }
        }
    }
}

/// Before `[start, end)` of `file` changes, saves the durable bytes it would overwrite.
fn save_durable(
    dirty: &mut HashMap<u64, Undo>,
    ino: u64,
    file: &File,
    start: u64,
    end: u64,
) -> io::Result<()> {
    let undo = match dirty.entry(ino) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => e.insert(Undo {
            durable_len: file.metadata()?.len(),
            blocks: BTreeMap::new(),
        }),
    };
    let end = end.min(undo.durable_len);
    if start >= end {
        return Ok(());
    }
    for block in start / BLOCK..=(end - 1) / BLOCK {
        if undo.blocks.contains_key(&block) {
            continue;
        }
        // Every block not yet saved still holds its durable bytes: this is the first change.
        let lo = block * BLOCK;
        let hi = (lo + BLOCK).min(undo.durable_len);
        let mut buf = vec![0u8; (hi - lo) as usize];
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], lo + got as u64)? {
                0 => break,
                n => got += n,
            }
        }
        undo.blocks.insert(block, buf);
    }
    Ok(())
}

fn roll_back(path: &Path, undo: &Undo) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(undo.durable_len)?;
    for (block, bytes) in &undo.blocks {
        file.write_all_at(bytes, block * BLOCK)?;
    }
    Ok(())
}
