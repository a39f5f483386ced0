//! `WHATSAT`: the stored AT line of the client's newest report, then the places document near
//! that report's location, then a blank line.

use bytes::Bytes;
use futures::FutureExt;

use super::Answer;
use crate::node::Node;
use crate::protocol::request::{invalid_answer, WhatsAt};
use crate::telemetry::RequestKind;

pub fn execute(node: &Node, line: &Bytes, request: WhatsAt) -> Answer {
    let stored = match node.store().get(&request.client) {
        Ok(Some(stored)) => stored,
        Ok(None) => {
            node.telemetry().request(RequestKind::Invalid);
            return Answer::Ready(invalid_answer(line));
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the store for a WHATSAT");
            node.telemetry().request(RequestKind::Invalid);
            return Answer::Ready(invalid_answer(line));
        }
    };
    node.telemetry().request(RequestKind::WhatsAt);
    let places = node.places().clone();
    Answer::Later(
        async move {
            let document = places
                .nearby(stored.report.location, request.radius, request.bound)
                .await;
            let mut answer = stored.report.at_line();
            answer.reserve(document.len() + 3);
            answer.push(b'\n');
            answer.extend_from_slice(document.as_bytes());
            answer.extend_from_slice(b"\n\n");
            Some(answer)
        }
        .boxed(),
    )
}
