//! Links between servers: authenticated connections that carry flooded reports and
//! anti-entropy syncs.
//!
//! Each linked server has one [`link`] actor while the config links it to this node (a
//! reload of the config adds and removes actors, and moves one to a new address, leaving the
//! others alone). It owns the bounded queue of reports to send there and at most one live
//! connection, which it either dials
//! itself (with capped, jittered exponential backoff) or receives from the client loop after
//! the peer dialled in and passed the [`handshake`]. When both sides dial at once, both keep
//! the connection dialled by the server whose name sorts first, so one link survives.
//!
//! A slow or dead link never blocks anyone: [`Links::flood`] only ever `try_send`s, and a
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
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};
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
    /// The address the actor dials.
    addr: watch::Sender<String>,
    /// Ends the actor: the node stops, or the peer was removed from the config.
    stop: CancellationToken,
}

/// This node's links (one per linked server: the sending ends to its actor), its TLS settings
/// and its count of refused handshakes. The set of links changes only when the config is
/// reloaded ([`Links::add`], [`Links::remove`], [`Links::readdress`]).
pub struct Links {
    /// Taken briefly, never across an `.await`: reports are flooded under the read lock.
    handles: RwLock<HashMap<String, Handle>>,
    capacity: usize,
    /// The AT lines this node flooded last: each is flooded once, by whichever comes first,
    /// a link's reader or the store's writer.
    flooded: Seen,
    max_bytes: usize,
    tls: Option<Arc<tls::Tls>>,
    attempts: auth::Attempts,
    /// The node's stop token: every link's is a child of it.
    stop: CancellationToken,
}

/// The receiving ends of one link, handed to its actor.
pub struct LinkInbox {
    pub peer: String,
    /// Reports to send, each already its AT line with the newline.
    pub queue: mpsc::Receiver<Bytes>,
    /// Bytes in `queue`: subtract what is taken out.
    pub queued: Arc<AtomicUsize>,
    pub inbound: mpsc::Receiver<Session>,
    /// The peer's address, which a config reload may change.
    pub addr: watch::Receiver<String>,
    /// Cancelled when the node stops or the peer is removed from the config.
    pub stop: CancellationToken,
}

impl Links {
    /// Creates the links to `peers` (name and address), each with a queue of `capacity`
    /// reports and at most `max_bytes` bytes; links use `tls` when it is set and stop with
    /// `stop`.
    pub fn new<'a>(
        peers: impl IntoIterator<Item = (&'a String, &'a String)>,
        capacity: usize,
        max_bytes: usize,
        tls: Option<Arc<tls::Tls>>,
        stop: CancellationToken,
    ) -> (Links, Vec<LinkInbox>) {
        let links = Links {
            handles: RwLock::new(HashMap::new()),
            capacity,
            flooded: Seen::default(),
            max_bytes,
            tls,
            attempts: auth::Attempts::default(),
            stop,
        };
        let inboxes = peers
            .into_iter()
            .filter_map(|(peer, addr)| links.add(peer, addr))
            .collect();
        (links, inboxes)
    }

    fn handles(&self) -> RwLockReadGuard<'_, HashMap<String, Handle>> {
        // The map is only ever swapped whole entries at a time: a panic cannot leave it torn.
        self.handles.read().unwrap_or_else(|p| p.into_inner())
    }

    fn handles_mut(&self) -> RwLockWriteGuard<'_, HashMap<String, Handle>> {
        self.handles.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a link to `peer` at `addr`; returns the inbox for its actor to run, or `None` if
    /// there is one already.
    pub fn add(&self, peer: &str, addr: &str) -> Option<LinkInbox> {
        let mut handles = self.handles_mut();
        if handles.contains_key(peer) {
            return None;
        }
        let (queue_tx, queue_rx) = mpsc::channel(self.capacity);
        let (inbound_tx, inbound_rx) = mpsc::channel(4);
        let (addr_tx, addr_rx) = watch::channel(addr.to_owned());
        let queued = Arc::new(AtomicUsize::new(0));
        let stop = self.stop.child_token();
        handles.insert(
            peer.to_owned(),
            Handle {
                queue: queue_tx,
                queued: Arc::clone(&queued),
                inbound: inbound_tx,
                dropped: AtomicU64::new(0),
                addr: addr_tx,
                stop: stop.clone(),
            },
        );
        Some(LinkInbox {
            peer: peer.to_owned(),
            queue: queue_rx,
            queued,
            inbound: inbound_rx,
            addr: addr_rx,
            stop,
        })
    }

    /// Removes the link to `peer`: its actor closes the connection and stops, and reports
    /// still queued for it are dropped. Returns whether there was one.
    pub fn remove(&self, peer: &str) -> bool {
        let removed = self.handles_mut().remove(peer);
        if let Some(handle) = &removed {
            handle.stop.cancel();
        }
        removed.is_some()
    }

    /// Gives the link to `peer` a new address: a connection it dialled to the old one is
    /// closed, and the next dial goes to `addr`. Returns whether there is such a link.
    pub fn readdress(&self, peer: &str, addr: &str) -> bool {
        match self.handles().get(peer) {
            Some(handle) => {
                handle.addr.send_replace(addr.to_owned());
                true
            }
            None => false,
        }
    }

    /// Whether this node has a link to `peer`.
    pub fn contains(&self, peer: &str) -> bool {
        self.handles().contains_key(peer)
    }

    /// The servers this node links to, sorted.
    pub fn peers(&self) -> Vec<String> {
        let mut peers: Vec<String> = self.handles().keys().cloned().collect();
        peers.sort();
        peers
    }

    /// The TLS settings peer links use, if `[tls]` is configured.
    pub fn tls(&self) -> Option<&Arc<tls::Tls>> {
        self.tls.as_ref()
    }

    /// Refused handshakes per source address.
    pub fn attempts(&self) -> &auth::Attempts {
        &self.attempts
    }

    /// Queues `line`, a report's AT line with its newline, for every link but the one it came
    /// from (see [`forward_targets`]), without waiting, unless this node flooded that line
    /// already (as far as it remembers); returns whether it did. Flooding a line twice would
    /// be harmless (the second copy is stale everywhere), and never flooding one would be
    /// repaired by anti-entropy; once is what keeps floods cheap. A full queue drops it.
    pub fn flood(&self, line: &Bytes, from: Option<&str>) -> bool {
        let at_line = line.slice(..line.len().saturating_sub(1));
        if !self.flooded.first_sight(&at_line) {
            return false;
        }
        let handles = self.handles();
        for peer in forward_targets(handles.keys(), from) {
            self.forward_to(peer, &handles[peer], line);
        }
        true
    }

    /// Queues `line` for `peer` without waiting; drops it if the queue is full (by count or
    /// by bytes).
    fn forward_to(&self, peer: &str, handle: &Handle, line: &Bytes) {
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

    /// Gives an authenticated inbound connection to `peer`'s link actor (or closes it, if the
    /// peer's link was removed meanwhile).
    pub async fn hand_over(&self, session: Session) {
        let inbound = self.handles().get(&session.peer).map(|h| h.inbound.clone());
        if let Some(inbound) = inbound {
            let _ = inbound.send(session).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_flooded_once_to_every_link_but_its_source() {
        let peers = [
            ("B".to_string(), "127.0.0.1:1".to_string()),
            ("C".to_string(), "127.0.0.1:2".to_string()),
            ("D".to_string(), "127.0.0.1:3".to_string()),
        ];
        let (links, mut inboxes) = Links::new(
            peers.iter().map(|(p, a)| (p, a)),
            16,
            1 << 20,
            None,
            CancellationToken::new(),
        );
        let line = Bytes::from_static(b"AT A +0.100000000 kiwi +1+2 100\n");
        // A link's reader floods what it read from B; the writer, applying it later, finds
        // it flooded already; a second copy from C goes nowhere either.
        assert!(links.flood(&line, Some("B")));
        assert!(!links.flood(&line, None));
        assert!(!links.flood(&line, Some("C")));
        let queued: Vec<(String, usize)> = inboxes
            .iter_mut()
            .map(|inbox| {
                let mut n = 0;
                while let Ok(got) = inbox.queue.try_recv() {
                    assert_eq!(got, line);
                    n += 1;
                }
                (inbox.peer.clone(), n)
            })
            .collect();
        assert_eq!(
            queued,
            [("B".into(), 0), ("C".into(), 1), ("D".into(), 1)],
            "once to each link but the source"
        );
    }
}
