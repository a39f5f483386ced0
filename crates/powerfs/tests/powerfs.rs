//! powerfs's own tests, through a real FUSE mount: what survives a power cut is exactly what
//! `docs/powerfs.md` says (file contents on file fsync, names on directory fsync, everything
//! on `sync`), and a cut can tear the last write. Where FUSE cannot be mounted (no /dev/fuse,
//! no fusermount3, not root) each test prints `SKIPPED: <why>` and returns.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use powerfs::Mount;

/// Says why a test did not run, straight to stderr: the test harness hides what a passing test
/// prints with `eprintln!`, and a skip must show in every log.
fn skipped(test: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why}");
}

struct Fixture {
    mount: Mount,
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

fn mounted(test: &str) -> Option<Fixture> {
    if let Some(why) = powerfs::unavailable() {
        skipped(test, &why);
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (backing, mnt) = (dir.path().join("backing"), dir.path().join("mnt"));
    fs::create_dir(&backing).unwrap();
    fs::create_dir(&mnt).unwrap();
    let mount = Mount::new(&backing, &mnt).unwrap();
    Some(Fixture {
        mount,
        mnt,
        _dir: dir,
    })
}

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

/// A file created, written, fsynced, and its name made durable by an fsync of its directory.
fn durable_file(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    let mut f = File::create(&path).unwrap();
    f.write_all(contents).unwrap();
    f.sync_all().unwrap();
    sync_dir(dir);
    path
}

fn read(path: &Path) -> Option<Vec<u8>> {
    fs::read(path).ok()
}

#[test]
fn an_unsynced_write_is_gone_after_a_cut_and_a_synced_one_stays() {
    let Some(fx) = mounted("an_unsynced_write_is_gone_after_a_cut_and_a_synced_one_stays") else {
        return;
    };
    let kept = durable_file(&fx.mnt, "kept", b"hello");
    let lost = durable_file(&fx.mnt, "lost", b"0123456789");

    let mut f = OpenOptions::new().append(true).open(&kept).unwrap();
    f.write_all(b" world").unwrap();
    f.sync_data().unwrap();
    drop(f);
    let f = OpenOptions::new().write(true).open(&lost).unwrap();
    f.write_all_at(b"XY", 2).unwrap(); // an overwrite inside the durable length
    f.write_all_at(b"tail", 10).unwrap(); // and an append
    drop(f); // close() makes nothing durable
    assert_eq!(read(&lost).unwrap(), b"01XY456789tail");

    let cut = fx.mount.power_cut(None);
    assert!(cut.errors.is_empty(), "{cut:?}");
    assert_eq!(read(&kept).unwrap(), b"hello world");
    assert_eq!(read(&lost).unwrap(), b"0123456789");
}

#[test]
fn a_truncation_not_synced_is_undone() {
    let Some(fx) = mounted("a_truncation_not_synced_is_undone") else {
        return;
    };
    let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let path = durable_file(&fx.mnt, "big", &big);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(100).unwrap();
    f.write_all_at(b"new", 5000).unwrap();
    drop(f);
    fx.mount.power_cut(None);
    assert_eq!(read(&path).unwrap(), big);
}

#[test]
fn a_new_name_needs_an_fsync_of_its_directory() {
    let Some(fx) = mounted("a_new_name_needs_an_fsync_of_its_directory") else {
        return;
    };
    let sub = fx.mnt.join("sub");
    fs::create_dir(&sub).unwrap();
    sync_dir(&fx.mnt);

    // Contents synced, name not: gone.
    let mut f = File::create(sub.join("no-dir-sync")).unwrap();
    f.write_all(b"data").unwrap();
    f.sync_all().unwrap();
    drop(f);
    fx.mount.power_cut(None);
    assert!(read(&sub.join("no-dir-sync")).is_none());

    // Name synced, contents not: the file survives, empty.
    let mut f = File::create(sub.join("no-file-sync")).unwrap();
    f.write_all(b"data").unwrap();
    drop(f);
    sync_dir(&sub);
    // Both synced: all there.
    durable_file(&sub, "both", b"data");
    // A directory created but never made durable in its parent.
    fs::create_dir(fx.mnt.join("fresh")).unwrap();
    fx.mount.power_cut(None);
    assert_eq!(read(&sub.join("no-file-sync")).unwrap(), b"");
    assert_eq!(read(&sub.join("both")).unwrap(), b"data");
    assert!(!fx.mnt.join("fresh").exists());
    let mut names: Vec<_> = fs::read_dir(&sub)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["both", "no-file-sync"]);
}

#[test]
fn renames_and_unlinks_are_undone_until_the_directory_is_synced() {
    let Some(fx) = mounted("renames_and_unlinks_are_undone_until_the_directory_is_synced") else {
        return;
    };
    let m = &fx.mnt;
    durable_file(m, "a", b"A");
    durable_file(m, "b", b"B");
    durable_file(m, "c", b"C");
    fs::rename(m.join("a"), m.join("b")).unwrap(); // replaces b
    fs::remove_file(m.join("c")).unwrap();
    fs::rename(m.join("b"), m.join("moved")).unwrap();
    assert_eq!(read(&m.join("moved")).unwrap(), b"A");
    let cut = fx.mount.power_cut(None);
    assert_eq!(cut.ops_undone, 3, "{cut:?}");
    assert_eq!(read(&m.join("a")).unwrap(), b"A");
    assert_eq!(read(&m.join("b")).unwrap(), b"B");
    assert_eq!(read(&m.join("c")).unwrap(), b"C");
    assert!(read(&m.join("moved")).is_none());

    // The write-temp-then-rename pattern, done right, survives; the replaced file is gone.
    durable_file(m, "tmp", b"new");
    fs::rename(m.join("tmp"), m.join("a")).unwrap();
    sync_dir(m);
    fs::remove_file(m.join("c")).unwrap();
    sync_dir(m);
    fx.mount.power_cut(None);
    assert_eq!(read(&m.join("a")).unwrap(), b"new");
    assert!(read(&m.join("tmp")).is_none());
    assert!(read(&m.join("c")).is_none());
}

#[test]
fn a_directory_sync_commits_every_earlier_name_change() {
    let Some(fx) = mounted("a_directory_sync_commits_every_earlier_name_change") else {
        return;
    };
    let (x, y) = (fx.mnt.join("x"), fx.mnt.join("y"));
    fs::create_dir(&x).unwrap();
    fs::create_dir(&y).unwrap();
    sync_dir(&fx.mnt);
    File::create(x.join("first")).unwrap();
    File::create(y.join("second")).unwrap();
    File::create(x.join("third")).unwrap();
    sync_dir(&y); // commits "first" and "second", not "third"
    fx.mount.power_cut(None);
    assert!(x.join("first").exists());
    assert!(y.join("second").exists());
    assert!(!x.join("third").exists());
}

#[test]
fn sync_all_keeps_everything_and_a_torn_write_keeps_a_prefix() {
    let Some(fx) = mounted("sync_all_keeps_everything_and_a_torn_write_keeps_a_prefix") else {
        return;
    };
    let mut f = File::create(fx.mnt.join("f")).unwrap();
    f.write_all(b"synced by syncfs").unwrap();
    fx.mount.sync_all();
    f.write_all_at(b"0123456789", 0).unwrap();
    drop(f);
    let cut = fx.mount.power_cut(Some(4));
    assert_eq!(cut.torn_bytes, Some(4));
    assert_eq!(read(&fx.mnt.join("f")).unwrap(), b"0123ed by syncfs");
}

#[test]
fn the_binary_takes_commands_on_its_control_socket() {
    if let Some(why) = powerfs::unavailable() {
        skipped("the_binary_takes_commands_on_its_control_socket", &why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (backing, mnt, sock) = (
        dir.path().join("backing"),
        dir.path().join("mnt"),
        dir.path().join("control"),
    );
    fs::create_dir(&backing).unwrap();
    fs::create_dir(&mnt).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_powerfs"))
        .args([&backing, &mnt, &sock])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready, "ready\n");

    let mut control = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let mut answers = BufReader::new(control.try_clone().unwrap());
    let mut ask = |line: &str| {
        writeln!(control, "{line}").unwrap();
        let mut answer = String::new();
        answers.read_line(&mut answer).unwrap();
        answer
    };
    fs::write(mnt.join("f"), b"abc").unwrap();
    assert_eq!(ask("sync"), "ok\n");
    fs::write(mnt.join("f"), b"xyz").unwrap();
    assert_eq!(ask("cut tear=1"), "ok files=1 ops=0 torn=1\n");
    assert_eq!(read(&mnt.join("f")).unwrap(), b"xbc");
    assert!(ask("cut tear=lots").starts_with("error "));
    assert_eq!(ask("unmount"), "ok\n");
    assert!(child.wait().unwrap().success());
    // Unmounted: the mount point is the empty directory again; the backing keeps the file.
    assert!(!mnt.join("f").exists());
    assert_eq!(read(&backing.join("f")).unwrap(), b"xbc");
}
