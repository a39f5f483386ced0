//! Reports refused before the store are counted per reason and source, shown on `/status`,
//! and logged at a bounded rate: a node whose clock is behind says why it drops fresh reports.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

#[test]
fn reports_from_the_future_are_counted_per_source_and_shown_on_status() {
    let (admin, admins) = admin_table(&["N"]);
    let mut herd = Herd::new(
        &["N", "P"],
        &[("N", "P")],
        &format!("[peers]\nbackoff_min_ms = 5000\nbackoff_max_ms = 5000\n{admin}"),
    );
    herd.start("N");
    let admin = &admins["N"];
    let peer_series = "herd_reports_refused_total{reason=\"future\",source=\"P\"}";
    let client_series = "herd_reports_refused_total{reason=\"future\",source=\"client\"}";
    assert_eq!(metric(admin, peer_series), 0.0);
    assert!(get(admin, "/status")
        .text()
        .contains("<td id=\"refused\">none</td>"));

    // Two hours ahead: beyond the default max_future_secs of an hour.
    let ahead = || ts_of_nanos(now_nanos() + 2 * 3600 * 1_000_000_000);
    let mut peer = herd.link_as("N", "P");
    for i in 0..120 {
        peer.get_mut()
            .write_all(format!("AT P +0.000000000 early{i} +1+1 {}\n", ahead()).as_bytes())
            .unwrap();
    }
    let mut c = Client::connect(&herd.addr("N"));
    for i in 0..3 {
        let answer = c.request(format!("IAMAT late{i} +1+1 {}", ahead()).as_bytes());
        assert!(answer.starts_with(b"? "), "{answer:?}");
    }
    eventually(
        Duration::from_secs(10),
        "the peer's refusals counted",
        || metric(admin, peer_series) == 120.0,
    );
    assert_eq!(metric(admin, client_series), 3.0);
    let status = get(admin, "/status").text();
    assert!(
        status.contains("refused as from the future: P 120, clients 3"),
        "{status}"
    );
    assert_eq!(herd.at_line("N", "early0"), None);

    // Logged, but not once per report: one line per source for all of these.
    let log = herd.log("N");
    let peer_lines = log
        .lines()
        .filter(|l| l.contains("dropping a peer's report timestamped too far in the future"))
        .count();
    let client_lines = log
        .lines()
        .filter(|l| l.contains("IAMAT timestamp too far in the future"))
        .count();
    assert_eq!((peer_lines, client_lines), (1, 1), "{log}");
}
