//! Anti-entropy as a peer sees it: the test plays a linked server over a real TCP link, with a
//! store of its own and the herd library's reconciliation code, and watches what crosses.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use herd::config::Durability;
use herd::peer::sync::{answer, Job, Round};
use herd::protocol::request::{parse, PeerLine, Request, SyncKind};
use herd::store::engine::MemEngine;
use herd::store::Store;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A linked server played by the test: its own store, speaking the real protocol.
struct Peer {
    store: Store,
    conn: BufReader<TcpStream>,
    /// Every AT line the node sent, in order.
    received: Vec<String>,
    /// SYNC lines the node sent, in order.
    sync_lines: Vec<String>,
}

impl Peer {
    fn new_store() -> Store {
        Store::with_engine(
            Arc::new(MemEngine::new()),
            Durability::Flush,
            Duration::from_millis(5),
        )
    }

    async fn link(herd: &Herd, to: &str, as_peer: &str) -> Peer {
        Peer::link_with(herd, to, as_peer, Peer::new_store()).await
    }

    /// Links with a store already filled, so the node's first round sees its contents.
    async fn link_with(herd: &Herd, to: &str, as_peer: &str, store: Store) -> Peer {
        let mut s = TcpStream::connect(herd.addr(to)).await.unwrap();
        s.write_all(format!("HERD HELLO {as_peer} {to} 00ff\n").as_bytes())
            .await
            .unwrap();
        let mut conn = BufReader::new(s);
        let mut welcome = String::new();
        conn.read_line(&mut welcome).await.unwrap();
        assert_eq!(welcome, "HERD WELCOME\n");
        while !store.ready() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Peer {
            store,
            conn,
            received: Vec::new(),
            sync_lines: Vec::new(),
        }
    }

    async fn run(&mut self, mut jobs: Vec<Job>) {
        let mut out = Vec::new();
        for job in &mut jobs {
            while !job.step(&self.store, &mut out).unwrap().done {}
        }
        self.conn.get_mut().write_all(&out).await.unwrap();
    }

    /// Reads one line from the node, handles it (stores records, answers questions, feeds
    /// answers to `round`), and returns it.
    async fn step(&mut self, round: Option<&mut Round>) -> String {
        self.step_within(round, Duration::from_secs(10))
            .await
            .expect("the node said nothing for 10 s")
    }

    /// [`Peer::step`], or `None` if the node says nothing for `wait`.
    async fn step_within(&mut self, round: Option<&mut Round>, wait: Duration) -> Option<String> {
        let mut line = String::new();
        let n = match tokio::time::timeout(wait, self.conn.read_line(&mut line)).await {
            Ok(read) => read.unwrap(),
            Err(_) if line.is_empty() => return None,
            Err(_) => panic!("a partial line from the node: {line:?}"),
        };
        assert!(n > 0, "the node closed the link");
        let bytes = bytes::Bytes::copy_from_slice(line.trim_end().as_bytes());
        match parse(&bytes) {
            Request::At(report) => {
                self.received.push(line.trim_end().to_owned());
                self.store.merge(report, Some("N")).await.unwrap();
            }
            Request::Peer(PeerLine::Sync {
                kind,
                round: id,
                payload,
            }) => {
                self.sync_lines.push(line.trim_end().to_owned());
                let jobs = match (kind, round) {
                    (SyncKind::Answer, Some(r)) => r.on_answer(&self.store, id, &payload).unwrap(),
                    (SyncKind::Answer, None) => panic!("an answer to nothing: {line}"),
                    (kind, _) => answer(&self.store, kind, id, &payload).unwrap(),
                };
                self.run(jobs).await;
            }
            other => panic!("unexpected line from the node: {other:?}"),
        }
        Some(line.trim_end().to_owned())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn a_node_starts_a_round_at_link_up_and_then_every_interval() {
    let mut herd = Herd::new(
        &["N", "L"],
        &[("N", "L")],
        "[peers]\nsync_interval_secs = 1\nbackoff_min_ms = 5000\nbackoff_max_ms = 5000\n",
    );
    herd.start("N");
    runtime().block_on(async {
        let mut peer = Peer::link(&herd, "N", "L").await;
        peer.store
            .merge(
                herd::report::Report::from_at_fields(&fields("AT L +0.100000000 pulled +1+2 100"))
                    .unwrap(),
                None,
            )
            .await
            .unwrap();
        // At link-up: the node asks (round 1). N is empty, so we send what we have.
        let first = peer.step(None).await;
        assert!(first.starts_with("SYNC Q 1 "), "{first}");
        let started = std::time::Instant::now();
        // The next round comes by itself within the interval.
        loop {
            let line = peer.step(None).await;
            if line.starts_with("SYNC Q 2 ") {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(
            herd.at_line("N", "pulled").is_some(),
            "the record we sent is stored"
        );
        let log = herd.log("N");
        assert!(
            log.contains("link up") && log.contains("sync done"),
            "{log}"
        );

        // The link drops; the log says so, and a new link starts a round at once.
        drop(peer);
        eventually(Duration::from_secs(5), "the drop to be logged", || {
            herd.log("N").contains("link dropped")
        });
        let mut again = Peer::link(&herd, "N", "L").await;
        let first = again.step(None).await;
        assert!(first.starts_with("SYNC Q 1 "), "{first}");
    });
}

fn fields(line: &str) -> Vec<bytes::Bytes> {
    herd::protocol::request::fields(&bytes::Bytes::copy_from_slice(line.as_bytes()))[1..].to_vec()
}

#[test]
fn a_round_asked_of_a_node_moves_only_the_differences() {
    // A queue of one report: what N floods us at link-up is only the first of the reports it
    // took while we were away; the rest must come by anti-entropy, if at all.
    let mut herd = Herd::new(
        &["N", "L"],
        &[("N", "L")],
        "[peers]\nqueue = 1\nsync_interval_secs = 3600\nbackoff_min_ms = 5000\nbackoff_max_ms = 5000\n",
    );
    herd.start("N");
    let mut c = Client::connect(&herd.addr("N"));
    let mut at = Vec::new();
    for i in 0..300 {
        at.push(c.iamat(&format!("c{i}"), "+1+2", "1"));
    }
    runtime().block_on(async {
        // We already hold 299 of N's 300 records, and one newer report N does not have.
        let store = Peer::new_store();
        for line in at.iter().skip(1) {
            let report = herd::report::Report::from_at_fields(&fields(line)).unwrap();
            store.merge(report, None).await.unwrap();
        }
        let newer = "AT L +0.000000000 c7 +1+2 5";
        store
            .merge(
                herd::report::Report::from_at_fields(&fields(newer)).unwrap(),
                None,
            )
            .await
            .unwrap();
        let mut peer = Peer::link_with(&herd, "N", "L", store).await;
        // Let N's own round run to its end first (it asks; we answer).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !herd.log("N").contains("sync done") {
            assert!(
                std::time::Instant::now() < deadline,
                "N's round never ended"
            );
            peer.step_within(None, Duration::from_millis(100)).await;
        }
        // N's round found both differences: it sent c0 (which the queued flood may have
        // carried first) and wanted c7 from us; none of the 299 records we share crossed.
        assert!(
            !peer.received.is_empty() && peer.received.len() <= 2,
            "{:?}",
            peer.received
        );
        assert!(
            peer.received.iter().all(|l| *l == at[0]),
            "{:?}",
            peer.received
        );
        eventually(Duration::from_secs(5), "N to store our newer c7", || {
            herd.at_line("N", "c7").as_deref() == Some(newer)
        });
        // Our round now finds nothing to move: a few hundred bytes, no record.
        peer.received.clear();
        let (mut round, first) = Round::start(&peer.store, 1, None).unwrap();
        peer.run(first).await;
        let mut bytes = 0;
        while !round.is_done() {
            bytes += peer.step(Some(&mut round)).await.len();
        }
        assert!(peer.received.is_empty(), "{:?}", peer.received);
        assert!(bytes < 300, "{bytes} bytes of answers");
    });
}

#[test]
fn a_peer_that_breaks_the_protocol_is_dropped_and_changes_nothing() {
    let mut herd = Herd::new(
        &["N", "L"],
        &[("N", "L")],
        "[peers]\nsync_interval_secs = 3600\nbackoff_min_ms = 5000\nbackoff_max_ms = 5000\n",
    );
    herd.start("N");
    let mut c = Client::connect(&herd.addr("N"));
    let kept = c.iamat("kept", "+1+2", "1");
    runtime().block_on(async {
        for (garbage, why) in [
            ("SYNC A 7 AAAA\n", "an answer to a question never asked"),
            ("SYNC Q 1 _w\n", "not a message"),
            ("SYNC Q 1 AQIDBAUG\n", "not a query"),
            ("SYNC W 1 AAAAAAAAAA\n", "not a want"),
        ] {
            let from = herd.log_len("N");
            let mut peer = Peer::link(&herd, "N", "L").await;
            peer.conn
                .get_mut()
                .write_all(garbage.as_bytes())
                .await
                .unwrap();
            // The node drops the link: reads end, whatever it had sent before.
            let mut rest = Vec::new();
            let read = tokio::time::timeout(
                Duration::from_secs(10),
                tokio::io::AsyncReadExt::read_to_end(&mut peer.conn, &mut rest),
            )
            .await;
            assert!(read.is_ok(), "{why}: the link stayed up");
            eventually(Duration::from_secs(5), why, || {
                herd.log_since("N", from)
                    .contains("peer broke the sync protocol")
            });
        }
    });
    assert_eq!(herd.at_line("N", "kept"), Some(kept.trim_end().to_owned()));
    // And the node still serves.
    assert!(herd.ask("N", b"IAMAT after +1+2 2\n").starts_with(b"AT N "));
}

#[test]
fn a_round_the_peer_never_answers_drops_the_link() {
    let mut herd = Herd::new(
        &["N", "L"],
        &[("N", "L")],
        "[peers]\nsync_timeout_secs = 1\nbackoff_min_ms = 5000\nbackoff_max_ms = 5000\n",
    );
    herd.start("N");
    let from = herd.log_len("N");
    runtime().block_on(async {
        let mut peer = Peer::link(&herd, "N", "L").await;
        // Read N's question and never answer it.
        let mut question = String::new();
        peer.conn.read_line(&mut question).await.unwrap();
        assert!(question.starts_with("SYNC Q 1 "), "{question}");
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut peer.conn, &mut rest),
        )
        .await;
        assert!(closed.is_ok(), "the link stayed up");
    });
    eventually(
        Duration::from_secs(5),
        "the stalled round to be logged",
        || {
            herd.log_since("N", from)
                .contains("peer left a sync round unanswered")
        },
    );
    assert!(herd.ask("N", b"IAMAT after +1+2 2\n").starts_with(b"AT N "));
}

#[test]
fn an_empty_node_asked_by_a_peer_with_records_pulls_them_once_before_it_answers() {
    let mut herd = Herd::new(
        &["N", "L"],
        &[("N", "L")],
        "[peers]\nsync_interval_secs = 3600\nbackoff_min_ms = 5000\nbackoff_max_ms = 5000\n",
    );
    herd.start("N");
    runtime().block_on(async {
        // At link-up both stores are empty: N's round finds them equal.
        let mut peer = Peer::link(&herd, "N", "L").await;
        let first = peer.step(None).await;
        assert!(first.starts_with("SYNC Q 1 "), "{first}");
        eventually(Duration::from_secs(5), "N's first round to end", || {
            herd.log("N").contains("sync done")
        });
        // Later, we hold 300 records N never saw, and ask: N, empty and with no round of its
        // own running, asks us first (we send everything, then `Sent`)...
        let mut at = Vec::new();
        for i in 0..300 {
            let line = format!("AT L +0.000000000 later{i} +1+2 {}", 100 + i);
            let report = herd::report::Report::from_at_fields(&fields(&line)).unwrap();
            peer.store.merge(report, None).await.unwrap();
            at.push(line);
        }
        let (mut round, question) = Round::start(&peer.store, 1, None).unwrap();
        peer.run(question).await;
        let next = peer.step(Some(&mut round)).await;
        assert!(
            next.starts_with("SYNC Q 2 "),
            "N answered before pulling: {next}"
        );
        // ...and then answers our question from a store that holds them all: no difference,
        // and no record sent back.
        while !round.is_done() {
            peer.step(Some(&mut round)).await;
        }
        assert_eq!(round.stats.differing, 0, "{:?}", peer.sync_lines);
        assert_eq!(round.stats.questions, 1, "{:?}", peer.sync_lines);
        assert!(peer.received.is_empty(), "{:?}", peer.received);
        for line in [&at[0], &at[299]] {
            let client = line.split(' ').nth(3).unwrap();
            assert_eq!(herd.at_line("N", client).as_deref(), Some(line.as_str()));
        }
    });
}
