//! Hostile input: any byte string from a client, and a peer that lies, sends garbage or floods.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use common::*;
use proptest::prelude::*;

/// Splits a node's answer stream into answers: a `? ` line, an `AT` line, or an `AT` line
/// followed by a places document ending in `}\n\n`.
fn count_answers(mut out: &[u8]) -> Result<usize, String> {
    let mut n = 0;
    while !out.is_empty() {
        let nl = out
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("an answer without a newline")?;
        let (line, rest) = out.split_at(nl + 1);
        if !(line.starts_with(b"? ") || line.starts_with(b"AT ")) {
            return Err(format!(
                "not an answer: {:?}",
                String::from_utf8_lossy(line)
            ));
        }
        out = rest;
        if line.starts_with(b"AT ") && out.first() == Some(&b'{') {
            let end = out
                .windows(3)
                .position(|w| w == b"}\n\n")
                .ok_or("unterminated document")?;
            out = &out[end + 3..];
        }
        n += 1;
    }
    Ok(n)
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c | 0x0b)
}

/// The number of requests in `input`: its non-empty lines (the last may be unterminated).
fn expected_answers(input: &[u8]) -> usize {
    input
        .split(|&b| b == b'\n')
        .filter(|line| line.iter().any(|&b| !is_space(b)))
        .count()
}

/// Bytes that are mostly protocol: commands, operands, white space, and a little of anything.
fn client_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"IAMAT".to_vec()),
        Just(b"WHATSAT".to_vec()),
        Just(b"AT".to_vec()),
        Just(b"SYNC PULL 0 0 1".to_vec()),
        Just(b"HERD".to_vec()),
        Just(b"kiwi".to_vec()),
        Just(b"+34.068930-118.445127".to_vec()),
        Just(b"1621464827.959498503".to_vec()),
        Just(b"10".to_vec()),
        Just(b"5".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\t".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\x0b\x0c".to_vec()),
        Just(b"\x00".to_vec()),
        Just(b"\xff\xfe".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(token, 0..40).prop_map(|parts| parts.concat())
}

#[test]
fn any_bytes_get_exactly_one_answer_per_non_empty_line() {
    let mut herd = Herd::new(&["P"], &[], "");
    herd.start("P");
    let config = ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&client_bytes(), |input| {
        let answer = ask(&herd.addr("P"), &input);
        let shown = || {
            format!(
                "input {:?} answer {:?}",
                String::from_utf8_lossy(&input),
                String::from_utf8_lossy(&answer)
            )
        };
        let got =
            count_answers(&answer).map_err(|e| TestCaseError::fail(format!("{e}: {}", shown())))?;
        prop_assert_eq!(got, expected_answers(&input), "{}", shown());
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The node survived all of it.
    assert!(herd.ask("P", b"IAMAT alive +1+2 3\n").starts_with(b"AT P "));
}

#[test]
fn a_lying_peer_is_logged_and_dropped_and_never_poisons_the_store() {
    // Only N runs; the test plays its linked peer L.
    let mut herd = Herd::new(
        &["N", "L"],
        &[("N", "L")],
        "[peers]\nbackoff_min_ms = 5000\nbackoff_max_ms = 5000\n",
    );
    herd.start("N");
    let mut peer = herd.link_as("N", "L");
    let w = peer.get_mut();
    w.write_all(b"AT L +0.100000000 good +1+2 100\n").unwrap();
    for bad in [
        &b"AT L 0.1 bad1 +1+2 100\n"[..], // time difference without sign
        b"AT L +0.100000000 bad2 +91+2 100\n", // latitude out of range
        b"AT L +0.100000000 bad3 +1+2 1e9\n", // timestamp with exponent
        b"AT L +00.100000000 bad4 +1+2 100\n", // non-canonical difference
        b"AT \xff\xfe +0.100000000 bad5 +1+2 100\n", // server name not UTF-8
        b"SYNC PULL zz 1 1\n",
        b"SYNC DONE 1\n",
        b"HERD PROOF 00\n",
        b"\x00\x01\x02 garbage\n",
        b"IAMAT bad6 +1+2 100\n", // a client command on a link
    ] {
        w.write_all(bad).unwrap();
    }
    // An oversized line: far beyond the limit, then a good report after it.
    let huge = vec![b'A'; 4 << 20];
    w.write_all(&huge).unwrap();
    w.write_all(b"\nAT L +0.100000000 after +1+2 100\n")
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the good reports to be stored",
        || herd.at_line("N", "good").is_some() && herd.at_line("N", "after").is_some(),
    );
    for i in 1..=6 {
        assert_eq!(
            herd.at_line("N", &format!("bad{i}")),
            None,
            "bad{i} must not be stored"
        );
    }
    let log = herd.log("N");
    assert!(
        log.contains("ignoring a malformed line from a peer"),
        "{log}"
    );
    assert!(
        log.contains("dropping an over-long line from a peer"),
        "{log}"
    );
    assert_eq!(herd.stop("N").code(), Some(0));
    let clients: Vec<String> = inspect(&herd.state_dir("N"))
        .iter()
        .map(|r| r["client"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(clients.len(), 2, "{clients:?}");
}

#[test]
fn a_flooding_peer_cannot_starve_clients() {
    let mut herd = Herd::new(
        &["N", "L"],
        &[("N", "L")],
        "[peers]\nbackoff_min_ms = 5000\nbackoff_max_ms = 5000\n",
    );
    herd.start("N");
    let peer = herd.link_as("N", "L");
    let mut w = peer.into_inner();
    let flooder = std::thread::spawn(move || {
        let mut batch = Vec::new();
        for round in 0..40u64 {
            batch.clear();
            for i in 0..5_000u64 {
                batch.extend_from_slice(
                    format!("AT L +0.100000000 flood-{i} +1+2 {}\n", round * 10 + 1).as_bytes(),
                );
            }
            if w.write_all(&batch).is_err() {
                break;
            }
        }
        let _ = w.shutdown(Shutdown::Write);
        let mut rest = Vec::new();
        let _ = w.read_to_end(&mut rest);
    });
    // While the flood runs, clients are answered (each request must complete; the harness
    // fails the test if one waits longer than its read timeout).
    let mut c = Client::connect(&herd.addr("N"));
    for i in 0..200 {
        let answer = c.iamat(&format!("client-{i}"), "+1+2", "100");
        assert!(answer.starts_with("AT N "), "{answer}");
    }
    flooder.join().unwrap();
    eventually(Duration::from_secs(30), "the flood to be applied", || {
        herd.at_line("N", "flood-4999")
            .is_some_and(|l| l.ends_with(" 391"))
    });
}

#[test]
fn a_peer_that_never_reads_does_not_delay_clients() {
    let mut herd = Herd::new(
        &["N", "L"],
        &[("N", "L")],
        "[store]\ndurability = \"none\"\n[peers]\nqueue = 100\nbackoff_min_ms = 5000\nbackoff_max_ms = 5000\n",
    );
    herd.start("N");
    // L links up and then reads nothing, ever: N's writes to it back up, then its queue fills.
    let silent = herd.link_as("N", "L");
    let mut c = Client::connect(&herd.addr("N"));
    let padding = "x".repeat(1000);
    for i in 0..10_000 {
        let answer = c.iamat(&format!("{padding}-{i}"), "+1+2", "100");
        assert!(answer.starts_with("AT N "), "{answer}");
    }
    eventually(
        Duration::from_secs(10),
        "the full queue to be logged",
        || herd.log("N").contains("link queue full"),
    );
    drop(silent);
}
