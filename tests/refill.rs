//! A wiped store is refilled with one copy of its peer's records, whichever side's question
//! is answered first: two real nodes, the link between them through a relay that counts every
//! byte crossing it (and can hold one direction back for a moment at link-up).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// What the relay holds back on the next link, and for how long.
#[derive(Clone, Copy, Debug)]
enum Hold {
    /// Nothing: both sides' link-up questions cross at once.
    Nothing,
    /// What the full node (behind the relay) sends after its first question: the empty
    /// node's question is answered first (the full node streams its records), while the full
    /// node's question reaches the empty node before any record.
    FullAfterQuestion(Duration),
    /// What the empty node (the dialer) sends after its greeting: the full node's question is
    /// answered first, by a node that holds nothing yet.
    EmptyAfterHello(Duration),
}

/// A relay in front of the full node that counts the bytes of every connection through it.
#[derive(Clone, Default)]
struct Relay {
    bytes: Arc<AtomicU64>,
    hold: Arc<Mutex<Option<Hold>>>,
}

impl Relay {
    fn start(&self, listen: &str, upstream: &str) {
        let listener = TcpListener::bind(listen).unwrap();
        let relay = self.clone();
        let upstream = upstream.to_owned();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let hold = relay.hold.lock().unwrap().take();
                let none = (&b""[..], Duration::ZERO);
                let (to_full, to_empty) = match hold.unwrap_or(Hold::Nothing) {
                    Hold::Nothing => (none, none),
                    Hold::EmptyAfterHello(d) => ((&b"HERD HELLO "[..], d), none),
                    Hold::FullAfterQuestion(d) => (none, (&b"SYNC Q "[..], d)),
                };
                relay.pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    to_full,
                );
                relay.pipe(server, client, to_empty);
            }
        });
    }

    /// Copies `from` into `to`, counting. With a nonzero hold, it forwards whole lines up to
    /// the first that starts with `until`, then waits `hold` once.
    fn pipe(&self, from: TcpStream, mut to: TcpStream, (until, hold): (&'static [u8], Duration)) {
        let bytes = Arc::clone(&self.bytes);
        std::thread::spawn(move || {
            let mut from = BufReader::new(from);
            if !hold.is_zero() {
                loop {
                    let mut line = Vec::new();
                    if from.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                        let _ = to.shutdown(Shutdown::Write);
                        return;
                    }
                    bytes.fetch_add(line.len() as u64, Ordering::SeqCst);
                    if to.write_all(&line).is_err() {
                        return;
                    }
                    if line.starts_with(until) {
                        break;
                    }
                }
                std::thread::sleep(hold);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                match from.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        bytes.fetch_add(n as u64, Ordering::SeqCst);
                        if to.write_all(&chunk[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }
}

const CLIENTS: usize = 20_000;

/// Sends `CLIENTS` IAMATs with 60-byte client IDs to `addr` on one pipelined connection;
/// returns the AT lines it answered.
fn fill(addr: &str) -> Vec<String> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut batch = Vec::new();
        for i in 0..CLIENTS {
            let id = format!("refill-{i:06}-{}", "x".repeat(47));
            batch.extend_from_slice(format!("IAMAT {id} +34.06-118.44 {}\n", now_ts()).as_bytes());
            if batch.len() > 32 * 1024 {
                writer.write_all(&batch).unwrap();
                batch.clear();
            }
        }
        writer.write_all(&batch).unwrap();
    });
    let mut reader = BufReader::new(stream);
    let mut answers = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("AT "), "{line:?}");
        answers.push(line.trim_end().to_owned());
    }
    sender.join().unwrap();
    answers
}

fn records(admin: &str) -> u64 {
    metric(admin, "herd_records") as u64
}

fn sync_bytes(admin: &str, peer: &str, direction: &str) -> f64 {
    metric(
        admin,
        &format!("herd_sync_bytes_total{{direction=\"{direction}\",peer=\"{peer}\"}}"),
    )
}

#[test]
fn a_wiped_store_is_refilled_with_one_copy_whichever_side_is_answered_first() {
    let (admin_toml, admins) = admin_table(&["Full", "Wiped"]);
    // Rounds only at link-up; the full node never dials (the wiped one does, at start).
    let mut herd = Herd::new(
        &["Full", "Wiped"],
        &[("Full", "Wiped")],
        &format!(
            "[peers]\nsync_interval_secs = 3600\nbackoff_min_ms = 600000\nbackoff_max_ms = 600000\nconnect_timeout_ms = 5000\n{admin_toml}"
        ),
    );
    let relay = Relay::default();
    let hidden = format!("127.0.0.1:{}", free_port());
    relay.start(&herd.addrs["Full"].clone(), &hidden);
    herd.listen.insert("Full".to_owned(), hidden);
    herd.start("Full");
    herd.start("Wiped");
    herd.wait_links_up("Wiped", &["Full"], 0, Duration::from_secs(10));

    let lines = fill(&herd.addr("Full"));
    // One copy of the records: every AT line and its newline.
    let copy: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    eventually(
        Duration::from_secs(60),
        "the flood to reach the other node",
        || records(&admins["Wiped"]) == CLIENTS as u64,
    );

    let mut ratios = Vec::new();
    for hold in [
        Hold::Nothing,
        Hold::FullAfterQuestion(Duration::from_secs(1)),
        Hold::EmptyAfterHello(Duration::from_secs(1)),
    ] {
        herd.kill("Wiped");
        std::fs::remove_dir_all(herd.state_dir("Wiped")).unwrap();
        eventually(Duration::from_secs(10), "the link to drop", || {
            metric(&admins["Full"], "herd_peer_up{peer=\"Wiped\"}") == 0.0
        });
        *relay.hold.lock().unwrap() = Some(hold);
        let before = relay.bytes();
        let full_sent = sync_bytes(&admins["Full"], "Wiped", "sent");
        let full_rounds = metric(&admins["Full"], "herd_sync_rounds_total{peer=\"Wiped\"}");
        let started = Instant::now();
        herd.start("Wiped");
        eventually(
            Duration::from_secs(60),
            "the wiped node to hold every record",
            || records(&admins["Wiped"]) == CLIENTS as u64,
        );
        let refilled = started.elapsed();
        // Both link-up rounds end, and nothing more crosses for a while: a second copy
        // still on its way is counted.
        eventually(Duration::from_secs(60), "both rounds to end", || {
            metric(&admins["Full"], "herd_sync_rounds_total{peer=\"Wiped\"}") > full_rounds
                && metric(&admins["Wiped"], "herd_sync_rounds_total{peer=\"Full\"}") >= 1.0
        });
        let mut last = relay.bytes();
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(100));
            let now = relay.bytes();
            if now != last {
                last = now;
                quiet_since = Instant::now();
            }
        }
        let crossed = last - before;
        let counted = sync_bytes(&admins["Full"], "Wiped", "sent") - full_sent
            + sync_bytes(&admins["Wiped"], "Full", "sent");
        let ratio = crossed as f64 / copy as f64;
        println!(
            "{hold:?}: {CLIENTS} records, one copy {copy} bytes; {crossed} bytes crossed the link \
             ({ratio:.3} copies; sync traffic counted by the nodes: {:.3} copies); refilled in {:.1} s",
            counted / copy as f64,
            refilled.as_secs_f64(),
        );
        ratios.push((hold, ratio));
        // The refilled store holds exactly what the full one does.
        for i in [0, CLIENTS / 2, CLIENTS - 1] {
            let client = lines[i].split(' ').nth(3).unwrap();
            assert_eq!(
                herd.at_line("Wiped", client).as_deref(),
                Some(lines[i].as_str())
            );
        }
    }
    // Every case is measured before any is judged, so a failure shows them all.
    for (hold, ratio) in ratios {
        assert!(
            ratio <= 1.25,
            "{hold:?}: the refill cost {ratio:.3} copies of the records"
        );
    }
}
