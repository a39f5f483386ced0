//! Links between servers: authenticated connections that carry flooded reports and
//! anti-entropy syncs.
//!
//! Each linked server has one [`link`] actor for the life of the node. It owns the bounded
//! queue of reports to send there and at most one live connection, which it either dials
//! itself (with capped, jittered exponential backoff) or receives from the client loop after
//! the peer dialled in and passed the [`handshake`]. When both sides dial at once, both keep
//! the connection dialled by the server whose name sorts first, so one link survives.
//!
//! A slow or dead link never blocks anyone: [`Links::forward`] only ever `try_send`s, and a
//! full queue (by count or by bytes) drops the report (counted and logged); the next sync
//! repairs the gap.
//!
//! A session's byte streams are boxed ([`PeerReader`], [`PeerWriter`]) so that a link runs the
//! same over plain TCP and over [`tls`]; the reader is [`Watched`], which records when the
//! peer was last heard from (a healthy link is never replaced by a second connection claiming
//! the same name) and ends the session when the certificates are reloaded.

pub mod auth;
pub mod handshake;
pub mod link;
pub mod sync;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::herd::forward_targets;
use crate::protocol::frame::LineCodec;
use crate::store::seen::Seen;

/// The reading half of a peer connection, plain or TLS.
pub type PeerReader = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a peer connection, plain or TLS.
pub type PeerWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// An authenticated connection to a peer.
pub struct Session {
    /// The peer's server name.
    pub peer: String,
    /// The server that dialled this connection.
    pub dialer: String,
    pub addr: SocketAddr,
    pub reader: FramedRead<PeerReader, LineCodec>,
    pub writer: PeerWriter,
    /// When the connection was made and when the peer was last heard from.
    pub liveness: Arc<Liveness>,
}

/// When a connection was established and when its peer last sent a byte.
pub struct Liveness {
    since: Instant,
    /// Milliseconds after `since` of the last read that returned bytes.
    heard_ms: AtomicU64,
}

impl Liveness {
    pub fn new() -> Arc<Liveness> {
        Arc::new(Liveness {
            since: Instant::now(),
            heard_ms: AtomicU64::new(0),
        })
    }

    /// How long ago the connection was made.
    pub fn age(&self) -> Duration {
        self.since.elapsed()
    }

    /// How long ago the peer last sent anything (or the connection was made).
    pub fn silent_for(&self) -> Duration {
        let heard = Duration::from_millis(self.heard_ms.load(Ordering::Relaxed));
        self.since.elapsed().saturating_sub(heard)
    }

    fn heard(&self) {
        let ms = self.since.elapsed().as_millis() as u64;
        self.heard_ms.store(ms, Ordering::Relaxed);
    }
}

/// A reader that records in [`Liveness`] when bytes arrive, and fails once `ended` is
/// cancelled (the certificates it was authenticated with have been replaced).
pub struct Watched<R> {
    inner: R,
    liveness: Arc<Liveness>,
    ended: Option<BoxFuture<'static, ()>>,
}

impl<R> Watched<R> {
    pub fn new(inner: R, liveness: Arc<Liveness>, ended: Option<CancellationToken>) -> Self {
        Watched {
            inner,
            liveness,
            ended: ended.map(|t| t.cancelled_owned().boxed()),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Watched<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(ended) = self.ended.as_mut() {
            if ended.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the TLS certificates were reloaded",
                )));
            }
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.liveness.heard();
        }
        polled
    }
}

struct Handle {
    queue: mpsc::Sender<Bytes>,
    /// Bytes in `queue`, shared with the actor, which takes off what it dequeues.
    queued: Arc<AtomicUsize>,
    inbound: mpsc::Sender<Session>,
    dropped: AtomicU64,
}

/// The sending ends of every link of this node, its TLS settings and its count of refused
/// handshakes. Built once at start-up.
pub struct Links {
    handles: HashMap<String, Handle>,
    /// The AT lines this node flooded last: each is flooded once, by whichever comes first,
    /// a link's reader or the store's writer.
    flooded: Seen,
    max_bytes: usize,
    tls: Option<Arc<tls::Tls>>,
    attempts: auth::Attempts,
}

/// The receiving ends of one link, handed to its actor.
pub struct LinkInbox {
    pub peer: String,
    /// Reports to send, each already its AT line with the newline.
    pub queue: mpsc::Receiver<Bytes>,
    /// Bytes in `queue`: subtract what is taken out.
    pub queued: Arc<AtomicUsize>,
    pub inbound: mpsc::Receiver<Session>,
}

impl Links {
    /// Creates a queue of `capacity` reports and at most `max_bytes` bytes per peer; links use
    /// `tls` when it is set.
    pub fn new<'a>(
        peers: impl IntoIterator<Item = &'a String>,
        capacity: usize,
        max_bytes: usize,
        tls: Option<Arc<tls::Tls>>,
    ) -> (Links, Vec<LinkInbox>) {
        let mut handles = HashMap::new();
        let mut inboxes = Vec::new();
        for peer in peers {
            let (queue_tx, queue_rx) = mpsc::channel(capacity);
            let (inbound_tx, inbound_rx) = mpsc::channel(4);
            let queued = Arc::new(AtomicUsize::new(0));
            handles.insert(
                peer.clone(),
                Handle {
                    queue: queue_tx,
                    queued: Arc::clone(&queued),
                    inbound: inbound_tx,
                    dropped: AtomicU64::new(0),
                },
            );
            inboxes.push(LinkInbox {
                peer: peer.clone(),
                queue: queue_rx,
                queued,
                inbound: inbound_rx,
            });
        }
        let links = Links {
            handles,
            flooded: Seen::default(),
            max_bytes,
            tls,
            attempts: auth::Attempts::default(),
        };
        (links, inboxes)
    }

    /// The TLS settings peer links use, if `[tls]` is configured.
    pub fn tls(&self) -> Option<&Arc<tls::Tls>> {
        self.tls.as_ref()
    }

    /// Refused handshakes per source address.
    pub fn attempts(&self) -> &auth::Attempts {
        &self.attempts
    }

    /// Queues `line`, a report's AT line with its newline, for every linked peer but `from`,
    /// unless this node flooded that line already (as far as it remembers); returns whether it
    /// did. Flooding a line twice would be harmless (the second copy is stale everywhere), and
    /// never flooding one would be repaired by anti-entropy; once is what keeps floods cheap.
    pub fn flood(&self, line: &Bytes, from: Option<&str>) -> bool {
        let at_line = line.slice(..line.len().saturating_sub(1));
        if !self.flooded.first_sight(&at_line) {
            return false;
        }
        for peer in forward_targets(self.handles.keys(), from) {
            self.forward(peer, line);
        }
        true
    }

    /// Queues a report's AT line (with its newline) for `peer` without waiting; drops it if the
    /// queue is full.
    pub fn forward(&self, peer: &str, line: &Bytes) {
        let Some(handle) = self.handles.get(peer) else {
            return;
        };
        let size = line.len();
        let over = handle.queued.fetch_add(size, Ordering::Relaxed) + size > self.max_bytes;
        if over || handle.queue.try_send(line.clone()).is_err() {
            handle.queued.fetch_sub(size, Ordering::Relaxed);
            let dropped = handle.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    peer,
                    dropped,
                    "link queue full; dropping reports until the next sync"
                );
            }
        }
    }

    /// Gives an authenticated inbound connection to `peer`'s link actor.
    pub async fn hand_over(&self, session: Session) {
        if let Some(handle) = self.handles.get(&session.peer) {
            let _ = handle.inbound.send(session).await;
        }
    }
}
