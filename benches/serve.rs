//! Whole-node figures: real `herd serve` processes driven by `herd bench` over loopback.
//! Prints tables; asserts nothing.
//!
//!     cargo bench --bench serve
//!     HERD_BENCH_SECS=20 cargo bench --bench serve      # longer runs
//!
//! - IAMAT with 64 connections, `durability = "flush"` and `"os"` against `"none"` (the
//!   baseline), in the same run, and what the fdatasync costs (flush against os);
//! - WHATSAT with 64 connections, offline provider, and the legacy Google provider against a
//!   local HTTP server with a warm cache;
//! - time from process start to accepting connections and to the readiness line;
//! - resident memory at rest, with 2,000 idle connections, while a 64 MiB line is refused, and
//!   while a client that never reads is held off.

#[path = "../tests/support/fake_google.rs"]
mod fake_google;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HERD: &str = env!("CARGO_BIN_EXE_herd");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_mib(pid: u32) -> f64 {
    herd::bench::rss_kib(pid) as f64 / 1024.0
}

struct Node {
    child: Child,
    addr: String,
    /// From spawn to the first accepted connection, and to the readiness line.
    accepting: Duration,
    ready: Duration,
}

impl Node {
    fn start(dir: &Path, extra: &str, env: &[(&str, &str)]) -> Node {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("bench.toml");
        std::fs::write(&config, format!("{extra}\n[servers]\nN = {addr:?}\n")).unwrap();
        let _ = std::fs::remove_dir_all(dir.join("state"));
        let started = Instant::now();
        let mut cmd = Command::new(HERD);
        cmd.args(["serve", "N", "--config"])
            .arg(&config)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--log-dir")
            .arg(dir.join("logs"))
            .env("RUST_LOG", "warn,herd::ready=info")
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let accepting = loop {
            if TcpStream::connect(&addr).is_ok() {
                break started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut lines = stderr.lines();
        for line in lines.by_ref() {
            if line.unwrap().contains(" ready ") {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        Node {
            child,
            addr,
            accepting,
            ready: started.elapsed(),
        }
    }

    fn ask(&self, bytes: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.write_all(bytes).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut out).unwrap();
        out
    }

    fn stop(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap();
    }
}

/// Runs `herd bench` against `addr`; returns its JSON report.
fn bench(addr: &str, args: &[&str], secs: u64) -> serde_json::Value {
    let out = Command::new(HERD)
        .args([
            "bench",
            "--addr",
            addr,
            "--connections",
            "64",
            "--warmup",
            "1",
            "--json",
        ])
        .args(["--duration", &secs.to_string()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "herd bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

fn row(label: &str, r: &serde_json::Value, baseline: Option<&serde_json::Value>) {
    let rate = r["requests_per_sec"].as_f64().unwrap();
    let l = &r["latency_us"];
    let ratio = baseline.map_or(String::from("1.00 (baseline)"), |b| {
        format!("{:.2}", rate / b["requests_per_sec"].as_f64().unwrap())
    });
    println!(
        "| {label} | {rate:.0} | {ratio} | {} | {} | {} | {} |",
        l["p50"], l["p99"], l["p99.9"], l["max"]
    );
}

fn main() {
    let secs: u64 = std::env::var("HERD_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();

    println!("IAMAT, one node, 64 connections, {secs} s each (latency in µs)\n");
    println!("| durability | requests/s | vs none | p50 | p99 | p99.9 | max |");
    println!("|---|---|---|---|---|---|---|");
    let node = Node::start(dir, "[store]\ndurability = \"none\"", &[]);
    let none = bench(&node.addr, &["--mode", "iamat"], secs);
    node.stop();
    let node = Node::start(dir, "[store]\ndurability = \"os\"", &[]);
    let os = bench(&node.addr, &["--mode", "iamat"], secs);
    node.stop();
    let node = Node::start(dir, "[store]\ndurability = \"flush\"", &[]);
    let flush = bench(&node.addr, &["--mode", "iamat"], secs);
    node.stop();
    row("none", &none, None);
    row("os (group commit, no fdatasync)", &os, Some(&none));
    row("flush (group commit + fdatasync)", &flush, Some(&none));
    let rate = |r: &serde_json::Value| r["requests_per_sec"].as_f64().unwrap();
    println!(
        "\nflush / os throughput: {:.2} (the cost of fdatasync)",
        rate(&flush) / rate(&os)
    );

    println!("\nWHATSAT, one node, 64 connections, radius 10 km, bound 5\n");
    println!("| provider | requests/s | vs offline | p50 | p99 | p99.9 | max |");
    println!("|---|---|---|---|---|---|---|");
    let node = Node::start(dir, "", &[]);
    let offline = bench(&node.addr, &["--mode", "whatsat"], secs);
    node.stop();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(fake_google::FakeGoogle::start());
    let google_cfg = format!(
        "[places]\nprovider = \"google\"\ngoogle_url = {:?}",
        fake.legacy_url()
    );
    let node = Node::start(dir, &google_cfg, &[("GOOGLE_PLACES_API_KEY", "bench-key")]);
    let google = bench(&node.addr, &["--mode", "whatsat"], secs);
    node.stop();
    row("offline", &offline, None);
    row(
        &format!("google, warm cache ({} upstream requests)", fake.count()),
        &google,
        Some(&offline),
    );

    println!("\nStart-up and memory (offline provider, empty store)\n");
    let node = Node::start(dir, "", &[]);
    let at_start = rss_mib(node.child.id());
    let answer = node.ask(b"IAMAT m +34.068930-118.445127 1\nWHATSAT m 1 1\n");
    assert!(answer.ends_with(b"}\n\n"));
    let at_rest = rss_mib(node.child.id());
    let idle: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(&node.addr).unwrap())
        .collect();
    for mut s in &idle {
        s.write_all(b"IAMAT idle").unwrap();
    }
    assert!(node.ask(b"IAMAT x +1+2 3\n").starts_with(b"AT N"));
    let with_idle = rss_mib(node.child.id());
    drop(idle);
    let mut long = TcpStream::connect(&node.addr).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..64 {
        long.write_all(&chunk).unwrap();
    }
    let during_long = rss_mib(node.child.id());
    drop(long);
    let hog = TcpStream::connect(&node.addr).unwrap();
    hog.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let request = b"IAMAT hog +1+2 3\n".repeat(1000);
    let mut w = &hog;
    let mut sent = 0usize;
    while w.write_all(&request).is_ok() && sent < (1 << 30) {
        sent += request.len();
    }
    let during_hog = rss_mib(node.child.id());
    drop(hog);
    println!("| what | figure |");
    println!("|---|---|");
    println!(
        "| process start → accepting connections | {:.1} ms |",
        node.accepting.as_secs_f64() * 1e3
    );
    println!(
        "| process start → readiness line (store open) | {:.1} ms |",
        node.ready.as_secs_f64() * 1e3
    );
    println!("| resident memory just after start | {at_start:.1} MiB |");
    println!("| at rest, places dataset loaded (baseline) | {at_rest:.1} MiB |");
    println!(
        "| with 2,000 idle connections | {with_idle:.1} MiB ({:.2}x) |",
        with_idle / at_rest
    );
    println!(
        "| while refusing a 64 MiB line | {during_long:.1} MiB ({:.2}x) |",
        during_long / at_rest
    );
    println!(
        "| while holding off a client that never reads (it got {} KiB in before the node stopped reading) | {during_hog:.1} MiB ({:.2}x) |",
        sent / 1024,
        during_hog / at_rest
    );
    node.stop();
}
