//! Crash tests: a five-server herd under a continuous stream of IAMATs, with servers killed by
//! SIGKILL and restarted and links cut and healed at random, must lose no acknowledged report
//! and must converge to identical stores.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::proxy::Faults;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Fast reconnects and frequent syncs so a test run converges in seconds.
const FAST: &str = "[peers]\nbackoff_min_ms = 20\nbackoff_max_ms = 300\nsync_interval_secs = 2\nconnect_timeout_ms = 1000\n";

/// Every IAMAT a load thread sent: client → (timestamp → location), and which were answered.
#[derive(Default)]
struct Ledger {
    sent: HashMap<String, BTreeMap<u64, String>>,
    /// client → the newest answered timestamp.
    acked: HashMap<String, u64>,
    answered: u64,
}

fn proxied_five() -> (Herd, Faults) {
    let mut herd = Herd::five(FAST);
    let faults = Faults::default();
    for name in FIVE {
        let listen = format!("127.0.0.1:{}", free_port());
        herd.listen.insert(name.to_owned(), listen.clone());
        faults.proxy(name, &herd.addrs[name], &listen);
    }
    (herd, faults)
}

/// Sends IAMATs for `clients` round-robin across `servers` until `stop`, recording them.
fn load(herd_addrs: Vec<String>, thread: usize, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>) {
    let clients: Vec<String> = (0..8).map(|k| format!("crash-{thread}-{k}")).collect();
    let mut stamp: u64 = 1_700_000_000;
    let mut target = thread;
    let mut conn: Option<Client> = None;
    while !stop.load(Ordering::SeqCst) {
        let addr = &herd_addrs[target % herd_addrs.len()];
        let client = &clients[(stamp as usize) % clients.len()];
        stamp += 1;
        let location = format!("+{}.{:03}-118.{:03}", stamp % 80, stamp % 1000, thread);
        ledger
            .lock()
            .unwrap()
            .sent
            .entry(client.clone())
            .or_default()
            .insert(stamp, location.clone());
        if conn.is_none() {
            match std::net::TcpStream::connect(addr) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    conn = Some(Client {
                        stream: std::io::BufReader::new(s),
                    });
                }
                Err(_) => {
                    target += 1;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        }
        let c = conn.as_mut().unwrap();
        let line = format!("IAMAT {client} {location} {stamp}\n");
        let ok = std::io::Write::write_all(c.stream.get_mut(), line.as_bytes()).is_ok();
        let mut answer = Vec::new();
        let got = ok
            && std::io::BufRead::read_until(&mut c.stream, b'\n', &mut answer)
                .map(|n| n > 0)
                .unwrap_or(false);
        if got {
            let text = String::from_utf8(answer).unwrap();
            assert!(
                text.ends_with(&format!(" {client} {location} {stamp}\n")),
                "bad answer {text:?}"
            );
            let mut l = ledger.lock().unwrap();
            let newest = l.acked.entry(client.clone()).or_insert(0);
            *newest = (*newest).max(stamp);
            l.answered += 1;
        } else {
            // The node died mid-request: that report was sent but not acknowledged.
            conn = None;
            target += 1;
        }
        if stamp.is_multiple_of(50) {
            conn = None;
            target += 1;
        }
    }
}

fn running(herd: &Herd) -> Vec<String> {
    herd.nodes.keys().cloned().collect()
}

#[test]
fn kills_and_partitions_under_load_lose_nothing_acknowledged() {
    let (mut herd, faults) = proxied_five();
    herd.start_all();
    let seed: u64 = std::env::var("HERD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash test seed {seed} (set HERD_CRASH_SEED to replay)");
    let mut rng = StdRng::seed_from_u64(seed);

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let addrs: Vec<String> = FIVE.iter().map(|n| herd.addr(n)).collect();
    let loaders: Vec<_> = (0..3)
        .map(|t| {
            let (addrs, ledger, stop) = (addrs.clone(), Arc::clone(&ledger), Arc::clone(&stop));
            std::thread::spawn(move || load(addrs, t, ledger, stop))
        })
        .collect();

    let chaos_for = Duration::from_secs(
        std::env::var("HERD_CRASH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(25),
    );
    let started = Instant::now();
    let mut kills = 0;
    let mut cuts = 0;
    while started.elapsed() < chaos_for {
        let victim = FIVE[rng.gen_range(0..FIVE.len())];
        match rng.gen_range(0..5) {
            // Kill a server and bring it back after a moment.
            0 | 1 => {
                if herd.nodes.contains_key(victim) {
                    herd.kill(victim);
                    kills += 1;
                    std::thread::sleep(Duration::from_millis(rng.gen_range(50..600)));
                    herd.start(victim);
                }
            }
            // Kill it again right after a restart, while it syncs with its peers.
            2 => {
                if herd.nodes.contains_key(victim) {
                    herd.kill(victim);
                    herd.start(victim);
                    std::thread::sleep(Duration::from_millis(rng.gen_range(0..100)));
                    herd.kill(victim);
                    kills += 2;
                    herd.start(victim);
                }
            }
            // Kill both ends of a link at once: a report that reached only those two must
            // survive on disk, not just in a neighbour's memory.
            3 => {
                let (a, b) = FIVE_LINKS[rng.gen_range(0..FIVE_LINKS.len())];
                if herd.nodes.contains_key(a) && herd.nodes.contains_key(b) {
                    herd.kill(a);
                    herd.kill(b);
                    kills += 2;
                    std::thread::sleep(Duration::from_millis(rng.gen_range(50..300)));
                    herd.start(a);
                    herd.start(b);
                }
            }
            // Cut a link for a while.
            _ => {
                let (a, b) = FIVE_LINKS[rng.gen_range(0..FIVE_LINKS.len())];
                faults.cut(a, b);
                cuts += 1;
                std::thread::sleep(Duration::from_millis(rng.gen_range(100..1500)));
                faults.heal(a, b);
            }
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..400)));
    }
    stop.store(true, Ordering::SeqCst);
    for l in loaders {
        l.join().unwrap();
    }
    faults.heal_all();
    for name in FIVE {
        if !herd.nodes.contains_key(name) {
            herd.start(name);
        }
    }
    let ledger = ledger.lock().unwrap();
    eprintln!(
        "{} IAMATs answered, {kills} kills, {cuts} link cuts; running: {:?}",
        ledger.answered,
        running(&herd)
    );
    assert!(
        ledger.answered > 100,
        "the load made too little progress to prove anything"
    );

    // Every server converges on, for each client, a report at least as new as the newest
    // acknowledged one, and the same report everywhere.
    let check = |herd: &Herd| -> Result<(), String> {
        for (client, sent) in &ledger.sent {
            let mut lines = Vec::new();
            for name in FIVE {
                lines.push(herd.at_line(name, client));
            }
            let first = lines[0]
                .clone()
                .ok_or_else(|| format!("{client} missing at {}", FIVE[0]))?;
            if let Some((i, other)) = lines
                .iter()
                .enumerate()
                .find(|(_, l)| l.as_deref() != Some(first.as_str()))
            {
                return Err(format!(
                    "{client}: {} has {other:?}, {} has {first:?}",
                    FIVE[i], FIVE[0]
                ));
            }
            let fields: Vec<&str> = first.split(' ').collect();
            let stamp: u64 = fields[5].parse().unwrap();
            let location = sent
                .get(&stamp)
                .ok_or_else(|| format!("{client}: {first} was never sent"))?;
            assert_eq!(
                fields[4], location,
                "{client}: stored location differs from what was sent"
            );
            if let Some(acked) = ledger.acked.get(client) {
                assert!(
                    stamp >= *acked,
                    "{client}: acknowledged report {acked} lost; herd holds {stamp}"
                );
            }
        }
        Ok(())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match check(&herd) {
            Ok(()) => break,
            Err(why) if Instant::now() > deadline => panic!("herd did not converge: {why}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }

    // Identical stores: compare every record of every server offline.
    let mut stores = Vec::new();
    for name in FIVE {
        assert_eq!(
            herd.stop(name).code(),
            Some(0),
            "{name} did not stop cleanly"
        );
        let mut records: Vec<String> = inspect(&herd.state_dir(name))
            .iter()
            .map(|r| r["at"].as_str().unwrap().to_owned())
            .collect();
        records.sort();
        stores.push(records);
    }
    for (i, s) in stores.iter().enumerate() {
        assert_eq!(
            s, &stores[0],
            "{} and {} hold different stores",
            FIVE[i], FIVE[0]
        );
    }
    faults.stop();
}

fn report_many(herd: &Herd, at: &str, n: usize) -> Vec<String> {
    let mut c = Client::connect(&herd.addr(at));
    (0..n)
        .map(|i| {
            let answer = c.iamat(
                &format!("refill-{i}"),
                "+10.5-20.25",
                &format!("{}", 1_700_000_000 + i),
            );
            assert!(answer.starts_with("AT "), "{answer}");
            answer
        })
        .collect()
}

fn assert_holds_all(herd: &Herd, name: &str, lines: &[String]) {
    eventually(
        Duration::from_secs(20),
        &format!("{name} to hold every report"),
        || {
            lines.iter().enumerate().all(|(i, line)| {
                herd.at_line(name, &format!("refill-{i}")).as_deref() == Some(line)
            })
        },
    );
}

#[test]
fn a_server_whose_state_dir_was_deleted_refills_from_its_peers() {
    let mut herd = Herd::new(&["A", "B", "C"], &[("A", "B"), ("B", "C")], FAST);
    herd.start_all();
    let lines = report_many(&herd, "A", 300);
    assert_holds_all(&herd, "C", &lines);
    herd.kill("B");
    std::fs::remove_dir_all(herd.state_dir("B")).unwrap();
    herd.start("B");
    assert_holds_all(&herd, "B", &lines);
}

#[test]
fn a_server_whose_store_was_overwritten_with_garbage_comes_up_and_refills() {
    let mut herd = Herd::new(&["A", "B"], &[("A", "B")], FAST);
    herd.start_all();
    let lines = report_many(&herd, "A", 200);
    assert_holds_all(&herd, "B", &lines);
    herd.kill("B");
    let store = herd.state_dir("B").join("store");
    let mut garbage = 0u64;
    for entry in walk(&store) {
        let len = std::fs::metadata(&entry).unwrap().len().max(64);
        let bytes: Vec<u8> = (0..len)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect();
        std::fs::write(&entry, bytes).unwrap();
        garbage += 1;
    }
    assert!(garbage > 0, "found no store files to corrupt");
    herd.start("B");
    assert_holds_all(&herd, "B", &lines);
    // The log must say where the corrupt store went (its thread writes a little behind).
    eventually(
        Duration::from_secs(5),
        "the store moved aside, logged",
        || herd.log("B").contains("moved aside"),
    );
    let aside = kept_aside(&herd, "B");
    assert!(aside, "the corrupt store must be kept for inspection");
}

#[test]
fn a_lone_server_whose_store_cannot_be_opened_salvages_every_readable_record() {
    let mut herd = Herd::new(&["Solo"], &[], "");
    herd.start("Solo");
    let mut c = Client::connect(&herd.addr("Solo"));
    let mut newest = Vec::new();
    for i in 0..300 {
        let first = c.iamat(&format!("salvage-{i}"), "+1.0-2.0", &now_ts());
        assert!(first.starts_with("AT "), "{first}");
        // Half the clients report again: the newer report is the one to salvage.
        let line = if i % 2 == 0 {
            c.iamat(&format!("salvage-{i}"), "+3.0-4.0", &now_ts())
        } else {
            first
        };
        assert!(line.starts_with("AT "), "{line}");
        newest.push(line);
    }
    herd.kill("Solo");
    // sled's own configuration file, overwritten: sled cannot open the store at all, though
    // every record is still in its log.
    let conf = herd.state_dir("Solo").join("store").join("conf");
    assert!(conf.exists(), "sled keeps a conf file");
    std::fs::write(&conf, b"this is not sled's configuration").unwrap();
    herd.start("Solo");
    for (i, line) in newest.iter().enumerate() {
        assert_eq!(
            herd.at_line("Solo", &format!("salvage-{i}")).as_deref(),
            Some(line.as_str()),
            "client {i} after salvage"
        );
    }
    let aside = kept_aside(&herd, "Solo");
    assert!(
        aside,
        "the store that could not be opened is kept for inspection"
    );
    assert!(
        herd.stderr("Solo").contains("salvaged 300 client records"),
        "{}",
        herd.stderr("Solo")
    );
}

/// Whether `name`'s state directory holds a store moved aside (`store.corrupt-*`).
fn kept_aside(herd: &Herd, name: &str) -> bool {
    std::fs::read_dir(herd.state_dir(name))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("store.corrupt-")
        })
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn an_acknowledged_report_survives_kill_9_of_a_lone_node() {
    let mut herd = Herd::new(&["Solo"], &[], "");
    for round in 0..3 {
        herd.start("Solo");
        let mut c = Client::connect(&herd.addr("Solo"));
        let mut acked = Vec::new();
        for i in 0..50 {
            acked.push(c.iamat(
                &format!("lone-{i}"),
                "+1-2",
                &format!("{}", 1_700_000_000 + round * 100 + i),
            ));
        }
        // SIGKILL right after the last answer: nothing gets a chance to flush on the way out.
        herd.kill("Solo");
        herd.start("Solo");
        for (i, line) in acked.iter().enumerate() {
            assert_eq!(
                herd.at_line("Solo", &format!("lone-{i}")).as_deref(),
                Some(line.as_str()),
                "round {round}"
            );
        }
        herd.kill("Solo");
    }
}

/// With `durability = "none"` an answer does not wait for the disk, but the store is written
/// out in the background every `flush_every_ms`: what was answered that long before a
/// `kill -9` is kept.
#[test]
fn with_durability_none_a_report_answered_flush_every_ms_before_kill_9_is_kept() {
    let mut herd = Herd::new(
        &["Solo"],
        &[],
        "[store]\ndurability = \"none\"\nflush_every_ms = 100\n",
    );
    herd.start("Solo");
    let mut c = Client::connect(&herd.addr("Solo"));
    let acked: Vec<String> = (0..50)
        .map(|i| {
            c.iamat(
                &format!("none-{i}"),
                "+1-2",
                &format!("{}", 1_700_000_000 + i),
            )
        })
        .collect();
    // Ten flush intervals, then SIGKILL.
    std::thread::sleep(Duration::from_millis(1_000));
    herd.kill("Solo");
    herd.start("Solo");
    for (i, line) in acked.iter().enumerate() {
        assert_eq!(
            herd.at_line("Solo", &format!("none-{i}")).as_deref(),
            Some(line.as_str())
        );
    }
}
