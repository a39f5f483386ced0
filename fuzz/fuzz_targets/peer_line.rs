//! One line from a peer → `parse`. Handshake and sync lines must re-parse from their canonical
//! text; an AT report must round-trip through its line and through the store's record (built
//! field by field as `Store::merge` builds it, encoded and decoded with the store's codec, then
//! rebuilt and checked the way the store checks a record it reads back).
#![no_main]

use std::cmp::Ordering;

use bytes::Bytes;
use herd::protocol::location::Location;
use herd::protocol::number::{TimeDiff, Timestamp};
use herd::protocol::request::{is_space, parse, PeerLine, Request};
use herd::report::Report;
use herd_migrations::{codec, Record};
use libfuzzer_sys::fuzz_target;

fn canonical(line: &PeerLine) -> Vec<u8> {
    let text = |b: &Bytes| String::from_utf8(b.to_vec()).expect("hex tokens are ASCII");
    match line {
        PeerLine::Hello {
            dialer,
            listener,
            nonce,
        } => format!("HERD HELLO {dialer} {listener} {}", text(nonce)),
        PeerLine::Challenge { nonce, mac } => {
            format!("HERD CHALLENGE {} {}", text(nonce), text(mac))
        }
        PeerLine::Proof { mac } => format!("HERD PROOF {}", text(mac)),
        PeerLine::Welcome => "HERD WELCOME".to_owned(),
        PeerLine::Pull {
            epoch,
            seq,
            incarnation,
        } => format!("SYNC PULL {epoch:x} {seq} {incarnation:x}"),
        PeerLine::Done { epoch, seq } => format!("SYNC DONE {epoch:x} {seq}"),
    }
    .into_bytes()
}

fn store_round_trip(report: &Report) {
    let received = report.received().unwrap_or_default();
    let record = Record {
        server: report.server.clone(),
        time_diff_nanos: report.time_diff.0,
        location: report.location_text.to_vec(),
        latitude: report.location.latitude,
        longitude: report.location.longitude,
        timestamp: report.timestamp_text.to_vec(),
        timestamp_secs: report.timestamp.secs,
        timestamp_nanos: report.timestamp.nanos,
        received_secs: received.secs,
        received_nanos: received.nanos,
        at: report.at_line(),
        seq: 1,
        learned_from: Some("peer".to_owned()),
        learned_incarnation: 7,
    };
    let bytes = codec::encode(&record).expect("a record always encodes");
    let back: Record = codec::decode(&bytes).expect("an encoded record decodes");
    assert_eq!(back, record, "record does not survive the codec");

    let rebuilt = Report {
        server: back.server,
        time_diff: TimeDiff(back.time_diff_nanos),
        client: report.client.clone(),
        location: Location::parse(&back.location).expect("stored location parses"),
        location_text: Bytes::from(back.location),
        timestamp: Timestamp::parse(&back.timestamp).expect("stored timestamp parses"),
        timestamp_text: Bytes::from(back.timestamp),
    };
    assert_eq!(
        rebuilt.at_line(),
        back.at,
        "stored AT line disagrees with its fields"
    );
    assert_eq!(&rebuilt, report);
}

fuzz_target!(|data: &[u8]| {
    let line = Bytes::copy_from_slice(data);
    let request = parse(&line);
    match &request {
        Request::Peer(peer) => {
            let text = canonical(peer);
            assert_eq!(
                parse(&Bytes::from(text)),
                request,
                "peer line does not re-parse"
            );
            if let PeerLine::Hello {
                dialer, listener, ..
            } = peer
            {
                assert!(!dialer.is_empty() && !dialer.bytes().any(is_space));
                assert!(!listener.is_empty() && !listener.bytes().any(is_space));
            }
        }
        Request::At(report) => {
            assert_eq!(parse(&Bytes::from(report.at_line())), request);
            assert_eq!(report.precedence(report), Ordering::Equal);
            if let Some(received) = report.received() {
                assert_eq!(
                    TimeDiff::between(received, report.timestamp),
                    report.time_diff
                );
            }
            store_round_trip(report);
        }
        _ => {}
    }
});
