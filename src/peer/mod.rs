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

pub mod auth;
pub mod handshake;
pub mod link;
pub mod sync;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use crate::protocol::frame::LineCodec;

/// An authenticated connection to a peer.
pub struct Session {
    /// The peer's server name.
    pub peer: String,
    /// The server that dialled this connection.
    pub dialer: String,
    pub addr: SocketAddr,
    pub reader: FramedRead<OwnedReadHalf, LineCodec>,
    pub writer: OwnedWriteHalf,
}

struct Handle {
    queue: mpsc::Sender<Bytes>,
    /// Bytes in `queue`, shared with the actor, which takes off what it dequeues.
    queued: Arc<AtomicUsize>,
    inbound: mpsc::Sender<Session>,
    dropped: AtomicU64,
}

/// The sending ends of every link of this node. Built once at start-up.
pub struct Links {
    handles: HashMap<String, Handle>,
    max_bytes: usize,
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
    /// Creates a queue of `capacity` reports and at most `max_bytes` bytes per peer.
    pub fn new<'a>(
        peers: impl IntoIterator<Item = &'a String>,
        capacity: usize,
        max_bytes: usize,
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
        (Links { handles, max_bytes }, inboxes)
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
