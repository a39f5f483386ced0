//! The whole performance picture in one run, as ratios against baselines measured side by side
//! on the same machine in the same run. Prints tables; asserts nothing.
//!
//!     cargo bench --bench suite                  # everything (~3 min)
//!     cargo bench --bench suite -- serve         # only the load sections
//!     cargo bench --bench suite -- classic       # only the classic workload
//!     cargo bench --bench suite -- flood         # only the two-hop flood latency
//!     cargo bench --bench suite -- graders       # the graders' scenario under a busy core
//!     cargo bench --bench suite -- reconcile     # only anti-entropy and restart
//!     HERD_BENCH_SECS=10 HERD_BENCH_ROUNDS=5 cargo bench --bench suite
//!
//! Every server is its own process, and every load comes from one generator, `herd bench`
//! (64 connections, one request in flight on each), so the only thing that changes between
//! rows is the server:
//!
//! - **bare**: a tokio line server that answers each line with a line (this file, started as
//!   a child of itself): what the machine and the load generator can do at all;
//! - **bare + sled**: the same, plus one sled insert per line on a writer thread and one sled
//!   flush per drained batch before the answers go out: the cost sled itself puts on an
//!   acknowledgement that survives a crash of the process, without any of the herd's logic;
//! - **bare + sled + sync** (`sled+sync`): the same, plus an `fdatasync` of sled's log file
//!   (opened once) after each flush: the least a power-safe acknowledgement over sled costs;
//! - **redis**: Debian's `redis-server` with `appendonly yes`, `appendfsync always`, loaded with
//!   `GEOADD` (skipped, with a message, where `redis-server` is not installed:
//!   `apt-get install redis-server`);
//! - **herd**: one `herd serve` node, `durability = "flush"` (sled's flush plus `fdatasync`),
//!   logging every line as shipped, and again with the line log filtered out (`RUST_LOG=warn`);
//!   then `durability = "os"` (sled's flush only, the same work as the bare + sled row) and
//!   `durability = "none"` (answers at once; sled's own flusher writes in the background);
//!
//! and, when `HERD_BENCH_PREVIOUS` names another build of herd, that build the same way (a
//! before/after row). The rows run in rounds (`HERD_BENCH_ROUNDS`, default 3), each round
//! every row in turn, and each row shows its median round and the spread: on a shared machine
//! a single run of each, one after the other, measures the machine's drift as much as the
//! servers;
//!
//! then the classic workload, one connection per request, against the default five-node herd
//! (requests spread over the five) and against the bare server; then how long a report takes
//! to reach a server two hops away, `durability = "none"` against `"flush"` (`flood`,
//! `suite/two_hops.rs`); then anti-entropy on 1,000,000-client stores and restart
//! (`reconcile.rs`).
//!
//! Not part of the default run: `cargo bench --bench suite -- graders` repeats the classic
//! graders' scenario (an IAMAT, then at once a WHATSAT at every server two hops away, each on
//! a fresh connection) with and without a busy loop on one core, and counts the WHATSATs that
//! did not show the report yet.

#[allow(dead_code)]
#[path = "reconcile.rs"]
mod reconcile;

#[path = "suite/two_hops.rs"]
mod two_hops;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HERD: &str = env!("CARGO_BIN_EXE_herd");

/// The README's five-node topology.
const FIVE: [&str; 5] = ["Bailey", "Bona", "Campbell", "Clark", "Jaquez"];
const FIVE_LINKS: [(&str, &str); 6] = [
    ("Clark", "Jaquez"),
    ("Clark", "Bona"),
    ("Campbell", "Bailey"),
    ("Campbell", "Bona"),
    ("Campbell", "Jaquez"),
    ("Bona", "Bailey"),
];

/// [`FIVE_LINKS`] as the configuration writes them.
fn five_links() -> String {
    FIVE_LINKS
        .iter()
        .map(|(a, b)| format!("[{a:?},{b:?}]"))
        .collect::<Vec<_>>()
        .join(",")
}
const ROLE: &str = "HERD_SUITE_ROLE";

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        let addr = std::env::var("HERD_SUITE_ADDR").unwrap();
        return match role.as_str() {
            "bare" => baseline::serve(&addr, None, false),
            "sled" => baseline::serve(&addr, Some(std::env::var("HERD_SUITE_DIR").unwrap()), false),
            "sled-sync" => {
                baseline::serve(&addr, Some(std::env::var("HERD_SUITE_DIR").unwrap()), true)
            }
            other => panic!("unknown role {other}"),
        };
    }
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |s: &str| which.is_empty() || which.iter().any(|w| w == s);
    if wants("serve") {
        serve_section();
    }
    if wants("serve") || which.iter().any(|w| w == "classic") {
        println!();
        classic_section();
    }
    if wants("flood") {
        println!();
        two_hops::flood_section();
    }
    // A stress run, only when asked for by name.
    if which.iter().any(|w| w == "graders") {
        println!();
        two_hops::graders_section();
    }
    if wants("reconcile") {
        println!();
        reconcile::main();
    }
}

fn secs() -> u64 {
    std::env::var("HERD_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_accepting(addr: &str) {
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{addr} never listened"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn baseline_server(role: &str, dir: &Path) -> (Server, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, role)
        .env("HERD_SUITE_ADDR", &addr)
        .env("HERD_SUITE_DIR", dir.join(role))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_accepting(&addr);
    (Server(child), addr)
}

fn redis_server(dir: &Path) -> Option<(Server, String)> {
    // A fresh directory each time: an append-only file left by an earlier round would be
    // loaded first (and answered with -LOADING meanwhile).
    let dir = dir.join("redis");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    let addr = format!("127.0.0.1:{port}");
    wait_accepting(&addr);
    Some((Server(child), addr))
}

/// Starts the servers of `names` (linked as `links`), each logging as shipped unless `quiet`.
fn herd_nodes(dir: &Path, names: &[&str], links: &str, quiet: bool) -> (Vec<Server>, Vec<String>) {
    herd_nodes_of(HERD, dir, names, links, quiet, "")
}

/// [`herd_nodes`] with another build of herd (`HERD_BENCH_PREVIOUS`, for a before/after row).
fn herd_nodes_of(
    binary: &str,
    dir: &Path,
    names: &[&str],
    links: &str,
    quiet: bool,
    extra: &str,
) -> (Vec<Server>, Vec<String>) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let addrs: Vec<String> = names
        .iter()
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut config = format!("links = [{links}]\n{extra}\n[servers]\n");
    for (n, a) in names.iter().zip(&addrs) {
        config.push_str(&format!("{n} = {a:?}\n"));
    }
    let path = dir.join("herd.toml");
    std::fs::write(&path, config).unwrap();
    let mut servers = Vec::new();
    for n in names {
        let mut cmd = Command::new(binary);
        cmd.args(["serve", n, "--config"])
            .arg(&path)
            .arg("--state-dir")
            .arg(dir.join("state").join(n))
            .arg("--log-dir")
            .arg(dir.join("logs"))
            .stderr(Stdio::piped());
        if quiet {
            cmd.env("RUST_LOG", "warn");
        } else {
            cmd.env_remove("RUST_LOG");
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        for line in lines.by_ref() {
            if line.unwrap().contains(" ready ") {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        servers.push(Server(child));
    }
    (servers, addrs)
}

/// Runs `herd bench` against `addrs`; returns its JSON report.
fn load(addrs: &[String], extra: &[&str]) -> serde_json::Value {
    let out = Command::new(HERD)
        .args(["bench", "--connections", "64", "--warmup", "1", "--json"])
        .args(["--addr", &addrs.join(",")])
        .args(["--duration", &secs().to_string()])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "herd bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

fn rate(r: &serde_json::Value) -> f64 {
    r["requests_per_sec"].as_f64().unwrap()
}

/// Rounds each row is measured in (`HERD_BENCH_ROUNDS`, default 3): every round runs every
/// row once, in turn, so a machine that slows down or speeds up midway weighs on all rows
/// alike; each row shows its median round.
fn rounds() -> usize {
    std::env::var("HERD_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3)
}

/// One row of a table: what it runs, and the rows its ratios are taken against.
struct Row<'a> {
    key: &'static str,
    label: String,
    against: Vec<&'static str>,
    /// Runs the row's server under load once; `None` when it cannot run here (why is printed).
    run: Box<dyn Fn() -> Option<serde_json::Value> + 'a>,
}

impl<'a> Row<'a> {
    fn new(
        key: &'static str,
        label: &str,
        against: &[&'static str],
        run: impl Fn() -> Option<serde_json::Value> + 'a,
    ) -> Row<'a> {
        Row {
            key,
            label: label.to_owned(),
            against: against.to_vec(),
            run: Box::new(run),
        }
    }
}

/// Runs `rows` for [`rounds`] rounds, interleaved, and prints each row's median round with
/// its ratios to the medians of the rows it names, and the spread of its rounds.
fn table(rows: &[Row]) {
    println!("| server | requests/s (median) | rounds, min–max | ratio | p50 | p99 | max |");
    println!("|---|---|---|---|---|---|---|");
    let mut results: Vec<Vec<serde_json::Value>> = vec![Vec::new(); rows.len()];
    let mut skipped = vec![false; rows.len()];
    for _ in 0..rounds() {
        for (i, row) in rows.iter().enumerate() {
            if skipped[i] {
                continue;
            }
            match (row.run)() {
                Some(r) => results[i].push(r),
                None => skipped[i] = true,
            }
        }
    }
    let median = |i: usize| -> Option<&serde_json::Value> {
        let mut by_rate: Vec<&serde_json::Value> = results[i].iter().collect();
        by_rate.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
        by_rate.get(by_rate.len() / 2).copied()
    };
    for (i, row) in rows.iter().enumerate() {
        let Some(r) = median(i) else {
            continue;
        };
        let ratios: Vec<String> = row
            .against
            .iter()
            .filter_map(|key| {
                let j = rows.iter().position(|r| r.key == *key)?;
                Some(format!("{:.2}x {key}", rate(r) / rate(median(j)?)))
            })
            .collect();
        let rates: Vec<f64> = results[i].iter().map(rate).collect();
        let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = rates.iter().copied().fold(0.0, f64::max);
        let l = &r["latency_us"];
        println!(
            "| {} | {:.0} | {} × {:.0}–{:.0} | {} | {} | {} | {} |",
            row.label,
            rate(r),
            rates.len(),
            lo,
            hi,
            if ratios.is_empty() {
                "baseline".to_owned()
            } else {
                ratios.join(", ")
            },
            l["p50"],
            l["p99"],
            l["max"]
        );
    }
}

fn serve_section() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    println!(
        "One node, 64 connections, one request in flight each, {} s per run, {} rounds; latency in µs.",
        secs(),
        rounds()
    );
    println!();
    let iamat = ["--mode", "iamat"];
    let baseline = |role: &'static str| {
        move || {
            let (_s, addr) = baseline_server(role, dir);
            Some(load(&[addr], &iamat))
        }
    };
    // One node of `binary` under the IAMAT load, in its own state directory `sub`.
    let node = |binary: String, sub: &'static str, quiet: bool, extra: &'static str| {
        move || {
            let (_nodes, addrs) = herd_nodes_of(&binary, &dir.join(sub), &["N"], "", quiet, extra);
            Some(load(&addrs, &iamat))
        }
    };
    let herd = |sub, quiet, extra| node(HERD.to_owned(), sub, quiet, extra);
    let mut rows = vec![
        Row::new("bare", "bare tokio line server", &[], baseline("bare")),
        Row::new(
            "sled",
            "bare + sled insert + flush per batch",
            &["bare"],
            baseline("sled"),
        ),
        Row::new(
            "sled+sync",
            "bare + sled insert + flush + fdatasync of sled's log per batch",
            &["bare", "sled"],
            baseline("sled-sync"),
        ),
        Row::new(
            "redis",
            "redis GEOADD, appendfsync always",
            &["bare"],
            || match redis_server(dir) {
                Some((_s, addr)) => Some(load(&[addr], &["--mode", "geoadd"])),
                None => {
                    println!("redis: skipped, redis-server is not installed (apt-get install redis-server)");
                    None
                }
            },
        ),
        // The durable rows do sled's flush plus the file sync; the "os" row sled's flush only;
        // the "none" row neither (sled's own flusher writes the store out in the background).
        Row::new(
            "herd",
            "herd, durable, every line logged",
            &["bare", "sled+sync", "redis"],
            herd("one", false, ""),
        ),
        Row::new(
            "herd-quiet",
            "herd, durable, RUST_LOG=warn",
            &["bare", "sled+sync", "redis"],
            herd("quiet", true, ""),
        ),
        Row::new(
            "herd-os",
            "herd, durability = \"os\", RUST_LOG=warn",
            &["bare", "sled", "redis"],
            herd("os", true, "[store]\ndurability = \"os\""),
        ),
        Row::new(
            "herd-none",
            "herd, durability = \"none\", RUST_LOG=warn",
            &["bare", "redis", "herd-quiet"],
            herd("none", true, "[store]\ndurability = \"none\""),
        ),
    ];
    if let Ok(previous) = std::env::var("HERD_BENCH_PREVIOUS") {
        for (key, label, quiet, against) in [
            (
                "previous",
                "previous herd build (HERD_BENCH_PREVIOUS), every line logged",
                false,
                "herd",
            ),
            (
                "previous-quiet",
                "previous herd build (HERD_BENCH_PREVIOUS), RUST_LOG=warn",
                true,
                "herd-quiet",
            ),
        ] {
            rows.push(Row::new(
                key,
                label,
                &["sled+sync", against],
                node(previous.clone(), "prev", quiet, ""),
            ));
        }
    }
    table(&rows);
}

fn classic_section() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    println!("The classic workload: a new connection for every request, 64 at a time.");
    println!();
    let classic = ["--mode", "iamat", "--connect-each"];
    let links = &five_links();
    let five_node = |quiet: bool| {
        move || {
            let (_nodes, addrs) = herd_nodes(&dir.join("five"), &FIVE, links, quiet);
            Some(load(&addrs, &classic))
        }
    };
    table(&[
        Row::new("bare", "bare tokio line server", &[], || {
            let (_s, addr) = baseline_server("bare", dir);
            Some(load(&[addr], &classic))
        }),
        Row::new(
            "five",
            "five-node herd, every line logged",
            &["bare"],
            five_node(false),
        ),
        Row::new(
            "five-quiet",
            "five-node herd, RUST_LOG=warn",
            &["bare"],
            five_node(true),
        ),
    ]);
}

/// The two baseline servers, kept here so that what they do is plain to read.
mod baseline {
    use std::sync::mpsc;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    type Job = (Vec<u8>, oneshot::Sender<()>);

    /// Answers every line with `AT <the line>`; with a directory, only after the line is in
    /// sled and a flush covering it has returned (and, with `sync`, sled's files are synced).
    pub fn serve(addr: &str, sled_dir: Option<String>, sync: bool) {
        let writer = sled_dir.map(|dir| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::spawn(move || write_loop(&dir, sync, rx));
            tx
        });
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let listener = TcpListener::bind(addr).await.unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let writer = writer.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let (rd, mut wr) = stream.into_split();
                    let mut rd = BufReader::new(rd);
                    let mut line = Vec::new();
                    loop {
                        line.clear();
                        match rd.read_until(b'\n', &mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if let Some(writer) = &writer {
                            let (done, wait) = oneshot::channel();
                            writer.send((line.clone(), done)).unwrap();
                            let _ = wait.await;
                        }
                        let mut answer = Vec::with_capacity(line.len() + 3);
                        answer.extend_from_slice(b"AT ");
                        answer.extend_from_slice(&line);
                        if wr.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }

    fn write_loop(dir: &str, sync: bool, rx: mpsc::Receiver<Job>) {
        let db = sled::open(dir).unwrap();
        let tree = db.open_tree("records").unwrap();
        // sled's log, which it writes in place: the one file a batch changes. Opened once;
        // with `sync`, `fdatasync`ed after each flush (nothing else: no directory listing,
        // no other file), the least a power-safe acknowledgement over sled costs.
        let log = sync.then(|| std::fs::File::open(std::path::Path::new(dir).join("db")).unwrap());
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            for (line, _) in &batch {
                let key = line.split(|&b| b == b' ').nth(1).unwrap_or(line);
                if std::env::var_os("HERD_SUITE_GET").is_some() {
                    let _ = std::hint::black_box(tree.get(key).unwrap());
                }
                tree.insert(key, line.as_slice()).unwrap();
            }
            db.flush().unwrap();
            if let Some(log) = &log {
                log.sync_data().unwrap();
            }
            for (_, done) in batch {
                let _ = done.send(());
            }
        }
    }
}
