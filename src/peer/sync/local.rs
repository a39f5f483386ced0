//! Two stores in one process, reconciled by the real protocol with the wire cut out: every
//! line one side would send is handed to the other side's code as it would arrive. Used by the
//! scenario tests and the reconciliation benchmark, so both measure exactly what would cross
//! a link.

use std::collections::VecDeque;

use super::{Answerer, Job, Round, Violation};
use crate::protocol::request::{parse, PeerLine, Request, SyncKind};
use crate::report::Report;
use crate::store::Store;

/// What one round moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes of lines from the asker to the answerer, and back.
    pub asked_bytes: u64,
    pub answered_bytes: u64,
    /// Records (AT lines) sent each way.
    pub records_to_answerer: u64,
    pub records_to_asker: u64,
    /// Messages delivered either way (SYNC lines and batches of records).
    pub messages: u64,
}

impl Traffic {
    pub fn bytes(&self) -> u64 {
        self.asked_bytes + self.answered_bytes
    }
    pub fn records(&self) -> u64 {
        self.records_to_answerer + self.records_to_asker
    }
}

/// Something to do between two deliveries of a round (a write landing mid-round).
pub type Interleave<'a> = &'a mut dyn FnMut(u64) -> Vec<(bool, Report)>;

/// Runs round `id`, `asker` (named `asker_name` to the other) asking `answerer`, to its end.
/// `between` is called after every delivery with the number delivered so far; the reports it
/// returns are merged into the asker (`true`) or the answerer (`false`) right then.
pub async fn round(
    asker: (&Store, &str),
    answerer: (&Store, &str),
    id: u64,
    between: Interleave<'_>,
) -> Result<Traffic, Violation> {
    let (a, a_name) = asker;
    let (b, b_name) = answerer;
    let mut traffic = Traffic::default();
    let (mut r, first) = Round::start(a, id, None)?;
    let mut to_b: VecDeque<Job> = first.into();
    let mut to_a: VecDeque<Job> = VecDeque::new();
    // The answerer remembers the round, as a link's does: an honest round never repeats a range.
    let mut answerer = Answerer::default();
    while !(to_b.is_empty() && to_a.is_empty()) {
        if let Some(mut job) = to_b.pop_front() {
            let mut buf = Vec::new();
            let step = job.step(a, &mut buf)?;
            if !step.done {
                to_b.push_front(job);
            }
            traffic.asked_bytes += buf.len() as u64;
            traffic.records_to_answerer += step.sent;
            for line in lines(&buf) {
                match parse(&line) {
                    Request::At(report) => {
                        b.offer(report, Some(a_name)).await?;
                    }
                    Request::Peer(PeerLine::Sync {
                        kind,
                        round,
                        payload,
                    }) => {
                        applied(b).await?;
                        to_a.extend(answerer.answer(b, kind, round, &payload)?.0)
                    }
                    other => panic!("the asker sent {other:?}"),
                }
            }
        } else if let Some(mut job) = to_a.pop_front() {
            let mut buf = Vec::new();
            let step = job.step(b, &mut buf)?;
            if !step.done {
                to_a.push_front(job);
            }
            traffic.answered_bytes += buf.len() as u64;
            traffic.records_to_asker += step.sent;
            for line in lines(&buf) {
                match parse(&line) {
                    Request::At(report) => {
                        a.offer(report, Some(b_name)).await?;
                    }
                    Request::Peer(PeerLine::Sync {
                        kind: SyncKind::Answer,
                        round,
                        payload,
                    }) => {
                        applied(a).await?;
                        to_b.extend(r.on_answer(a, round, &payload)?)
                    }
                    other => panic!("the answerer sent {other:?}"),
                }
            }
        }
        traffic.messages += 1;
        for (to_asker, report) in between(traffic.messages) {
            let target = if to_asker { a } else { b };
            target.offer(report, None).await?;
            applied(target).await?;
        }
    }
    a.flush().await?;
    b.flush().await?;
    assert!(
        r.is_done(),
        "a round with nothing left to send has no open question"
    );
    Ok(traffic)
}

/// Waits until the writer has applied everything offered so far (a read through its queue),
/// as a link's reader has by the time the writer answers the message after them.
async fn applied(store: &Store) -> crate::error::Result<()> {
    store.get_in_order(bytes::Bytes::new()).await?.await?;
    Ok(())
}

fn lines(buf: &[u8]) -> Vec<bytes::Bytes> {
    buf.split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .map(bytes::Bytes::copy_from_slice)
        .collect()
}
