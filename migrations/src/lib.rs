//! Every on-disk format of the herd store, and the steps from each to the next.
//!
//! # The store, byte by byte
//!
//! A store is one sled 0.34 database (a directory). Its trees:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `meta` (sled's default tree) | `format_version` | `u32`, big-endian |
//! | | `epoch` | 16 random bytes naming this store's history (see below) |
//! | `records.v{N}` | the client ID, raw bytes | the client's record, format `N`, via [`codec`] |
//! | `changes` | `u64` big-endian change sequence number | the client ID whose record got it |
//! | `cursors` | a peer's server name, UTF-8 | that peer's epoch (16 bytes) then the last of its sequence numbers applied here (`u64` big-endian) |
//!
//! Every stored record carries the sequence number it was last written under, and `changes`
//! holds exactly one entry per client, under that number: it is the store's change log with
//! superseded entries removed, so "every record changed after sequence S" is one range scan.
//! The epoch is drawn when a store is created; a peer that remembers a cursor for another
//! epoch knows this store lost its history and asks for everything.
//!
//! Records are encoded with [`codec`] (bincode 2, serde, standard configuration: variable-length
//! integers, length-prefixed strings and byte strings, `f64` as 8 little-endian bytes), fields
//! in the order of the structs in [`v1`] and [`v2`].
//!
//! # Versions
//!
//! - **1**: the first format ([`v1::Record`]).
//! - **2**: adds the receiving server's clock as its own field, and the peer (and that peer's
//!   incarnation) a record was learned from ([`v2::Record`]).
//!
//! # Upgrades
//!
//! [`upgrade`] brings a store to [`CURRENT`]. Each step writes the new version's records into a
//! fresh tree `records.v{N+1}`, flushes, and only then sets `format_version` (one atomic
//! write, flushed) and drops the old tree. A crash at any point leaves either the old version
//! intact (a half-written new tree is cleared and redone on the next open) or the new one
//! complete. A store newer than this build is refused, untouched.

pub mod codec;

use serde::{Deserialize, Serialize};

/// The format this build writes.
pub const CURRENT: u32 = 2;

/// The key of the format version in the `meta` tree.
pub const FORMAT_KEY: &[u8] = b"format_version";
/// The key of the store's epoch in the `meta` tree.
pub const EPOCH_KEY: &[u8] = b"epoch";
/// The change log tree.
pub const CHANGES_TREE: &str = "changes";
/// The peer cursor tree.
pub const CURSORS_TREE: &str = "cursors";

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

/// The record type of [`CURRENT`].
pub type Record = v2::Record;

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
            1 => step::<v1::Record, v2::Record>(db, 1)?,
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

/// Rewrites every record of format `from` as format `from + 1`.
fn step<Old, New>(db: &sled::Db, from: u32) -> Result<u64, MigrationError>
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
        new.insert(client, encoded)?;
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
    fn a_new_store_gets_the_current_format() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        assert_eq!(upgrade(&db).unwrap(), Outcome::Created);
        assert_eq!(version(&db).unwrap(), Some(CURRENT));
        assert_eq!(upgrade(&db).unwrap(), Outcome::Current);
    }

    #[test]
    fn version_one_upgrades_with_the_receive_time_split_out() {
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
        let new = db.open_tree(records_tree(2)).unwrap();
        let r: v2::Record = codec::decode(&new.get(b"kiwi").unwrap().unwrap()).unwrap();
        assert_eq!(
            (r.received_secs, r.received_nanos),
            (1621464828, 223_371_889)
        );
        assert_eq!(r.seq, 7);
        assert!(!db
            .tree_names()
            .iter()
            .any(|n| &n[..] == records_tree(1).as_bytes()));
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
        let new = db.open_tree(records_tree(2)).unwrap();
        let keys: Vec<_> = new.iter().keys().map(|k| k.unwrap().to_vec()).collect();
        assert_eq!(
            keys,
            [b"kiwi".to_vec()],
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
