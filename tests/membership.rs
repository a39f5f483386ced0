//! Changing a running herd, with the real binary: a sixth server joins a five-node TLS herd
//! while a client writes to it, every report converging everywhere and no existing link
//! dropping; a removed server's records keep converging among the others; a moved server is
//! dialled at its new address; a bad config is refused on SIGHUP and the old one kept; and a
//! node on the built-in config says it cannot reload.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0-membership";
const FAST: &str =
    "[peers]\nbackoff_max_ms = 300\nconnect_timeout_ms = 1000\n[store]\ndurability = \"os\"\n";
/// `connect_timeout_ms` above: within it of a link coming up, a connection both servers dialled
/// at once may still replace it (one `link up` more); past it, a link is only ever dropped.
const YOUNG: Duration = Duration::from_millis(1000);

/// Waits until each of `links` is up at both ends and past the age at which a crossing dial
/// may still replace it, so that any `link up` or `link dropped` logged afterwards is a flap.
fn settled(herd: &Herd, links: &[(&str, &str)]) {
    for (a, b) in links {
        herd.wait_links_up(a, &[b], 0, WAIT);
        herd.wait_links_up(b, &[a], 0, WAIT);
    }
    std::thread::sleep(YOUNG + YOUNG / 2);
}

fn hup(herd: &Herd, name: &str) {
    signal(&herd.nodes[name].child, libc::SIGHUP);
}

/// Sends SIGHUP to `name` and waits for it to log `what` after the mark `from`.
fn hup_until(herd: &Herd, name: &str, what: &str) {
    let from = herd.log_len(name);
    hup(herd, name);
    eventually(
        WAIT,
        &format!("{name} to log {what:?} after SIGHUP"),
        || herd.log_since(name, from).contains(what),
    );
}

/// `herd certs --out DIR NAMES...` for `herd`'s config, which must succeed.
fn certs(herd: &Herd, out: &Path, names: &[&str]) {
    let out = herd.certs(out, names, false);
    assert!(
        out.status.success(),
        "herd certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client writing to the herd without pause, each report newer than the last, cycling over
/// `clients` client IDs and over the nodes in `targets` (which may grow while it runs).
struct Writer {
    stop: Arc<AtomicBool>,
    targets: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<BTreeMap<String, String>>>,
}

impl Writer {
    fn start(targets: Vec<String>, clients: usize) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let targets = Arc::new(Mutex::new(targets));
        let (done, addrs) = (Arc::clone(&stop), Arc::clone(&targets));
        let base = now_nanos();
        let thread = std::thread::spawn(move || {
            let mut conns: BTreeMap<String, Client> = BTreeMap::new();
            let mut last = BTreeMap::new();
            let mut seq = 0usize;
            while !done.load(Ordering::Relaxed) {
                let addr = {
                    let addrs = addrs.lock().unwrap();
                    addrs[seq % addrs.len()].clone()
                };
                let conn = conns
                    .entry(addr.clone())
                    .or_insert_with(|| Client::connect(&addr));
                let client = format!("walker-{}", seq % clients);
                let ts = ts_of_nanos(base + seq as i128 * 1000);
                let answer = conn.iamat(&client, "+34.068930-118.445127", &ts);
                assert!(answer.starts_with("AT "), "{addr}: {answer}");
                last.insert(client, answer);
                seq += 1;
            }
            last
        });
        Writer {
            stop,
            targets,
            thread: Some(thread),
        }
    }

    fn also_write_to(&self, addr: String) {
        self.targets.lock().unwrap().push(addr);
    }

    /// Stops writing; returns the AT line of every client's newest report.
    fn finish(mut self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Waits until every node of `nodes` answers every client's WHATSAT with `expected`'s AT line.
fn converged(herd: &Herd, nodes: &[&str], expected: &BTreeMap<String, String>) {
    for node in nodes {
        for (client, at) in expected {
            eventually(WAIT, &format!("{node} to hold {at}"), || {
                herd.at_line_of(node, client.as_bytes()).as_deref() == Some(at.as_bytes())
            });
        }
    }
}

/// The links of the five-node herd and of `extra` pairs.
fn links_with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    FIVE_LINKS.iter().chain(extra).copied().collect()
}

#[test]
fn a_sixth_server_joins_a_running_tls_herd_under_load() {
    let tls = format!("[tls]\ndir = \"certs\"\n{FAST}");
    let mut herd = Herd::five(&tls);
    herd.env.push(("HERD_SECRET".into(), SECRET.into()));
    let cert_dir = herd.dir.path().join("certs");
    certs(&herd, &cert_dir, &FIVE);
    herd.start_all();
    settled(&herd, &FIVE_LINKS);
    let writer = Writer::start(FIVE.iter().map(|n| herd.addr(n)).collect(), 300);

    // The operator's procedure: every node's config lists Dalton, linked to Clark and Bailey.
    let marks: BTreeMap<&str, usize> = FIVE.iter().map(|n| (*n, herd.log_len(n))).collect();
    herd.addrs
        .insert("Dalton".into(), format!("127.0.0.1:{}", free_port()));
    let links = links_with(&[("Dalton", "Clark"), ("Dalton", "Bailey")]);
    herd.write_config(&links, &tls);
    let ca = std::fs::read(cert_dir.join("ca.pem")).unwrap();
    certs(&herd, &cert_dir, &["Dalton"]);
    assert_eq!(
        std::fs::read(cert_dir.join("ca.pem")).unwrap(),
        ca,
        "the CA is reused"
    );
    herd.start("Dalton");
    // Clark and Bailey have not reloaded: they refuse Dalton, again and again, without
    // locking its address out.
    eventually(WAIT, "Clark to refuse Dalton before its reload", || {
        herd.log_since("Clark", marks["Clark"])
            .matches("not a server linked to this one")
            .count()
            >= 3
    });
    for name in FIVE {
        hup_until(&herd, name, "config reloaded");
    }
    herd.wait_links_up("Dalton", &["Clark", "Bailey"], 0, WAIT);
    writer.also_write_to(herd.addr("Dalton"));
    // Let the writer run on the six-node herd for a while.
    let written = herd.log_len("Dalton");
    eventually(WAIT, "Dalton to take reports from the writer", || {
        herd.log_since("Dalton", written)
            .matches("IAMAT walker-")
            .count()
            >= 50
    });
    let expected = writer.finish();
    let six: Vec<&str> = FIVE.iter().copied().chain(["Dalton"]).collect();
    converged(&herd, &six, &expected);

    for name in FIVE {
        let log = herd.log_since(name, marks[name]);
        assert!(
            log.contains("TLS certificates unchanged; not reloaded"),
            "{name}"
        );
        assert!(!log.contains("TLS certificates reloaded"), "{name}");
        assert!(
            !log.contains("link dropped"),
            "{name} dropped a link:\n{log}"
        );
        for (a, b) in FIVE_LINKS {
            for (me, peer) in [(a, b), (b, a)] {
                if me == name {
                    assert!(
                        !log.contains(&format!("link up peer={peer} ")),
                        "{name}'s link to {peer} flapped"
                    );
                }
            }
        }
        assert!(!log.contains("too many refused handshakes"), "{name}");
    }
    for name in ["Clark", "Bailey"] {
        let log = herd.log_since(name, marks[name]);
        assert!(
            log.lines()
                .any(|l| l.contains("link added") && l.contains("Dalton")),
            "{name}"
        );
        assert!(log.contains("link up peer=Dalton "), "{name}");
    }
}

#[test]
fn a_removed_servers_records_keep_converging() {
    // Carter takes reports while Dixon is down; then Carter leaves the herd, and Dixon comes
    // back knowing nothing of Carter: it gets Carter's records from Baker, unchanged.
    let names = ["Able", "Baker", "Carter", "Dixon"];
    let mut herd = Herd::new(
        &names,
        &[("Able", "Baker"), ("Baker", "Carter"), ("Carter", "Dixon")],
        FAST,
    );
    herd.env.push(("HERD_SECRET".into(), SECRET.into()));
    herd.start_all();
    herd.wait_links_up("Baker", &["Able", "Carter"], 0, WAIT);
    herd.stop("Dixon");
    let mut carter = Client::connect(&herd.addr("Carter"));
    let mut expected = BTreeMap::new();
    for i in 0..20 {
        let client = format!("carter-{i}");
        let at = carter.iamat(&client, "+1+2", &now_ts());
        assert!(at.starts_with("AT Carter "), "{at}");
        expected.insert(client, at);
    }
    converged(&herd, &["Able", "Baker"], &expected);
    herd.stop("Carter");

    herd.addrs.remove("Carter");
    herd.write_config(&[("Able", "Baker"), ("Baker", "Dixon")], FAST);
    let mark = herd.log_len("Baker");
    hup_until(&herd, "Baker", "config reloaded");
    hup_until(&herd, "Able", "config reloaded");
    let log = herd.log_since("Baker", mark);
    assert!(
        log.lines()
            .any(|l| l.contains("link removed") && l.contains("Carter")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("link added") && l.contains("Dixon")),
        "{log}"
    );
    herd.start("Dixon");
    herd.wait_links_up("Dixon", &["Baker"], 0, WAIT);
    converged(&herd, &["Dixon", "Able", "Baker"], &expected);
    // A report of Dixon's reaches Able through Baker, as before.
    let at = Client::connect(&herd.addr("Dixon")).iamat("after", "+1+2", &now_ts());
    converged(
        &herd,
        &["Able"],
        &BTreeMap::from([("after".to_owned(), at)]),
    );
    assert!(!herd.log("Dixon").contains("names no server"));
}

#[test]
fn a_moved_server_is_dialled_at_its_new_address() {
    let mut herd = Herd::new(&["Able", "Baker"], &[("Able", "Baker")], FAST);
    herd.start_all();
    herd.wait_links_up("Able", &["Baker"], 0, WAIT);
    herd.stop("Baker");
    let new = format!("127.0.0.1:{}", free_port());
    herd.addrs.insert("Baker".into(), new.clone());
    herd.write_config(&[("Able", "Baker")], FAST);
    let mark = herd.log_len("Able");
    hup_until(&herd, "Able", "config reloaded");
    eventually(WAIT, "Able to dial Baker's new address", || {
        let log = herd.log_since("Able", mark);
        let line_with = |what: &str| {
            log.lines()
                .any(|l| l.contains(what) && l.contains("Baker") && l.contains(&new))
        };
        line_with("peer moved") && line_with("cannot reach peer")
    });
    herd.start("Baker");
    herd.wait_links_up("Able", &["Baker"], mark, WAIT);
    let at = Client::connect(&herd.addr("Baker")).iamat("moved", "+1+2", &now_ts());
    converged(
        &herd,
        &["Able"],
        &BTreeMap::from([("moved".to_owned(), at)]),
    );
}

#[test]
fn a_bad_config_is_refused_on_sighup_and_the_old_one_kept() {
    let names = ["Able", "Baker", "Carter"];
    let links = [("Able", "Baker"), ("Baker", "Carter")];
    let mut herd = Herd::new(&names, &links, FAST);
    herd.start_all();
    settled(&herd, &links);
    let good = std::fs::read_to_string(&herd.config).unwrap();
    let mark = herd.log_len("Baker");
    let able = herd.addrs["Able"].clone();
    let baker = herd.addrs["Baker"].clone();
    let bad = [
        (good.replace("[servers]", "[servers"), "TOML parse error"),
        (format!("bogus_key = 1\n{good}"), "bogus_key"),
        (
            good.replace("links = [", "links = [[\"Baker\", \"Zed\"], "),
            "unknown server \"Zed\"",
        ),
        (
            good.replace(&baker, &format!("127.0.0.1:{}", free_port())),
            "servers.Baker",
        ),
        (
            format!(
                "[servers]\nAble = {able:?}\nCarter = {:?}\n",
                herd.addrs["Carter"]
            ),
            "(Baker) is not listed",
        ),
    ];
    for (text, names_what) in &bad {
        std::fs::write(&herd.config, text).unwrap();
        let from = herd.log_len("Baker");
        hup(&herd, "Baker");
        eventually(WAIT, &format!("the refusal naming {names_what}"), || {
            let log = herd.log_since("Baker", from);
            log.contains("config reload refused; keeping the running config")
                && log.contains(names_what)
                && log.contains("herd.toml")
        });
    }
    // Still serving, still linked, still flooding.
    let at = Client::connect(&herd.addr("Able")).iamat("still", "+1+2", &now_ts());
    converged(
        &herd,
        &["Carter"],
        &BTreeMap::from([("still".to_owned(), at)]),
    );
    let log = herd.log_since("Baker", mark);
    assert!(
        !log.contains("link dropped") && !log.contains("link up"),
        "{log}"
    );
    assert!(!log.contains("config reloaded"), "{log}");

    // A setting that only a restart applies is named, and the membership still changes.
    std::fs::write(
        &herd.config,
        good.replace("[peers]", "[limits]\nmax_line_bytes = 4096\n[peers]")
            .replace("links = [", "links = [[\"Able\", \"Carter\"], "),
    )
    .unwrap();
    let from = herd.log_len("Baker");
    hup_until(&herd, "Baker", "config reloaded");
    let log = herd.log_since("Baker", from);
    assert!(
        log.contains("applies only on a restart") && log.contains("key=limits"),
        "{log}"
    );
    assert!(!log.contains("link dropped"), "{log}");
}

#[test]
fn a_node_on_the_built_in_config_says_it_cannot_reload() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(HERD);
    cmd.arg("serve")
        .arg("Bailey")
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--admin")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--log-dir")
        .arg(dir.path().join("logs"))
        .current_dir(dir.path())
        .env_remove("HERD_SECRET")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut node = spawn(cmd);
    eventually(WAIT, "Bailey to be ready", || {
        node.stderr.lock().unwrap().contains(" ready ")
    });
    signal(&node.child, libc::SIGHUP);
    let log = dir.path().join("logs").join("Bailey.log");
    eventually(WAIT, "the built-in config to be named on SIGHUP", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("runs on the built-in config, which cannot change")
    });
    assert!(node.child.try_wait().unwrap().is_none(), "still running");
    node.child.kill().unwrap();
    node.child.wait().unwrap();
}
