//! `WHATSAT`: the stored AT line of the client's newest report, then the places document near
//! that report's location, then a blank line.

use bytes::Bytes;
use futures::FutureExt;

use super::{Answer, Context};
use crate::node::Node;
use crate::protocol::request::{invalid_answer, WhatsAt};
use crate::store::Stored;
use crate::telemetry::RequestKind;

pub async fn execute(node: &Node, cx: &Context, line: &Bytes, request: WhatsAt) -> Answer {
    let store = node.store();
    let places = node.places().clone();
    let telemetry = node.telemetry().clone();
    // Every report this node received before the WHATSAT must be seen (an IAMAT earlier on
    // this connection, a peer's flood read off its link a moment ago), and a later one need
    // not: while any is not applied yet, the read goes through the store's queue, in order.
    if cx.last_write.is_some_and(|t| !store.is_applied(t)) || !store.caught_up() {
        let read = match store.get_in_order(request.client.clone()).await {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the store for a WHATSAT");
                telemetry.request(RequestKind::Invalid);
                return Answer::Ready(invalid_answer(line));
            }
        };
        let line = line.clone();
        return Answer::Later(
            async move {
                match read.await {
                    Ok(Some(stored)) => {
                        telemetry.request(RequestKind::WhatsAt);
                        answer(places, stored, request).await
                    }
                    Ok(None) => {
                        telemetry.request(RequestKind::Invalid);
                        Some(invalid_answer(&line))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the store for a WHATSAT");
                        telemetry.request(RequestKind::Invalid);
                        Some(invalid_answer(&line))
                    }
                }
            }
            .boxed(),
        );
    }
    match store.get(&request.client) {
        Ok(Some(stored)) => {
            telemetry.request(RequestKind::WhatsAt);
            Answer::Later(answer(places, stored, request).boxed())
        }
        Ok(None) => {
            telemetry.request(RequestKind::Invalid);
            Answer::Ready(invalid_answer(line))
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the store for a WHATSAT");
            telemetry.request(RequestKind::Invalid);
            Answer::Ready(invalid_answer(line))
        }
    }
}

async fn answer(
    places: crate::places::Places,
    stored: Stored,
    request: WhatsAt,
) -> Option<Vec<u8>> {
    let document = places
        .nearby(stored.report.location, request.radius, request.bound)
        .await;
    let at = stored.report.at_line();
    let mut answer = Vec::with_capacity(at.len() + document.len() + 3);
    answer.extend_from_slice(at);
    answer.push(b'\n');
    answer.extend_from_slice(document.as_bytes());
    answer.extend_from_slice(b"\n\n");
    Some(answer)
}
