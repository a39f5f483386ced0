//! Arbitrary bytes → the store's record decoder, for the current format and formats 1 and 2
//! (which an upgrade reads and converts). Decoding must never panic or allocate what a length prefix
//! claims (run with `-rss_limit_mb=512`), and whatever decodes must re-encode to bytes that
//! decode to the same value and re-encode identically.
#![no_main]

use herd_migrations::{codec, v1, v2, v3};
use libfuzzer_sys::fuzz_target;

/// Equality with floats compared by bits, so a stored NaN still counts as equal to itself.
fn same(a: &v2::Record, b: &v2::Record) -> bool {
    let bits = |r: &v2::Record| (r.latitude.to_bits(), r.longitude.to_bits());
    let mut a2 = a.clone();
    let mut b2 = b.clone();
    (a2.latitude, a2.longitude, b2.latitude, b2.longitude) = (0.0, 0.0, 0.0, 0.0);
    a2 == b2 && bits(a) == bits(b)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = codec::decode::<v2::Record>(data) {
        let bytes = codec::encode(&record).expect("a decoded record encodes");
        let back: v2::Record = codec::decode(&bytes).expect("a re-encoded record decodes");
        assert!(same(&back, &record), "record changed through encode/decode");
        assert_eq!(
            codec::encode(&back).unwrap(),
            bytes,
            "encoding is not stable"
        );
    }
    if let Ok(record) = codec::decode::<v3::Record>(data) {
        let bytes = codec::encode(&record).expect("a decoded record encodes");
        let back: v3::Record = codec::decode(&bytes).expect("a re-encoded record decodes");
        assert_eq!(codec::encode(&back).unwrap(), bytes, "encoding is not stable");
        // What anti-entropy reads of a record is its head, whatever follows.
        let head: (u64, u64) = codec::decode_prefix(&bytes).expect("the head decodes");
        assert_eq!(head, (record.item, record.timestamp_secs));
    }
    if let Ok(old) = codec::decode::<v2::Record>(data) {
        // The format 2 → 3 step of an upgrade; it must not panic on any decodable record.
        let new = v3::Record::from(old.clone());
        assert_eq!(new.item, herd_migrations::item_hash(&old.at));
    }
    if let Ok(old) = codec::decode::<v1::Record>(data) {
        // The format 1 → 2 step of an upgrade; it must not panic on any decodable record.
        let new = v2::Record::from(old.clone());
        assert_eq!(new.time_diff_nanos, old.time_diff_nanos);
        assert!(new.received_nanos < 1_000_000_000);
    }
});
