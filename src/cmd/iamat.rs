//! `IAMAT`: stamp the report, store it if it is the client's newest, queue it for the linked
//! servers, and answer with its AT line once it is durable.

use futures::FutureExt;

use super::Answer;
use crate::config::Durability;
use crate::node::Node;
use crate::protocol::number::Timestamp;
use crate::protocol::request::IAmAt;
use crate::report::Report;
use crate::store::Merged;

pub fn execute(node: &Node, request: IAmAt) -> Answer {
    let report = Report::stamp(request, node.name(), Timestamp::now());
    let mut answer = report.at_line();
    answer.push(b'\n');
    match node.accept(report, None) {
        Ok(_) if node.config().store.durability == Durability::None => Answer::Ready(answer),
        Ok(merged) => {
            // An older or duplicate report changes nothing, but is answered only once the
            // record it lost against is durable: that record may still be in memory only.
            let commit = match merged {
                Merged::Stored(commit) => commit,
                Merged::Stale => node.store().pending(),
            };
            let store = node.store();
            Answer::Later(
                async move {
                    match store.durable(commit).await {
                        Ok(()) => Some(answer),
                        Err(e) => {
                            tracing::error!(error = %e, "report not durable; closing the connection unanswered");
                            None
                        }
                    }
                }
                .boxed(),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store a report; closing the connection unanswered");
            Answer::Later(futures::future::ready(None).boxed())
        }
    }
}
