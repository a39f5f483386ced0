//! Anti-entropy and restart costs on large stores. Prints tables; asserts only that the stores
//! converge.
//!
//!     cargo bench --bench reconcile                      # 1,000,000 clients
//!     HERD_BENCH_CLIENTS=100000 cargo bench --bench reconcile
//!
//! Store A gets N clients. Store B gets the same N reports written independently, in the
//! opposite order (two stores with equal contents and no shared history). Then A changes D
//! clients and B asks A for a round, as a linked node does. A wiped store C is then refilled
//! from A. Bytes are exactly the lines that would cross the link, both ways (the reconciliation
//! code runs with the socket cut out, see `herd::peer::sync::local`); times cover both stores'
//! work, applying the records included.
//!
//! Then a real `herd serve` process is started on A's store and on an empty one, and the time
//! to its readiness line and its resident memory are measured for both.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herd::bench::rss_kib;
use herd::config::{Durability, StoreConfig};
use herd::peer::sync::local::{round, Traffic};
use herd::protocol::request::{parse, Request};
use herd::store::Store;

fn report(client: usize, stamp: u64) -> herd::report::Report {
    let line = format!("AT A +0.000100000 client-{client:07} +34.068930-118.445127 {stamp}.5");
    match parse(&Bytes::from(line)) {
        Request::At(r) => r,
        other => unreachable!("{other:?}"),
    }
}

fn open(dir: &Path) -> Store {
    let config = StoreConfig {
        durability: Durability::None,
        cache_mib: 256,
        ..StoreConfig::default()
    };
    Store::open(dir, &config).unwrap()
}

async fn ready(store: &Store) {
    while !store.ready() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn sync(asker: &Store, answerer: &Store, id: u64) -> (Traffic, Duration) {
    let started = Instant::now();
    let t = round((asker, "B"), (answerer, "A"), id, &mut |_| Vec::new())
        .await
        .unwrap();
    (t, started.elapsed())
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

pub fn main() {
    tokio::runtime::Runtime::new().unwrap().block_on(run());
}

async fn run() {
    let n: usize = std::env::var("HERD_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let work = tempfile::tempdir().unwrap();
    let (a_dir, b_dir, c_dir) = (
        work.path().join("A"),
        work.path().join("B"),
        work.path().join("C"),
    );
    let (a, b, c) = (open(&a_dir), open(&b_dir), open(&c_dir));

    let started = Instant::now();
    for i in 0..n {
        a.offer(report(i, 1_700_000_000), None).await.unwrap();
    }
    a.flush().await.unwrap();
    let fill = started.elapsed();
    println!(
        "store A: {n} clients written in {:.1} s ({:.0} merges/s through the writer thread)",
        fill.as_secs_f64(),
        n as f64 / fill.as_secs_f64()
    );
    for i in (0..n).rev() {
        b.offer(report(i, 1_700_000_000), None).await.unwrap();
    }
    b.flush().await.unwrap();
    for s in [&a, &b, &c] {
        ready(s).await;
    }

    println!();
    println!("| stores | differing clients | records sent | bytes (both ways) | messages | time |");
    println!("|---|---|---|---|---|---|");
    let row = |what: String, diff: usize, t: Traffic, took: Duration| {
        println!(
            "| {what} | {diff} | {} | {} | {} | {:.3} s |",
            t.records(),
            kib(t.bytes() as usize),
            t.messages,
            took.as_secs_f64()
        );
    };
    let mut id = 0;
    let (t, took) = sync(&b, &a, {
        id += 1;
        id
    })
    .await;
    row(format!("{n}, equal, no shared history"), 0, t, took);
    for (stamp, diff) in (1_700_000_001..).zip([1_000usize, 100_000]) {
        let diff = diff.min(n);
        // Spread the changed clients over the whole key space.
        let step = (n / diff.max(1)).max(1);
        for k in 0..diff {
            a.offer(report((k * step) % n, stamp), None).await.unwrap();
        }
        a.flush().await.unwrap();
        id += 1;
        let (t, took) = sync(&b, &a, id).await;
        row(format!("{n}"), diff, t, took);
        id += 1;
        let (t, took) = sync(&b, &a, id).await;
        row(format!("{n}, the round after"), 0, t, took);
    }
    id += 1;
    let (t, took) = sync(&c, &a, id).await;
    row(format!("{n} and a wiped store"), n, t, took);
    assert_eq!(a.count(), b.count());
    assert_eq!(a.count(), c.count());
    for s in [&a, &b, &c] {
        s.close().await;
    }
    drop((a, b, c));

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
