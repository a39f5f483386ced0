//! Store format upgrades, proved on a fixture of every older format, and refusal of a store
//! written by a newer build.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use herd_migrations::{codec, v1, CHANGES_TREE, EPOCH_KEY, FORMAT_KEY};

/// The clients in the format 1 fixture and their AT lines.
const V1_RECORDS: [(&[u8], &str, i128, &str, &str); 3] = [
    (
        b"kiwi.cs.ucla.edu",
        "Clark",
        263_873_386,
        "+34.068930-118.445127",
        "1621464827.959498503",
    ),
    (
        b"\xffnot-utf8",
        "Bona",
        -1_500_000_000,
        "-33.8688+151.2093",
        "1700000000.5",
    ),
    (b"plain", "Jaquez", 0, "+0+0", "1"),
];

fn fixture(version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/store-v{version}"))
}

fn at_line(server: &str, diff: i128, client: &[u8], location: &str, timestamp: &str) -> Vec<u8> {
    let sign = if diff < 0 { '-' } else { '+' };
    let abs = diff.unsigned_abs();
    let mut line = format!(
        "AT {server} {sign}{}.{:09} ",
        abs / 1_000_000_000,
        abs % 1_000_000_000
    )
    .into_bytes();
    line.extend_from_slice(client);
    line.extend_from_slice(format!(" {location} {timestamp}").as_bytes());
    line
}

/// Regenerates the format 1 fixture (`cargo test --test migrations -- --ignored`). Committed
/// fixtures are real sled files as format 1 wrote them; regenerate only with care.
#[test]
#[ignore]
fn write_v1_fixture() {
    let dir = fixture(1);
    let _ = std::fs::remove_dir_all(&dir);
    let db = sled::open(dir.join("store")).unwrap();
    db.insert(FORMAT_KEY, &1u32.to_be_bytes()).unwrap();
    db.insert(EPOCH_KEY, &0x5eed_u128.to_be_bytes()).unwrap();
    let records = db.open_tree(herd_migrations::records_tree(1)).unwrap();
    let changes = db.open_tree(CHANGES_TREE).unwrap();
    for (seq, (client, server, diff, location, timestamp)) in V1_RECORDS.iter().enumerate() {
        let (secs, nanos) = match timestamp.split_once('.') {
            Some((s, n)) => (s.parse().unwrap(), format!("{n:0<9}").parse().unwrap()),
            None => (timestamp.parse().unwrap(), 0),
        };
        let (lat, lng) = location[1..].split_at(location[1..].find(['+', '-']).unwrap());
        let sign = if location.starts_with('-') { -1.0 } else { 1.0 };
        let record = v1::Record {
            server: server.to_string(),
            time_diff_nanos: *diff,
            location: location.as_bytes().to_vec(),
            latitude: sign * lat.parse::<f64>().unwrap(),
            longitude: lng.parse().unwrap(),
            timestamp: timestamp.as_bytes().to_vec(),
            timestamp_secs: secs,
            timestamp_nanos: nanos,
            at: at_line(server, *diff, client, location, timestamp),
            seq: seq as u64 + 1,
        };
        records
            .insert(client, codec::encode(&record).unwrap())
            .unwrap();
        changes
            .insert((seq as u64 + 1).to_be_bytes(), *client)
            .unwrap();
    }
    db.flush().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_format_1_store_is_upgraded_in_place_and_served() {
    let mut herd = Herd::new(&["Clark"], &[], "");
    copy_dir(&fixture(1), &herd.state_dir("Clark"));
    herd.start("Clark");
    for (client, server, diff, location, timestamp) in V1_RECORDS {
        let mut ask = b"WHATSAT ".to_vec();
        ask.extend_from_slice(client);
        ask.extend_from_slice(b" 10 1\n");
        let answer = herd.ask("Clark", &ask);
        let expected = at_line(server, diff, client, location, timestamp);
        assert!(
            answer.starts_with(&expected),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(answer[expected.len()], b'\n');
    }
    eventually(Duration::from_secs(5), "the upgrade to be logged", || {
        herd.log("Clark").contains("store format upgraded")
    });
    assert!(
        herd.log("Clark").contains("from=1 to=3 records=3"),
        "{}",
        herd.log("Clark")
    );
    assert_eq!(herd.stop("Clark").code(), Some(0));
    // Format 2 split out the receive time: client timestamp plus time difference, exactly.
    let records = inspect(&herd.state_dir("Clark"));
    let kiwi = records
        .iter()
        .find(|r| r["client"] == "kiwi.cs.ucla.edu")
        .unwrap();
    assert_eq!(kiwi["received"], "1621464828.223371889");
    let odd = records
        .iter()
        .find(|r| r["client_hex"] == hex::encode(b"\xffnot-utf8"))
        .unwrap();
    assert_eq!(odd["received"], "1699999999.000000000");
    // Opening again is a no-op, not a second upgrade.
    herd.start("Clark");
    assert_eq!(herd.stop("Clark").code(), Some(0));
    assert_eq!(
        herd.log("Clark").matches("store format upgraded").count(),
        1
    );
}

#[test]
fn a_store_from_a_newer_build_is_refused_with_exit_2() {
    let herd = Herd::new(&["Clark"], &[], "");
    let dir = herd.state_dir("Clark");
    copy_dir(&fixture(1), &dir);
    {
        let db = sled::open(dir.join("store")).unwrap();
        db.insert(FORMAT_KEY, &(herd_migrations::CURRENT + 1).to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let out = herd.command("Clark").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("newer than this build"), "{stderr}");
    assert!(
        stderr.contains(&dir.join("store").display().to_string()),
        "the message must name the store: {stderr}"
    );
    // Untouched: still the newer version, not moved aside.
    let db = sled::open(dir.join("store")).unwrap();
    assert_eq!(
        herd_migrations::version(&db).unwrap(),
        Some(herd_migrations::CURRENT + 1)
    );
}
