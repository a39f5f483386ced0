//! One client connection: read lines, run them, write answers in request order.
//!
//! Requests are pipelined: each line's ordering-sensitive work runs as it is read, and its
//! answer (which may wait for a flush or a places lookup) joins an ordered queue of at most
//! `max_in_flight`. Answers are written whole, one `write_all` each, in request order. When
//! the queue is full, or an answer cannot be written because the client is not reading, the
//! loop stops reading: a client can never make the node buffer without bound.
//!
//! The connection closes on EOF (after answering everything, including an unterminated last
//! line), on an I/O error, when idle too long (with no request: blank lines do not keep it
//! open), or when a started line takes too long to finish. A bad request never closes it.
//!
//! A connection that opens with `HERD HELLO` may become a peer link; see [`crate::peer`]. With
//! `[tls]` configured, a connection whose first byte starts a TLS record is a peer's, and is
//! handed to [`crate::peer::tls::serve`].

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::cmd::{execute, Answer, Context};
use crate::logging::{ConnLog, Direction, Escaped};
use crate::node::Node;
use crate::peer::handshake::{self, Accepted, Listener, Transport};
use crate::peer::{auth, Liveness, PeerReader, PeerWriter, Session, Watched};
use crate::protocol::frame::{Frame, LineCodec};
use crate::protocol::request::{invalid_answer, parse, PeerLine, Request};

type Pending = FuturesOrdered<futures::future::BoxFuture<'static, Option<Vec<u8>>>>;

/// What woke the connection loop.
enum Step {
    Answer(Option<Vec<u8>>),
    Frame(Option<std::io::Result<Frame>>),
    Timer,
    Shutdown,
}

/// Serves one client until it leaves, misbehaves past a limit, or the node shuts down. `id`
/// numbers the connection in the log.
pub async fn serve(
    node: Node,
    stream: TcpStream,
    id: u64,
    remote: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let limits = node.config().limits.clone();
    if let Some(tls) = node.links().tls().cloned() {
        // Peers start TLS at once; clients never send a TLS record's first byte.
        let mut first = [0u8; 1];
        if let Ok(Ok(1)) =
            tokio::time::timeout(limits.idle_timeout(), stream.peek(&mut first)).await
        {
            if first[0] == crate::peer::tls::TLS_HANDSHAKE_BYTE {
                crate::peer::tls::serve(node, stream, remote, tls).await;
                return;
            }
        }
    }
    let (rd, wr) = stream.into_split();
    let liveness = Liveness::new();
    let rd: PeerReader = Box::new(Watched::new(rd, liveness.clone(), None));
    let mut conn = Connection {
        reader: FramedRead::new(rd, LineCodec::new(limits.max_line_bytes)),
        writer: Box::new(wr),
        pending: FuturesOrdered::new(),
        remote,
        // Asked once: the filter does not change while the node runs, and the question costs
        // more than the record.
        log: ConnLog::new(
            id,
            remote,
            tracing::enabled!(tracing::Level::INFO),
            &node.config().log,
        ),
        write_timeout: limits.write_timeout(),
        liveness,
        refused_hellos: 0,
    };
    let mut cx = Context::default();
    let idle = limits.idle_timeout();
    let line_deadline = limits.line_timeout().min(idle);
    let mut last_line = Instant::now();
    // Idleness is measured from the last line that was a request: blank lines cost the node
    // nothing to answer, but must not keep a connection (and its slot) alive forever.
    let mut last_request = last_line;
    // First check whether a started line is overdue, then (if nothing was pending then)
    // whether the connection has gone idle.
    let mut check_at = last_line + line_deadline;
    // One timer for the connection's life, moved only when it fires early: a line arriving
    // does not touch the timer wheel.
    let timer = tokio::time::sleep_until(check_at);
    tokio::pin!(timer);
    // Waited on once for the connection's life: a new wait every turn of the loop would
    // join and leave the shared token's list of waiters, a lock every connection contends for.
    let stop = shutdown.cancelled();
    tokio::pin!(stop);
    let mut eof = false;
    let reason = loop {
        if eof && conn.pending.is_empty() {
            break "done";
        }
        // In this order, so that neither a shutdown nor a deadline waits behind a client
        // whose lines are always ready.
        let step = tokio::select! {
            biased;
            _ = &mut stop, if !eof => Step::Shutdown,
            _ = &mut timer, if !eof => Step::Timer,
            Some(answer) = conn.pending.next(), if !conn.pending.is_empty() => Step::Answer(answer),
            frame = conn.reader.next(), if !eof && conn.pending.len() < limits.max_in_flight => Step::Frame(frame),
        };
        match step {
            Step::Answer(None) => break "the store failed",
            Step::Answer(Some(answer)) => {
                if let Err(why) = conn.write(&answer).await {
                    break why;
                }
            }
            Step::Frame(Some(Ok(Frame::Line(line)))) => {
                last_line = Instant::now();
                let request = parse(&line);
                if !matches!(request, Request::Empty) {
                    last_request = last_line;
                }
                check_at = (last_line + line_deadline).min(last_request + idle);
                conn.log(Direction::In, &line);
                if let Request::Peer(PeerLine::Hello {
                    dialer,
                    listener,
                    nonce,
                }) = request
                {
                    conn = match conn
                        .try_peer(&node, &line, &dialer, &listener, &nonce)
                        .await
                    {
                        Ok(PeerOutcome::Refused(mut conn)) => {
                            conn.refused_hellos += 1;
                            if conn.refused_hellos >= auth::PER_CONNECTION {
                                tracing::warn!(
                                    refused = conn.refused_hellos,
                                    "closing a connection after too many refused peer handshakes"
                                );
                                let _ = conn.writer.shutdown().await;
                                return;
                            }
                            conn
                        }
                        Ok(PeerOutcome::Linked(session)) => {
                            node.links().hand_over(session).await;
                            return;
                        }
                        Err(why) => {
                            tracing::debug!(reason = why, "connection closed");
                            return;
                        }
                    };
                    continue;
                }
                match execute(&node, &mut cx, &line, request).await {
                    Answer::Nothing => {}
                    Answer::Ready(answer) => conn
                        .pending
                        .push_back(Box::pin(async move { Some(answer) })),
                    Answer::Later(future) => conn.pending.push_back(future),
                }
            }
            Step::Frame(Some(Ok(Frame::TooLong { start, length }))) => {
                last_line = Instant::now();
                last_request = last_line;
                check_at = last_line + line_deadline;
                tracing::warn!(length, limit = limits.max_line_bytes, start = %Escaped(&start[..start.len().min(64)]), "line too long; discarded");
                node.telemetry()
                    .request(crate::telemetry::RequestKind::Invalid);
                let answer = invalid_answer(&start);
                conn.pending
                    .push_back(Box::pin(async move { Some(answer) }));
            }
            Step::Frame(Some(Err(_))) => break "read failed",
            Step::Frame(None) | Step::Shutdown => eof = true,
            Step::Timer if Instant::now() < check_at => timer.as_mut().reset(check_at),
            Step::Timer => {
                let now = Instant::now();
                if now >= last_request + idle {
                    tracing::info!(idle_secs = idle.as_secs(), "closing an idle connection");
                    break "idle";
                }
                if !conn.reader.read_buffer().is_empty() && now >= last_line + line_deadline {
                    tracing::warn!(
                        secs = line_deadline.as_secs(),
                        "closing a connection whose line did not complete in time"
                    );
                    break "line too slow";
                }
                check_at = last_request + idle;
                timer.as_mut().reset(check_at);
            }
        }
    };
    // Answer whatever was read before an orderly end; drop it after a failure.
    if matches!(reason, "idle" | "line too slow") {
        conn.drain().await;
    }
    let _ = conn.writer.shutdown().await;
    tracing::debug!(reason, "connection closed");
}

/// The end of a `HERD HELLO`.
enum PeerOutcome {
    /// Refused: the connection carries on as a client's.
    Refused(Connection),
    /// Accepted: the connection is now a peer link.
    Linked(Session),
}

struct Connection {
    reader: FramedRead<PeerReader, LineCodec>,
    writer: PeerWriter,
    pending: Pending,
    remote: SocketAddr,
    /// Its lines and answers, as the log gets them.
    log: ConnLog,
    write_timeout: Duration,
    /// Kept for the session if this connection becomes a peer link.
    liveness: std::sync::Arc<Liveness>,
    refused_hellos: u32,
}

impl Connection {
    /// Logs a line read or an answer written.
    fn log(&mut self, dir: Direction, line: &[u8]) {
        self.log.line(dir, line);
    }

    /// Writes one answer whole, within the write deadline.
    async fn write(&mut self, answer: &[u8]) -> Result<(), &'static str> {
        self.log(Direction::Out, answer.strip_suffix(b"\n").unwrap_or(answer));
        let write = self.writer.write_all(answer);
        tokio::pin!(write);
        // Nearly every answer fits the socket's buffer at once: only one that has to wait
        // starts the deadline's timer.
        let written = match futures::poll!(write.as_mut()) {
            std::task::Poll::Ready(done) => Ok(done),
            std::task::Poll::Pending => tokio::time::timeout(self.write_timeout, write).await,
        };
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("write failed"),
            Err(_) => {
                tracing::warn!(
                    secs = self.write_timeout.as_secs(),
                    "closing a connection that does not read its answers"
                );
                Err("write timed out")
            }
        }
    }

    /// Writes every pending answer, in order, with a bound on how long that may take.
    async fn drain(&mut self) {
        let drain = async {
            while let Some(answer) = self.pending.next().await {
                let Some(answer) = answer else { return };
                if self.write(&answer).await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    }

    /// Handles `HERD HELLO`: answers everything before it, then runs the listener's side of the
    /// handshake.
    async fn try_peer(
        mut self,
        node: &Node,
        line: &Bytes,
        dialer: &str,
        listener: &str,
        nonce: &Bytes,
    ) -> Result<PeerOutcome, &'static str> {
        self.drain().await;
        let l = Listener {
            me: node.name(),
            linked: node.is_linked(dialer),
            secret: node.config().secret.as_deref(),
            tls_on: node.links().tls().is_some(),
            transport: Transport::Plain,
            remote: self.remote,
            attempts: node.links().attempts(),
            timeout: Duration::from_millis(node.config().peers.connect_timeout_ms),
        };
        let accepted = handshake::accept(
            &l,
            line,
            dialer,
            listener,
            nonce,
            &mut self.reader,
            &mut self.writer,
        )
        .await;
        match accepted {
            Ok(Accepted::Refused) => Ok(PeerOutcome::Refused(self)),
            Ok(Accepted::Link(peer)) => {
                let limit = handshake::peer_line_limit(node.config().limits.max_line_bytes);
                let reader = self.reader.map_decoder(|_| LineCodec::new(limit));
                Ok(PeerOutcome::Linked(Session {
                    peer,
                    dialer: dialer.to_owned(),
                    addr: self.remote,
                    reader,
                    writer: self.writer,
                    liveness: self.liveness,
                }))
            }
            Err(e) => {
                tracing::warn!(peer = %Escaped(dialer.as_bytes()), error = %e, "peer handshake failed");
                Err("peer handshake failed")
            }
        }
    }
}
