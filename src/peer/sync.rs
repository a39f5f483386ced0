//! Anti-entropy: how two linked servers reconcile their stores.
//!
//! Every store keeps a change log with one entry per client, ordered by a sequence number that
//! only grows (see [`store`](crate::store)), and remembers for each peer a *cursor*: that peer's
//! store epoch and the last of its sequence numbers applied here. Whenever a link comes up, and
//! every `sync_interval_secs` while it stays up, each side asks the other
//!
//! ```text
//! SYNC PULL <epoch-hex> <seq>        send me every record you changed after <seq>
//! ```
//!
//! and the other answers with those records as ordinary AT lines, oldest change first, in
//! batches interleaved with live floods, then
//!
//! ```text
//! SYNC DONE <epoch-hex> <seq>        that was everything up to <seq>
//! ```
//!
//! after which the puller stores `(epoch, seq)` as its new cursor. Received records go
//! through the same merge as every other report, and those that win are flooded onward, so
//! servers several hops away converge too.
//!
//! If the epoch in the PULL is not the responder's (first contact, or its store was lost and
//! recreated), the responder sends everything: the full fallback. Otherwise the cost is the
//! records changed since the last sync plus about 60 bytes of PULL and DONE, whatever the size
//! of the stores.

use crate::error::Result;
use crate::herd::peer_already_has;
use crate::store::Store;

/// Records sent per step, between which live floods and reads proceed.
pub const BATCH: usize = 256;

/// The PULL line a puller running as `incarnation` sends for its cursor.
pub fn pull_line(cursor: Option<(u128, u64)>, incarnation: u64) -> String {
    let (epoch, seq) = cursor.unwrap_or((0, 0));
    format!("SYNC PULL {epoch:x} {seq} {incarnation:x}\n")
}

/// A PULL being answered.
#[derive(Debug)]
pub struct Serve {
    epoch: u128,
    after: u64,
    /// The puller, and the incarnation it is running as.
    peer: String,
    incarnation: u64,
    /// Records sent so far.
    pub sent: u64,
    /// Records left out because the puller's own process sent them here.
    pub skipped: u64,
    /// Whether the puller's cursor matched this store (an incremental sync).
    pub incremental: bool,
}

impl Serve {
    /// Starts answering `peer`'s PULL for `(asked_epoch, asked_seq)` from the store of `epoch`.
    pub fn start(epoch: u128, peer: &str, asked: (u128, u64), incarnation: u64) -> Serve {
        let incremental = asked.0 == epoch;
        Serve {
            epoch,
            after: if incremental { asked.1 } else { 0 },
            peer: peer.to_owned(),
            incarnation,
            sent: 0,
            skipped: 0,
            incremental,
        }
    }

    /// Appends the next batch of lines to `out`; returns `true` once the DONE line is in.
    pub fn step(&mut self, store: &Store, out: &mut Vec<u8>) -> Result<bool> {
        let batch = store.changes_after(self.after, BATCH)?;
        for stored in &batch {
            self.after = stored.seq;
            if peer_already_has(stored.origin(), &self.peer, self.incarnation) {
                self.skipped += 1;
                continue;
            }
            out.extend_from_slice(&stored.report.at_line());
            out.push(b'\n');
            self.sent += 1;
        }
        if batch.len() < BATCH {
            let done = format!("SYNC DONE {:x} {}\n", self.epoch, self.after);
            out.extend_from_slice(done.as_bytes());
            return Ok(true);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::{parse, Request};
    use bytes::Bytes;

    fn merge(store: &Store, line: &str) {
        store
            .merge(&crate::report::Report::from_line(line), None)
            .unwrap();
    }

    fn serve_all(store: &Store, asked: (u128, u64)) -> (String, Serve) {
        let mut s = Serve::start(store.epoch(), "B", asked, 7);
        let mut out = Vec::new();
        while !s.step(store, &mut out).unwrap() {}
        (String::from_utf8(out).unwrap(), s)
    }

    #[test]
    fn an_unknown_epoch_gets_everything_and_a_cursor_gets_only_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        for i in 0..300 {
            merge(&store, &format!("AT A +0.000000000 c{i} +1+2 1"));
        }
        let (text, s) = serve_all(&store, (0, 0));
        assert_eq!(s.sent, 300);
        assert!(!s.incremental);
        let done = text.lines().last().unwrap().to_owned();
        let Request::Peer(crate::protocol::request::PeerLine::Done { epoch, seq }) =
            parse(&Bytes::copy_from_slice(done.as_bytes()))
        else {
            panic!("{done}")
        };
        assert_eq!(epoch, store.epoch());

        merge(&store, "AT A +0.000000000 c7 +1+2 2");
        merge(&store, "AT A +0.000000000 new +1+2 2");
        let (text, s) = serve_all(&store, (epoch, seq));
        assert!(s.incremental);
        assert_eq!(s.sent, 2);
        assert!(text
            .starts_with("AT A +0.000000000 c7 +1+2 2\nAT A +0.000000000 new +1+2 2\nSYNC DONE "));

        let (_, s) = serve_all(&store, (epoch.wrapping_add(1), seq));
        assert_eq!(
            s.sent, 301,
            "another epoch means the store lost its history: send all"
        );
    }

    #[test]
    fn records_the_pulling_process_sent_are_not_echoed_back_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let Request::At(r) = parse(&Bytes::from_static(b"AT B +0.000000000 fromb +1+2 1")) else {
            panic!()
        };
        let b7 = crate::herd::Origin {
            peer: "B",
            incarnation: 7,
        };
        store.merge(&r, Some(b7)).unwrap();
        merge(&store, "AT A +0.000000000 local +1+2 1");
        // The same process of B already has its own report.
        let (text, s) = serve_all(&store, (store.epoch(), 0));
        assert_eq!((s.sent, s.skipped), (1, 1));
        assert!(text.starts_with("AT A +0.000000000 local"), "{text}");
        // B restarted (another incarnation): it may have lost it, so it gets it again.
        let mut again = Serve::start(store.epoch(), "B", (store.epoch(), 0), 8);
        let mut out = Vec::new();
        while !again.step(&store, &mut out).unwrap() {}
        assert_eq!((again.sent, again.skipped), (2, 0));
        // Another peer gets everything.
        let mut other = Serve::start(store.epoch(), "C", (store.epoch(), 0), 7);
        while !other.step(&store, &mut out).unwrap() {}
        assert_eq!(other.sent, 2);
    }

    #[test]
    fn pull_lines_name_the_cursor() {
        assert_eq!(pull_line(None, 1), "SYNC PULL 0 0 1\n");
        assert_eq!(pull_line(Some((255, 7)), 255), "SYNC PULL ff 7 ff\n");
    }
}
