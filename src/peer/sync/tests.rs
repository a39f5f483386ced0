//! Reconciliation tests: direct cases, a lying peer, and the scenario files in `scenarios/`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::local::{round, Traffic};
use super::*;
use crate::config::Durability;
use crate::report::Report;
use crate::store::engine::MemEngine;
use crate::store::fingerprint::Node as Range;

fn report(line: &str) -> Report {
    Report::from_line(line)
}

fn store() -> Store {
    Store::with_engine(
        Arc::new(MemEngine::new()),
        Durability::Flush,
        Duration::from_millis(5),
    )
}

async fn ready(stores: &[&Store]) {
    for _ in 0..1000 {
        if stores.iter().all(|s| s.ready()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("fingerprints never built");
}

async fn fill(store: &Store, from: usize, to: usize, stamp: u64) {
    for i in from..to {
        store
            .offer(
                report(&format!("AT A +0.000000000 client{i} +1+2 {stamp}")),
                None,
            )
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
}

fn lines(store: &Store) -> Vec<Bytes> {
    store
        .records()
        .unwrap()
        .into_iter()
        .map(|s| s.report.at_line().clone())
        .collect()
}

use bytes::Bytes;

async fn sync(a: &Store, b: &Store, id: u64) -> Traffic {
    round((a, "A"), (b, "B"), id, &mut |_| Vec::new())
        .await
        .unwrap()
}

#[tokio::test]
async fn equal_stores_with_no_shared_history_exchange_a_few_bytes() {
    let (a, b) = (store(), store());
    fill(&a, 0, 5000, 1).await;
    // The same records, written in another order, by another process.
    for i in (0..5000).rev() {
        b.offer(report(&format!("AT A +0.000000000 client{i} +1+2 1")), None)
            .await
            .unwrap();
    }
    b.flush().await.unwrap();
    ready(&[&a, &b]).await;
    let t = sync(&a, &b, 1).await;
    assert_eq!(t.records(), 0);
    assert!(t.bytes() < 200, "{t:?}");
}

#[tokio::test]
async fn only_the_differences_cross_and_both_sides_converge() {
    let (a, b) = (store(), store());
    fill(&a, 0, 4000, 1).await;
    fill(&b, 0, 4000, 1).await;
    // A has 30 newer reports, B 20 newer ones and 10 clients A has never heard of.
    fill(&a, 0, 30, 5).await;
    fill(&b, 100, 120, 6).await;
    fill(&b, 9000, 9010, 1).await;
    ready(&[&a, &b]).await;
    let t = sync(&a, &b, 1).await;
    assert_eq!(lines(&a), lines(&b));
    assert_eq!(t.records_to_answerer, 30, "{t:?}");
    assert_eq!(t.records_to_asker, 30, "{t:?}");
    // And the next round finds nothing.
    let again = sync(&b, &a, 2).await;
    assert_eq!(again.records(), 0);
}

#[tokio::test]
async fn a_wiped_store_is_refilled_with_one_copy_and_sends_nothing_back() {
    let (full, wiped) = (store(), store());
    fill(&full, 0, 3000, 1).await;
    ready(&[&full, &wiped]).await;
    // Either side may ask.
    let t = sync(&wiped, &full, 1).await;
    assert_eq!((t.records_to_asker, t.records_to_answerer), (3000, 0));
    assert_eq!(lines(&full), lines(&wiped));
    let other = store();
    ready(&[&other]).await;
    let t = sync(&full, &other, 1).await;
    assert_eq!((t.records_to_answerer, t.records_to_asker), (3000, 0));
    assert_eq!(lines(&full), lines(&other));
}

#[tokio::test]
async fn a_liar_is_refused_and_changes_nothing() {
    let s = store();
    fill(&s, 0, 100, 1).await;
    ready(&[&s]).await;
    let before = lines(&s);
    // An answer to no question, garbage, a range that does not exist, too many ranges.
    let (mut r, _) = Round::start(&s, 1, None).unwrap();
    assert!(matches!(
        r.on_answer(&s, 2, b"AAAA"),
        Err(Violation::Unasked(2))
    ));
    assert!(matches!(
        r.on_answer(&s, 1, b"!!!!"),
        Err(Violation::Undecodable(_))
    ));
    assert!(matches!(
        answer(&s, SyncKind::Answer, 9, b"AAAA"),
        Err(Violation::Unasked(9))
    ));
    let bad = |q: &Query| {
        let line = encode("Q", 1, q);
        let payload = line.split(|&c| c == b' ').nth(3).unwrap().to_vec();
        answer(&s, SyncKind::Query, 1, payload.trim_ascii_end())
    };
    for q in [
        Query::Groups {
            window: 0,
            depth: 50,
            groups: vec![(0, [[0; 2]; 4])],
        },
        Query::Groups {
            window: 0,
            depth: 4,
            groups: vec![(99, [[0; 2]; 4])],
        },
        Query::Groups {
            window: 0,
            depth: 4,
            groups: vec![(1, [[0; 2]; 4]), (0, [[0; 2]; 4])],
        },
        Query::Groups {
            window: 0,
            depth: 2,
            groups: vec![(0, [[0; 2]; 4]); MAX_GROUPS + 1],
        },
    ] {
        assert!(matches!(bad(&q), Err(Violation::Malformed(_))), "{q:?}");
    }
    // An answer that splits forever runs into the deepest range, then is refused.
    let (mut r, _) = Round::start(&s, 1, None).unwrap();
    let descend = encode("A", 1, &Answer::Root(RootAnswer::Descend));
    let payload = descend
        .split(|&c| c == b' ')
        .nth(3)
        .unwrap()
        .trim_ascii_end()
        .to_vec();
    let mut jobs = r.on_answer(&s, 1, &payload).unwrap();
    let mut depth = 2;
    let refused = loop {
        let parents = jobs.len();
        assert!(parents > 0 && depth <= MAX_DEPTH + 2);
        let all_split = Answer::Groups {
            statuses: vec![0b0101_0101; 1],
            lists: vec![],
        };
        let line = encode("A", 1, &all_split);
        let payload = line
            .split(|&c| c == b' ')
            .nth(3)
            .unwrap()
            .trim_ascii_end()
            .to_vec();
        match r.on_answer(&s, 1, &payload) {
            Ok(more) => {
                // Keep only the first question: one range per level is enough to go deep.
                jobs = more.into_iter().take(1).collect();
                while r.open.len() > 1 {
                    r.open.pop_back();
                }
                depth += 2;
            }
            Err(v) => break v,
        }
    };
    assert!(matches!(refused, Violation::Malformed(_)), "{refused}");
    assert_eq!(lines(&s), before, "nothing was written by any of it");
}

fn payload_of(line: &[u8]) -> Vec<u8> {
    line.split(|&c| c == b' ')
        .nth(3)
        .unwrap()
        .trim_ascii_end()
        .to_vec()
}

#[tokio::test]
async fn a_question_that_repeats_a_range_of_its_round_is_refused() {
    let s = store();
    fill(&s, 0, 100, 1).await;
    ready(&[&s]).await;
    let root = |count, sum| {
        payload_of(&encode(
            "Q",
            0,
            &Query::Root {
                count,
                sum,
                window: 0,
            },
        ))
    };
    let want = |nodes: &[Range]| {
        payload_of(&encode(
            "W",
            0,
            &Want {
                ranges: nodes.iter().map(|n| (*n, vec![[0; 4]])).collect(),
            },
        ))
    };
    let groups = |depth, groups: Vec<(u64, [[u8; 2]; 4])>| {
        payload_of(&encode(
            "Q",
            0,
            &Query::Groups {
                window: 0,
                depth,
                groups,
            },
        ))
    };
    let repeated =
        |r: Result<(Vec<Job>, Cost), Violation>| matches!(r, Err(Violation::Repeated(_)));

    // The root twice in one round; in the next round it may be asked again.
    let mut a = Answerer::default();
    let (jobs, cost) = a.answer(&s, SyncKind::Query, 1, &root(5, 5)).unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(cost.ranges, 1);
    assert!(
        cost.records >= 64,
        "summing every bucket is priced: {cost:?}"
    );
    assert!(repeated(a.answer(&s, SyncKind::Query, 1, &root(5, 5))));
    let mut a = Answerer::default();
    a.answer(&s, SyncKind::Query, 1, &root(5, 5)).unwrap();
    a.answer(&s, SyncKind::Query, 2, &root(5, 5)).unwrap();
    // ... but a round may not go back.
    assert!(repeated(a.answer(&s, SyncKind::Query, 1, &root(5, 5))));

    // One W naming the root many times, or the same range in two Ws of a round.
    let mut a = Answerer::default();
    assert!(repeated(a.answer(
        &s,
        SyncKind::Want,
        1,
        &want(&[Range::ROOT; 1000])
    )));
    let mut a = Answerer::default();
    let (_, cost) = a
        .answer(&s, SyncKind::Want, 1, &want(&[Range::ROOT]))
        .unwrap();
    assert_eq!(cost.ranges, 1);
    assert!(repeated(a.answer(
        &s,
        SyncKind::Want,
        1,
        &want(&[Range::ROOT])
    )));
    let mut a = Answerer::default();
    let deep = |index| Range { depth: 4, index };
    a.answer(&s, SyncKind::Want, 1, &want(&[deep(3), deep(7)]))
        .unwrap();
    assert!(repeated(a.answer(&s, SyncKind::Want, 1, &want(&[deep(5)]))));

    // Quarters of the same range compared twice in a round, across two messages.
    let mut a = Answerer::default();
    a.answer(
        &s,
        SyncKind::Query,
        1,
        &groups(4, vec![(1, [[0; 2]; 4]), (1, [[0; 2]; 4])]),
    )
    .unwrap();
    assert!(repeated(a.answer(
        &s,
        SyncKind::Query,
        1,
        &groups(4, vec![(2, [[0; 2]; 4])])
    )));
    a.answer(&s, SyncKind::Query, 1, &groups(4, vec![(3, [[0; 2]; 4])]))
        .unwrap();

    // Impossible questions: a count no store holds, an empty store with a sum, a window past
    // 3, no ranges at all, a range that cannot exist, a want of no keys.
    for (kind, payload) in [
        (SyncKind::Query, root(MAX_COUNT + 1, 1)),
        (SyncKind::Query, root(0, 7)),
        (
            SyncKind::Query,
            payload_of(&encode(
                "Q",
                0,
                &Query::Root {
                    count: 1,
                    sum: 1,
                    window: 9,
                },
            )),
        ),
        (SyncKind::Query, groups(4, vec![])),
        (SyncKind::Want, want(&[])),
        (SyncKind::Want, want(&[Range { depth: 3, index: 0 }])),
        (SyncKind::Want, want(&[Range { depth: 2, index: 4 }])),
        (
            SyncKind::Want,
            payload_of(&encode(
                "W",
                0,
                &Want {
                    ranges: vec![(Range::ROOT, vec![])],
                },
            )),
        ),
    ] {
        let r = Answerer::default().answer(&s, kind, 1, &payload);
        assert!(matches!(r, Err(Violation::Malformed(_))), "{r:?}");
    }
}

#[tokio::test]
async fn a_selective_send_is_priced_by_the_records_it_scans() {
    let s = store();
    fill(&s, 0, 1000, 1).await;
    ready(&[&s]).await;
    let mut job = Job::Some {
        node: Range::ROOT,
        keys: vec![0],
    };
    let step = job.step(&s, &mut Vec::new()).unwrap();
    assert_eq!((step.done, step.sent, step.read), (true, 0, 1000));
    let mut job = Job::All {
        node: Range::ROOT,
        resume: None,
    };
    let step = job.step(&s, &mut Vec::new()).unwrap();
    assert_eq!((step.done, step.sent, step.read), (false, 256, 256));
}

#[test]
fn the_pace_lets_a_second_of_work_through_then_waits_for_the_debt() {
    let t0 = Instant::now();
    let mut pace = Pace::new(100, 1000, t0);
    assert_eq!(pace.wait(t0), None);
    pace.charge(
        Cost {
            ranges: 50,
            records: 900,
        },
        t0,
    );
    assert_eq!(pace.wait(t0), None, "within the first second's worth");
    // 3,100 records over the bucket: 3.1 s of debt at 1,000 a second.
    pace.charge(
        Cost {
            ranges: 1,
            records: 3000,
        },
        t0,
    );
    let until = pace.wait(t0).expect("in debt");
    let debt = until - t0;
    assert!(
        debt > Duration::from_millis(2800) && debt < Duration::from_millis(3000),
        "{debt:?}"
    );
    assert_eq!(pace.wait(until), None);
    // Ranges alone can hold it back too; idle time refills no more than one second.
    let later = until + Duration::from_secs(60);
    pace.charge(
        Cost {
            ranges: 300,
            records: 0,
        },
        later,
    );
    let until = pace.wait(later).expect("ranges in debt");
    assert!(until - later > Duration::from_millis(1900) && until - later <= Duration::from_secs(2));
}

/// A scenario file: one command per line, `#` comments. Stores are named by one word.
///
/// ```text
/// merge A <AT line>            the report enters store A through the real merge
/// flush A                      make A's writes durable
/// crash-after A <n>            A's engine fails after n more writes (a crash mid-write)
/// crash A                      A loses everything not flushed and restarts on the rest
/// round A B                    A asks B, one round
/// round A B at <k> merge C <AT line>   the same, with a write landing after delivery k
/// converge A B                 rounds both ways until one finds nothing (at most 6)
/// expect A = B                 identical contents
/// expect A has <AT line>       A holds exactly that report for its client
/// expect A count <n>           A holds n records
/// expect traffic < <bytes>     the last round moved fewer bytes
/// ```
#[tokio::test]
async fn scenarios() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/peer/sync/scenarios");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "scenario files are missing");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        run_scenario(&text)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}

struct Node {
    engine: Arc<MemEngine>,
    store: Store,
}

async fn run_scenario(text: &str) -> Result<(), String> {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut last = Traffic::default();
    let mut ids = 0u64;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap().trim();
        if line.is_empty() {
            continue;
        }
        let at = |e: String| format!("line {}: {raw}: {e}", n + 1);
        let words: Vec<&str> = line.split_whitespace().collect();
        for name in words.iter().skip(1).take(2) {
            if name.chars().all(|c| c.is_ascii_uppercase()) && !nodes.contains_key(*name) {
                let engine = Arc::new(MemEngine::new());
                let store =
                    Store::with_engine(engine.clone(), Durability::Flush, Duration::from_millis(5));
                nodes.insert(name.to_string(), Node { engine, store });
            }
        }
        let rest = |k: usize| words[k..].join(" ");
        match words[..] {
            ["merge", a, ..] => {
                let s = &nodes[a].store;
                // A crashed engine refuses; the scenario says what it expects afterwards.
                let _ = s.merge(report(&rest(2)), None).await;
            }
            ["flush", a] => nodes[a]
                .store
                .flush()
                .await
                .map_err(|e| at(e.to_string()))?,
            ["crash-after", a, k] => nodes[a].engine.crash_after(k.parse().unwrap()),
            ["crash", a] => {
                let old = nodes.remove(a).unwrap();
                old.engine.crash();
                old.store.close().await;
                let engine = Arc::new(old.engine.restart());
                let store =
                    Store::with_engine(engine.clone(), Durability::Flush, Duration::from_millis(5));
                nodes.insert(a.to_string(), Node { engine, store });
            }
            ["round", a, b] | ["round", a, b, "at", ..] => {
                let (sa, sb) = (nodes[a].store.clone(), nodes[b].store.clone());
                ready(&[&sa, &sb]).await;
                let mut injected: Option<(u64, bool, Report)> = None;
                if words.len() > 3 {
                    let k: u64 = words[4].parse().unwrap();
                    assert_eq!(words[5], "merge");
                    injected = Some((k, words[6] == a, report(&rest(7))));
                }
                ids += 1;
                last = round((&sa, a), (&sb, b), ids, &mut |delivered| match &injected {
                    Some((k, _, _)) if *k == delivered => {
                        let (_, to_a, r) = injected.take().unwrap();
                        vec![(to_a, r)]
                    }
                    _ => Vec::new(),
                })
                .await
                .map_err(|e| at(e.to_string()))?;
            }
            ["converge", a, b] => {
                let (sa, sb) = (nodes[a].store.clone(), nodes[b].store.clone());
                ready(&[&sa, &sb]).await;
                let mut quiet = false;
                for i in 0..6 {
                    ids += 1;
                    let (x, y) = if i % 2 == 0 { (&sa, &sb) } else { (&sb, &sa) };
                    let t = round((x, "X"), (y, "Y"), ids, &mut |_| Vec::new())
                        .await
                        .map_err(|e| at(e.to_string()))?;
                    if t.records() == 0 {
                        quiet = true;
                        break;
                    }
                }
                if !quiet {
                    return Err(at("did not converge in 6 rounds".into()));
                }
            }
            ["expect", a, "=", b] => {
                let (la, lb) = (lines(&nodes[a].store), lines(&nodes[b].store));
                if la != lb {
                    return Err(at(format!("{a} holds {la:?}\n{b} holds {lb:?}")));
                }
            }
            ["expect", a, "has", ..] => {
                let want = report(&rest(3));
                let got = nodes[a].store.get(&want.client).unwrap().map(|s| s.report);
                if got.as_ref() != Some(&want) {
                    return Err(at(format!("{a} holds {got:?}")));
                }
            }
            ["expect", a, "lacks", client] => {
                if let Some(s) = nodes[a].store.get(client.as_bytes()).unwrap() {
                    return Err(at(format!("{a} holds {:?}", s.report)));
                }
            }
            ["expect", a, "count", k] => {
                let got = lines(&nodes[a].store).len();
                if got != k.parse::<usize>().unwrap() {
                    return Err(at(format!("{a} holds {got} records")));
                }
            }
            ["expect", "traffic", "<", k] => {
                if last.bytes() >= k.parse::<u64>().unwrap() {
                    return Err(at(format!("the round moved {last:?}")));
                }
            }
            _ => return Err(at("unknown command".into())),
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_peers_unsynced_copy_lost_in_a_power_cut_is_repaired_by_the_next_round() {
    // A answered its client (synced); B applied A's flood but lost power before syncing it.
    let a = store();
    let b_engine = Arc::new(MemEngine::new());
    let b = Store::with_engine(
        b_engine.clone(),
        Durability::Flush,
        Duration::from_millis(5),
    );
    ready(&[&a, &b]).await;
    let line = "AT A +0.000000000 kiwi +1+2 7";
    assert_eq!(
        a.merge(report(line), None).await.unwrap(),
        crate::store::Merged::Stored
    );
    b_engine.hold_syncs(true);
    let ticket = b.offer(report(line), Some("A")).await.unwrap();
    b.wait_applied(ticket).await;
    assert!(b.get(b"kiwi").unwrap().is_some(), "B applied the flood");
    let cut = Arc::new(b_engine.power_cut());
    b_engine.hold_syncs(false);
    assert!(
        cut.contents().is_empty(),
        "the unsynced copy is gone with the power"
    );
    let b = Store::with_engine(cut, Durability::Flush, Duration::from_millis(5));
    ready(&[&b]).await;
    // The next round of either side brings it back.
    round((&b, "B"), (&a, "A"), 1, &mut |_| Vec::new())
        .await
        .unwrap();
    assert_eq!(
        &b.get(b"kiwi").unwrap().unwrap().report.at_line()[..],
        line.as_bytes()
    );
}
