//! Anti-entropy as a peer sees it: the test plays a linked server and speaks the sync lines.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l.trim_end().to_owned()
}

#[test]
fn a_node_pulls_at_link_up_and_then_every_interval() {
    let mut herd = Herd::new(
        &["N", "L"],
        &[("N", "L")],
        "[peers]\nsync_interval_secs = 1\nbackoff_min_ms = 5000\nbackoff_max_ms = 5000\n",
    );
    herd.start("N");
    let mut peer = herd.link_as("N", "L");
    // At link-up: a PULL for everything (N has no cursor for L yet).
    let first = line(&mut peer);
    assert!(first.starts_with("SYNC PULL 0 0 "), "{first}");
    // Answer it: one record, then DONE with our (made-up) epoch and sequence number.
    peer.get_mut()
        .write_all(b"AT L +0.100000000 pulled +1+2 100\nSYNC DONE abc 42\n")
        .unwrap();
    // The next PULL comes by itself within the interval, from the cursor just stored.
    let started = Instant::now();
    let second = line(&mut peer);
    assert!(second.starts_with("SYNC PULL abc 42 "), "{second}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "periodic PULL took {:?}",
        started.elapsed()
    );
    assert!(
        herd.at_line("N", "pulled").is_some(),
        "the pulled record is stored"
    );
    let log = herd.log("N");
    assert!(
        log.contains("link up") && log.contains("sync done"),
        "{log}"
    );

    // The link drops; the log says so, and a reconnect pulls from the saved cursor.
    drop(peer);
    eventually(Duration::from_secs(5), "the drop to be logged", || {
        herd.log("N").contains("link dropped")
    });
    let mut again = herd.link_as("N", "L");
    let third = line(&mut again);
    assert!(third.starts_with("SYNC PULL abc 42 "), "{third}");
}

#[test]
fn a_pull_is_answered_with_the_changes_after_the_cursor() {
    let mut herd = Herd::new(
        &["N", "L"],
        &[("N", "L")],
        "[peers]\nbackoff_min_ms = 5000\nbackoff_max_ms = 5000\n",
    );
    herd.start("N");
    let mut c = Client::connect(&herd.addr("N"));
    let a = c.iamat("a", "+1+2", "1");
    let b = c.iamat("b", "+1+2", "1");
    let mut peer = herd.link_as("N", "L");
    let _their_pull = line(&mut peer);
    // Everything (we know no epoch of N's store yet). The reports queued for us while we were
    // away come too, as live floods, so collect every AT line until DONE.
    peer.get_mut().write_all(b"SYNC PULL 0 0 1\n").unwrap();
    let (sent, done) = until_done(&mut peer);
    assert!(sent.contains(&a) && sent.contains(&b), "{sent:?}");
    assert!(sent.iter().all(|l| *l == a || *l == b), "{sent:?}");
    let parts: Vec<&str> = done.split(' ').collect();
    // Only what changed after that cursor.
    let b2 = c.iamat("b", "+1+2", "2");
    // The new report is flooded to us live as well; the incremental answer has just it.
    peer.get_mut()
        .write_all(format!("SYNC PULL {} {} 1\n", parts[2], parts[3]).as_bytes())
        .unwrap();
    let (sent, _) = until_done(&mut peer);
    assert!(
        !sent.is_empty() && sent.iter().all(|l| *l == b2),
        "{sent:?}"
    );
}

/// Reads lines until `SYNC DONE`: (the AT lines before it, the DONE line).
fn until_done(r: &mut BufReader<TcpStream>) -> (Vec<String>, String) {
    let mut ats = Vec::new();
    loop {
        let l = line(r);
        if l.starts_with("SYNC DONE ") {
            return (ats, l);
        }
        assert!(l.starts_with("AT "), "unexpected line from a peer: {l:?}");
        ats.push(l);
    }
}
