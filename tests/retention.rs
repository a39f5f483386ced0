//! Retention: with `[store] retain_secs`, a client whose newest report is older than the
//! window disappears from every node of a linked herd, a report already that old is refused,
//! anti-entropy afterwards exchanges only the root, and nothing comes back after a restart.
//! Also: a node at its record limit is not sent the same records round after round.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Long enough for the aging clients to be seen on every node first, even on a slow machine.
const RETAIN: u64 = 12;

fn secs_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The `sync done` records `name` logged from byte `from` of its log on: (questions, differing).
fn rounds_since(herd: &Herd, name: &str, from: usize) -> Vec<(u64, u64)> {
    herd.log_since(name, from)
        .lines()
        .filter(|l| l.contains("sync done"))
        .map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(u64::MAX)
            };
            (field("questions="), field("differing="))
        })
        .collect()
}

#[test]
fn expired_clients_leave_every_node_and_do_not_come_back() {
    let extra = format!("[store]\nretain_secs = {RETAIN}\n[peers]\nsync_interval_secs = 1\n");
    let mut herd = Herd::new(&["A", "B", "C"], &[("A", "B"), ("B", "C")], &extra);
    herd.start_all();
    herd.wait_links_up("B", &["A", "C"], 0, Duration::from_secs(20));
    let mut c = Client::connect(&herd.addr("A"));
    // Aging clients, four seconds into the window; a fresh one; one already past it.
    let aging_ts = format!("{}.5", secs_now() - 4);
    for i in 0..20 {
        let answer = c.iamat(&format!("aging-{i}"), "+1.0-2.0", &aging_ts);
        assert!(answer.starts_with("AT "), "{answer}");
    }
    let old_ts = format!("{}.0", secs_now() - RETAIN - 5);
    assert_eq!(
        c.iamat("too-old", "+1.0-2.0", &old_ts),
        format!("? IAMAT too-old +1.0-2.0 {old_ts}"),
        "a report already older than the window is refused"
    );
    for node in ["A", "B", "C"] {
        eventually(
            Duration::from_secs(10),
            &format!("{node} holds the aging clients"),
            || (0..20).all(|i| herd.at_line(node, &format!("aging-{i}")).is_some()),
        );
    }
    // A fresh client keeps being reported, so something stays.
    let fresh = c.iamat("fresh", "+1.0-2.0", &now_ts());
    assert!(fresh.starts_with("AT "));
    let started = Instant::now();
    for node in ["A", "B", "C"] {
        eventually(
            Duration::from_secs(15),
            &format!("{node} expires the aging clients"),
            || (0..20).all(|i| herd.at_line(node, &format!("aging-{i}")).is_none()),
        );
        assert_eq!(herd.at_line(node, "fresh").as_deref(), Some(fresh.as_str()));
    }
    eprintln!(
        "expired everywhere {:?} after the check began",
        started.elapsed()
    );
    // Afterwards rounds agree at the root: one question, nothing differing.
    let marks: Vec<usize> = ["A", "B", "C"].iter().map(|n| herd.log_len(n)).collect();
    for (node, from) in ["A", "B", "C"].iter().zip(&marks) {
        eventually(
            Duration::from_secs(10),
            &format!("{node}: two rounds after expiry"),
            || rounds_since(&herd, node, *from).len() >= 2,
        );
        for (questions, differing) in rounds_since(&herd, node, *from) {
            assert_eq!(
                (questions, differing),
                (1, 0),
                "{node}: a round after expiry"
            );
        }
    }
    // A restart brings nothing back, from its own store or from its peers.
    herd.kill("B");
    let from = herd.log_len("B");
    herd.start("B");
    herd.wait_links_up("B", &["A", "C"], from, Duration::from_secs(20));
    eventually(
        Duration::from_secs(10),
        "B's rounds after the restart",
        || rounds_since(&herd, "B", from).len() >= 2,
    );
    for node in ["A", "B", "C"] {
        for i in 0..20 {
            assert!(
                herd.at_line(node, &format!("aging-{i}")).is_none(),
                "{node} aging-{i} came back"
            );
        }
    }
    // And `herd inspect --retain-secs` says what is expired in a stopped store: the fresh
    // client is inside an hour's window, and (seconds old by now) outside a one-second one.
    herd.kill("C");
    let rows = inspect_within(&herd, "C", 3600);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["client"], "fresh");
    assert_eq!(rows[0]["expired"], false, "{:?}", rows[0]);
    std::thread::sleep(Duration::from_millis(1100));
    let rows = inspect_within(&herd, "C", 1);
    assert_eq!(rows[0]["expired"], true, "{:?}", rows[0]);
}

/// `herd inspect --format json --retain-secs SECS` of `name`'s stopped store.
fn inspect_within(herd: &Herd, name: &str, secs: u64) -> Vec<serde_json::Value> {
    inspect_with(&herd.state_dir(name), &["--retain-secs", &secs.to_string()])
}

#[test]
fn a_node_at_its_record_limit_is_not_sent_the_same_records_every_round() {
    let (admin, addrs) = admin_table(&["B"]);
    let mut herd = Herd::new(
        &["A", "B"],
        &[("A", "B")],
        &format!("[peers]\nsync_interval_secs = 1\n{admin}"),
    );
    herd.start("A");
    let mut c = Client::connect(&herd.addr("A"));
    for i in 0..60 {
        assert!(c
            .iamat(&format!("c{i}"), "+1.0-2.0", &now_ts())
            .starts_with("AT "));
    }
    // B takes at most 10 clients; it meets A's 60 at link-up.
    herd.write_config(
        &[("A", "B")],
        &format!("[store]\nmax_records = 10\n[peers]\nsync_interval_secs = 1\n{admin}"),
    );
    herd.start("B");
    let refused = || {
        get(&addrs["B"], "/metrics")
            .text()
            .lines()
            .filter(|l| l.starts_with("herd_store_refused_total") && l.contains("source=\"A\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    let from = herd.log_len("B");
    eventually(Duration::from_secs(20), "B's first rounds", || {
        rounds_since(&herd, "B", from).len() >= 2
    });
    let after_first = refused();
    let mark = herd.log_len("B");
    eventually(Duration::from_secs(20), "four more rounds", || {
        rounds_since(&herd, "B", mark).len() >= 4
    });
    assert_eq!(
        refused(),
        after_first,
        "records refused again in later rounds"
    );
    let held: Vec<usize> = (0..60)
        .filter(|i| herd.at_line("B", &format!("c{i}")).is_some())
        .collect();
    assert_eq!(held.len(), 10, "B holds its limit: {held:?}");
    // A known client's update still reaches B through sync: stop B, update at A, restart B.
    let known = held[0];
    herd.kill("B");
    let update = c.iamat(&format!("c{known}"), "+9.0-9.0", &now_ts());
    let from = herd.log_len("B");
    herd.start("B");
    eventually(Duration::from_secs(20), "the update reaches B", || {
        herd.at_line("B", &format!("c{known}")).as_deref() == Some(update.as_str())
    });
    let _ = from;
}
