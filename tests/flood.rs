//! Flooding over the default five-server topology with real processes:
//!
//! ```text
//! Clark ── Jaquez ── Campbell ── Bailey
//!   │                   │    ╲    │
//!   └──────── Bona ─────┘     ╲   │
//!              └───────────────────┘
//! ```
//!
//! Reports reach every server with their original AT line, stale reports go nowhere, ties
//! converge, a killed server is routed around and catches up when it returns, and an
//! acknowledged report survives `kill -9`.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;

/// Reconnect quickly: these tests kill and restart servers.
const FAST: &str = "[peers]\nbackoff_max_ms = 200\n";
const LINKS_UP: Duration = Duration::from_secs(15);
const CONVERGE: Duration = Duration::from_secs(10);

fn peers_of(name: &str) -> Vec<&'static str> {
    FIVE_LINKS
        .iter()
        .filter_map(|&(a, b)| {
            if a == name {
                Some(b)
            } else if b == name {
                Some(a)
            } else {
                None
            }
        })
        .collect()
}

fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

/// The five servers, running, with every link up and a first report flooded everywhere.
fn five_up() -> Herd {
    five_up_with(FAST)
}

fn five_up_with(extra: &str) -> Herd {
    let mut herd = Herd::five(extra);
    herd.start_all();
    for name in FIVE {
        herd.wait_links_up(name, &peers_of(name), 0, LINKS_UP);
    }
    let warm = iamat(&herd, "Clark", "warm-up", "+0+0", &now_ts());
    wait_everywhere(&herd, &FIVE, b"warm-up", &warm, CONVERGE);
    herd
}

/// Sends an IAMAT to `server` and returns its answer without the newline, checked.
fn iamat(herd: &Herd, server: &str, client: &str, loc: &str, ts: &str) -> Vec<u8> {
    let answer = herd.ask(server, format!("IAMAT {client} {loc} {ts}\n").as_bytes());
    let at = parse_at(&answer);
    assert_eq!(at.server, server.as_bytes(), "{}", show(&answer));
    assert_eq!(
        at.operands,
        format!("{client} {loc} {ts}").into_bytes(),
        "{}",
        show(&answer)
    );
    time_diff_nanos(&at.diff);
    answer.strip_suffix(b"\n").unwrap().to_vec()
}

/// Waits until every one of `servers` answers a WHATSAT for `client` with `line`; returns how
/// long after the call each one first did.
fn wait_everywhere(
    herd: &Herd,
    servers: &[&str],
    client: &[u8],
    line: &[u8],
    within: Duration,
) -> BTreeMap<String, Duration> {
    let start = Instant::now();
    let mut seen = BTreeMap::new();
    eventually(within, &format!("{} at {servers:?}", show(line)), || {
        for server in servers {
            if !seen.contains_key(*server)
                && herd.at_line_of(server, client).as_deref() == Some(line)
            {
                seen.insert(server.to_string(), start.elapsed());
            }
        }
        seen.len() == servers.len()
    });
    seen
}

/// Every server's answer for `client` (`None` for `? `).
fn everywhere(herd: &Herd, servers: &[&str], client: &[u8]) -> BTreeMap<String, Option<Vec<u8>>> {
    servers
        .iter()
        .map(|s| (s.to_string(), herd.at_line_of(s, client)))
        .collect()
}

/// Sends a fresh report to `from` and waits until it is everywhere. Links are FIFO and a
/// server forwards in the order it stores, so whatever `from` forwarded before the barrier
/// has been applied everywhere once the barrier has.
fn barrier(herd: &Herd, from: &str, tag: &str) {
    let client = format!("barrier-{from}-{tag}");
    let line = iamat(herd, from, &client, "+1+1", &now_ts());
    wait_everywhere(herd, &FIVE, client.as_bytes(), &line, CONVERGE);
}

#[test]
fn reports_flood_everywhere_newest_wins_and_ties_converge() {
    let herd = five_up();
    let others = ["Bailey", "Bona", "Campbell", "Jaquez"];

    // An IAMAT at Clark is at every other server within a second of its answer, with the
    // AT line Clark produced, byte for byte.
    let ts = now_ts();
    let line = iamat(
        &herd,
        "Clark",
        "kiwi.cs.ucla.edu",
        "+34.068930-118.445127",
        &ts,
    );
    let took = wait_everywhere(&herd, &others, b"kiwi.cs.ucla.edu", &line, CONVERGE);
    for (server, elapsed) in &took {
        assert!(
            *elapsed < Duration::from_secs(1),
            "the report reached {server} only after {elapsed:?}"
        );
    }
    assert_eq!(
        herd.at_line_of("Clark", b"kiwi.cs.ucla.edu").as_deref(),
        Some(&line[..])
    );

    // A stale report, at the far end of the herd: answered with its own AT line, but it
    // changes nothing anywhere.
    let older = ts_of_nanos(ts_nanos(&ts) - 1);
    let stale = iamat(
        &herd,
        "Bailey",
        "kiwi.cs.ucla.edu",
        "-33.8688+151.2093",
        &older,
    );
    assert_ne!(stale, line);
    barrier(&herd, "Bailey", "stale");
    for (server, at) in everywhere(&herd, &FIVE, b"kiwi.cs.ucla.edu") {
        assert_eq!(
            at.as_deref(),
            Some(&line[..]),
            "{server} changed on a stale report"
        );
    }

    // A newer one, at another server, replaces it everywhere.
    let newer = iamat(
        &herd,
        "Jaquez",
        "kiwi.cs.ucla.edu",
        "+35.1-119.2",
        &ts_of_nanos(ts_nanos(&ts) + 1),
    );
    let took = wait_everywhere(&herd, &FIVE, b"kiwi.cs.ucla.edu", &newer, CONVERGE);
    for (server, elapsed) in &took {
        assert!(
            *elapsed < Duration::from_secs(1),
            "the newer report reached {server} only after {elapsed:?}"
        );
    }

    // Equal timestamps reported at the same moment at two far-apart servers, different
    // locations: every server ends with the same one of the two.
    for round in 0..3 {
        let client = format!("tie-{round}");
        let ts = now_ts();
        let gate = Arc::new(Barrier::new(2));
        let threads: Vec<_> = [("Clark", "+10+10"), ("Bailey", "-20-20")]
            .into_iter()
            .map(|(server, loc)| {
                let gate = Arc::clone(&gate);
                let addr = herd.addr(server);
                let req = format!("IAMAT {client} {loc} {ts}\n");
                std::thread::spawn(move || {
                    gate.wait();
                    ask(&addr, req.as_bytes())
                })
            })
            .collect();
        let answers: Vec<Vec<u8>> = threads
            .into_iter()
            .map(|t| {
                let a = t.join().unwrap();
                a.strip_suffix(b"\n").unwrap().to_vec()
            })
            .collect();
        assert!(
            answers[0].starts_with(b"AT Clark "),
            "{}",
            show(&answers[0])
        );
        assert!(
            answers[1].starts_with(b"AT Bailey "),
            "{}",
            show(&answers[1])
        );
        let mut agreed = None;
        eventually(
            CONVERGE,
            &format!("{client}: one record everywhere"),
            || {
                let all = everywhere(&herd, &FIVE, client.as_bytes());
                let first = all["Bailey"].clone();
                let same = all.values().all(|v| *v == first);
                agreed = first.clone();
                same && first.is_some_and(|f| answers.contains(&f))
            },
        );
        // ...and it stays that way once everything in flight has landed.
        barrier(&herd, "Clark", &client);
        barrier(&herd, "Bailey", &client);
        for (server, at) in everywhere(&herd, &FIVE, client.as_bytes()) {
            assert_eq!(at, agreed, "{server} differs for {client}");
        }
    }
}

#[test]
fn a_killed_server_is_routed_around_and_catches_up_when_restarted() {
    // Queues of one report per link: what Bona misses while down cannot all wait in its
    // peers' queues, so it must come back by synchronisation.
    let mut herd = five_up_with(&format!("{FAST}queue = 1\n"));
    herd.kill("Bona");

    // The others answer at once, and reports go around Bona: Clark → Jaquez → Campbell →
    // Bailey, and back.
    let mut clark = Client::connect(&herd.addr("Clark"));
    let started = Instant::now();
    let down1 = clark.iamat("while-down", "+1+2", &now_ts());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "an IAMAT took {:?} with a link down",
        started.elapsed()
    );
    wait_everywhere(
        &herd,
        &["Clark", "Jaquez", "Campbell", "Bailey"],
        b"while-down",
        down1.as_bytes(),
        CONVERGE,
    );
    let down2 = iamat(&herd, "Bailey", "back-the-other-way", "+3+4", &now_ts());
    wait_everywhere(
        &herd,
        &["Bailey", "Campbell", "Jaquez", "Clark"],
        b"back-the-other-way",
        &down2,
        CONVERGE,
    );
    let mut missed = Vec::new();
    for (i, server) in ["Clark", "Jaquez", "Campbell", "Bailey", "Clark"]
        .iter()
        .enumerate()
    {
        let client = format!("missed-{i}");
        let line = iamat(&herd, server, &client, "+9+9", &now_ts());
        wait_everywhere(
            &herd,
            &["Clark", "Jaquez", "Campbell", "Bailey"],
            client.as_bytes(),
            &line,
            CONVERGE,
        );
        missed.push((client, line));
    }
    // Some time passes with Bona down and its peers redialling; everyone still answers.
    let clark_log = herd.log_len("Clark");
    eventually(LINKS_UP, "Clark to retry Bona", || {
        herd.log_since("Clark", clark_log)
            .contains("cannot reach peer")
    });
    for server in ["Clark", "Jaquez", "Campbell", "Bailey"] {
        assert!(herd.at_line_of(server, b"while-down").is_some());
    }

    // Restarted on the same state and port: its links come back by themselves...
    let logs: BTreeMap<&str, usize> = FIVE.iter().map(|n| (*n, herd.log_len(n))).collect();
    herd.start("Bona");
    herd.wait_links_up("Bona", &peers_of("Bona"), logs["Bona"], LINKS_UP);
    for peer in peers_of("Bona") {
        herd.wait_links_up(peer, &["Bona"], logs[peer], LINKS_UP);
    }
    // ...what it missed arrives by synchronisation...
    wait_everywhere(&herd, &["Bona"], b"while-down", down1.as_bytes(), CONVERGE);
    wait_everywhere(&herd, &["Bona"], b"back-the-other-way", &down2, CONVERGE);
    for (client, line) in &missed {
        wait_everywhere(&herd, &["Bona"], client.as_bytes(), line, CONVERGE);
    }
    assert!(herd.at_line_of("Bona", b"warm-up").is_some());
    // ...and new reports reach it, from a neighbour and from two hops away.
    let after = iamat(&herd, "Clark", "after-restart", "+5+6", &now_ts());
    wait_everywhere(&herd, &FIVE, b"after-restart", &after, CONVERGE);
    let far = iamat(&herd, "Jaquez", "two-hops", "+7+8", &now_ts());
    let took = wait_everywhere(&herd, &["Bona"], b"two-hops", &far, CONVERGE);
    assert!(took["Bona"] < Duration::from_secs(1), "{took:?}");
    // And what it receives itself goes out again.
    let from_bona = iamat(&herd, "Bona", "from-bona", "-1-1", &now_ts());
    wait_everywhere(&herd, &FIVE, b"from-bona", &from_bona, CONVERGE);
}

#[test]
fn an_acknowledged_report_survives_kill_9() {
    // One server alone, so nothing can come back from a peer: only its own store counts.
    let mut herd = Herd::new(&["Solo"], &[], "");
    herd.start("Solo");
    let mut c = Client::connect(&herd.addr("Solo"));
    let mut req = Vec::new();
    let clients: Vec<String> = (0..20).map(|i| format!("durable-{i}")).collect();
    for (i, client) in clients.iter().enumerate() {
        req.extend_from_slice(format!("IAMAT {client} +{i}.5-{i}.25 {}\n", now_ts()).as_bytes());
    }
    c.send(&req);
    let mut lines = Vec::new();
    for client in &clients {
        let line = String::from_utf8(c.line()).unwrap();
        assert!(line.contains(&format!(" {client} ")), "{line}");
        lines.push(line.trim_end_matches('\n').to_owned());
    }
    // The last answer is in; no chance to flush or say goodbye.
    herd.kill("Solo");

    herd.start("Solo");
    for (client, line) in clients.iter().zip(&lines) {
        assert_eq!(
            herd.at_line_of("Solo", client.as_bytes()).as_deref(),
            Some(line.as_bytes()),
            "{client} lost by kill -9"
        );
    }
    assert_eq!(herd.stop("Solo").code(), Some(0));

    let records = inspect(&herd.state_dir("Solo"));
    assert_eq!(records.len(), clients.len(), "{records:?}");
    for (i, (client, line)) in clients.iter().zip(&lines).enumerate() {
        let r = records
            .iter()
            .find(|r| r["client"] == client.as_str())
            .unwrap_or_else(|| panic!("{client} missing from inspect: {records:?}"));
        let at = parse_at(line.as_bytes());
        assert_eq!(r["at"], line.as_str());
        assert_eq!(r["server"], "Solo");
        assert_eq!(r["time_diff"].as_str().unwrap().as_bytes(), &at.diff[..]);
        assert_eq!(r["location"], format!("+{i}.5-{i}.25").as_str());
        assert_eq!(r["latitude"], i as f64 + 0.5);
        assert_eq!(r["longitude"], -(i as f64 + 0.25));
        assert!(line.ends_with(r["timestamp"].as_str().unwrap()));
    }
}

#[test]
fn concurrent_reports_at_every_server_converge_on_the_newest() {
    let herd = five_up();
    let clients = 8;
    let per_server = 40;
    // Every server gets reports for the same clients at once, each with its own timestamp,
    // interleaved so that newer and older ones cross on the links.
    let threads: Vec<_> = FIVE
        .iter()
        .enumerate()
        .map(|(s, server)| {
            let addr = herd.addr(server);
            std::thread::spawn(move || {
                let mut c = Client::connect(&addr);
                let mut sent = Vec::new();
                for i in 0..per_server {
                    let client = format!("busy-{}", (i * 7 + s) % clients);
                    // Distinct timestamps; the order sent is not the order of timestamps.
                    let ts = format!("1700000000.{:09}", ((i * 37 + s * 11) % 200) * 5 + s);
                    let line = c.iamat(&client, &format!("+{s}.{i}-{i}.{s}"), &ts);
                    sent.push((client, ts_nanos(&ts), line));
                }
                sent
            })
        })
        .collect();
    let mut newest: BTreeMap<String, (i128, String)> = BTreeMap::new();
    for t in threads {
        for (client, ts, line) in t.join().unwrap() {
            match newest.get(&client) {
                Some((old, _)) => {
                    assert_ne!(*old, ts, "timestamps must be distinct");
                    if ts > *old {
                        newest.insert(client, (ts, line));
                    }
                }
                None => {
                    newest.insert(client, (ts, line));
                }
            }
        }
    }
    assert_eq!(newest.len(), clients);
    for (client, (_, line)) in &newest {
        wait_everywhere(&herd, &FIVE, client.as_bytes(), line.as_bytes(), CONVERGE);
    }
}

#[test]
fn a_server_restarted_with_its_state_lost_gets_everything_back() {
    let names = ["Able", "Baker", "Charlie"];
    let mut herd = Herd::new(&names, &[("Able", "Baker"), ("Baker", "Charlie")], FAST);
    herd.start_all();
    let mut lines = Vec::new();
    for i in 0..30 {
        let client = format!("keep-{i}");
        let line = iamat(&herd, names[i % 2], &client, "+1+1", &now_ts());
        lines.push((client, line));
    }
    for (client, line) in &lines {
        wait_everywhere(&herd, &names, client.as_bytes(), line, CONVERGE);
    }
    herd.kill("Charlie");
    std::fs::remove_dir_all(herd.state_dir("Charlie")).unwrap();
    herd.start("Charlie");
    // Nothing is queued for Charlie any more: only a full sync can bring the records back.
    for (client, line) in &lines {
        wait_everywhere(&herd, &["Charlie"], client.as_bytes(), line, CONVERGE);
    }
    let again = iamat(&herd, "Charlie", "new-life", "+2+2", &now_ts());
    wait_everywhere(&herd, &names, b"new-life", &again, CONVERGE);
}
