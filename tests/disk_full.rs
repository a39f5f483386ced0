//! A full disk, on a real file system: a small ext4 image, loop-mounted as the node's state
//! directory. Every IAMAT is answered; what was acknowledged stays readable, through a full
//! disk, restarts on it, a corrupt snapshot, and space coming back without a restart.
//!
//! These need root (mount) and loop devices: they are ignored otherwise, and `.ci/run` runs
//! them (`cargo test --test disk_full -- --ignored`).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use fs2::FileExt;

const NODE: &str = "Solo";

/// An ext4 image of `mib` MiB mounted at `at` (or a tmpfs of that size), unmounted on drop.
struct Image {
    file: PathBuf,
    at: PathBuf,
}

impl Image {
    fn tmpfs(at: &Path, mib: u64) -> Image {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "this test needs root (run it as root, as .ci/run does)"
        );
        std::fs::create_dir_all(at).unwrap();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
                at.to_str().unwrap(),
            ],
        );
        Image {
            file: PathBuf::new(),
            at: at.to_owned(),
        }
    }

    fn mount(dir: &Path, at: &Path, mib: u64) -> Image {
        assert!(
            unsafe { libc::geteuid() } == 0 && Path::new("/dev/loop-control").exists(),
            "this test needs root and loop devices (run it as root, as .ci/run does)"
        );
        let file = dir.join(format!("disk-{mib}.img"));
        let f = std::fs::File::create(&file).unwrap();
        f.set_len(mib << 20).unwrap();
        drop(f);
        run(
            "mkfs.ext4",
            &["-q", "-F", "-m", "0", file.to_str().unwrap()],
        );
        std::fs::create_dir_all(at).unwrap();
        run(
            "mount",
            &["-o", "loop", file.to_str().unwrap(), at.to_str().unwrap()],
        );
        Image {
            file,
            at: at.to_owned(),
        }
    }

    fn free(&self) -> u64 {
        fs_free(&self.at)
    }

    /// Fills the disk but for `leave` bytes with a file of its own; returns its path.
    fn fill(&self, leave: u64) -> PathBuf {
        let filler = self.at.join("filler");
        let free = self.free();
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&filler)
            .unwrap();
        let mut want = free.saturating_sub(leave);
        // Allocate in steps: the file system's own metadata takes a little of what is free.
        while want > 0 {
            let step = want.min(1 << 20);
            let len = f.metadata().unwrap().len();
            if f.allocate(len + step).is_err() {
                break;
            }
            want -= step;
        }
        // And to the last block, if nothing is to be left.
        if leave == 0 {
            let mut len = f.metadata().unwrap().len();
            while f.allocate(len + 4096).is_ok() {
                len += 4096;
            }
        }
        filler
    }
}

fn fs_free(at: &Path) -> u64 {
    let c = std::ffi::CString::new(at.to_str().unwrap()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        if !self.file.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.file);
        }
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A lone node whose state directory is an image of `mib` MiB.
fn lone_node(store: &str, mib: u64) -> (Herd, Image) {
    let herd = Herd::new(&[NODE], &[], &format!("[store]\n{store}\n"));
    let image = Image::mount(herd.dir.path(), &herd.state_dir(NODE), mib);
    (herd, image)
}

fn client_id(i: usize) -> String {
    // 900 bytes each: the disk fills after some thousands.
    format!("c{i:06}-{}", "x".repeat(892))
}

/// Sends new clients until `refusals` answers in a row are `? `; every answer is checked to be
/// the request's own AT line or `? ` and the line. Returns the acknowledged clients.
fn fill_with_clients(herd: &Herd, refusals: usize) -> Vec<String> {
    let mut c = Client::connect(&herd.addr(NODE));
    let mut acked = Vec::new();
    let mut refused_in_a_row = 0;
    for i in 0.. {
        let id = client_id(i);
        let ts = now_ts();
        let answer = c.iamat(&id, "+34.068930-118.445127", &ts);
        assert!(!answer.is_empty(), "IAMAT {i} left unanswered");
        if answer.starts_with("AT ") {
            assert!(answer.contains(&id), "{answer}");
            acked.push(id);
            refused_in_a_row = 0;
        } else {
            assert_eq!(
                answer,
                format!("? IAMAT {id} +34.068930-118.445127 {ts}"),
                "IAMAT {i}"
            );
            refused_in_a_row += 1;
            if refused_in_a_row == refusals {
                break;
            }
        }
        assert!(i < 100_000, "the disk never filled");
    }
    acked
}

/// Every client in `acked` is answered with its AT line by WHATSAT.
fn all_readable(herd: &Herd, acked: &[String]) -> Result<(), String> {
    let mut c = Client::connect(&herd.addr(NODE));
    let mut missing = Vec::new();
    for id in acked {
        c.send(format!("WHATSAT {id} 1 1\n").as_bytes());
        let answer = c.whatsat_answer();
        if !answer.starts_with(b"AT ") {
            missing.push(id[..7].to_owned());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} acknowledged clients not readable: {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(10)]
        ))
    }
}

fn moved_aside(state: &Path) -> Vec<String> {
    std::fs::read_dir(state)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("store.corrupt"))
        .collect()
}

fn healthz(addr: &str) -> (u16, String) {
    match http(addr, "GET", "/healthz") {
        Some(a) => (a.status, a.text()),
        None => (0, String::new()),
    }
}

#[test]
#[ignore = "needs root and loop devices"]
fn filling_the_disk_with_new_clients_refuses_them_and_loses_nothing() {
    let (herd, image) = lone_node("min_free_mib = 8", 32);
    fill_and_check(herd, image);
}

#[test]
#[ignore = "needs root"]
fn filling_a_tmpfs_with_new_clients_refuses_them_and_loses_nothing() {
    let herd = Herd::new(&[NODE], &[], "[store]\nmin_free_mib = 8\n");
    let image = Image::tmpfs(&herd.state_dir(NODE), 32);
    fill_and_check(herd, image);
}

fn fill_and_check(mut herd: Herd, image: Image) {
    herd.start(NODE);
    let acked = fill_with_clients(&herd, 50);
    assert!(acked.len() > 1000, "only {} acknowledged", acked.len());
    assert!(
        image.free() >= 2 << 20,
        "the node left less than its floor free: {}",
        image.free()
    );
    // A stored client still updates.
    let mut c = Client::connect(&herd.addr(NODE));
    let update = c.iamat(&acked[0], "+1.0-2.0", &now_ts());
    assert!(update.starts_with("AT "), "update refused: {update}");
    all_readable(&herd, &acked).unwrap();
    // And everything is still there after kill -9 and a restart on the same disk.
    herd.kill(NODE);
    herd.start(NODE);
    all_readable(&herd, &acked).unwrap();
    assert!(moved_aside(&herd.state_dir(NODE)).is_empty());
}

#[test]
#[ignore = "needs root and loop devices"]
fn a_node_that_cannot_write_is_unready_and_takes_reports_again_once_space_is_back() {
    for reserve in [8, 0] {
        let (admin, addrs) = admin_table(&[NODE]);
        // With a reserve, the node sees the disk fill up and stops writing below its floor;
        // without one, sled's own write fails with ENOSPC and the store is reopened.
        let herd_extra = format!("[store]\nmin_free_mib = {reserve}\n{admin}");
        let mut herd = Herd::new(&[NODE], &[], &herd_extra);
        let image = Image::mount(herd.dir.path(), &herd.state_dir(NODE), 32);
        herd.start(NODE);
        let admin_addr = addrs[NODE].clone();
        let mut c = Client::connect(&herd.addr(NODE));
        let mut acked = Vec::new();
        for i in 0..200 {
            let id = client_id(i);
            assert!(c.iamat(&id, "+1.0-2.0", &now_ts()).starts_with("AT "));
            acked.push(id);
        }
        assert_eq!(healthz(&admin_addr), (200, "ok".to_owned()));
        let filler = image.fill(0);
        // Writes fail (or are refused): answered "? ", never left unanswered.
        let mut refused = 0;
        for i in 200..260 {
            let answer = c.iamat(&client_id(i), "+1.0-2.0", &now_ts());
            assert!(!answer.is_empty(), "IAMAT left unanswered on a full disk");
            if answer.starts_with("? ") {
                refused += 1;
            } else {
                acked.push(client_id(i));
            }
        }
        assert!(
            refused > 0,
            "a full disk refused nothing (reserve {reserve})"
        );
        let (status, body) = healthz(&admin_addr);
        assert_eq!(status, 503, "healthz on a full disk: {body}");
        assert!(body.contains("cannot write"), "{body}");
        if reserve > 0 {
            // The ballast's space let the store reopen: what it acknowledged is read as before.
            // (Without a reserve there is no ballast, and sled cannot open a store on a full
            // disk: reads wait for space, as the README says.)
            all_readable(&herd, &acked).unwrap();
        }
        // Space comes back: acknowledged again within seconds, no restart.
        std::fs::remove_file(&filler).unwrap();
        let back = Instant::now();
        let mut i = 1000;
        loop {
            let id = client_id(i);
            i += 1;
            let answer = c.iamat(&id, "+1.0-2.0", &now_ts());
            if answer.starts_with("AT ") {
                acked.push(id);
                break;
            }
            assert!(
                back.elapsed() < Duration::from_secs(15),
                "not acknowledging 15 s after space came back (reserve {reserve})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eventually(Duration::from_secs(10), "healthz 200 again", || {
            healthz(&admin_addr).0 == 200
        });
        all_readable(&herd, &acked).unwrap();
        herd.kill(NODE);
        herd.start(NODE);
        all_readable(&herd, &acked).unwrap();
        assert!(moved_aside(&herd.state_dir(NODE)).is_empty());
    }
}

/// Fills the disk to the last block with the node stopped, restarts it six times on it (as a
/// supervisor would), then frees the space: every acknowledged report is there, and the store
/// was never moved aside. `damage` is done to the store before the restarts.
fn restarts_on_a_full_disk(damaged: bool, damage: impl Fn(&Path)) {
    let (mut herd, image) = lone_node("min_free_mib = 0", 24);
    // Space an operator frees at the end (other files on the same disk).
    let spare = image.at.join("spare");
    std::fs::File::create(&spare)
        .unwrap()
        .allocate(6 << 20)
        .unwrap();
    herd.start(NODE);
    let acked = fill_with_clients(&herd, 20);
    assert!(acked.len() > 500, "only {} acknowledged", acked.len());
    herd.kill(NODE);
    // A start writes a snapshot of the log so far (there is room for it: the spare is
    // released to let it, and taken again).
    std::fs::remove_file(&spare).unwrap();
    herd.start(NODE);
    herd.kill(NODE);
    std::fs::File::create(&spare)
        .unwrap()
        .allocate(2 << 20)
        .unwrap();
    let state = herd.state_dir(NODE);
    damage(&state.join("store"));
    let filler = image.fill(0);
    for attempt in 0..6 {
        let mut node = spawn(herd.command(NODE));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if node.child.try_wait().unwrap().is_some() {
                break;
            }
            if node.stderr.lock().unwrap().contains(" ready ") || Instant::now() > deadline {
                node.child.kill().unwrap();
                node.child.wait().unwrap();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let said = node.stderr.lock().unwrap().clone();
        assert!(
            !said.contains("moved aside") && moved_aside(&state).is_empty(),
            "restart {attempt} moved the store aside: {said}"
        );
    }
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&spare).unwrap();
    let node = spawn(herd.command(NODE));
    let started = Instant::now();
    while !node.stderr.lock().unwrap().contains(" ready ") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not ready after space came back: {}",
            node.stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    herd.nodes.insert(NODE.to_owned(), node);
    all_readable(&herd, &acked).unwrap();
    assert!(moved_aside(&state).is_empty());
    let set_aside = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("store.snapshot-aside-")
        });
    assert_eq!(
        set_aside, damaged,
        "a damaged snapshot is set aside, and only then"
    );
    herd.kill(NODE);
    let stored: BTreeSet<String> = inspect(&state)
        .iter()
        .map(|r| r["client"].as_str().unwrap().to_owned())
        .collect();
    for id in &acked {
        assert!(stored.contains(id), "{} missing from the store", &id[..7]);
    }
}

#[test]
#[ignore = "needs root and loop devices"]
fn six_restarts_on_a_full_disk_lose_nothing() {
    restarts_on_a_full_disk(false, |_| {});
}

#[test]
#[ignore = "needs root and loop devices"]
fn six_restarts_on_a_full_disk_with_a_truncated_snapshot_lose_nothing() {
    restarts_on_a_full_disk(true, |store| {
        let snaps = snapshots(store);
        assert!(!snaps.is_empty(), "no snapshot to damage");
        for snap in snaps {
            let len = std::fs::metadata(&snap).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(&snap).unwrap();
            f.set_len(len / 2).unwrap();
        }
    });
}

#[test]
#[ignore = "needs root and loop devices"]
fn six_restarts_on_a_full_disk_with_a_corrupt_snapshot_lose_nothing() {
    restarts_on_a_full_disk(true, |store| {
        let snaps = snapshots(store);
        assert!(!snaps.is_empty(), "no snapshot to damage");
        for snap in snaps {
            let mut bytes = std::fs::read(&snap).unwrap();
            let mid = bytes.len() / 2;
            let end = (mid + 8).min(bytes.len());
            for b in &mut bytes[mid..end] {
                *b ^= 0xff;
            }
            std::fs::write(&snap, bytes).unwrap();
        }
    });
}

fn snapshots(store: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(store)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("snap.")
        })
        .collect()
}
