//! Write deadlines: a client or a peer that stops reading is cut off after the configured
//! time, logged, and its connection slot (or link) freed, while everyone else is served.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

#[test]
fn a_client_that_never_reads_is_closed_and_its_slot_freed() {
    let mut herd = Herd::new(
        &["Solo"],
        &[],
        "[limits]\nwrite_timeout_secs = 1\nmax_connections = 1\n",
    );
    herd.start("Solo");
    let addr = herd.addr("Solo");
    let mut stalled = TcpStream::connect(&addr).unwrap();
    let mut reader = BufReader::new(stalled.try_clone().unwrap());
    stalled
        .write_all(b"IAMAT kiwi +34.068930-118.445127 1\n")
        .unwrap();
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.starts_with("AT Solo "), "{first}");
    // Now ask for far more than the socket buffers hold, and never read a byte of it.
    let writer = std::thread::spawn(move || {
        let ask = b"WHATSAT kiwi 50 20\n".repeat(20_000);
        let _ = stalled.write_all(&ask);
    });
    eventually(
        Duration::from_secs(30),
        "the stalled client to be closed",
        || {
            herd.log("Solo")
                .contains("closing a connection that does not read its answers")
        },
    );
    // Its slot is free again: with max_connections = 1, a new client is served.
    eventually(Duration::from_secs(10), "a new client to be served", || {
        let answer = herd.ask("Solo", b"IAMAT emu +1+2 2\n");
        answer.starts_with(b"AT Solo ")
    });
    drop(reader);
    let _ = writer.join();
}

#[test]
fn a_peer_that_stops_reading_is_dropped_and_dialled_again() {
    let mut herd = Herd::new(
        &["N", "L"],
        &[("N", "L")],
        "[store]\nmax_client_id_bytes = 65536\n[peers]\nwrite_timeout_ms = 500\nbackoff_min_ms = 100\nbackoff_max_ms = 200\n",
    );
    herd.start("N");
    let from = herd.log_len("N");
    // L links and then reads nothing at all.
    let silent = herd.link_as("N", "L");
    // Reports with 60 KB client IDs: far more than the socket buffers hold goes to L.
    let mut c = Client::connect(&herd.addr("N"));
    let mut k = 0;
    while !herd
        .log_since("N", from)
        .contains("peer is not reading; dropping the link")
    {
        assert!(k < 2_000, "the stalled link was never dropped");
        let id = format!("{k:05}{}", "x".repeat(60_000));
        c.send(format!("IAMAT {id} +1+2 {k}\n").as_bytes());
        assert!(c.line().starts_with(b"AT N "));
        k += 1;
    }
    // The node went on answering clients all along, and redials L after the drop.
    eventually(Duration::from_secs(10), "a redial of L", || {
        herd.log_since("N", from).contains("cannot reach peer")
    });
    drop(silent);
}
