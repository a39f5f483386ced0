//! The whole performance picture in one run, as ratios against baselines measured side by side
//! on the same machine in the same run. Prints tables; asserts nothing.
//!
//!     cargo bench --bench suite                  # everything (~3 min)
//!     cargo bench --bench suite -- serve         # only the load sections
//!     cargo bench --bench suite -- reconcile     # only anti-entropy and restart
//!     HERD_BENCH_SECS=10 cargo bench --bench suite
//!
//! Every server is its own process, and every load comes from one generator, `herd bench`
//! (64 connections, one request in flight on each), so the only thing that changes between
//! rows is the server:
//!
//! - **bare**: a tokio line server that answers each line with a line (this file, started as
//!   a child of itself): what the machine and the load generator can do at all;
//! - **bare + sled**: the same, plus one sled insert per line on a writer thread and one sled
//!   flush per drained batch before the answers go out: the cost sled itself puts on a durable
//!   acknowledgement, without any of the herd's logic;
//! - **redis**: Debian's `redis-server` with `appendonly yes`, `appendfsync always`, loaded with
//!   `GEOADD` (skipped, with a message, where `redis-server` is not installed:
//!   `apt-get install redis-server`);
//! - **herd**: one `herd serve` node, `durability = "flush"` (sled's flush plus `fdatasync`),
//!   logging every line as shipped, and again with the line log filtered out (`RUST_LOG=warn`);
//!   then `durability = "os"` (sled's flush only, the same work as the bare + sled row);
//!
//! and, when `HERD_BENCH_PREVIOUS` names another build of herd, that build the same way (a
//! before/after row);
//!
//! then the classic workload, one connection per request, against the default five-node herd
//! (requests spread over the five) and against the bare server; then anti-entropy on
//! 1,000,000-client stores and restart (`reconcile.rs`).

#[allow(dead_code)]
#[path = "reconcile.rs"]
mod reconcile;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HERD: &str = env!("CARGO_BIN_EXE_herd");
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
        .arg(dir)
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

fn row(label: &str, r: &serde_json::Value, against: &[(&str, f64)]) {
    let l = &r["latency_us"];
    let ratios: Vec<String> = against
        .iter()
        .map(|(name, base)| format!("{:.2}x {name}", rate(r) / base))
        .collect();
    println!(
        "| {label} | {:.0} | {} | {} | {} | {} |",
        rate(r),
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

fn serve_section() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    println!(
        "One node, 64 connections, one request in flight each, {} s per row; latency in µs.",
        secs()
    );
    println!();
    println!("| server | requests/s | ratio | p50 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    let bare = {
        let (_s, addr) = baseline_server("bare", dir);
        load(&[addr], &["--mode", "iamat"])
    };
    row("bare tokio line server", &bare, &[]);
    let sled = {
        let (_s, addr) = baseline_server("sled", dir);
        load(&[addr], &["--mode", "iamat"])
    };
    row(
        "bare + sled insert + flush per batch",
        &sled,
        &[("bare", rate(&bare))],
    );
    let redis = match redis_server(dir) {
        Some((_s, addr)) => {
            let r = load(&[addr], &["--mode", "geoadd"]);
            row(
                "redis GEOADD, appendfsync always",
                &r,
                &[("bare", rate(&bare))],
            );
            Some(rate(&r))
        }
        None => {
            println!("| redis | skipped: redis-server is not installed (apt-get install redis-server) | | | | |");
            None
        }
    };
    let synced = {
        let (_s, addr) = baseline_server("sled-sync", dir);
        load(&[addr], &["--mode", "iamat"])
    };
    row(
        "bare + sled insert + flush + file sync per batch",
        &synced,
        &[("bare", rate(&bare)), ("sled", rate(&sled))],
    );
    // The durable rows do sled's flush plus the file sync; the "os" row sled's flush only.
    let mut against = vec![("bare", rate(&bare)), ("sled+sync", rate(&synced))];
    if let Some(redis) = redis {
        against.push(("redis", redis));
    }
    for (label, quiet) in [
        ("herd, durable, every line logged", false),
        ("herd, durable, RUST_LOG=warn", true),
    ] {
        let (_nodes, addrs) = herd_nodes(&dir.join("one"), &["N"], "", quiet);
        let r = load(&addrs, &["--mode", "iamat"]);
        row(label, &r, &against);
    }
    {
        // The same sync work as the bare + sled row (sled's flush, no fdatasync): what the
        // herd's own logic costs on top of sled.
        let os = "[store]\ndurability = \"os\"";
        let (_nodes, addrs) = herd_nodes_of(HERD, &dir.join("os"), &["N"], "", true, os);
        let r = load(&addrs, &["--mode", "iamat"]);
        let mut against = against.clone();
        against[1] = ("sled", rate(&sled));
        row("herd, durability = \"os\", RUST_LOG=warn", &r, &against);
    }
    if let Ok(previous) = std::env::var("HERD_BENCH_PREVIOUS") {
        let (_nodes, addrs) = herd_nodes_of(&previous, &dir.join("prev"), &["N"], "", true, "");
        let r = load(&addrs, &["--mode", "iamat"]);
        row(
            "previous herd build (HERD_BENCH_PREVIOUS), RUST_LOG=warn",
            &r,
            &against,
        );
    }

    println!();
    println!("The classic workload: a new connection for every request, 64 at a time.");
    println!();
    println!("| server | requests/s | ratio | p50 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    let bare_classic = {
        let (_s, addr) = baseline_server("bare", dir);
        load(&[addr], &["--mode", "iamat", "--connect-each"])
    };
    row("bare tokio line server", &bare_classic, &[]);
    let five = ["Bailey", "Bona", "Campbell", "Clark", "Jaquez"];
    let links = r#"["Clark","Jaquez"],["Clark","Bona"],["Campbell","Bailey"],["Campbell","Bona"],["Campbell","Jaquez"],["Bona","Bailey"]"#;
    for (label, quiet) in [
        ("five-node herd, every line logged", false),
        ("five-node herd, RUST_LOG=warn", true),
    ] {
        let (_nodes, addrs) = herd_nodes(&dir.join("five"), &five, links, quiet);
        let r = load(&addrs, &["--mode", "iamat", "--connect-each"]);
        row(label, &r, &[("bare", rate(&bare_classic))]);
    }
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
        let mut files = sync.then(|| herd::fsync::StoreFiles::new(std::path::Path::new(dir)));
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
            if let Some(files) = &mut files {
                files.sync().unwrap();
            }
            for (_, done) in batch {
                let _ = done.send(());
            }
        }
    }
}
