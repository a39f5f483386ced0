//! The two halves of the peer handshake over a live connection (the design is in
//! [`auth`](super::auth)): [`dial`] for the server that connects, [`accept`] for the one that
//! was connected to, after it has read a `HERD HELLO` (from its client loop, or as the first
//! line inside TLS).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use super::auth::{nonce, Attempts, Role, Transcript};
use super::tls::{self, Tls};
use super::{Liveness, PeerReader, PeerWriter, Session, Watched};
use crate::logging::Escaped;
use crate::protocol::frame::{Frame, LineCodec};
use crate::protocol::request::{invalid_answer, parse, PeerLine, Request};

/// The longest line a peer may send: an AT line of a client whose line was at the limit,
/// plus room for the server name and time difference.
pub fn peer_line_limit(max_line: usize) -> usize {
    max_line + 512
}

/// Why a handshake did not produce a link.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("connection closed during the handshake")]
    Closed,
    #[error("refused: {0}")]
    Refused(String),
}

/// Reads the next whole line of a handshake.
pub async fn next_line(
    reader: &mut FramedRead<PeerReader, LineCodec>,
) -> Result<Bytes, HandshakeError> {
    match reader.next().await {
        Some(Ok(Frame::Line(line))) => Ok(line),
        Some(Ok(Frame::TooLong { .. })) => Err(HandshakeError::Refused("over-long line".into())),
        Some(Err(e)) => Err(e.into()),
        None => Err(HandshakeError::Closed),
    }
}

/// What a dial needs besides the two names and the address.
pub struct DialOptions<'a> {
    pub secret: Option<&'a [u8]>,
    pub tls: Option<&'a Arc<Tls>>,
    pub max_line: usize,
    pub timeout: Duration,
}

/// Connects to `peer` at `addr` (over TLS when configured) and proves who we are; on success
/// the connection is a link.
pub async fn dial(
    me: &str,
    peer: &str,
    addr: &str,
    opts: DialOptions<'_>,
) -> Result<Session, HandshakeError> {
    tokio::time::timeout(opts.timeout, dial_inner(me, peer, addr, &opts))
        .await
        .map_err(|_| HandshakeError::Timeout)?
}

async fn dial_inner(
    me: &str,
    peer: &str,
    addr: &str,
    opts: &DialOptions<'_>,
) -> Result<Session, HandshakeError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let remote = stream.peer_addr()?;
    let liveness = Liveness::new();
    let (rd, wr): (PeerReader, PeerWriter) = match opts.tls {
        Some(tls) => {
            let (connector, reloaded) = tls.connector();
            let name = tls::server_name(peer).map_err(HandshakeError::Refused)?;
            let stream = connector.connect(name, stream).await.map_err(|e| {
                HandshakeError::Refused(format!("TLS handshake with {peer} failed: {e}"))
            })?;
            let (rd, wr) = tokio::io::split(stream);
            (
                Box::new(Watched::new(rd, liveness.clone(), Some(reloaded))),
                Box::new(wr),
            )
        }
        None => {
            let (rd, wr) = stream.into_split();
            (
                Box::new(Watched::new(rd, liveness.clone(), None)),
                Box::new(wr),
            )
        }
    };
    let mut reader = FramedRead::new(rd, LineCodec::new(peer_line_limit(opts.max_line)));
    let mut wr = wr;
    let nonce_d = nonce();
    wr.write_all(format!("HERD HELLO {me} {peer} {nonce_d}\n").as_bytes())
        .await?;
    wr.flush().await?;
    let reply = next_line(&mut reader).await?;
    let answered =
        |line: &Bytes| HandshakeError::Refused(format!("the peer answered {}", Escaped(line)));
    match (parse(&reply), opts.secret) {
        (Request::Peer(PeerLine::Welcome { mac: None }), None) => {}
        (Request::Peer(PeerLine::Challenge { nonce: nonce_l }), Some(secret)) => {
            let t = Transcript {
                dialer: me,
                listener: peer,
                nonce_d: nonce_d.as_bytes(),
                nonce_l: &nonce_l,
            };
            wr.write_all(format!("HERD PROOF {}\n", t.mac(secret, Role::Dialer)).as_bytes())
                .await?;
            wr.flush().await?;
            let welcome = next_line(&mut reader).await?;
            match parse(&welcome) {
                Request::Peer(PeerLine::Welcome { mac: Some(mac) }) => {
                    if !t.verify(secret, Role::Listener, &mac) {
                        return Err(HandshakeError::Refused(
                            "the peer's proof of the herd secret is wrong".into(),
                        ));
                    }
                }
                Request::Peer(PeerLine::Welcome { mac: None }) => {
                    return Err(HandshakeError::Refused(
                        "the peer accepted us without proving the herd secret".into(),
                    ))
                }
                Request::Invalid => {
                    return Err(HandshakeError::Refused(
                        "the peer did not accept our proof of the herd secret (is the same secret set there?)"
                            .into(),
                    ))
                }
                _ => return Err(answered(&welcome)),
            }
        }
        (Request::Peer(PeerLine::Welcome { .. }), Some(_)) => {
            return Err(HandshakeError::Refused(
                "the peer accepted us without proving the herd secret (is HERD_SECRET set there?)"
                    .into(),
            ))
        }
        (Request::Peer(PeerLine::Challenge { .. }), None) => {
            return Err(HandshakeError::Refused(
                "the peer requires a herd secret and this node has none".into(),
            ))
        }
        (Request::Invalid, _) => {
            return Err(HandshakeError::Refused(format!(
                "the peer answered {} (see its log: a node whose config does not link it to this server, say one not reloaded since this server was added, refuses so)",
                Escaped(&reply)
            )))
        }
        _ => return Err(answered(&reply)),
    }
    Ok(Session {
        peer: peer.to_owned(),
        dialer: me.to_owned(),
        addr: remote,
        reader,
        writer: wr,
        liveness,
    })
}

/// What the listening side concluded.
pub enum Accepted {
    /// The dialer proved itself: the connection is now a link to this peer.
    Link(String),
    /// Refused; the `? ` answer has been written.
    Refused,
}

/// How the connection that carried the HELLO is protected.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP.
    Plain,
    /// Mutual TLS; `names_dialer` tells whether the dialer's certificate names the server
    /// its HELLO claims to be.
    Tls { names_dialer: bool },
}

/// What the listener knows about itself and the connection.
pub struct Listener<'a> {
    pub me: &'a str,
    /// Whether the HELLO's dialer is a server linked to this one.
    pub linked: bool,
    pub secret: Option<&'a [u8]>,
    /// Whether `[tls]` is configured (then a plaintext HELLO is refused).
    pub tls_on: bool,
    pub transport: Transport,
    pub remote: SocketAddr,
    pub attempts: &'a Attempts,
    pub timeout: Duration,
}

/// Runs the listener's side after `HERD HELLO`.
pub async fn accept(
    l: &Listener<'_>,
    hello_line: &Bytes,
    dialer: &str,
    listener: &str,
    nonce_d: &[u8],
    reader: &mut FramedRead<PeerReader, LineCodec>,
    writer: &mut PeerWriter,
) -> Result<Accepted, HandshakeError> {
    let source = l.remote.ip();
    let refused = |why: &str, line: &Bytes| {
        let count = l.attempts.refused(source);
        tracing::warn!(peer = %Escaped(dialer.as_bytes()), remote = %l.remote, why, refused_from_source = count, "peer refused");
        invalid_answer(line)
    };
    // A HELLO from a server this node does not link to, or naming another server as the
    // listener, tests no secret and no certificate: it is what a server added to the herd (or
    // moved) sends to nodes that have not reloaded their config yet. It is refused before any
    // challenge and costs its source nothing, so the new server's address is never locked
    // out and links up on its next dial after the reload.
    let disagrees = if listener != l.me {
        Some("HELLO names another server")
    } else if !l.linked {
        Some("not a server linked to this one in the current config")
    } else {
        None
    };
    let why = if !l.attempts.allowed(source) {
        Some("too many refused handshakes from this address; try later")
    } else if l.tls_on && l.transport == Transport::Plain {
        Some("plaintext peer: this herd requires TLS on peer links")
    } else if l.transport
        == (Transport::Tls {
            names_dialer: false,
        })
    {
        Some("its certificate does not name the server it claims to be")
    } else if l.secret.is_none() && l.transport == Transport::Plain && !l.remote.ip().is_loopback()
    {
        Some("no herd secret is set, so only loopback peers are accepted")
    } else {
        None
    };
    if let Some(why) = why {
        writer.write_all(&refused(why, hello_line)).await?;
        writer.flush().await?;
        return Ok(Accepted::Refused);
    }
    if let Some(why) = disagrees {
        tracing::info!(peer = %Escaped(dialer.as_bytes()), remote = %l.remote, why, "peer refused (not counted against its address: the two configs disagree, say while a server is added)");
        writer.write_all(&invalid_answer(hello_line)).await?;
        writer.flush().await?;
        return Ok(Accepted::Refused);
    }
    let Some(secret) = l.secret else {
        writer.write_all(b"HERD WELCOME\n").await?;
        writer.flush().await?;
        return Ok(Accepted::Link(dialer.to_owned()));
    };
    // The dialer proves first: the challenge is a bare nonce.
    let nonce_l = nonce();
    writer
        .write_all(format!("HERD CHALLENGE {nonce_l}\n").as_bytes())
        .await?;
    writer.flush().await?;
    let proof = tokio::time::timeout(l.timeout, next_line(reader))
        .await
        .map_err(|_| HandshakeError::Timeout)??;
    let t = Transcript {
        dialer,
        listener: l.me,
        nonce_d,
        nonce_l: nonce_l.as_bytes(),
    };
    match parse(&proof) {
        Request::Peer(PeerLine::Proof { mac }) if t.verify(secret, Role::Dialer, &mac) => {
            writer
                .write_all(format!("HERD WELCOME {}\n", t.mac(secret, Role::Listener)).as_bytes())
                .await?;
            writer.flush().await?;
            Ok(Accepted::Link(dialer.to_owned()))
        }
        _ => {
            writer
                .write_all(&refused("wrong proof of the herd secret", &proof))
                .await?;
            writer.flush().await?;
            Ok(Accepted::Refused)
        }
    }
}
