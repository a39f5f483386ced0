//! One link actor per linked server: it owns the report queue for that peer and at most one
//! live connection, and keeps it up for the life of the node.
//!
//! A live session is two tasks. The reader applies what the peer sends (reports go to the
//! store's queue; sync messages go to the writer) and never writes; the writer sends queued
//! reports, answers the peer's sync questions, and runs this side's sync rounds
//! ([`super::sync`]): one at link-up and one every `sync_interval_secs`. Splitting them means
//! two servers that are both writing a large sync at each other can never deadlock on full
//! socket buffers. Every write has a deadline: a peer that stops reading is dropped and
//! dialled again.
//!
//! The peer's questions and the answers to this side's own round travel in two queues: the
//! questions are served at the rate `[peers] sync_ranges_per_sec` and `sync_records_per_sec`
//! allow ([`sync::Pace`]), and a peer asked past that waits, while this side's own round and
//! the flooded reports go on at full speed. A question that repeats a range of its round, or
//! names a range that cannot exist, drops the link (`herd_sync_violations_total`).
//!
//! An empty store is refilled once: a root question from a peer that holds records, arriving
//! while this side's own round asked with no record (or while this side holds nothing and
//! runs no round: it starts one), waits until that round's answer has come and every record
//! sent before it has been applied. The peer sends everything once, ahead of that answer, and
//! its own question then finds the stores equal.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use rand::Rng;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::handshake::{dial, DialOptions, HandshakeError};
use super::sync::{self, Answerer, Job, Pace, Round};
use super::{LinkInbox, Liveness, PeerReader, Session};
use crate::logging::{Clipped, Escaped};
use crate::node::Node;
use crate::protocol::frame::Frame;
use crate::protocol::number::Timestamp;
use crate::protocol::request::{parse, PeerLine, Request, SyncKind};
use crate::store::{Store, Ticket};
use crate::telemetry::Refusal;

/// What the reader hands the writer: a sync message of the peer's.
struct Event {
    kind: SyncKind,
    round: u64,
    payload: Bytes,
    /// The last record from the peer the reader queued for the store before this message.
    after: Option<Ticket>,
}

/// The reader's two queues to the writer: the peer's questions (served at a bounded rate)
/// and the answers to this side's round (taken at once).
struct ToWriter {
    questions: mpsc::Sender<Event>,
    answers: mpsc::Sender<Event>,
}

/// Jobs waiting before the writer stops taking the peer's questions (so a peer that asks
/// faster than it reads the answers is held back by TCP, not by our memory), and, apart,
/// before it stops taking the answers to its own round.
const MAX_JOBS: usize = 64;

/// Why a session ended.
enum End {
    Shutdown,
    Dropped(String),
    Replaced(Session),
}

/// Starts the actor of the link to `inbox.peer` in `tasks`.
pub fn spawn(tasks: &TaskTracker, node: &Node, inbox: LinkInbox) {
    let span = tracing::info_span!("link", peer = %inbox.peer);
    tasks.spawn(run(node.clone(), inbox).instrument(span));
}

/// Runs the link to `inbox.peer` until the node stops or the config no longer links it.
pub async fn run(node: Node, mut inbox: LinkInbox) {
    let peer = inbox.peer.clone();
    let stop = inbox.stop.clone();
    keep_up(&node, &mut inbox, &stop).await;
    // Still listed: the node is stopping. A link added again since has its own actor.
    if !node.links().contains(&peer) {
        tracing::info!(peer = %peer, "link removed: the config no longer links this server");
        node.telemetry().forget_peer(&peer);
    }
}

async fn keep_up(node: &Node, inbox: &mut LinkInbox, shutdown: &CancellationToken) {
    let peer = inbox.peer.clone();
    let me = node.name().to_owned();
    let cfg = node.config().peers.clone();
    let backoff_min = Duration::from_millis(cfg.backoff_min_ms);
    let backoff_max = Duration::from_millis(cfg.backoff_max_ms.max(cfg.backoff_min_ms));
    let mut delay = backoff_min;
    let mut pending: Option<Session> = None;
    loop {
        let session = match pending.take() {
            Some(s) => s,
            None => {
                // Marks the address seen: a session dialled now ends only on a later change.
                let addr = inbox.addr.borrow_and_update().clone();
                let attempt = dial(
                    &me,
                    &peer,
                    &addr,
                    DialOptions {
                        secret: node.config().secret.as_deref(),
                        tls: node.links().tls(),
                        max_line: node.config().limits.max_line_bytes,
                        timeout: Duration::from_millis(cfg.connect_timeout_ms),
                    },
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    Some(s) = inbox.inbound.recv() => s,
                    result = attempt => match result {
                        Ok(s) => s,
                        Err(e) => {
                            log_dial_failure(&peer, &addr, &e, delay);
                            let wait = jitter(delay);
                            delay = (delay * 2).min(backoff_max);
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                Some(s) = inbox.inbound.recv() => pending = Some(s),
                                // Moved: dial the new address now.
                                Ok(()) = inbox.addr.changed() => delay = backoff_min,
                                _ = tokio::time::sleep(wait) => {}
                            }
                            continue;
                        }
                    },
                }
            }
        };
        delay = backoff_min;
        tracing::info!(peer = %peer, dialer = %session.dialer, addr = %session.addr, "link up");
        node.telemetry().peer_up(&peer, true);
        match run_session(node, session, inbox, shutdown).await {
            End::Shutdown => return,
            End::Replaced(next) => {
                tracing::info!(peer = %peer, dialer = %next.dialer, "link replaced by a newer connection");
                pending = Some(next);
            }
            End::Dropped(why) => {
                tracing::info!(peer = %peer, reason = %why, "link dropped");
                node.telemetry().peer_up(&peer, false);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    Some(s) = inbox.inbound.recv() => pending = Some(s),
                    _ = tokio::time::sleep(jitter(backoff_min)) => {}
                }
            }
        }
    }
}

fn log_dial_failure(peer: &str, addr: &str, e: &HandshakeError, retry_in: Duration) {
    match e {
        HandshakeError::Refused(why) => {
            tracing::warn!(peer, addr, reason = %why, retry_ms = retry_in.as_millis() as u64, "peer refused the link")
        }
        other => {
            tracing::info!(peer, addr, error = %other, retry_ms = retry_in.as_millis() as u64, "cannot reach peer")
        }
    }
}

fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
}

/// When a second connection to the same peer arrives, which one the link keeps.
///
/// A healthy link is never replaced: a second connection claiming the same name (in protected
/// mode anyone on the machine may claim any name) is closed, unless the current one is
/// proven dead, which is when the peer has sent nothing for two sync intervals (a live peer
/// asks a sync round every interval). When both servers dial each other at once, both keep the
/// connection dialled by the server whose name sorts first; that only happens while the
/// current connection is younger than a connect timeout.
fn replaces(
    current_dialer: &str,
    current: &Liveness,
    new: &Session,
    cfg: &crate::config::PeerConfig,
) -> bool {
    let dead_after = Duration::from_secs(cfg.sync_interval_secs.saturating_mul(2));
    let young = Duration::from_millis(cfg.connect_timeout_ms);
    current.silent_for() > dead_after
        || (new.dialer.as_str() < current_dialer && current.age() < young)
}

async fn run_session(
    node: &Node,
    session: Session,
    inbox: &mut LinkInbox,
    shutdown: &CancellationToken,
) -> End {
    let Session {
        peer,
        dialer,
        reader,
        writer,
        liveness,
        ..
    } = session;
    // A connection this side dialled goes to the peer's old address once the config moves it.
    let dialled = dialer == node.name();
    let (questions_tx, mut questions) = mpsc::channel(16);
    let (answers_tx, mut answers) = mpsc::channel(16);
    // Whether a round of ours is open: records that arrive meanwhile count as sync traffic.
    let in_round = Arc::new(AtomicBool::new(false));
    let mut reader_task = tokio::spawn(read_peer(
        node.clone(),
        peer.clone(),
        reader,
        ToWriter {
            questions: questions_tx,
            answers: answers_tx,
        },
        Arc::clone(&in_round),
    ));
    let telemetry = node.telemetry().clone();
    let mut out = BufWriter::with_capacity(64 * 1024, writer);
    let store = node.store();
    let cfg = &node.config().peers;
    let sync_every = Duration::from_secs(cfg.sync_interval_secs);
    let write_deadline = Duration::from_millis(cfg.write_timeout_ms.max(1));
    let round_deadline = Duration::from_secs(cfg.sync_timeout_secs.max(1));
    // A round at link-up, then one every interval; checked again at the deadline while one runs.
    let mut next_round = Instant::now();
    let mut round: Option<Round> = None;
    let mut rounds = 0u64;
    // This side's round (its questions, and the records it sends), and the answers to the
    // peer's questions, which are paced.
    let mut own: VecDeque<Job> = VecDeque::new();
    let mut answering: VecDeque<Job> = VecDeque::new();
    let mut answerer = Answerer::default();
    let mut pace = Pace::new(
        cfg.sync_ranges_per_sec,
        cfg.sync_records_per_sec,
        std::time::Instant::now(),
    );
    let mut paced_logged = false;
    let mut buf = Vec::with_capacity(64 * 1024);
    // A root question of the peer's that waits for this side's refill, and the last record of
    // the refill still to be applied (with how long to wait for it at most).
    let mut held: Option<Event> = None;
    let mut applying: Option<(Ticket, Instant)> = None;

    let end = 'session: loop {
        buf.clear();
        let mut violation = None;
        let resume = pace.wait(std::time::Instant::now()).map(Instant::from_std);
        if resume.is_some() && !paced_logged {
            paced_logged = true;
            tracing::info!(peer = %peer, ranges_per_sec = cfg.sync_ranges_per_sec, records_per_sec = cfg.sync_records_per_sec, "pacing the peer's sync questions");
        }
        let refilling = applying.is_some() || round.as_ref().is_some_and(Round::awaits_everything);
        let waiting = applying;
        let store_ref = &store;
        let applied = async move {
            match waiting {
                Some((last, until)) => {
                    let _ = tokio::time::timeout_at(until, store_ref.wait_applied(last)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break 'session End::Shutdown,
            Ok(()) = inbox.addr.changed(), if dialled => {
                let addr = inbox.addr.borrow().clone();
                tracing::info!(peer = %peer, addr = %addr, "the peer's address changed; dialling it there");
                break 'session End::Dropped(format!("the peer moved to {addr}"));
            }
            Some(next) = inbox.inbound.recv() => {
                if replaces(&dialer, &liveness, &next, cfg) {
                    break 'session End::Replaced(next);
                }
                tracing::info!(peer = %peer, dialer = %next.dialer, "keeping the existing link; closing the new connection");
            }
            result = &mut reader_task => {
                let why = match result {
                    Ok(why) => why,
                    Err(e) => format!("reader failed: {e}"),
                };
                break 'session End::Dropped(why);
            }
            Some(event) = answers.recv(), if own.len() < MAX_JOBS => {
                let result = match round.as_mut() {
                    Some(r) => r.on_answer(&store, event.round, &event.payload),
                    None => Err(sync::Violation::Unasked(event.round)),
                };
                match result {
                    Ok(more) => own.extend(more),
                    Err(v) => violation = Some(v),
                }
                // The answer to a root question that claimed no record: everything the peer
                // sent came before it; a held question waits until that is applied.
                if refilling && !round.as_ref().is_some_and(Round::awaits_everything) {
                    applying = event.after.map(|last| (last, Instant::now() + round_deadline));
                }
                if let Some(r) = round.as_ref().filter(|r| r.is_done()) {
                    tracing::info!(peer = %peer, round = r.id, differing = r.stats.differing, wanted = r.stats.wanted, questions = r.stats.questions, "sync done");
                    in_round.store(false, Ordering::Relaxed);
                    telemetry.sync_round(&peer);
                    round = None;
                    next_round = Instant::now() + sync_every;
                }
            }
            Some(event) = questions.recv(), if held.is_none() && answering.len() < MAX_JOBS && resume.is_none() => {
                // A peer holding records asks a store that holds none, or is being refilled:
                // this side pulls everything with a round of its own (starting one if none
                // runs), and answers once it holds it, so the records cross once.
                let from_full = sync::root_count(event.kind, &event.payload).is_some_and(|n| n > 0)
                    && store.takes_new_clients();
                // Refilling, not yet knowing whether this store is empty (its count comes
                // with its fingerprints), or empty: decided below, once it knows.
                let empty = round.is_none() && store.count() == Some(0);
                if from_full && (refilling || !store.ready() || empty) {
                    held = Some(event);
                } else {
                    violation = serve(&peer, &store, &mut answerer, &mut pace, &mut answering, event).await;
                }
            }
            _ = applied => applying = None,
            _ = tokio::time::sleep(Duration::from_millis(20)), if held.is_some() && !store.ready() => {}
            _ = std::future::ready(()), if held.is_some() && !refilling && store.ready() && answering.len() < MAX_JOBS && resume.is_none() => {
                // An empty store pulls everything with a round of its own first.
                let pulling = if round.is_none() && store.count() == Some(0) {
                    rounds += 1;
                    match start_round(&peer, &store, rounds).await {
                        Some((r, first)) => {
                            tracing::info!(peer = %peer, round = r.id, "this store is empty: pulling everything before answering the peer's round");
                            in_round.store(true, Ordering::Relaxed);
                            own.extend(first);
                            round = Some(r);
                            next_round = Instant::now() + Duration::from_secs(1);
                            true
                        }
                        None => false,
                    }
                } else {
                    false
                };
                if !pulling {
                    if let Some(event) = held.take() {
                        violation = serve(&peer, &store, &mut answerer, &mut pace, &mut answering, event).await;
                    }
                }
            }
            Some(line) = inbox.queue.recv() => {
                buf.extend_from_slice(&line);
                let mut taken = line.len();
                // Drain what else is queued into the same write.
                while buf.len() < 60 * 1024 {
                    match inbox.queue.try_recv() {
                        Ok(r) => {
                            taken += r.len();
                            buf.extend_from_slice(&r);
                        }
                        Err(_) => break,
                    }
                }
                inbox.queued.fetch_sub(taken, Ordering::Relaxed);
            }
            // One bounded step of the oldest job, so floods keep flowing during a sync.
            _ = std::future::ready(()), if !own.is_empty() => {
                step(&peer, &store, &telemetry, &mut own, &mut buf);
            }
            _ = std::future::ready(()), if !answering.is_empty() && resume.is_none() => {
                let read = step(&peer, &store, &telemetry, &mut answering, &mut buf);
                pace.charge(sync::Cost { ranges: 0, records: read }, std::time::Instant::now());
            }
            _ = tokio::time::sleep_until(resume.unwrap_or_else(Instant::now)), if resume.is_some() => {}
            _ = tokio::time::sleep_until(next_round) => {
                match &round {
                    Some(r) if r.is_overdue(round_deadline) => {
                        tracing::warn!(peer = %peer, round = r.id, secs = round_deadline.as_secs(), "peer left a sync round unanswered; dropping the link");
                        break 'session End::Dropped(format!("sync round {} unanswered", r.id));
                    }
                    Some(_) => next_round = Instant::now() + Duration::from_millis(250),
                    None if !store.ready() => next_round = Instant::now() + Duration::from_millis(50),
                    None => {
                        rounds += 1;
                        match start_round(&peer, &store, rounds).await {
                            Some((r, first)) => {
                                in_round.store(true, Ordering::Relaxed);
                                own.extend(first);
                                round = Some(r);
                                next_round = Instant::now() + Duration::from_secs(1);
                            }
                            None => next_round = Instant::now() + sync_every,
                        }
                    }
                }
            }
        }
        if let Some(v) = violation {
            tracing::warn!(peer = %peer, kind = v.kind(), error = %v, "peer broke the sync protocol; dropping the link");
            telemetry.sync_violation(&peer, v.kind());
            break 'session End::Dropped(v.to_string());
        }
        if !buf.is_empty() {
            match tokio::time::timeout(write_deadline, write_flush(&mut out, &buf)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break 'session End::Dropped(e.to_string()),
                Err(_) => {
                    tracing::warn!(peer = %peer, deadline_ms = write_deadline.as_millis() as u64, "peer is not reading; dropping the link");
                    break 'session End::Dropped("write timed out".into());
                }
            }
        }
    };
    reader_task.abort();
    end
}

/// Starts this side's round `id`: with retention on, expires first; returns the round and its
/// first question, or `None` (logged) if the store cannot be read.
async fn start_round(peer: &str, store: &Store, id: u64) -> Option<(Round, Vec<Job>)> {
    let cutoff = store.retention_cutoff();
    if let Some(cutoff) = cutoff {
        if let Err(e) = store.expire(cutoff).await {
            tracing::warn!(peer, error = %e, "cannot expire before a sync round");
        }
    }
    match Round::start(store, id, cutoff) {
        Ok((r, first)) => {
            tracing::debug!(peer, round = r.id, "sync round started");
            Some((r, first))
        }
        Err(e) => {
            tracing::error!(peer, error = %e, "cannot start a sync round");
            None
        }
    }
}

/// Answers one question of the peer's: its jobs go to `answering`, its cost to `pace`.
async fn serve(
    peer: &str,
    store: &Store,
    answerer: &mut Answerer,
    pace: &mut Pace,
    answering: &mut VecDeque<Job>,
    event: Event,
) -> Option<sync::Violation> {
    // A round with retention on compares what both stores hold inside its window: expire up
    // to its cutoff first (no further than this store's own window).
    if let (Some(theirs), Some(own)) = (
        sync::cutoff_of(event.kind, &event.payload),
        store.retention_cutoff(),
    ) {
        if let Err(e) = store.expire(theirs.min(own)).await {
            tracing::warn!(peer, error = %e, "cannot expire before answering a sync round");
        }
    }
    match answerer.answer(store, event.kind, event.round, &event.payload) {
        Ok((more, cost)) => {
            pace.charge(cost, std::time::Instant::now());
            answering.extend(more);
            None
        }
        Err(v) => Some(v),
    }
}

/// Runs one bounded step of the oldest of `jobs` into `buf`; returns the records it read.
fn step(
    peer: &str,
    store: &crate::store::Store,
    telemetry: &crate::telemetry::Telemetry,
    jobs: &mut VecDeque<Job>,
    buf: &mut Vec<u8>,
) -> u64 {
    let Some(job) = jobs.front_mut() else {
        return 0;
    };
    let before = buf.len();
    let stepped = job.step(store, buf);
    telemetry.sync_bytes(peer, (buf.len() - before) as u64, 0);
    match stepped {
        Ok(step) => {
            if step.done {
                jobs.pop_front();
            }
            step.read
        }
        Err(e) => {
            tracing::error!(peer, error = %e, "cannot read the store for a sync");
            jobs.pop_front();
            0
        }
    }
}

async fn write_flush<W: tokio::io::AsyncWrite + Unpin>(
    out: &mut BufWriter<W>,
    bytes: &[u8],
) -> std::io::Result<()> {
    out.write_all(bytes).await?;
    out.flush().await
}

/// Applies what the peer sends until the connection ends; returns why it ended.
async fn read_peer(
    node: Node,
    peer: String,
    mut reader: tokio_util::codec::FramedRead<PeerReader, crate::protocol::frame::LineCodec>,
    to_writer: ToWriter,
    in_round: Arc<AtomicBool>,
) -> String {
    let store = node.store();
    let telemetry = node.telemetry().clone();
    let mut queued: Option<Ticket> = None;
    loop {
        let line = match reader.next().await {
            Some(Ok(Frame::Line(line))) => line,
            Some(Ok(Frame::TooLong { length, .. })) => {
                tracing::warn!(peer = %peer, length, "dropping an over-long line from a peer");
                continue;
            }
            Some(Err(e)) => return e.to_string(),
            None => return "closed by peer".to_owned(),
        };
        // A second copy of a report this node stored (most come over two links): stale, as
        // the writer would decide, without parsing it or waking the writer.
        if store.holds_line(&line) {
            if in_round.load(Ordering::Relaxed) {
                telemetry.sync_bytes(&peer, 0, line.len() as u64 + 1);
            }
            telemetry.report(false);
            continue;
        }
        let request = parse(&line);
        // The line and its newline, when it is sync traffic.
        let sync_bytes = match &request {
            Request::At(_) if in_round.load(Ordering::Relaxed) => line.len() as u64 + 1,
            Request::Peer(PeerLine::Sync { .. }) => line.len() as u64 + 1,
            _ => 0,
        };
        if sync_bytes > 0 {
            telemetry.sync_bytes(&peer, 0, sync_bytes);
        }
        match request {
            Request::At(report) => {
                // A flooded report's age; one sent by a sync round may be as old as its record.
                if sync_bytes == 0 {
                    // A negative age (the clocks of the two servers differ) is not counted.
                    let age = report.received().and_then(|at| {
                        u64::try_from(Timestamp::now().as_nanos() - at.as_nanos()).ok()
                    });
                    if let Some(nanos) = age {
                        telemetry.flooded(Duration::from_nanos(nanos));
                    }
                }
                // The server named is where the client reported, not who sent the line: a report
                // received by a server since removed from the herd (or added to it, before this
                // node reloads its config) is stored and flooded like any other, so the herd
                // keeps converging while its membership changes.
                let max_ahead = node.config().limits.max_future_secs;
                if report.timestamp.too_far_ahead(Timestamp::now(), max_ahead) {
                    if let Some(refused) = telemetry.refused(Refusal::Future, Some(&peer)) {
                        tracing::warn!(peer = %peer, limit_secs = max_ahead, refused, line = %Clipped(&line), "dropping a peer's report timestamped too far in the future (logged at most every 10 s, with the number refused since)");
                    }
                    continue;
                }
                // Newer than what this node stores: flooded on at once, before the writer
                // applies it, so a hop costs the links' wake-ups and not the writer's too. A
                // line already flooded is not flooded again. Not newer (or unreadable): the
                // writer decides, and floods it only if it stores it.
                if newer_than_stored(&store, &report) {
                    let mut flooded = Vec::with_capacity(line.len() + 1);
                    flooded.extend_from_slice(&line);
                    flooded.push(b'\n');
                    node.links()
                        .flood(&bytes::Bytes::from(flooded), Some(&peer));
                }
                // Waits for room in the store's queue: a flooding peer is held back by TCP.
                match store.offer(report, Some(&peer)).await {
                    Ok(ticket) => queued = Some(ticket),
                    Err(e) => {
                        tracing::error!(peer = %peer, error = %e, "cannot store a report from a peer")
                    }
                }
            }
            Request::Peer(PeerLine::Sync {
                kind,
                round,
                payload,
            }) => {
                let event = Event {
                    kind,
                    round,
                    payload,
                    after: queued,
                };
                let queue = match kind {
                    SyncKind::Answer => &to_writer.answers,
                    SyncKind::Query | SyncKind::Want => &to_writer.questions,
                };
                if queue.send(event).await.is_err() {
                    return "session ended".to_owned();
                }
            }
            Request::Empty => {}
            _ => {
                tracing::warn!(peer = %peer, line = %Escaped(&line[..line.len().min(256)]), "ignoring a malformed line from a peer")
            }
        }
    }
}

/// Whether `report` beats the record `store` holds for its client now (newest-wins); `false`
/// when the record cannot be read.
fn newer_than_stored(store: &Store, report: &crate::report::Report) -> bool {
    match store.get(&report.client) {
        Ok(stored) => {
            crate::herd::decide(stored.as_ref().map(|s| &s.report), report)
                == crate::herd::Decision::Replace
        }
        Err(_) => false,
    }
}
