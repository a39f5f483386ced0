//! One line from a peer → `parse`. Handshake and sync lines must re-parse from their canonical
//! text; an AT report must round-trip through its line and through the store's record (built by
//! `store::record_of` as `Store::merge` does, through the codec, and read back by
//! `store::decode_record` as `Store::get` does).
#![no_main]

use std::cmp::Ordering;

use bytes::Bytes;
use herd::protocol::number::TimeDiff;
use herd::protocol::request::{is_space, parse, PeerLine, Request, SyncKind};
use herd::report::Report;
use herd::store;
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
        PeerLine::Sync {
            kind,
            round,
            payload,
        } => {
            let kind = match kind {
                SyncKind::Query => "Q",
                SyncKind::Want => "W",
                SyncKind::Answer => "A",
            };
            format!("SYNC {kind} {round} {}", text(payload))
        }
    }
    .into_bytes()
}

fn store_round_trip(report: &Report) {
    let record = store::record_of(report, Some("peer"));
    let bytes = codec::encode(&record).expect("a record always encodes");
    let back: Record = codec::decode(&bytes).expect("an encoded record decodes");
    assert_eq!(back, record, "record does not survive the codec");
    let stored = store::decode_record(&report.client, &bytes)
        .unwrap_or_else(|why| panic!("the store rejects its own record: {why}"));
    assert_eq!(
        &stored.report, report,
        "the stored report differs from the one written"
    );
    assert_eq!(stored.learned_from.as_deref(), Some("peer"));
    assert_eq!(stored.item, herd_migrations::item_hash(report.at_line()));
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
            assert_eq!(parse(report.at_line()), request);
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
