//! What a link may cost and what a peer may claim: a down link's queue is bounded in bytes as
//! well as in reports, and a peer's AT line may name any server,
//! known to this node or not.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

#[test]
fn a_down_links_queue_is_bounded_in_bytes() {
    // L is configured and linked, but nothing listens there: its queue only fills.
    let mut herd = Herd::new(
        &["N", "L"],
        &[("N", "L")],
        "[store]\nmax_client_id_bytes = 65536\n[peers]\nqueue_bytes = 1048576\nbackoff_min_ms = 5000\nbackoff_max_ms = 5000\n",
    );
    herd.start("N");
    let mut c = Client::connect(&herd.addr("N"));
    // 200 reports of 60 KB each: 12 MB, far under the 65,536-report count limit.
    for k in 0..200 {
        let id = format!("{k:05}{}", "x".repeat(60_000));
        c.send(format!("IAMAT {id} +1+2 {k}\n").as_bytes());
        assert!(c.line().starts_with(b"AT N "));
    }
    eventually(
        Duration::from_secs(5),
        "the byte bound to be logged",
        || {
            herd.log("N")
                .contains("link queue full; dropping reports until the next sync")
        },
    );
    // Every report is still stored here; only the queue for L dropped some.
    assert!(herd
        .at_line("N", &format!("{:05}{}", 199, "x".repeat(60_000)))
        .is_some());
}

#[test]
fn a_report_naming_a_server_this_node_does_not_know_is_stored_and_flooded() {
    // N links to L and K; a report received by a server N has never heard of (removed from
    // the herd, or added before N reloaded) still converges, its AT line unchanged.
    let mut herd = Herd::new(
        &["N", "L", "K"],
        &[("N", "L"), ("N", "K")],
        "[peers]\nbackoff_min_ms = 5000\nbackoff_max_ms = 5000\n",
    );
    herd.start("N");
    let mut from_l = herd.link_as("N", "L");
    let mut k = herd.link_as("N", "K");
    let line = "AT Gone +0.125000000 orphan +1+2 5";
    from_l
        .get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
    eventually(Duration::from_secs(5), "the report to be stored", || {
        herd.at_line_of("N", b"orphan").as_deref() == Some(line.as_bytes())
    });
    // Flooded on to K as it came, and not back to L.
    let mut got = String::new();
    loop {
        got.clear();
        std::io::BufRead::read_line(&mut k, &mut got).unwrap();
        assert!(!got.is_empty(), "K's link closed before the report came");
        if got.starts_with("AT ") {
            break;
        }
    }
    assert_eq!(got, format!("{line}\n"));
    assert!(!herd.log("N").contains("names no server"));
}
