//! Every on-disk format of the herd store, and the steps from each to the next.
//!
//! # The store, byte by byte (format 3)
//!
//! A store is one sled 0.34 database (a directory). Its trees:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `meta` (sled's default tree) | `format_version` | `u32`, big-endian |
//! | `records.v3` | [`key_hash`] of the client ID (`u64` big-endian), then the client ID's raw bytes | the client's record ([`v3::Record`]) via [`codec`] |
//!
//! One record per client. Keys are ordered by the hash of the client ID, so every range of the
//! hash space (every node of the anti-entropy tree, see the herd's `docs/sync.md`) is one
//! contiguous range scan. Each record carries its *item hash* ([`item_hash`] of its AT line),
//! the number anti-entropy fingerprints add up, so nothing has to be re-hashed to compare.
//!
//! Records are encoded with [`codec`] (bincode 2, serde, standard configuration: variable-length
//! integers, length-prefixed strings and byte strings, `f64` as 8 little-endian bytes), fields
//! in the order of the structs in [`v1`], [`v2`] and [`v3`].
//!
//! Both hashes are the first 8 bytes of SHA-256, big-endian, over a domain label and the bytes:
//! they are part of the format (two servers compare them), so they never change within it.
//!
//! # Versions
//!
//! - **1**: the first format ([`v1::Record`]), keyed by client ID, with a change log.
//! - **2**: adds the receiving server's clock as its own field, and the peer (and that peer's
//!   incarnation) a record was learned from ([`v2::Record`]).
//! - **3**: keys ordered by client hash, the item hash in each record; the change log
//!   (`changes`), the per-peer cursors (`cursors`) and the `epoch` and `boot` keys are gone,
//!   because anti-entropy compares contents instead of replaying history ([`v3::Record`]).
//!
//! # Upgrades
//!
//! [`upgrade`] brings a store to [`CURRENT`]. Each step writes the new version's records into a
//! fresh tree `records.v{N+1}`, flushes, and only then sets `format_version` (one atomic
//! write, flushed) and drops what the old version needed. A crash at any point leaves either
//! the old version intact (a half-written new tree is cleared and redone on the next open) or
//! the new one complete. A store newer than this build is refused, untouched.

pub mod codec;

use serde::{Deserialize, Serialize};

/// The format this build writes.
pub const CURRENT: u32 = 3;

/// The key of the format version in the `meta` tree.
pub const FORMAT_KEY: &[u8] = b"format_version";
/// Format 1 and 2: the key of the store's epoch in the `meta` tree.
pub const EPOCH_KEY: &[u8] = b"epoch";
/// Format 1 and 2: the key of the boot counter in the `meta` tree.
pub const BOOT_KEY: &[u8] = b"boot";
/// Format 1 and 2: the change log tree.
pub const CHANGES_TREE: &str = "changes";
/// Format 1 and 2: the peer cursor tree.
pub const CURSORS_TREE: &str = "cursors";

fn sha256_prefix(domain: &[u8], bytes: &[u8]) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(domain);
    h.update(bytes);
    let digest = h.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Where a client's record sorts: the hash of its ID.
pub fn key_hash(client: &[u8]) -> u64 {
    sha256_prefix(b"herd-key-v1\0", client)
}

/// What a record is, for anti-entropy: the hash of its AT line (which holds the client ID, the
/// receiving server, its time difference, the location and the timestamp, so two servers hold
/// the same item exactly when they hold the same report).
pub fn item_hash(at_line: &[u8]) -> u64 {
    sha256_prefix(b"herd-item-v1\0", at_line)
}

/// The format 3 key of a client's record: its key hash, big-endian, then the ID.
pub fn record_key(client: &[u8]) -> Vec<u8> {
    record_key_with(key_hash(client), client)
}

/// [`record_key`] for a caller that already has the client's [`key_hash`].
pub fn record_key_with(key_hash: u64, client: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + client.len());
    key.extend_from_slice(&key_hash.to_be_bytes());
    key.extend_from_slice(client);
    key
}

/// The client ID of a format 3 key, or `None` for a key too short to be one.
pub fn client_of_key(key: &[u8]) -> Option<&[u8]> {
    key.get(8..)
}

/// The name of the record tree of format `version`.
pub fn records_tree(version: u32) -> String {
    format!("records.v{version}")
}

/// Format 1: a client's record as first designed.
pub mod v1 {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Record {
        /// The server that received the IAMAT.
        pub server: String,
        /// Receive time minus client timestamp, in nanoseconds.
        pub time_diff_nanos: i128,
        /// The location as reported (ASCII).
        pub location: Vec<u8>,
        pub latitude: f64,
        pub longitude: f64,
        /// The timestamp as reported (ASCII).
        pub timestamp: Vec<u8>,
        pub timestamp_secs: u64,
        pub timestamp_nanos: u32,
        /// The full AT line a WHATSAT answers with, without newline.
        pub at: Vec<u8>,
        /// The change sequence number this record was written under.
        pub seq: u64,
    }
}

/// Format 2: format 1 plus the receive time and the peer the record came from.
pub mod v2 {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Record {
        pub server: String,
        pub time_diff_nanos: i128,
        pub location: Vec<u8>,
        pub latitude: f64,
        pub longitude: f64,
        pub timestamp: Vec<u8>,
        pub timestamp_secs: u64,
        pub timestamp_nanos: u32,
        /// The receiving server's clock when the report arrived, seconds and nanoseconds.
        pub received_secs: u64,
        pub received_nanos: u32,
        pub at: Vec<u8>,
        pub seq: u64,
        /// The peer this server learned the record from; `None` if a client reported it here
        /// or it came from a store upgraded from format 1.
        pub learned_from: Option<String>,
        /// The incarnation (a random number drawn at each start) of that peer's process when
        /// it sent the record; 0 if unknown.
        pub learned_incarnation: u64,
    }

    impl From<v1::Record> for Record {
        fn from(r: v1::Record) -> Record {
            // A corrupt record may hold any difference: saturate rather than overflow, so an
            // upgrade never panics on one (the receive time is only informational).
            let received = (i128::from(r.timestamp_secs) * 1_000_000_000
                + i128::from(r.timestamp_nanos))
            .saturating_add(r.time_diff_nanos);
            let received = received.max(0);
            Record {
                server: r.server,
                time_diff_nanos: r.time_diff_nanos,
                location: r.location,
                latitude: r.latitude,
                longitude: r.longitude,
                timestamp: r.timestamp,
                timestamp_secs: r.timestamp_secs,
                timestamp_nanos: r.timestamp_nanos,
                received_secs: u64::try_from(received / 1_000_000_000).unwrap_or(u64::MAX),
                received_nanos: (received % 1_000_000_000) as u32,
                at: r.at,
                seq: r.seq,
                learned_from: None,
                learned_incarnation: 0,
            }
        }
    }
}

/// Format 3: format 2 without the change sequence number and the peer's incarnation, with the
/// record's item hash first.
pub mod v3 {
    use super::*;

    /// The byte strings are encoded as bincode encodes any sequence of bytes (a length, then
    /// the bytes); `serde_bytes` only lets the codec take them whole instead of byte by byte.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Record {
        /// [`item_hash`] of `at`. First, with the timestamp, so anti-entropy reads only these.
        pub item: u64,
        pub timestamp_secs: u64,
        pub timestamp_nanos: u32,
        pub server: String,
        pub time_diff_nanos: i128,
        #[serde(with = "serde_bytes")]
        pub location: Vec<u8>,
        pub latitude: f64,
        pub longitude: f64,
        #[serde(with = "serde_bytes")]
        pub timestamp: Vec<u8>,
        pub received_secs: u64,
        pub received_nanos: u32,
        #[serde(with = "serde_bytes")]
        pub at: Vec<u8>,
        /// The peer this server learned the record from; `None` if a client reported it here.
        pub learned_from: Option<String>,
    }

    /// A [`Record`] whose strings are borrowed, for writing one without copying its fields
    /// first: it encodes to exactly the bytes of the owned record with the same values.
    #[derive(Clone, Copy, Debug, Serialize)]
    pub struct RecordRef<'a> {
        pub item: u64,
        pub timestamp_secs: u64,
        pub timestamp_nanos: u32,
        pub server: &'a str,
        pub time_diff_nanos: i128,
        #[serde(with = "serde_bytes")]
        pub location: &'a [u8],
        pub latitude: f64,
        pub longitude: f64,
        #[serde(with = "serde_bytes")]
        pub timestamp: &'a [u8],
        pub received_secs: u64,
        pub received_nanos: u32,
        #[serde(with = "serde_bytes")]
        pub at: &'a [u8],
        pub learned_from: Option<&'a str>,
    }

    impl From<v2::Record> for Record {
        fn from(r: v2::Record) -> Record {
            Record {
                item: item_hash(&r.at),
                timestamp_secs: r.timestamp_secs,
                timestamp_nanos: r.timestamp_nanos,
                server: r.server,
                time_diff_nanos: r.time_diff_nanos,
                location: r.location,
                latitude: r.latitude,
                longitude: r.longitude,
                timestamp: r.timestamp,
                received_secs: r.received_secs,
                received_nanos: r.received_nanos,
                at: r.at,
                learned_from: r.learned_from,
            }
        }
    }
}

/// The record type of [`CURRENT`].
pub type Record = v3::Record;

/// Why a store could not be brought to the current format.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("store format {found} is newer than this build supports ({supported}); upgrade herd")]
    TooNew { found: u32, supported: u32 },
    #[error("store format version is unreadable ({0} bytes)")]
    BadVersion(usize),
    #[error("record of client {client:?} in format {version} is corrupt: {source}")]
    Corrupt {
        client: String,
        version: u32,
        source: codec::CodecError,
    },
    #[error("store I/O failed during upgrade: {0}")]
    Sled(#[from] sled::Error),
}

/// What [`upgrade`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new, empty store was given the current format.
    Created,
    /// The store was already current.
    Current,
    /// The store was upgraded from `from`, rewriting `records` records.
    Upgraded { from: u32, records: u64 },
}

/// Reads the store's format version; `None` for a store that has never been written.
pub fn version(db: &sled::Db) -> Result<Option<u32>, MigrationError> {
    match db.get(FORMAT_KEY)? {
        None => Ok(None),
        Some(v) => {
            let bytes: [u8; 4] = v
                .as_ref()
                .try_into()
                .map_err(|_| MigrationError::BadVersion(v.len()))?;
            Ok(Some(u32::from_be_bytes(bytes)))
        }
    }
}

/// Brings the store to [`CURRENT`], step by step, each step atomic.
pub fn upgrade(db: &sled::Db) -> Result<Outcome, MigrationError> {
    let Some(mut at) = version(db)? else {
        db.insert(FORMAT_KEY, &CURRENT.to_be_bytes())?;
        db.flush()?;
        return Ok(Outcome::Created);
    };
    if at > CURRENT {
        return Err(MigrationError::TooNew {
            found: at,
            supported: CURRENT,
        });
    }
    let from = at;
    let mut records = 0;
    while at < CURRENT {
        records = match at {
            1 => step::<v1::Record, v2::Record>(db, 1, |client| client.to_vec())?,
            2 => {
                let n = step::<v2::Record, v3::Record>(db, 2, record_key)?;
                // What format 3 no longer needs, dropped only once the version has flipped.
                db.drop_tree(CHANGES_TREE.as_bytes())?;
                db.drop_tree(CURSORS_TREE.as_bytes())?;
                db.remove(EPOCH_KEY)?;
                db.remove(BOOT_KEY)?;
                db.flush()?;
                n
            }
            _ => unreachable!("every version below CURRENT has a step"),
        };
        at += 1;
    }
    Ok(if from == CURRENT {
        Outcome::Current
    } else {
        Outcome::Upgraded { from, records }
    })
}

/// Rewrites every record of format `from` as format `from + 1`, under the key `rekey` gives
/// the old key (the client ID in formats 1 and 2).
fn step<Old, New>(
    db: &sled::Db,
    from: u32,
    rekey: fn(&[u8]) -> Vec<u8>,
) -> Result<u64, MigrationError>
where
    Old: serde::de::DeserializeOwned,
    New: From<Old> + Serialize,
{
    let old = db.open_tree(records_tree(from))?;
    let new_name = records_tree(from + 1);
    db.drop_tree(new_name.as_bytes())?;
    let new = db.open_tree(&new_name)?;
    let mut count = 0;
    for entry in old.iter() {
        let (client, value) = entry?;
        let record: Old = codec::decode(&value).map_err(|source| MigrationError::Corrupt {
            client: String::from_utf8_lossy(&client).into_owned(),
            version: from,
            source,
        })?;
        let encoded = codec::encode(&New::from(record)).expect("store records always encode");
        new.insert(rekey(&client), encoded)?;
        count += 1;
    }
    new.flush()?;
    db.insert(FORMAT_KEY, &(from + 1).to_be_bytes())?;
    db.flush()?;
    db.drop_tree(records_tree(from).as_bytes())?;
    db.flush()?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_record(seq: u64) -> v1::Record {
        v1::Record {
            server: "Clark".into(),
            time_diff_nanos: 263_873_386,
            location: b"+34.068930-118.445127".to_vec(),
            latitude: 34.06893,
            longitude: -118.445127,
            timestamp: b"1621464827.959498503".to_vec(),
            timestamp_secs: 1621464827,
            timestamp_nanos: 959498503,
            at: b"AT Clark +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503".to_vec(),
            seq,
        }
    }

    #[test]
    fn format_3_byte_strings_encode_as_any_byte_sequence_does() {
        // The same fields as plain vectors (a tuple serialises them element by element): the
        // bytes on disk must not depend on how the codec is told to take them.
        let r = v3::Record::from(v2::Record::from(v1_record(7)));
        // (Nested, because a tuple of 13 compares with nothing; bincode writes tuples with no
        // framing, so the nesting adds no bytes.)
        let plain = (
            (
                r.item,
                r.timestamp_secs,
                r.timestamp_nanos,
                r.server.clone(),
                r.time_diff_nanos,
                r.location.clone(),
            ),
            (
                r.latitude,
                r.longitude,
                r.timestamp.clone(),
                r.received_secs,
                r.received_nanos,
                r.at.clone(),
                Some("Bona".to_owned()),
            ),
        );
        let r = v3::Record {
            learned_from: Some("Bona".into()),
            ..r
        };
        let bytes = codec::encode(&r).unwrap();
        assert_eq!(bytes, codec::encode(&plain).unwrap());
        let borrowed = v3::RecordRef {
            item: r.item,
            timestamp_secs: r.timestamp_secs,
            timestamp_nanos: r.timestamp_nanos,
            server: &r.server,
            time_diff_nanos: r.time_diff_nanos,
            location: &r.location,
            latitude: r.latitude,
            longitude: r.longitude,
            timestamp: &r.timestamp,
            received_secs: r.received_secs,
            received_nanos: r.received_nanos,
            at: &r.at,
            learned_from: r.learned_from.as_deref(),
        };
        assert_eq!(bytes, codec::encode(&borrowed).unwrap());
        assert_eq!(codec::decode::<v3::Record>(&bytes).unwrap(), r);
        assert_eq!(codec::decode::<_>(&bytes).ok(), Some(plain));
    }

    #[test]
    fn a_new_store_gets_the_current_format() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        assert_eq!(upgrade(&db).unwrap(), Outcome::Created);
        assert_eq!(version(&db).unwrap(), Some(CURRENT));
        assert_eq!(upgrade(&db).unwrap(), Outcome::Current);
    }

    #[test]
    fn version_one_upgrades_to_the_current_format_with_the_receive_time_split_out() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        db.insert(FORMAT_KEY, &1u32.to_be_bytes()).unwrap();
        let old = db.open_tree(records_tree(1)).unwrap();
        old.insert(b"kiwi", codec::encode(&v1_record(7)).unwrap())
            .unwrap();
        assert_eq!(
            upgrade(&db).unwrap(),
            Outcome::Upgraded {
                from: 1,
                records: 1
            }
        );
        let new = db.open_tree(records_tree(3)).unwrap();
        let r: v3::Record = codec::decode(&new.get(record_key(b"kiwi")).unwrap().unwrap()).unwrap();
        assert_eq!(
            (r.received_secs, r.received_nanos),
            (1621464828, 223_371_889)
        );
        assert_eq!(r.item, item_hash(&r.at));
        let names = db.tree_names();
        for gone in [records_tree(1), records_tree(2)] {
            assert!(!names.iter().any(|n| &n[..] == gone.as_bytes()), "{gone}");
        }
    }

    #[test]
    fn version_two_is_rekeyed_by_client_hash_and_loses_its_change_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        db.insert(FORMAT_KEY, &2u32.to_be_bytes()).unwrap();
        db.insert(EPOCH_KEY, &[7u8; 16]).unwrap();
        db.insert(BOOT_KEY, &3u64.to_be_bytes()).unwrap();
        let old = db.open_tree(records_tree(2)).unwrap();
        let changes = db.open_tree(CHANGES_TREE).unwrap();
        for (i, client) in [&b"kiwi"[..], b"\xffraw", b"zebra"].into_iter().enumerate() {
            let mut r = v2::Record::from(v1_record(i as u64));
            r.learned_from = Some("Bona".into());
            old.insert(client, codec::encode(&r).unwrap()).unwrap();
            changes.insert((i as u64).to_be_bytes(), client).unwrap();
        }
        drop((old, changes));
        assert_eq!(
            upgrade(&db).unwrap(),
            Outcome::Upgraded {
                from: 2,
                records: 3
            }
        );
        let new = db.open_tree(records_tree(3)).unwrap();
        let keys: Vec<Vec<u8>> = new.iter().keys().map(|k| k.unwrap().to_vec()).collect();
        let mut expected: Vec<Vec<u8>> = [&b"kiwi"[..], b"\xffraw", b"zebra"]
            .into_iter()
            .map(record_key)
            .collect();
        expected.sort();
        assert_eq!(keys, expected, "keys in client-hash order");
        for key in &keys {
            let r: v3::Record = codec::decode(&new.get(key).unwrap().unwrap()).unwrap();
            assert_eq!(r.learned_from.as_deref(), Some("Bona"));
            assert!(client_of_key(key).is_some());
        }
        let names = db.tree_names();
        for gone in [CHANGES_TREE, CURSORS_TREE] {
            assert!(!names.iter().any(|n| &n[..] == gone.as_bytes()), "{gone}");
        }
        assert!(db.get(EPOCH_KEY).unwrap().is_none());
        assert!(db.get(BOOT_KEY).unwrap().is_none());
    }

    #[test]
    fn an_extreme_time_difference_upgrades_without_overflow() {
        let mut r = v1_record(1);
        r.timestamp_secs = u64::MAX;
        r.time_diff_nanos = i128::MAX;
        let up = v2::Record::from(r.clone());
        assert_eq!(up.received_secs, u64::MAX);
        r.time_diff_nanos = i128::MIN;
        let up = v2::Record::from(r);
        assert_eq!((up.received_secs, up.received_nanos), (0, 0));
    }

    #[test]
    fn an_upgrade_cut_short_is_redone_from_the_old_tree() {
        // A crash mid-upgrade leaves the version at 1, the old tree whole, and a partial new
        // tree, here holding a record that the old tree does not have.
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        db.insert(FORMAT_KEY, &1u32.to_be_bytes()).unwrap();
        let old = db.open_tree(records_tree(1)).unwrap();
        old.insert(b"kiwi", codec::encode(&v1_record(7)).unwrap())
            .unwrap();
        let partial = db.open_tree(records_tree(2)).unwrap();
        partial
            .insert(b"half-written", b"garbage".to_vec())
            .unwrap();
        drop((old, partial));
        assert_eq!(
            upgrade(&db).unwrap(),
            Outcome::Upgraded {
                from: 1,
                records: 1
            }
        );
        let new = db.open_tree(records_tree(3)).unwrap();
        let keys: Vec<_> = new.iter().keys().map(|k| k.unwrap().to_vec()).collect();
        assert_eq!(
            keys,
            [record_key(b"kiwi")],
            "the partial tree is redone, not kept"
        );
    }

    #[test]
    fn a_newer_store_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        db.insert(FORMAT_KEY, &(CURRENT + 1).to_be_bytes()).unwrap();
        assert!(matches!(upgrade(&db), Err(MigrationError::TooNew { .. })));
        assert_eq!(version(&db).unwrap(), Some(CURRENT + 1));
    }
}
