//! What a link may cost and what a peer may claim: a down link's queue is bounded in bytes as
//! well as in reports, and a peer's AT line must name a server of the herd.

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
fn a_report_naming_no_server_of_the_herd_is_dropped() {
    let mut herd = Herd::new(
        &["N", "L"],
        &[("N", "L")],
        "[peers]\nbackoff_min_ms = 5000\nbackoff_max_ms = 5000\n",
    );
    herd.start("N");
    let mut peer = herd.link_as("N", "L");
    peer.get_mut()
        .write_all(b"AT Mallory +0.000000000 victim +1+2 5\nAT L +0.000000000 honest +1+2 5\n")
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "the honest report to be stored",
        || herd.at_line("N", "honest").is_some(),
    );
    assert_eq!(herd.at_line("N", "victim"), None);
    eventually(Duration::from_secs(5), "the refusal to be logged", || {
        herd.log("N")
            .contains("dropping a report that names no server of the herd")
    });
}
