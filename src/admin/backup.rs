//! `GET /backup`: a running node's records as a records file (see [`crate::backup`]),
//! streamed while the node keeps serving.
//!
//! The records are read a page at a time in key order, each page from the store as it is
//! when read; nothing is held between pages, and the pages are read on the blocking pool, so
//! the writer, the clients and the peers never wait for a backup. Because a record only ever
//! changes to a newer report (newest wins) and only retention expiry deletes one, every
//! report acknowledged before the backup began is in it, as that report or a newer one,
//! unless retention expired it meanwhile. Reports that arrive during the backup may or may
//! not be in it.
//!
//! One backup runs at a time (a second is answered 503). A reader that takes no data for
//! [`STALL`] is dropped, and so is the backup when the node stops: the body then ends without
//! its trailer, which is how `herd backup` and `herd restore` know it is incomplete.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use tokio::sync::Semaphore;

use super::{answer, Answer, TEXT};
use crate::backup::{Encoder, Header};
use crate::node::Node;
use crate::store::Store;

/// Records read per page.
const PAGE: usize = 512;
/// The longest a reader may leave a part of the backup unread.
pub const STALL: Duration = Duration::from_secs(30);

/// Marks an answer that streams for as long as it takes: the connection's time limit does
/// not apply to it (its own [`STALL`] does).
#[derive(Debug, Clone, Copy)]
pub struct Streaming;

/// Answers `GET /backup` (headers only for `HEAD`), if no other backup is running.
pub fn start(node: &Node, running: &Arc<Semaphore>, head: bool) -> Answer {
    let Ok(permit) = Arc::clone(running).try_acquire_owned() else {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "a backup is already running; try again when it is done\n",
        );
    };
    let (tx, rx) = futures::channel::mpsc::channel(2);
    let mut response = Response::new(StreamBody::new(rx).boxed());
    if !head {
        let store = node.store();
        let name = node.name().to_owned();
        tokio::spawn(async move {
            let _permit = permit;
            stream(store, &name, tx).await;
        });
    }
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.extensions_mut().insert(Streaming);
    response
}

type Sender = futures::channel::mpsc::Sender<std::io::Result<Frame<Bytes>>>;

/// Reads the store a page at a time and sends the backup to `tx`; on a failure, sends an
/// error (the body then ends without its trailer).
async fn stream(store: Store, name: &str, mut tx: Sender) {
    let mut buf = Vec::new();
    let mut encoder = Encoder::new(&Header::new("backup", name), &mut buf);
    let mut resume: Option<Vec<u8>> = None;
    tracing::info!("backup started");
    loop {
        let page = {
            let store = store.clone();
            let from = resume.take();
            tokio::task::spawn_blocking(move || store.records_page(from.as_deref(), PAGE)).await
        };
        let (records, next) = match page {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => return fail(&mut tx, e.to_string()).await,
            Err(e) => return fail(&mut tx, e.to_string()).await,
        };
        for stored in &records {
            encoder.record(stored, &mut buf);
        }
        let Some(next) = next else { break };
        if !send(&mut tx, &mut buf, encoder.records()).await {
            return;
        }
        resume = Some(next);
    }
    let count = encoder.records();
    encoder.finish(&mut buf);
    if send(&mut tx, &mut buf, count).await {
        tracing::info!(records = count, "backup done");
    }
}

/// Sends what `buf` holds; `false` when the reader is gone or stalled.
async fn send(tx: &mut Sender, buf: &mut Vec<u8>, count: u64) -> bool {
    let chunk = Frame::data(Bytes::from(std::mem::take(buf)));
    match tokio::time::timeout(STALL, tx.send(Ok(chunk))).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => {
            tracing::warn!(records = count, "backup abandoned by its reader");
            false
        }
        Err(_) => {
            tracing::warn!(
                records = count,
                stall_secs = STALL.as_secs(),
                "backup dropped: its reader stalled"
            );
            false
        }
    }
}

async fn fail(tx: &mut Sender, why: String) {
    tracing::error!(error = %why, "backup failed: cannot read the store");
    let _ = tx.send(Err(std::io::Error::other(why))).await;
}
