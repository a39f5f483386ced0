//! `IAMAT`: stamp the report, hand it to the store, and answer with its AT line once the store
//! has it (durably, with `durability = "flush"`) and has queued it for the linked servers.

use futures::FutureExt;

use super::{Answer, Context};
use crate::node::Node;
use crate::protocol::number::Timestamp;
use crate::protocol::request::IAmAt;
use crate::report::Report;

pub async fn execute(node: &Node, cx: &mut Context, request: IAmAt) -> Answer {
    let report = Report::stamp(request, node.name(), Timestamp::now());
    let mut answer = Vec::with_capacity(report.at_line().len() + 1);
    answer.extend_from_slice(report.at_line());
    answer.push(b'\n');
    match node.accept(report).await {
        Ok(pending) => {
            cx.last_write = Some(pending.ticket);
            Answer::Later(
                async move {
                    match pending.outcome().await {
                        // A report that is not newer is answered too; it changed nothing.
                        Ok(_) => Some(answer),
                        Err(e) => {
                            tracing::error!(error = %e, "report not stored; closing the connection unanswered");
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
