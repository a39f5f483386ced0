//! What each client request does, one file per command. A command does its ordering-sensitive
//! work (store writes, store reads) at once, in request order, and returns the rest of its
//! answer as a future, so a pipelining client gets answers in order without one slow
//! WHATSAT or flush holding up the work of the requests behind it.

mod iamat;
mod whatsat;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::node::Node;
use crate::protocol::number::Timestamp;
use crate::protocol::request::{invalid_answer, Request};
use crate::telemetry::{Refusal, RequestKind};

/// A request's answer, now or later.
pub enum Answer {
    /// No answer (an empty line).
    Nothing,
    /// The answer, ready to write.
    Ready(Vec<u8>),
    /// The answer once durable or fetched; `None` means the request could not be honoured and
    /// the connection must close (the store cannot make the report durable).
    Later(BoxFuture<'static, Option<Vec<u8>>>),
}

/// What a connection remembers between its requests.
#[derive(Default)]
pub struct Context {
    /// The store ticket of this connection's latest IAMAT, so a later WHATSAT sees it.
    pub last_write: Option<crate::store::Ticket>,
}

/// Runs one parsed client request. Peer-only lines are invalid here; the connection handles
/// `HERD HELLO` itself before calling this. It waits only for room in the store's queue.
pub async fn execute(node: &Node, cx: &mut Context, line: &Bytes, request: Request) -> Answer {
    // A WHATSAT counts itself: it is invalid when the client is unknown.
    let kind = match &request {
        Request::Empty | Request::WhatsAt(_) => None,
        Request::IAmAt(_) => Some(RequestKind::IAmAt),
        Request::At(_) | Request::Peer(_) | Request::Invalid => Some(RequestKind::Invalid),
    };
    if let Some(kind) = kind {
        node.telemetry().request(kind);
    }
    match request {
        Request::Empty => Answer::Nothing,
        Request::IAmAt(req) => {
            let max_ahead = node.config().limits.max_future_secs;
            if req.timestamp.too_far_ahead(Timestamp::now(), max_ahead) {
                if let Some(refused) = node.telemetry().refused(Refusal::Future, None) {
                    tracing::warn!(
                        limit_secs = max_ahead,
                        timestamp = %req.timestamp,
                        refused,
                        "IAMAT timestamp too far in the future; answered as invalid (logged at most every 10 s, with the number refused since)"
                    );
                }
                return Answer::Ready(invalid_answer(line));
            }
            iamat::execute(node, cx, line, req).await
        }
        Request::WhatsAt(req) => whatsat::execute(node, cx, line, req).await,
        Request::At(_) | Request::Peer(_) | Request::Invalid => Answer::Ready(invalid_answer(line)),
    }
}
