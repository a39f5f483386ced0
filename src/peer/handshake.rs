//! The two halves of the peer handshake over a live connection (the design is in
//! [`auth`](super::auth)): [`dial`] for the server that connects, [`accept`] for the one that
//! was connected to, after its client loop has read a `HERD HELLO`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use super::auth::{nonce, Role, Transcript};
use super::Session;
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

async fn next_line(
    reader: &mut FramedRead<OwnedReadHalf, LineCodec>,
) -> Result<Bytes, HandshakeError> {
    match reader.next().await {
        Some(Ok(Frame::Line(line))) => Ok(line),
        Some(Ok(Frame::TooLong { .. })) => Err(HandshakeError::Refused("over-long line".into())),
        Some(Err(e)) => Err(e.into()),
        None => Err(HandshakeError::Closed),
    }
}

/// Connects to `peer` at `addr` and proves who we are; on success the connection is a link.
pub async fn dial(
    me: &str,
    peer: &str,
    addr: &str,
    secret: Option<&[u8]>,
    max_line: usize,
    timeout: Duration,
) -> Result<Session, HandshakeError> {
    tokio::time::timeout(timeout, dial_inner(me, peer, addr, secret, max_line))
        .await
        .map_err(|_| HandshakeError::Timeout)?
}

async fn dial_inner(
    me: &str,
    peer: &str,
    addr: &str,
    secret: Option<&[u8]>,
    max_line: usize,
) -> Result<Session, HandshakeError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let remote = stream.peer_addr()?;
    let (rd, mut wr) = stream.into_split();
    let mut reader = FramedRead::new(rd, LineCodec::new(peer_line_limit(max_line)));
    let nonce_d = nonce();
    wr.write_all(format!("HERD HELLO {me} {peer} {nonce_d}\n").as_bytes())
        .await?;
    let reply = next_line(&mut reader).await?;
    match (parse(&reply), secret) {
        (Request::Peer(PeerLine::Welcome), None) => {}
        (
            Request::Peer(PeerLine::Challenge {
                nonce: nonce_l,
                mac,
            }),
            Some(secret),
        ) => {
            let t = Transcript {
                dialer: me,
                listener: peer,
                nonce_d: nonce_d.as_bytes(),
                nonce_l: &nonce_l,
            };
            if !t.verify(secret, Role::Listener, &mac) {
                return Err(HandshakeError::Refused(
                    "the peer's proof of the herd secret is wrong".into(),
                ));
            }
            wr.write_all(format!("HERD PROOF {}\n", t.mac(secret, Role::Dialer)).as_bytes())
                .await?;
            let welcome = next_line(&mut reader).await?;
            if parse(&welcome) != Request::Peer(PeerLine::Welcome) {
                return Err(HandshakeError::Refused(format!(
                    "the peer answered {}",
                    Escaped(&welcome)
                )));
            }
        }
        (Request::Peer(PeerLine::Welcome), Some(_)) => {
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
        _ => {
            return Err(HandshakeError::Refused(format!(
                "the peer answered {}",
                Escaped(&reply)
            )))
        }
    }
    Ok(Session {
        peer: peer.to_owned(),
        dialer: me.to_owned(),
        addr: remote,
        reader,
        writer: wr,
    })
}

/// What the listening side concluded.
pub enum Accepted {
    /// The dialer proved itself: the connection is now a link to this peer.
    Link(String),
    /// Refused; the `? ` answer has been written and the connection stays a client's.
    Refused,
}

/// Runs the listener's side after `HERD HELLO`. `linked` tells whether a server name is
/// configured and linked to this one.
#[allow(clippy::too_many_arguments)]
pub async fn accept(
    me: &str,
    hello_line: &Bytes,
    dialer: &str,
    listener: &str,
    nonce_d: &[u8],
    linked: bool,
    secret: Option<&[u8]>,
    remote: SocketAddr,
    reader: &mut FramedRead<OwnedReadHalf, LineCodec>,
    writer: &mut OwnedWriteHalf,
    timeout: Duration,
) -> Result<Accepted, HandshakeError> {
    let refuse = |why: &str| {
        tracing::warn!(peer = %Escaped(dialer.as_bytes()), %remote, why, "peer refused");
    };
    if listener != me || !linked {
        refuse(if listener != me {
            "HELLO names another server"
        } else {
            "not a server linked to this one"
        });
        writer.write_all(&invalid_answer(hello_line)).await?;
        return Ok(Accepted::Refused);
    }
    let Some(secret) = secret else {
        if !remote.ip().is_loopback() {
            refuse("no herd secret is set, so only loopback peers are accepted");
            writer.write_all(&invalid_answer(hello_line)).await?;
            return Ok(Accepted::Refused);
        }
        writer.write_all(b"HERD WELCOME\n").await?;
        return Ok(Accepted::Link(dialer.to_owned()));
    };
    let nonce_l = nonce();
    let t = Transcript {
        dialer,
        listener: me,
        nonce_d,
        nonce_l: nonce_l.as_bytes(),
    };
    writer
        .write_all(
            format!(
                "HERD CHALLENGE {nonce_l} {}\n",
                t.mac(secret, Role::Listener)
            )
            .as_bytes(),
        )
        .await?;
    let proof = tokio::time::timeout(timeout, next_line(reader))
        .await
        .map_err(|_| HandshakeError::Timeout)??;
    match parse(&proof) {
        Request::Peer(PeerLine::Proof { mac }) if t.verify(secret, Role::Dialer, &mac) => {
            writer.write_all(b"HERD WELCOME\n").await?;
            Ok(Accepted::Link(dialer.to_owned()))
        }
        _ => {
            refuse("wrong proof of the herd secret");
            writer.write_all(&invalid_answer(&proof)).await?;
            Ok(Accepted::Refused)
        }
    }
}
