//! What a peer's sync questions may cost: a peer that knows the secret (here, a loopback peer
//! of a herd without one) and asks the same costly question round after round is served at the
//! configured rate, not as fast as the node can scan; one that repeats a range within a round,
//! or names a range or count that cannot exist, is dropped and counted; and an honest peer's
//! refill of a wiped store still completes, paced.

mod common;

use std::io::{BufRead, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;

/// Fills `to` with `n` records sent as AT lines over a peer link from `as_peer`, and waits
/// until its store counts them and has flooded them: `herd_records` counts a record once it is
/// written, but its report is counted stored and queued for the other links only after the
/// rest of its batch. (The tests then speak as other peers: a second connection claiming
/// `as_peer` could find this one not yet gone, and be refused.)
fn fill(herd: &Herd, admin: &str, to: &str, as_peer: &str, n: usize) {
    let mut link = herd.link_as(to, as_peer);
    let mut lines = String::with_capacity(n * 48);
    for i in 0..n {
        lines.push_str(&format!(
            "AT {as_peer} +0.000000000 client{i:06} +34.068930-118.445127 1700000000.{i:09}\n"
        ));
    }
    link.get_mut().write_all(lines.as_bytes()).unwrap();
    eventually(
        Duration::from_secs(120),
        &format!("{n} records at {to}"),
        || metric(admin, "herd_records") == n as f64,
    );
    eventually(
        Duration::from_secs(30),
        &format!("{n} reports flooded from {to}"),
        || metric(admin, "herd_reports_total{outcome=\"stored\"}") == n as f64,
    );
}

/// The CPU time (user and system) the process `pid` has used.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_sec)
}

/// A `SYNC W` payload wanting, from each of `ranges` (depth, index), the record whose key
/// hash ends in `key`. The wire form is bincode's (variable-length integers; a `u8` is one
/// byte; a small length or integer is one byte): the number of ranges, then per range its
/// depth, its index and its keys (a count, then 4 bytes each).
fn want(ranges: &[(u8, u8)], key: [u8; 4]) -> String {
    assert!(ranges.len() < 251);
    let mut bytes = vec![ranges.len() as u8];
    for &(depth, index) in ranges {
        assert!(index < 251);
        bytes.extend_from_slice(&[depth, index, 1]);
        bytes.extend_from_slice(&key);
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The same, for a `W` naming more ranges than fit a one-byte count: `n` times the root.
fn want_root_times(n: u16) -> String {
    assert!((251..=u16::MAX).contains(&n));
    let mut bytes = vec![251];
    bytes.extend_from_slice(&n.to_le_bytes());
    for _ in 0..n {
        bytes.extend_from_slice(&[0, 0, 1, 0, 0, 0, 0]);
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A `SYNC Q` payload with a root fingerprint (variant 0; count, sum, window), all below 251.
fn root(count: u8, sum: u8, window: u8) -> String {
    URL_SAFE_NO_PAD.encode([0, count, sum, window])
}

/// Reads the link until it closes, counting the answers (`SYNC A`) and records (`AT`) the node
/// sends.
struct Drain {
    answers: Arc<AtomicU64>,
    records: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
}

impl Drain {
    fn start(link: &std::io::BufReader<TcpStream>) -> Drain {
        let stream = link.get_ref().try_clone().unwrap();
        stream.set_read_timeout(None).unwrap();
        let drain = Drain {
            answers: Arc::default(),
            records: Arc::default(),
            closed: Arc::default(),
        };
        let (answers, records, closed) = (
            Arc::clone(&drain.answers),
            Arc::clone(&drain.records),
            Arc::clone(&drain.closed),
        );
        std::thread::spawn(move || {
            let mut r = std::io::BufReader::new(stream);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line.starts_with(b"SYNC A ") => {
                        answers.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) if line.starts_with(b"AT ") => {
                        records.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                }
            }
            closed.store(true, Ordering::Relaxed);
        });
        drain
    }
}

const RECORDS: usize = 40_000;

/// Node N with RECORDS records (filled through F), linked to L, which the test plays; and
/// N's admin address.
fn filled_node() -> (Herd, String) {
    let (admin, admins) = admin_table(&["N"]);
    let mut herd = Herd::new(
        &["N", "L", "F"],
        &[("N", "L"), ("N", "F")],
        &format!("[store]\ndurability = \"none\"\n[peers]\nbackoff_min_ms = 5000\nbackoff_max_ms = 5000\n{admin}"),
    );
    herd.start("N");
    let admin = admins["N"].clone();
    fill(&herd, &admin, "N", "F", RECORDS);
    (herd, admin)
}

#[test]
fn a_peer_asking_to_scan_the_whole_store_round_after_round_costs_bounded_cpu() {
    let (herd, _admin) = filled_node();
    let pid = herd.nodes["N"].child.id();

    // Each question is a round of its own (so none repeats a range of its round) and wants
    // one record of the root range: to find it the node reads its whole store.
    let mut liar = herd.link_as("N", "L");
    let drain = Drain::start(&liar);
    let mut questions = String::new();
    for round in 1..=400u32 {
        questions.push_str(&format!(
            "SYNC W {round} {}\n",
            want(&[(0, 0)], [0, 0, 0, 0])
        ));
    }
    liar.get_mut().write_all(questions.as_bytes()).unwrap();
    // Let the burst the pace allows go by, then measure.
    std::thread::sleep(Duration::from_secs(1));
    let (cpu0, answers0, t0) = (
        cpu_time(pid),
        drain.answers.load(Ordering::Relaxed),
        Instant::now(),
    );
    let asked = Instant::now();
    let whatsat = herd.at_line("N", "client000007");
    let waited = asked.elapsed();
    std::thread::sleep(Duration::from_secs(4));
    let (cpu1, answers1, t1) = (
        cpu_time(pid),
        drain.answers.load(Ordering::Relaxed),
        Instant::now(),
    );
    let secs = (t1 - t0).as_secs_f64();
    let cpu_per_sec = (cpu1 - cpu0).as_secs_f64() / secs;
    let answers_per_sec = (answers1 - answers0) as f64 / secs;
    eprintln!(
        "node CPU {cpu_per_sec:.3} s/s, {answers_per_sec:.1} answers/s (each a scan of {RECORDS} records), WHATSAT waited {waited:?}"
    );
    assert!(whatsat.is_some());
    assert!(
        !drain.closed.load(Ordering::Relaxed),
        "a question in a round of its own is paced, not refused"
    );
    // The default pace reads 100,000 records a second: two and a half scans of 40,000.
    // Without the pace, the same questions were answered 37.5 times a second, at 0.6 s of CPU
    // per second on two shared cores.
    assert!(
        answers_per_sec <= 4.0,
        "answered {answers_per_sec:.1} whole-store scans a second"
    );
    assert!(
        cpu_per_sec < 0.25,
        "the node spent {cpu_per_sec:.3} s of CPU per second on the liar"
    );
    assert!(
        waited < Duration::from_secs(2),
        "a WHATSAT waited {waited:?}"
    );
    assert!(herd.log("N").contains("pacing the peer's sync questions"));
}

#[test]
fn a_peer_that_repeats_a_range_within_a_round_or_names_an_impossible_one_is_dropped() {
    let (herd, admin) = filled_node();
    let admin = &admin;
    let pid = herd.nodes["N"].child.id();
    let repeated = "herd_sync_violations_total{kind=\"repeated\",peer=\"L\"}";
    let malformed = "herd_sync_violations_total{kind=\"malformed\",peer=\"L\"}";

    let cases: [(&str, String, &str); 5] = [
        // One 9 KB W naming the root range 1,000 times.
        (
            "a W naming the root 1,000 times",
            format!("SYNC W 1 {}\n", want_root_times(1000)),
            repeated,
        ),
        // The root asked twice in one round, each asking for the whole store.
        (
            "the root asked twice in a round",
            format!("SYNC Q 5 {}\nSYNC Q 5 {}\n", root(0, 0, 1), root(0, 0, 1)),
            repeated,
        ),
        // A range of depth 3 (depths are even).
        (
            "a range that cannot exist",
            format!("SYNC W 1 {}\n", want(&[(3, 0)], [0; 4])),
            malformed,
        ),
        // An empty store's fingerprint with a sum.
        (
            "an impossible root fingerprint",
            format!("SYNC Q 1 {}\n", root(0, 9, 1)),
            malformed,
        ),
        // Round 3 after round 4.
        (
            "a round that goes back",
            format!(
                "SYNC W 4 {}\nSYNC W 3 {}\n",
                want(&[(2, 1)], [0; 4]),
                want(&[(2, 2)], [0; 4])
            ),
            repeated,
        ),
    ];
    for (what, lines, series) in cases {
        let before = metric(admin, series);
        let cpu0 = cpu_time(pid);
        let mut liar = herd.link_as("N", "L");
        let drain = Drain::start(&liar);
        liar.get_mut().write_all(lines.as_bytes()).unwrap();
        eventually(
            Duration::from_secs(10),
            &format!("the link to be dropped after {what}"),
            || drain.closed.load(Ordering::Relaxed),
        );
        assert_eq!(metric(admin, series), before + 1.0, "{what}");
        // Refused before any scan: no answer was sent to it.
        assert!(
            drain.answers.load(Ordering::Relaxed) <= 1,
            "{what}: the node answered {} questions",
            drain.answers.load(Ordering::Relaxed)
        );
        let cpu = cpu_time(pid) - cpu0;
        assert!(cpu < Duration::from_secs(2), "{what} cost {cpu:?} of CPU");
    }
    let log = herd.log("N");
    assert!(log.contains("peer broke the sync protocol; dropping the link"));
    assert!(
        log.contains("a question repeats the root in round 5"),
        "{log}"
    );
    // The honest flow still works afterwards: the store is intact and answers.
    assert!(herd.at_line("N", "client000001").is_some());
}

#[test]
fn a_wiped_store_is_refilled_from_an_honest_peer_at_the_paced_rate() {
    let (admin, admins) = admin_table(&["A", "B"]);
    // Links' queues of one report: what reaches E and B comes by sync, not by the flood that
    // queued every record of F's for them while they were down.
    let mut herd = Herd::new(
        &["A", "B", "E", "F"],
        &[("A", "B"), ("A", "E"), ("A", "F")],
        &format!(
            "[store]\ndurability = \"none\"\n[peers]\nsync_records_per_sec = 5000\nqueue = 1\nbackoff_min_ms = 50\nbackoff_max_ms = 200\n{admin}"
        ),
    );
    herd.start("A");
    let n = 30_000;
    fill(&herd, &admins["A"], "A", "F", n);

    // What a wiped store asks (its fingerprint: nothing) is answered with every record, at
    // 5,000 a second after the first second's worth, and then the answer.
    let mut wiped = herd.link_as("A", "E");
    let drain = Drain::start(&wiped);
    let asked = Instant::now();
    wiped
        .get_mut()
        .write_all(format!("SYNC Q 1 {}\n", root(0, 0, 1)).as_bytes())
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "the answer after the records",
        || drain.answers.load(Ordering::Relaxed) == 1,
    );
    let took = asked.elapsed();
    eprintln!("{n} records answered in {took:?} at 5,000 records/s");
    // Every record, plus at most the one report the down link's queue (of 1) held for E.
    let records = drain.records.load(Ordering::Relaxed);
    assert!((n as u64..=n as u64 + 1).contains(&records), "{records}");
    assert!(took >= Duration::from_secs(4), "{took:?}");
    assert!(herd.log("A").contains("pacing the peer's sync questions"));
    drop(wiped);

    // A real node with an empty store links to A: everything arrives, its round ends.
    let refill = Instant::now();
    herd.start("B");
    eventually(Duration::from_secs(90), "every record at B", || {
        metric(&admins["B"], "herd_records") == n as f64
    });
    eventually(Duration::from_secs(90), "B's first round to finish", || {
        herd.log("B").contains("sync done")
    });
    eprintln!(
        "refill of {n} records, B's round included: {:?}",
        refill.elapsed()
    );
    for node in ["A", "B"] {
        assert!(
            !herd.log(node).contains("peer broke the sync protocol"),
            "{node}"
        );
    }
    assert!(herd.at_line("B", &format!("client{:06}", n - 1)).is_some());
}
