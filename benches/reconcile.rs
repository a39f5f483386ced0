//! Anti-entropy and restart costs on large stores. Prints a table; asserts nothing.
//!
//!     cargo bench --bench reconcile                      # 1,000,000 clients
//!     HERD_BENCH_CLIENTS=100000 cargo bench --bench reconcile
//!
//! Two stores A and B share a history: B took all of A's records through a full sync (the
//! fallback a store with no history gets), then A pulled from B. Then A changes D clients and
//! the two reconcile as linked nodes do: B pulls from A, A pulls from B. Bytes are exactly
//! what would cross the wire (PULL lines, AT lines, DONE lines). Times cover producing the
//! stream and applying it to the other store, without sockets.
//!
//! Then a real `herd serve` process is started on A's store and on an empty one, and the time
//! to its readiness line and its resident memory are measured for both.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herd::bench::rss_kib;
use herd::herd::Origin;
use herd::peer::sync::{pull_line, Serve};
use herd::protocol::request::{parse, PeerLine, Request};
use herd::store::Store;

fn report(client: usize, stamp: u64) -> herd::report::Report {
    let line = format!("AT A +0.000100000 client-{client:07} +34.068930-118.445127 {stamp}.5");
    match parse(&Bytes::from(line)) {
        Request::At(r) => r,
        other => unreachable!("{other:?}"),
    }
}

/// One pull: `from` answers `to`'s PULL; `to` applies it. Returns (bytes, records, time).
fn pull(to: &Store, to_name: &str, from: &Store, from_name: &str) -> (usize, u64, Duration) {
    let started = Instant::now();
    let request = pull_line(to.cursor(from_name).unwrap(), to.incarnation());
    let Request::Peer(PeerLine::Pull {
        epoch,
        seq,
        incarnation,
    }) = parse(&Bytes::from(request.clone()))
    else {
        unreachable!()
    };
    let mut serve = Serve::start(from.epoch(), to_name, (epoch, seq), incarnation);
    let mut bytes = request.len();
    let mut buf = Vec::with_capacity(1 << 16);
    let origin = Origin {
        peer: from_name,
        incarnation: from.incarnation(),
    };
    loop {
        buf.clear();
        let done = serve.step(from, &mut buf).unwrap();
        bytes += buf.len();
        for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match parse(&Bytes::copy_from_slice(line)) {
                Request::At(r) => {
                    to.merge(&r, Some(origin)).unwrap();
                }
                Request::Peer(PeerLine::Done { epoch, seq }) => {
                    to.set_cursor(from_name, epoch, seq).unwrap()
                }
                other => unreachable!("{other:?}"),
            }
        }
        if done {
            break;
        }
    }
    (bytes, serve.sent, started.elapsed())
}

fn kib(bytes: usize) -> String {
    if bytes < 10 * 1024 {
        format!("{bytes} B")
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// Starts `herd serve` on `state_dir`; returns (time to readiness, RSS after readiness in KiB).
fn restart(state_dir: &Path, work: &Path) -> (Duration, u64) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = work.join("bench.toml");
    std::fs::write(&config, format!("[servers]\nA = \"127.0.0.1:{port}\"\n")).unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["serve", "A", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--log-dir")
        .arg(work.join("logs"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        if line.unwrap().contains(" ready ") {
            break;
        }
    }
    let ready = started.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let rss = rss_kib(child.id());
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    (ready, rss)
}

fn main() {
    let n: usize = std::env::var("HERD_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let work = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (work.path().join("A"), work.path().join("B"));
    let a = Store::open(&a_dir, 256).unwrap();
    let b = Store::open(&b_dir, 256).unwrap();

    let started = Instant::now();
    for i in 0..n {
        a.merge(&report(i, 1_700_000_000), None).unwrap();
    }
    a.flush().unwrap();
    let fill = started.elapsed();
    println!(
        "store A: {n} clients written in {:.1} s ({:.0} merges/s)",
        fill.as_secs_f64(),
        n as f64 / fill.as_secs_f64()
    );

    let (full_bytes, full_records, full_time) = pull(&b, "B", &a, "A");
    let (back_bytes, back_records, back_time) = pull(&a, "A", &b, "B");
    println!(
        "full sync (no shared history): B<-A {} records, {} in {:.2} s; then A<-B {} records, {} in {:.2} s",
        full_records,
        kib(full_bytes),
        full_time.as_secs_f64(),
        back_records,
        kib(back_bytes),
        back_time.as_secs_f64()
    );
    println!();
    println!("| stores | differing clients | records sent | bytes sent (both ways) | time | bytes vs full sync |");
    println!("|---|---|---|---|---|---|");
    for (stamp, diff) in (1_700_000_001..).zip([0usize, 1_000, 100_000]) {
        let diff = diff.min(n);
        // Spread the changed clients over the whole key space.
        let step = (n / diff.max(1)).max(1);
        for k in 0..diff {
            a.merge(&report((k * step) % n, stamp), None).unwrap();
        }
        let (ab_bytes, ab_records, ab_time) = pull(&b, "B", &a, "A");
        let (ba_bytes, ba_records, ba_time) = pull(&a, "A", &b, "B");
        let bytes = ab_bytes + ba_bytes;
        println!(
            "| {n} | {diff} | {} | {} | {:.3} s | {:.5} |",
            ab_records + ba_records,
            kib(bytes),
            (ab_time + ba_time).as_secs_f64(),
            bytes as f64 / full_bytes as f64
        );
    }
    assert_eq!(a.len(), b.len());
    drop(a);
    drop(b);

    println!();
    let empty = work.path().join("empty");
    let (empty_ready, empty_rss) = restart(&empty, work.path());
    let (full_ready, full_rss) = restart(&a_dir, work.path());
    println!("| node | restart to ready | resident memory |");
    println!("|---|---|---|");
    println!(
        "| empty store (baseline) | {:.0} ms | {} MiB |",
        empty_ready.as_secs_f64() * 1e3,
        empty_rss / 1024
    );
    println!(
        "| {n} clients | {:.0} ms ({:.1}x) | {} MiB ({:.1}x) |",
        full_ready.as_secs_f64() * 1e3,
        full_ready.as_secs_f64() / empty_ready.as_secs_f64(),
        full_rss / 1024,
        full_rss as f64 / empty_rss.max(1) as f64
    );
}
