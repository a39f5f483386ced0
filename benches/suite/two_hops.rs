//! Two hops across the five-node herd: how long a report takes to reach a server two hops
//! from the one that took it, and whether a client asking there at once already sees it.
//!
//! - `flood`: an IAMAT at Clark on a persistent connection, then WHATSAT polled at Bailey
//!   (Clark → Bona → Bailey) on one persistent connection until the answer shows the report;
//!   400 reports at about 200 a second, `durability = "none"` against `"flush"`, in
//!   interleaved rounds. The origin floods as soon as its writer applies a report, before the
//!   sync its acknowledgement waits for, so `"flush"` should cost the flood little.
//! - `graders`: the classic graders' scenario (`tests/graders.rs`): an IAMAT at each server on
//!   a fresh connection, then at once a WHATSAT on a fresh connection at every server two
//!   hops away; counts the WHATSATs that did not show the report, with the machine otherwise
//!   idle and with a thread spinning on one core.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{five_links, herd_nodes_of, rounds, Server, FIVE, FIVE_LINKS, HERD};

const LOCATION: &str = "+34.068930-118.445127";

/// The current time as the protocol writes it.
fn now_ts() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Starts the five-node herd with `extra` configuration; returns the servers and a lookup of
/// their addresses by name.
fn five_node(
    dir: &Path,
    quiet: bool,
    extra: &str,
) -> (Vec<Server>, BTreeMap<&'static str, String>) {
    let (servers, addrs) = herd_nodes_of(HERD, dir, &FIVE, &five_links(), quiet, extra);
    (servers, FIVE.into_iter().zip(addrs).collect())
}

/// A persistent client connection.
struct Conn(BufReader<TcpStream>);

impl Conn {
    fn connect(addr: &str) -> Conn {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        Conn(BufReader::new(s))
    }

    fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.0.read_until(b'\n', &mut line).unwrap();
        assert!(!line.is_empty(), "connection closed");
        line
    }

    /// Whether `WHATSAT <client>` here shows a report (reads the whole answer either way).
    fn knows(&mut self, client: &str) -> bool {
        self.0
            .get_mut()
            .write_all(format!("WHATSAT {client} 10 1\n").as_bytes())
            .unwrap();
        let first = self.line();
        if first.starts_with(b"? ") {
            return false;
        }
        assert!(
            first.starts_with(b"AT "),
            "{:?}",
            String::from_utf8_lossy(&first)
        );
        // The places document, up to its blank line.
        while self.line() != b"\n" {}
        true
    }
}

/// Nearest-rank percentile of sorted `v`, in ms.
fn percentile(v: &[Duration], q: f64) -> f64 {
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1e3
}

/// Reports measured per run, and their pace.
const REPORTS: usize = 400;
const EVERY: Duration = Duration::from_millis(5);
/// The pause between two polls that did not show the report yet: enough to leave the
/// servers most of the machine, short enough to resolve a fraction of a millisecond.
const POLL_GAP: Duration = Duration::from_micros(100);

/// One run: a fresh five-node herd with `extra`, warmed up, then [`REPORTS`] reports at Clark,
/// each polled for at Bailey; returns the latencies, sorted.
fn flood_run(dir: &Path, extra: &str, tag: &str) -> Vec<Duration> {
    let (_servers, addrs) = five_node(dir, true, extra);
    let clark = Conn::connect(&addrs["Clark"]);
    let mut bailey = Conn::connect(&addrs["Bailey"]);
    let mut to_clark = clark.0.get_ref().try_clone().unwrap();
    // Clark's answers are read on their own thread, so that a `"flush"` acknowledgement, which
    // waits for the sync, holds up neither the polling nor the next report.
    let (sent, answered) = std::sync::mpsc::channel::<usize>();
    let reader = std::thread::spawn(move || {
        let mut clark = clark;
        let mut count = 0;
        while let Ok(n) = answered.recv() {
            for _ in 0..n {
                let line = clark.line();
                assert!(line.starts_with(b"AT Clark "), "{line:?}");
                count += 1;
            }
        }
        count
    });
    let mut report = |client: &str| {
        to_clark
            .write_all(format!("IAMAT {client} {LOCATION} {}\n", now_ts()).as_bytes())
            .unwrap();
        sent.send(1).unwrap();
    };
    // The links come up after the servers say they are ready: wait until a report gets
    // through, then let 20 more go by unmeasured.
    let started = Instant::now();
    let mut warm = 0;
    loop {
        let client = format!("{tag}-warm-{warm}");
        report(&client);
        let asked = Instant::now();
        let mut through = false;
        while !through && asked.elapsed() < Duration::from_secs(1) {
            through = bailey.knows(&client);
            std::thread::sleep(Duration::from_millis(1));
        }
        if through {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no report reached Bailey"
        );
        warm += 1;
    }
    let mut latencies = Vec::with_capacity(REPORTS);
    let start = Instant::now();
    for i in 0..20 + REPORTS {
        let at = start + EVERY * i as u32;
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let client = format!("{tag}-{i}");
        let t0 = Instant::now();
        report(&client);
        while !bailey.knows(&client) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{client} never reached Bailey"
            );
            std::thread::sleep(POLL_GAP);
        }
        if i >= 20 {
            latencies.push(t0.elapsed());
        }
    }
    drop(sent);
    assert_eq!(reader.join().unwrap(), warm + 1 + 20 + REPORTS);
    latencies.sort();
    latencies
}

/// `durability = "none"` against `"flush"`, interleaved in [`rounds`] rounds (the order
/// alternating), each run a fresh herd; prints each setting's median run and the spread.
pub fn flood_section() {
    let work = tempfile::tempdir().unwrap();
    println!(
        "Flood latency at two hops: the five-node herd (RUST_LOG=warn), an IAMAT at Clark on a \
         persistent connection, WHATSAT polled at Bailey on another until it shows the report; \
         {REPORTS} reports at about {} a second per run, {} rounds; ms from sending the IAMAT.",
        1000 / EVERY.as_millis(),
        rounds()
    );
    println!();
    let settings = [
        ("none", "[store]\ndurability = \"none\""),
        ("flush", "[store]\ndurability = \"flush\""),
    ];
    // Per setting, per run: (p50, p99, max).
    let mut runs: Vec<Vec<[f64; 3]>> = vec![Vec::new(); settings.len()];
    for round in 0..rounds() {
        let mut order: Vec<usize> = (0..settings.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (name, extra) = settings[i];
            let tag = format!("flood-{name}-{round}");
            let v = flood_run(&work.path().join(name), extra, &tag);
            runs[i].push([
                percentile(&v, 0.50),
                percentile(&v, 0.99),
                v.last().unwrap().as_secs_f64() * 1e3,
            ]);
        }
    }
    let median = |i: usize, k: usize| -> (f64, f64, f64) {
        let mut v: Vec<f64> = runs[i].iter().map(|r| r[k]).collect();
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    println!("| durability | p50 ms (median) | rounds, min–max | p99 ms (median) | rounds, min–max | max ms (median) | rounds, min–max |");
    println!("|---|---|---|---|---|---|---|");
    for (i, (name, _)) in settings.iter().enumerate() {
        let cells: Vec<String> = (0..3)
            .map(|k| {
                let (m, lo, hi) = median(i, k);
                format!("{m:.2} | {} × {lo:.2}–{hi:.2}", runs[i].len())
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    let ratio = |k: usize| median(1, k).0 / median(0, k).0;
    println!();
    println!(
        "flush / none: p50 {:.2}x (aim ≤ 1.3x), p99 {:.2}x (aim ≤ 2x), max {:.2}x",
        ratio(0),
        ratio(1),
        ratio(2)
    );
}

/// Connects to `addr`, sends `bytes`, half-closes and reads until the server closes.
fn ask(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(bytes).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("read from {addr}: {e}"));
    out
}

/// Hop counts from `from` over the classic topology.
fn hops(from: &'static str) -> BTreeMap<&'static str, usize> {
    let mut dist = BTreeMap::new();
    let mut queue = VecDeque::from([(from, 0)]);
    while let Some((node, d)) = queue.pop_front() {
        if dist.contains_key(node) {
            continue;
        }
        dist.insert(node, d);
        for (a, b) in FIVE_LINKS {
            if a == node {
                queue.push_back((b, d + 1));
            }
            if b == node {
                queue.push_back((a, d + 1));
            }
        }
    }
    dist
}

/// Every (origin, servers two hops away) pair.
fn two_hop_cases() -> Vec<(&'static str, Vec<&'static str>)> {
    FIVE.iter()
        .map(|&origin| {
            let far = hops(origin)
                .into_iter()
                .filter(|(_, d)| *d == 2)
                .map(|(n, _)| n)
                .collect();
            (origin, far)
        })
        .collect()
}

/// One case: IAMAT at `origin` on a fresh connection, then WHATSAT at each of `far` on a fresh
/// connection each, at once; returns the answers that did not name the report just answered.
fn case(addrs: &BTreeMap<&str, String>, origin: &str, far: &[&str], client: &str) -> Vec<String> {
    let answer = ask(
        &addrs[origin],
        format!("IAMAT {client} {LOCATION} {}\n", now_ts()).as_bytes(),
    );
    let at = String::from_utf8(answer).unwrap();
    assert!(at.starts_with(&format!("AT {origin} ")), "{at}");
    let at = at.trim_end();
    let mut wrong = Vec::new();
    for server in far {
        let answer = ask(
            &addrs[server],
            format!("WHATSAT {client} 10 1\n").as_bytes(),
        );
        let answer = String::from_utf8_lossy(&answer);
        let first = answer.lines().next().unwrap_or("");
        if first != at {
            wrong.push(format!("{origin} -> {server}: {first:?}"));
        }
    }
    wrong
}

/// Waits until `name`'s log shows a live link to each of its peers.
fn wait_links_up(logs: &Path, name: &str) {
    let started = Instant::now();
    for (a, b) in FIVE_LINKS {
        let peer = match (a == name, b == name) {
            (true, _) => b,
            (_, true) => a,
            _ => continue,
        };
        let needle = format!("link up peer={peer} ");
        while !std::fs::read_to_string(logs.join(format!("{name}.log")))
            .unwrap_or_default()
            .contains(&needle)
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{name}: link to {peer} never came up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Pins the calling thread to CPU `cpu`.
fn pin_to(cpu: usize) {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The graders' scenario on the default five-node herd, as shipped (`durability = "flush"`,
/// every line logged), [`graders_reps`] repetitions of every case, first on the machine as it
/// is, then with a thread spinning on CPU 0.
pub fn graders_section() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("graders");
    let (_servers, addrs) = five_node(&dir, false, "");
    for name in FIVE {
        wait_links_up(&dir.join("logs"), name);
    }
    let reps = graders_reps();
    println!(
        "The graders' scenario: the five-node herd as shipped; an IAMAT at each server on a fresh \
         connection, then at once a WHATSAT on a fresh connection at every server two hops \
         away; {reps} repetitions."
    );
    println!();
    println!("| machine | WHATSATs | did not show the report |");
    println!("|---|---|---|");
    for (label, spin) in [("as it is", false), ("a thread spinning on CPU 0", true)] {
        let stop = Arc::new(AtomicBool::new(false));
        let spinner = spin.then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                pin_to(0);
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        });
        let mut wrong = Vec::new();
        let mut cases = 0;
        for rep in 0..reps {
            for (origin, far) in two_hop_cases() {
                let client = format!("grader-{spin}-{rep}-{origin}");
                wrong.extend(case(&addrs, origin, &far, &client));
                cases += far.len();
            }
        }
        stop.store(true, Ordering::Relaxed);
        if let Some(spinner) = spinner {
            spinner.join().unwrap();
        }
        println!("| {label} | {cases} | {} |", wrong.len());
        for w in wrong.iter().take(5) {
            println!("|  | | {w} |");
        }
    }
}

/// Repetitions of the graders' scenario (`HERD_BENCH_GRADERS_REPS`, default 10).
fn graders_reps() -> usize {
    std::env::var("HERD_BENCH_GRADERS_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(10)
}
