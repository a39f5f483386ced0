//! Power-loss tests: a node whose state directory is on powerfs (a FUSE file system that
//! forgets whatever was not synced; see docs/powerfs.md) takes IAMATs from several connections,
//! is killed with SIGKILL at a random moment, the unsynced data is dropped as a power cut
//! would (sometimes tearing the last write), and the node restarts on what remains. After
//! every cut: the store opens in place (not moved aside), every answered report is there or
//! superseded by a newer one that was sent, and nothing is there that was never sent.
//!
//! `durability = "flush"` must pass. The same suite with `durability = "os"` (sled's flush
//! alone, no fdatasync) is kept as an ignored test that fails: run it with
//! `cargo test --test power_loss -- --ignored` to see acknowledged reports lost.
//!
//! Needs root and /dev/fuse (or fusermount3); where FUSE cannot be mounted, each test prints
//! `SKIPPED: <why>` and returns.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Says why a test did not run, straight to stderr: the test harness hides what a passing test
/// prints with `eprintln!`, and a skip must show in every log.
fn skipped(test: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why}");
}

const NODE: &str = "Solo";
const LOADERS: usize = 4;

/// Every IAMAT sent: client → (timestamp → location); the newest answered timestamp per client.
#[derive(Default)]
struct Ledger {
    sent: HashMap<String, BTreeMap<u64, String>>,
    acked: HashMap<String, u64>,
}

/// Sends IAMATs on one connection until it fails (the node was killed) or `stop` is set.
/// Each loader has clients of its own and shares two with the others, so some reports are
/// superseded by other connections' newer ones.
fn load(
    addr: String,
    thread: usize,
    stamps: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) {
    let Ok(stream) = std::net::TcpStream::connect(&addr) else {
        return;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut conn = Client {
        stream: std::io::BufReader::new(stream),
    };
    let mut k = 0usize;
    while !stop.load(Ordering::SeqCst) {
        k += 1;
        let client = if k.is_multiple_of(4) {
            format!("power-shared-{}", k % 2)
        } else {
            format!("power-{thread}-{}", k % 6)
        };
        let stamp = stamps.fetch_add(1, Ordering::SeqCst);
        let location = format!("+{}.{:03}-118.{:03}", stamp % 80, stamp % 1000, thread);
        ledger
            .lock()
            .unwrap()
            .sent
            .entry(client.clone())
            .or_default()
            .insert(stamp, location.clone());
        let line = format!("IAMAT {client} {location} {stamp}\n");
        if std::io::Write::write_all(conn.stream.get_mut(), line.as_bytes()).is_err() {
            return;
        }
        let mut answer = Vec::new();
        match std::io::BufRead::read_until(&mut conn.stream, b'\n', &mut answer) {
            Ok(n) if n > 0 && answer.ends_with(b"\n") => {}
            _ => return, // killed mid-request: sent, not acknowledged
        }
        let text = String::from_utf8(answer).unwrap();
        assert!(
            text.starts_with("AT ") && text.ends_with(&format!(" {client} {location} {stamp}\n")),
            "bad answer {text:?}"
        );
        let mut l = ledger.lock().unwrap();
        let newest = l.acked.entry(client).or_insert(0);
        *newest = (*newest).max(stamp);
        drop(l);
        answered.fetch_add(1, Ordering::SeqCst);
    }
}

/// Checks the store under the state dir against the ledger; returns what is wrong.
fn check(herd: &Herd, ledger: &Ledger) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut stored: HashMap<String, (u64, String)> = HashMap::new();
    for row in inspect(&herd.state_dir(NODE)) {
        let client = row["client"].as_str().unwrap().to_owned();
        let ts_text = row["timestamp"].as_str().unwrap();
        let location = row["location"].as_str().unwrap().to_owned();
        let Ok(ts) = ts_text.parse::<u64>() else {
            wrong.push(format!(
                "phantom: {client} has timestamp {ts_text:?}, never sent"
            ));
            continue;
        };
        if ledger.sent.get(&client).and_then(|s| s.get(&ts)) != Some(&location) {
            wrong.push(format!("phantom: {client} {location} {ts} was never sent"));
        }
        stored.insert(client, (ts, location));
    }
    for (client, &acked) in &ledger.acked {
        match stored.get(client) {
            None => wrong.push(format!(
                "lost: {client} was answered (timestamp {acked}) but has no record"
            )),
            Some((ts, _)) if *ts < acked => wrong.push(format!(
                "lost: {client} was answered at timestamp {acked} but the store holds {ts}"
            )),
            Some(_) => {}
        }
    }
    wrong
}

/// Runs `runs` crash-and-cut rounds against one node with the given durability.
fn power_cuts(test: &str, durability: &str) {
    if let Some(why) = powerfs::unavailable() {
        skipped(test, &why);
        return;
    }
    let runs: usize = std::env::var("HERD_POWER_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("HERD_POWER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{test}: seed {seed} (set HERD_POWER_SEED to replay), {runs} runs");
    let mut rng = StdRng::seed_from_u64(seed);

    let herd = Herd::new(
        &[NODE],
        &[],
        &format!("[store]\ndurability = \"{durability}\"\n"),
    );
    let backing = herd.dir.path().join("backing");
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::create_dir_all(herd.state_dir(NODE)).unwrap();
    let mount = powerfs::Mount::new(&backing, &herd.state_dir(NODE)).unwrap();
    let mut rig = Rig {
        herd,
        mount: Some(mount),
    };
    let (herd, mount) = (&mut rig.herd, rig.mount.as_ref().unwrap());

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stamps = Arc::new(AtomicU64::new(1_700_000_000));
    let mut acked_total = 0;
    for run in 0..runs {
        herd.start(NODE);
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let loaders: Vec<_> = (0..LOADERS)
            .map(|t| {
                let (addr, stamps, answered, ledger, stop) = (
                    herd.addr(NODE),
                    Arc::clone(&stamps),
                    Arc::clone(&answered),
                    Arc::clone(&ledger),
                    Arc::clone(&stop),
                );
                std::thread::spawn(move || load(addr, t, stamps, answered, ledger, stop))
            })
            .collect();

        // The moment of the cut: either right after an answer (just after a flush returned,
        // where a missing fdatasync shows), or at a random time under load.
        let moment = if rng.gen_bool(0.5) {
            let target = rng.gen_range(1..200);
            let deadline = Instant::now() + Duration::from_secs(20);
            while answered.load(Ordering::SeqCst) < target {
                assert!(
                    Instant::now() < deadline,
                    "run {run}: no progress under load"
                );
                std::thread::sleep(Duration::from_micros(200));
            }
            format!("after answer {target}")
        } else {
            let ms = rng.gen_range(1..250);
            std::thread::sleep(Duration::from_millis(ms));
            format!("{ms} ms into the load")
        };
        herd.kill(NODE);
        stop.store(true, Ordering::SeqCst);
        for l in loaders {
            l.join().unwrap();
        }
        let tear = rng.gen_bool(0.5).then(|| rng.gen_range(0..600));
        let cut = mount.power_cut(tear);
        assert!(
            cut.errors.is_empty(),
            "run {run}: power cut failed: {cut:?}"
        );

        // The node restarts on what survived; its store must open where it is.
        herd.start(NODE);
        let stderr = herd.stderr(NODE);
        assert!(
            !stderr.contains("moved to"),
            "run {run}: the store was moved aside after the cut ({moment}, tear {tear:?}): {stderr}"
        );
        herd.kill(NODE);

        let l = ledger.lock().unwrap();
        let wrong = check(herd, &l);
        acked_total = l.acked.len();
        assert!(
            wrong.is_empty(),
            "run {run} (seed {seed}, durability {durability}, cut {moment}, tear {tear:?}, \
             {} answered this run, cut undid {} files / {} name ops):\n{}",
            answered.load(Ordering::SeqCst),
            cut.files_rolled_back,
            cut.ops_undone,
            wrong.join("\n")
        );
        eprintln!(
            "run {run}: cut {moment}, tear {tear:?}, {} answered, rolled back {} files and {} name ops: ok",
            answered.load(Ordering::SeqCst),
            cut.files_rolled_back,
            cut.ops_undone
        );
    }
    assert!(acked_total > 0, "no report was ever answered");
    rig.mount.take().unwrap().unmount().unwrap();
}

/// The node and the mount under it. On a failed assertion the node is killed before the
/// file system is unmounted, so no mount is left behind busy.
struct Rig {
    herd: Herd,
    mount: Option<powerfs::Mount>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.herd.kill(NODE);
        self.mount.take();
    }
}

#[test]
fn answered_reports_survive_power_cuts_with_durability_flush() {
    power_cuts(
        "answered_reports_survive_power_cuts_with_durability_flush",
        "flush",
    );
}

/// Fails by design: with `durability = "os"` an IAMAT is answered after sled's flush alone,
/// which does not `fdatasync`, so a power cut right after the answer loses the report. Run it
/// with `--ignored` to see the loss demonstrated.
#[test]
#[ignore = "fails by design: durability = \"os\" loses answered reports in a power cut"]
fn answered_reports_are_lost_in_power_cuts_with_durability_os() {
    power_cuts(
        "answered_reports_are_lost_in_power_cuts_with_durability_os",
        "os",
    );
}
