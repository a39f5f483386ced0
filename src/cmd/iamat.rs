//! `IAMAT`: stamp the report, hand it to the store, and answer with its AT line once the store
//! has it (durably, with `durability = "flush"`) and has queued it for the linked servers. A
//! report the store refuses (its limits) or cannot write (a full disk, a failed write) is
//! answered `? ` with the line: never acknowledged, never left unanswered.

use bytes::Bytes;
use futures::FutureExt;

use super::{Answer, Context};
use crate::node::Node;
use crate::protocol::number::Timestamp;
use crate::protocol::request::{invalid_answer, IAmAt};
use crate::report::Report;
use crate::store::Merged;

pub async fn execute(node: &Node, cx: &mut Context, line: &Bytes, request: IAmAt) -> Answer {
    let arrived = std::time::Instant::now();
    let report = Report::stamp(request, node.name(), Timestamp::now());
    let mut answer = Vec::with_capacity(report.at_line().len() + 1);
    answer.extend_from_slice(report.at_line());
    answer.push(b'\n');
    let line = line.clone();
    let telemetry = node.telemetry().clone();
    match node.accept(report).await {
        Ok(pending) => {
            cx.last_write = Some(pending.ticket);
            Answer::Later(
                async move {
                    match pending.outcome().await {
                        // A report that is not newer is answered too; it changed nothing.
                        Ok(Merged::Stored | Merged::Stale) => {
                            telemetry.acknowledged(arrived.elapsed());
                            Some(answer)
                        }
                        Ok(Merged::Refused(why)) => {
                            tracing::debug!(reason = why.as_str(), "IAMAT refused by the store");
                            Some(invalid_answer(&line))
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "report not stored; answered as invalid");
                            Some(invalid_answer(&line))
                        }
                    }
                }
                .boxed(),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store a report; answered as invalid");
            Answer::Ready(invalid_answer(&line))
        }
    }
}
