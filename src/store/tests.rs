use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::engine::MemEngine;
use super::*;

fn report(line: &str) -> Report {
    Report::from_line(line)
}

fn mem(durability: Durability) -> (Arc<MemEngine>, Store) {
    let engine = Arc::new(MemEngine::new());
    let store = Store::with_engine(engine.clone(), durability, Duration::from_millis(5));
    (engine, store)
}

async fn ready(store: &Store) {
    for _ in 0..500 {
        if store.ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("fingerprints never built");
}

#[tokio::test]
async fn newest_wins_and_a_stale_report_costs_no_write() {
    let (engine, store) = mem(Durability::Flush);
    let old = report("AT A +0.100000000 kiwi +1+2 100");
    let new = report("AT B +0.100000000 kiwi +1+2 200");
    assert_eq!(
        store.merge(new.clone(), None).await.unwrap(),
        Merged::Stored
    );
    let before = engine.contents();
    assert_eq!(store.merge(old, Some("B")).await.unwrap(), Merged::Stale);
    assert_eq!(
        store.merge(new.clone(), Some("B")).await.unwrap(),
        Merged::Stale
    );
    assert_eq!(engine.contents(), before, "a stale report must not write");
    assert_eq!(store.get(b"kiwi").unwrap().unwrap().report, new);
}

/// Stores `kept`, then crashes the engine on the write of `lost`, whose submitter is told,
/// not acknowledged.
async fn keep_one_lose_one(engine: &MemEngine, store: &Store) {
    store
        .merge(report("AT A +0.000000000 kept +1+2 1"), None)
        .await
        .unwrap();
    engine.crash_after(0);
    assert!(store
        .merge(report("AT A +0.000000000 lost +1+2 1"), None)
        .await
        .is_err());
}

#[tokio::test]
async fn an_acknowledged_report_survives_a_crash_and_an_unflushed_one_does_not_pretend() {
    let (engine, store) = mem(Durability::Flush);
    keep_one_lose_one(&engine, &store).await;
    let restarted = Store::with_engine(
        Arc::new(engine.restart()),
        Durability::Flush,
        Duration::from_millis(5),
    );
    assert!(restarted.get(b"kept").unwrap().is_some());
    assert!(restarted.get(b"lost").unwrap().is_none());
}

#[tokio::test]
async fn a_failed_flush_is_never_acknowledged() {
    let (engine, store) = mem(Durability::Flush);
    engine.fail_flushes(1);
    assert!(store
        .merge(report("AT A +0.000000000 kiwi +1+2 1"), None)
        .await
        .is_err());
    // The next flush works and covers the next report.
    store
        .merge(report("AT A +0.000000000 kiwi +1+2 2"), None)
        .await
        .unwrap();
    let restarted = engine.restart();
    assert_eq!(restarted.contents().len(), 1);
}

#[tokio::test]
async fn a_stalled_engine_call_is_reported_and_reads_go_on() {
    let (engine, store) = mem(Durability::Flush);
    store
        .merge(report("AT A +0.000000000 first +1+2 1"), None)
        .await
        .unwrap();
    engine.stall_next(Duration::from_millis(700));
    let writing = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .merge(report("AT A +0.000000000 second +1+2 1"), None)
                .await
        })
    };
    // The writer is stuck inside the engine; a read on another thread is not.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    assert!(store.get(b"first").unwrap().is_some());
    assert!(started.elapsed() < Duration::from_millis(300));
    for _ in 0..100 {
        if store.stalls() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        store.stalls(),
        1,
        "the watchdog reports the stuck call once"
    );
    assert_eq!(writing.await.unwrap().unwrap(), Merged::Stored);
}

#[tokio::test]
async fn fingerprints_built_at_start_match_those_kept_on_every_write() {
    let (engine, store) = mem(Durability::Flush);
    ready(&store).await;
    for i in 0..2000 {
        store
            .offer(
                report(&format!("AT A +0.000000000 c{i} +1+2 {}", i % 7)),
                None,
            )
            .await
            .unwrap();
    }
    for i in 0..500 {
        store
            .offer(report(&format!("AT B +0.000000000 c{i} +1+2 100")), None)
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    let kept = store.fingerprint(fingerprint::Node::ROOT).unwrap();
    assert_eq!(kept.count, 2000);
    assert_eq!(store.count(), Some(2000));
    let rebuilt = Store::with_engine(
        Arc::new(engine.restart()),
        Durability::Flush,
        Duration::from_millis(5),
    );
    ready(&rebuilt).await;
    assert_eq!(rebuilt.fingerprint(fingerprint::Node::ROOT).unwrap(), kept);
    // Every depth agrees with a scan of the same range.
    let node = fingerprint::Node { depth: 4, index: 3 };
    let mut scanned = Fingerprint::default();
    for i in store.items(node, usize::MAX).unwrap().unwrap() {
        scanned.add(i.item);
    }
    assert_eq!(rebuilt.fingerprint(node).unwrap(), scanned);
}

#[tokio::test]
async fn writes_made_while_fingerprints_build_are_counted_once() {
    let engine = Arc::new(MemEngine::new());
    {
        let store = Store::with_engine(engine.clone(), Durability::Flush, Duration::from_millis(5));
        for i in 0..3000 {
            store
                .offer(report(&format!("AT A +0.000000000 c{i} +1+2 1")), None)
                .await
                .unwrap();
        }
        store.close().await;
    }
    // Restart and write at once, racing the build.
    let store = Store::with_engine(
        Arc::new(engine.restart()),
        Durability::Flush,
        Duration::from_millis(5),
    );
    for i in 0..3000 {
        store
            .offer(report(&format!("AT A +0.000000000 c{i} +1+2 2")), None)
            .await
            .unwrap();
        store
            .offer(report(&format!("AT A +0.000000000 n{i} +1+2 2")), None)
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    ready(&store).await;
    let mut scanned = Fingerprint::default();
    for i in store
        .items(fingerprint::Node::ROOT, usize::MAX)
        .unwrap()
        .unwrap()
    {
        scanned.add(i.item);
    }
    assert_eq!(scanned.count, 6000);
    assert_eq!(store.fingerprint(fingerprint::Node::ROOT).unwrap(), scanned);
}

#[tokio::test]
async fn close_applies_and_flushes_everything_submitted() {
    let (engine, store) = mem(Durability::None);
    for i in 0..100 {
        store
            .offer(report(&format!("AT A +0.000000000 c{i} +1+2 1")), None)
            .await
            .unwrap();
    }
    store.close().await;
    assert_eq!(engine.restart().contents().len(), 100);
    assert!(store
        .offer(report("AT A +0.000000000 late +1+2 1"), None)
        .await
        .is_err());
}

#[tokio::test]
async fn a_sled_store_reopens_with_its_records_and_is_locked_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::default();
    let store = Store::open(dir.path(), &config).unwrap();
    store
        .merge(report("AT A +0.000000000 kiwi +1+2 1"), None)
        .await
        .unwrap();
    assert!(matches!(
        Store::open(dir.path(), &config),
        Err(Error::StoreLocked { .. })
    ));
    assert!(matches!(
        open_for_inspection(dir.path()),
        Err(Error::StoreLocked { .. })
    ));
    store.close().await;
    drop(store);
    let again = Store::open(dir.path(), &config).unwrap();
    assert!(again.get(b"kiwi").unwrap().is_some());
}

#[tokio::test]
async fn a_whatsat_ticket_waits_for_the_write_before_it() {
    let (engine, store) = mem(Durability::Flush);
    engine.stall_next(Duration::from_millis(100));
    let pending = store
        .submit(report("AT A +0.000000000 kiwi +1+2 1"), None)
        .await
        .unwrap();
    let ticket = pending.ticket;
    store.wait_applied(ticket).await;
    assert!(store.is_applied(ticket));
    assert!(store.get(b"kiwi").unwrap().is_some());
    pending.outcome().await.unwrap();
}

#[test]
fn remembered_heads_are_exact_across_generations_and_shared_key_hashes() {
    let head = |secs| Head {
        timestamp: Timestamp { secs, nanos: 0 },
        item: secs,
    };
    let mut heads = Heads::new();
    heads.insert(7, b"a".to_vec(), head(1));
    assert_eq!(heads.get(7, b"a"), Some(head(1)));
    assert_eq!(heads.get(7, b"b"), None, "another key with the same hash");
    assert_eq!(heads.get(8, b"a"), None);
    // Fill the current generation: "a" moves to the previous one and is still known.
    for k in 0..HEADS as u64 {
        heads.insert(1_000 + k, k.to_be_bytes().to_vec(), head(2));
    }
    assert_eq!(heads.get(7, b"a"), Some(head(1)));
    // "a" is written again (into the current generation), then "b", sharing its hash,
    // replaces it there: the previous generation's old head of "a" must not answer.
    heads.insert(7, b"a".to_vec(), head(3));
    heads.insert(7, b"b".to_vec(), head(4));
    assert_eq!(heads.get(7, b"a"), None);
    assert_eq!(heads.get(7, b"b"), Some(head(4)));
    // Two more generations later everything early is forgotten.
    for k in 0..2 * HEADS as u64 {
        heads.insert(100_000 + k, k.to_be_bytes().to_vec(), head(5));
    }
    assert_eq!(heads.get(7, b"b"), None);
}

#[tokio::test]
async fn a_second_copy_of_the_stored_report_is_stale_without_a_read() {
    let (engine, store) = mem(Durability::Flush);
    store.remember_lines();
    let stored = report("AT A +0.100000000 kiwi +1+2 100");
    assert_eq!(
        store.merge(stored.clone(), Some("B")).await.unwrap(),
        Merged::Stored
    );
    let reads = engine.gets();
    // The same report again, as a flood brings it from another linked server.
    assert_eq!(
        store.merge(stored.clone(), Some("C")).await.unwrap(),
        Merged::Stale
    );
    assert_eq!(engine.gets(), reads, "a second copy reads nothing");
    // A different report with the same timestamp still goes through the whole order: it is
    // read and decided (the smaller difference was received first and wins).
    let tie = report("AT A +0.050000000 kiwi +1+2 100");
    assert_eq!(
        store.merge(tie.clone(), Some("C")).await.unwrap(),
        Merged::Stored
    );
    assert_eq!(engine.gets(), reads + 1);
    assert_eq!(store.merge(stored, None).await.unwrap(), Merged::Stale);
    assert_eq!(store.get(b"kiwi").unwrap().unwrap().report, tie);
}

#[tokio::test]
async fn newest_wins_holds_for_a_client_written_long_ago_and_on_ties() {
    let (_engine, store) = mem(Durability::Flush);
    let first = report("AT A +0.100000000 kiwi +1+2 100");
    store.merge(first.clone(), None).await.unwrap();
    // Push "kiwi" out of what the writer remembers, so its record is read back.
    for k in 0..2 * HEADS + 1 {
        let other = report(&format!("AT A +0.100000000 c{k} +1+2 100"));
        store.offer(other, None).await.unwrap();
    }
    let older = report("AT A +0.100000000 kiwi +1+2 99");
    assert_eq!(store.merge(older, None).await.unwrap(), Merged::Stale);
    // Equal timestamps: the report received first (the smaller difference) wins.
    let later_tie = report("AT B +0.200000000 kiwi +1+2 100");
    assert_eq!(store.merge(later_tie, None).await.unwrap(), Merged::Stale);
    let earlier_tie = report("AT B +0.050000000 kiwi +1+2 100");
    assert_eq!(
        store.merge(earlier_tie.clone(), None).await.unwrap(),
        Merged::Stored
    );
    // And again while it is remembered.
    assert_eq!(store.merge(first, None).await.unwrap(), Merged::Stale);
    assert_eq!(store.get(b"kiwi").unwrap().unwrap().report, earlier_tie);
}

fn mem_with(config: StoreConfig) -> (Arc<MemEngine>, Store) {
    let engine = Arc::new(MemEngine::new());
    let store = Store::with_engine_config(engine.clone(), &config);
    (engine, store)
}

/// The root fingerprint of what the engine holds, computed from its contents.
fn fingerprint_of(engine: &MemEngine) -> Fingerprint {
    let mut fp = Fingerprint::default();
    for value in engine.contents().values() {
        fp.add(codec::decode_prefix::<u64>(value).unwrap());
    }
    fp
}

#[tokio::test]
async fn after_a_failed_flush_an_older_report_is_decided_on_what_the_store_holds() {
    let (engine, store) = mem(Durability::Flush);
    store.remember_lines();
    ready(&store).await;
    let first = report("AT A +0.000000000 kiwi +1+2 1");
    store.merge(first, None).await.unwrap();
    // t=5 is applied, its flush fails: answered with an error, never acknowledged.
    engine.fail_flushes(1);
    let lost = report("AT A +0.000000000 kiwi +1+2 5");
    assert!(store.merge(lost.clone(), None).await.is_err());
    // The engine was reopened on what it had flushed: t=1. An older report than the failed
    // one, but newer than the stored one, wins; the failed report is no longer remembered.
    let older = report("AT B +0.000000000 kiwi +1+2 3");
    assert_eq!(
        store.merge(older.clone(), None).await.unwrap(),
        Merged::Stored
    );
    assert_eq!(store.get(b"kiwi").unwrap().unwrap().report, older);
    assert_eq!(engine.reopens(), 1);
    // A peer's copy of the failed report is not taken for a second copy of a stored one.
    assert_eq!(
        store.merge(lost.clone(), Some("B")).await.unwrap(),
        Merged::Stored
    );
    assert_eq!(store.get(b"kiwi").unwrap().unwrap().report, lost);
    ready(&store).await;
    assert_eq!(
        store.fingerprint(fingerprint::Node::ROOT).unwrap(),
        fingerprint_of(&engine)
    );
}

#[tokio::test]
async fn a_crashed_engine_is_reopened_and_takes_reports_again() {
    let (engine, store) = mem(Durability::Flush);
    keep_one_lose_one(&engine, &store).await;
    assert_eq!(
        store
            .merge(report("AT A +0.000000000 after +1+2 1"), None)
            .await
            .unwrap(),
        Merged::Stored
    );
    assert!(store.get(b"kept").unwrap().is_some());
    assert!(store.get(b"lost").unwrap().is_none());
    assert_eq!(store.health().writable, Writable::Yes);
}

#[tokio::test]
async fn admission_refuses_long_ids_and_new_clients_past_the_record_limit() {
    let (engine, store) = mem_with(StoreConfig {
        max_client_id_bytes: 8,
        max_records: 2,
        ..StoreConfig::default()
    });
    ready(&store).await;
    assert_eq!(
        store
            .merge(report("AT A +0.000000000 ninebytes +1+2 1"), None)
            .await
            .unwrap(),
        Merged::Refused(Refusal::ClientIdTooLong)
    );
    for c in ["a", "b"] {
        let line = format!("AT A +0.000000000 {c} +1+2 1");
        assert_eq!(
            store.merge(report(&line), None).await.unwrap(),
            Merged::Stored
        );
    }
    assert_eq!(
        store
            .merge(report("AT A +0.000000000 c +1+2 1"), Some("B"))
            .await
            .unwrap(),
        Merged::Refused(Refusal::NewClient)
    );
    // A known client still updates.
    assert_eq!(
        store
            .merge(report("AT A +0.000000000 a +1+2 2"), None)
            .await
            .unwrap(),
        Merged::Stored
    );
    assert_eq!(engine.contents().len(), 2);
}

#[tokio::test]
async fn retention_refuses_old_reports_and_expires_through_the_writer() {
    let now = Timestamp::now().secs;
    let (engine, store) = mem_with(StoreConfig {
        retain_secs: 100,
        ..StoreConfig::default()
    });
    store.remember_lines();
    ready(&store).await;
    let line = |c: &str, t: u64| format!("AT A +0.000000000 {c} +1+2 {t}");
    assert_eq!(
        store
            .merge(report(&line("old", now - 150)), None)
            .await
            .unwrap(),
        Merged::Refused(Refusal::Expired)
    );
    let aging = report(&line("aging", now - 99));
    store.merge(aging.clone(), None).await.unwrap();
    store
        .merge(report(&line("fresh", now)), None)
        .await
        .unwrap();
    assert_eq!(store.count(), Some(2));
    // Nothing older than the cutoff: nothing expires.
    assert_eq!(store.expire(now - 100).await.unwrap(), 0);
    // Two seconds on, the aging client is past the window: the writer expires it by itself
    // (every second), or this call does.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let cutoff = store.retention_cutoff().unwrap();
    assert!(cutoff > now - 99);
    assert!(store.expire(cutoff).await.unwrap() <= 1);
    assert!(store.get(b"aging").unwrap().is_none());
    assert_eq!(store.count(), Some(1));
    assert_eq!(engine.contents().len(), 1);
    assert_eq!(
        store.fingerprint(fingerprint::Node::ROOT).unwrap(),
        fingerprint_of(&engine)
    );
    // A lagging peer's copy of the expired report does not bring it back.
    assert_eq!(
        store.merge(aging, Some("B")).await.unwrap(),
        Merged::Refused(Refusal::Expired)
    );
    assert!(store.get(b"aging").unwrap().is_none());
}

/// A store over `engine` whose floods are sent to the returned receiver.
fn flooding(engine: &Arc<MemEngine>) -> (Store, std::sync::mpsc::Receiver<String>) {
    let store = Store::with_engine(engine.clone(), Durability::Flush, Duration::from_millis(5));
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    store.on_stored(Box::new(move |r: &Report, _| {
        let _ = tx
            .lock()
            .unwrap()
            .send(String::from_utf8_lossy(r.at_line()).into_owned());
    }));
    (store, rx)
}

#[tokio::test]
async fn a_report_is_flooded_before_its_sync_and_answered_after_it() {
    let engine = Arc::new(MemEngine::new());
    let (store, floods) = flooding(&engine);
    ready(&store).await;
    // Syncs as slow as a disk's: they run beside the writer, on the sync thread.
    engine.slow_syncs(Duration::from_millis(2));
    for i in 0..4 {
        let warm = format!("AT A +0.000000000 warm{i} +1+2 1");
        assert_eq!(
            store.merge(report(&warm), None).await.unwrap(),
            Merged::Stored
        );
        assert_eq!(floods.recv_timeout(Duration::from_secs(5)).unwrap(), warm);
    }
    let synced = engine.syncs();
    engine.hold_syncs(true);
    let first = store
        .submit(report("AT A +0.000000000 kiwi +1+2 1"), None)
        .await
        .unwrap();
    // Flooded while its sync is held open...
    let flooded = tokio::task::spawn_blocking(move || {
        let got = floods.recv_timeout(Duration::from_secs(5)).unwrap();
        (got, floods)
    })
    .await
    .unwrap();
    assert_eq!(flooded.0, "AT A +0.000000000 kiwi +1+2 1");
    let floods = flooded.1;
    // ...and a batch applied while that sync runs is flooded without waiting for it.
    let second = store
        .submit(report("AT A +0.000000000 pear +1+2 1"), None)
        .await
        .unwrap();
    let (got, floods) = tokio::task::spawn_blocking(move || {
        let got = floods.recv_timeout(Duration::from_secs(5)).unwrap();
        (got, floods)
    })
    .await
    .unwrap();
    assert_eq!(got, "AT A +0.000000000 pear +1+2 1");
    drop(floods);
    // Neither is answered while the sync is held.
    let mut first = Box::pin(first.outcome());
    let mut second = Box::pin(second.outcome());
    tokio::select! {
        _ = &mut first => panic!("answered before its sync"),
        _ = &mut second => panic!("answered before its sync"),
        _ = tokio::time::sleep(Duration::from_millis(300)) => {}
    }
    assert_eq!(engine.syncs(), synced);
    engine.hold_syncs(false);
    assert_eq!(first.await.unwrap(), Merged::Stored);
    assert_eq!(second.await.unwrap(), Merged::Stored);
    assert!(engine.syncs() > synced);
    // Both survive a power cut now.
    assert_eq!(engine.power_cut().contents().len(), 4 + 2);
}

#[tokio::test]
async fn a_slow_sync_runs_beside_the_writer() {
    let engine = Arc::new(MemEngine::new());
    let (store, _floods) = flooding(&engine);
    ready(&store).await;
    // Syncs as slow as a disk's: handed to the sync thread, so the writer serves a read while
    // one is held open.
    engine.slow_syncs(Duration::from_millis(2));
    for i in 0..4 {
        let warm = format!("AT A +0.000000000 slow{i} +1+2 1");
        store.merge(report(&warm), None).await.unwrap();
    }
    engine.hold_syncs(true);
    let held = store
        .submit(report("AT A +0.000000000 held2 +1+2 1"), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let read = store
        .get_in_order(Bytes::from_static(b"held2"))
        .await
        .unwrap();
    let found = tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .expect("the writer serves a read while the sync thread syncs")
        .unwrap();
    assert!(found.is_some());
    engine.hold_syncs(false);
    assert_eq!(held.outcome().await.unwrap(), Merged::Stored);
}

#[tokio::test]
async fn a_stale_answer_waits_for_the_sync_of_what_was_applied_before_it() {
    let engine = Arc::new(MemEngine::new());
    let store = Store::with_engine(engine.clone(), Durability::Flush, Duration::from_millis(5));
    ready(&store).await;
    // A peer's report at t=5: replication, synced on its own only later.
    engine.hold_syncs(true);
    let ticket = store
        .offer(report("AT B +0.000000000 kiwi +1+2 5"), Some("B"))
        .await
        .unwrap();
    store.wait_applied(ticket).await;
    // A client's report at t=3 for the same client is stale: its answer rests on t=5, so it
    // waits for a sync covering t=5.
    let stale = store
        .submit(report("AT A +0.000000000 kiwi +1+2 3"), None)
        .await
        .unwrap();
    let mut stale = Box::pin(stale.outcome());
    tokio::select! {
        _ = &mut stale => panic!("a stale answer before the sync of the report it rests on"),
        _ = tokio::time::sleep(Duration::from_millis(300)) => {}
    }
    // The power goes now: neither is kept, and the client was not answered.
    assert!(engine.power_cut().contents().is_empty());
    engine.hold_syncs(false);
    assert_eq!(stale.await.unwrap(), Merged::Stale);
    let after = engine.power_cut();
    assert_eq!(
        after.contents().len(),
        1,
        "t=5 is synced before the stale answer"
    );
}

#[tokio::test]
async fn a_peers_copy_is_synced_within_its_bound_without_an_answer_waiting() {
    let engine = Arc::new(MemEngine::new());
    let store = Store::with_engine(engine.clone(), Durability::Flush, Duration::from_millis(5));
    ready(&store).await;
    let ticket = store
        .offer(report("AT B +0.000000000 kiwi +1+2 5"), Some("B"))
        .await
        .unwrap();
    store.wait_applied(ticket).await;
    for _ in 0..200 {
        if engine.power_cut().contents().len() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("a peer's copy was never synced");
}

#[tokio::test]
async fn a_read_in_order_sees_a_queued_peer_report_that_a_direct_read_does_not_yet() {
    let (engine, store) = mem(Durability::Flush);
    ready(&store).await;
    assert!(store.caught_up());
    // The writer is held inside its next write; a peer's report queues behind it.
    engine.stall_next(Duration::from_millis(400));
    store
        .offer(report("AT A +0.000000000 first +1+2 1"), Some("B"))
        .await
        .unwrap();
    // Time for the writer to take the first and stall on it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    store
        .offer(report("AT A +0.000000000 second +1+2 1"), Some("B"))
        .await
        .unwrap();
    assert!(!store.caught_up(), "two reports wait for the writer");
    assert!(store.get(b"second").unwrap().is_none());
    // What a WHATSAT does while the store is behind: read in order, after both.
    let read = store
        .get_in_order(Bytes::from_static(b"second"))
        .await
        .unwrap();
    let stored = read.await.unwrap().expect("the queued report is seen");
    assert_eq!(
        &stored.report.at_line()[..],
        b"AT A +0.000000000 second +1+2 1"
    );
    assert!(store.caught_up());
}
