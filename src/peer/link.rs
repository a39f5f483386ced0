//! One link actor per linked server: it owns the report queue for that peer and at most one
//! live connection, and keeps it up for the life of the node.
//!
//! A live session is two tasks. The reader applies what the peer sends (reports, sync
//! requests, sync completions) and never writes; the writer sends queued reports, answers
//! PULLs in batches and asks for syncs. Splitting them means two servers that are both
//! writing a large sync at each other can never deadlock on full socket buffers.

use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::handshake::{dial, DialOptions, HandshakeError};
use super::sync::{pull_line, Serve};
use super::{LinkInbox, Liveness, PeerReader, Session};
use crate::herd::Origin;
use crate::logging::Escaped;
use crate::node::Node;
use crate::protocol::frame::Frame;
use crate::protocol::request::{parse, PeerLine, Request};
use crate::store::Merged;

/// What the reader tells the writer.
enum Event {
    /// The peer asks for our changes after its cursor.
    Pull {
        epoch: u128,
        seq: u64,
        incarnation: u64,
    },
    /// Our last PULL has been answered completely.
    PullDone,
}

/// Why a session ended.
enum End {
    Shutdown,
    Dropped(String),
    Replaced(Session),
}

/// Runs the link to `inbox.peer` until `shutdown`.
pub async fn run(node: Node, mut inbox: LinkInbox, shutdown: CancellationToken) {
    let peer = inbox.peer.clone();
    let me = node.name().to_owned();
    let cfg = node.config().peers.clone();
    let addr = node
        .config()
        .servers
        .get(&peer)
        .cloned()
        .unwrap_or_default();
    let backoff_min = Duration::from_millis(cfg.backoff_min_ms);
    let backoff_max = Duration::from_millis(cfg.backoff_max_ms.max(cfg.backoff_min_ms));
    let mut delay = backoff_min;
    let mut pending: Option<Session> = None;
    loop {
        let session = match pending.take() {
            Some(s) => s,
            None => {
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
        match run_session(&node, session, &mut inbox, &shutdown).await {
            End::Shutdown => return,
            End::Replaced(next) => {
                tracing::info!(peer = %peer, dialer = %next.dialer, "link replaced by a newer connection");
                pending = Some(next);
            }
            End::Dropped(why) => {
                tracing::info!(peer = %peer, reason = %why, "link dropped");
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
/// asks for a sync every interval). When both servers dial each other at once, both keep the
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
    let (events_tx, mut events) = mpsc::channel(16);
    let mut reader_task = tokio::spawn(read_peer(node.clone(), peer.clone(), reader, events_tx));
    let mut out = BufWriter::with_capacity(64 * 1024, writer);
    let store = node.store();
    let sync_every = Duration::from_secs(node.config().peers.sync_interval_secs);
    let mut sync_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + sync_every, sync_every);
    let mut pull_pending = true;
    let mut serving: Option<Serve> = None;
    let mut buf = Vec::with_capacity(64 * 1024);

    let end = 'session: {
        let first = pull_line(store.cursor(&peer).unwrap_or(None), store.incarnation());
        tracing::info!(peer = %peer, request = first.trim_end(), "sync requested");
        if let Err(e) = write_flush(&mut out, first.as_bytes()).await {
            break 'session End::Dropped(e.to_string());
        }
        loop {
            buf.clear();
            tokio::select! {
                _ = shutdown.cancelled() => break 'session End::Shutdown,
                Some(next) = inbox.inbound.recv() => {
                    if replaces(&dialer, &liveness, &next, &node.config().peers) {
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
                Some(event) = events.recv() => match event {
                    Event::Pull { epoch, seq, incarnation } => {
                        if serving.is_some() {
                            tracing::warn!(peer = %peer, "ignoring a PULL while one is being answered");
                        } else {
                            serving = Some(Serve::start(store.epoch(), &peer, (epoch, seq), incarnation));
                        }
                    }
                    Event::PullDone => pull_pending = false,
                },
                Some(line) = inbox.queue.recv() => {
                    buf.extend_from_slice(&line);
                    // Drain what else is queued into the same write.
                    while buf.len() < 60 * 1024 {
                        match inbox.queue.try_recv() {
                            Ok(r) => buf.extend_from_slice(&r),
                            Err(_) => break,
                        }
                    }
                }
                _ = std::future::ready(()), if serving.is_some() => {
                    let serve = serving.as_mut().expect("checked");
                    match serve.step(&store, &mut buf) {
                        Ok(true) => {
                            tracing::info!(peer = %peer, sent = serve.sent, skipped = serve.skipped, incremental = serve.incremental, "sync served");
                            serving = None;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::error!(peer = %peer, error = %e, "cannot read the store to answer a sync");
                            serving = None;
                        }
                    }
                }
                _ = sync_tick.tick() => {
                    if !pull_pending {
                        let line = pull_line(store.cursor(&peer).unwrap_or(None), store.incarnation());
                        tracing::debug!(peer = %peer, request = line.trim_end(), "periodic sync requested");
                        buf.extend_from_slice(line.as_bytes());
                        pull_pending = true;
                    }
                }
            }
            if !buf.is_empty() {
                if let Err(e) = write_flush(&mut out, &buf).await {
                    break 'session End::Dropped(e.to_string());
                }
            }
        }
    };
    reader_task.abort();
    end
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
    events: mpsc::Sender<Event>,
) -> String {
    let mut received = 0u64;
    let mut applied = 0u64;
    // The peer names its incarnation in its first PULL, which it sends before anything else.
    let mut peer_incarnation = 0u64;
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
        match parse(&line) {
            Request::At(report) => {
                received += 1;
                let origin = Origin {
                    peer: &peer,
                    incarnation: peer_incarnation,
                };
                match node.accept(report, Some(origin)) {
                    Ok(Merged::Stored(_)) => applied += 1,
                    Ok(Merged::Stale) => {}
                    Err(e) => {
                        tracing::error!(peer = %peer, error = %e, "cannot store a report from a peer")
                    }
                }
            }
            Request::Peer(PeerLine::Pull {
                epoch,
                seq,
                incarnation,
            }) => {
                peer_incarnation = incarnation;
                tracing::info!(peer = %peer, epoch = format_args!("{epoch:x}"), seq, "sync asked of us");
                if events
                    .send(Event::Pull {
                        epoch,
                        seq,
                        incarnation,
                    })
                    .await
                    .is_err()
                {
                    return "session ended".to_owned();
                }
            }
            Request::Peer(PeerLine::Done { epoch, seq }) => {
                if let Err(e) = node.store().set_cursor(&peer, epoch, seq) {
                    tracing::error!(peer = %peer, error = %e, "cannot save the sync cursor");
                }
                tracing::info!(peer = %peer, received, applied, seq, "sync done");
                received = 0;
                applied = 0;
                if events.send(Event::PullDone).await.is_err() {
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
