//! Who holds the admin endpoint's connection slots, and whom to close when a new connection
//! arrives and there is no room: the policy that keeps `/healthz` answerable whatever slow or
//! idle connections are open.
//!
//! A new connection is always let in. When every slot is taken ([`MAX_CONNECTIONS`]), or its
//! source address already holds its share ([`MAX_PER_SOURCE`]), one connection is closed to make
//! room: the oldest one (of that address, when it is the address that is over its share) that
//! has not finished sending its request head; only if every candidate has finished its head
//! (and is being answered, which takes microseconds) the oldest of them. So connections that
//! hold a head open can only push each other out: a probe, which sends its head at once, is
//! answered before a flood of them reaches it, and an address flooding the endpoint displaces
//! its own connections, not another address's.
//!
//! Sans-IO: [`Slots::admit`] says whom to close; the caller closes it.
//!
//! [`MAX_CONNECTIONS`]: super::MAX_CONNECTIONS
//! [`MAX_PER_SOURCE`]: super::MAX_PER_SOURCE

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::telemetry::AdminDrop;

/// The open admin connections, oldest first.
pub struct Slots {
    limit: usize,
    per_source: usize,
    next: u64,
    open: BTreeMap<u64, Entry>,
}

struct Entry {
    ip: IpAddr,
    head_done: Arc<AtomicBool>,
    close: CancellationToken,
}

/// A connection let in.
pub struct Admitted {
    /// Its place in the arrival order (what [`Slots::leave`] takes).
    pub id: u64,
    /// Set once its request head has arrived.
    pub head_done: Arc<AtomicBool>,
    /// Cancelled when it is closed to make room.
    pub close: CancellationToken,
    /// The connection closed to make room for it, if one was: its address and why.
    pub evicted: Option<(IpAddr, AdminDrop)>,
}

impl Slots {
    /// At most `limit` connections, `per_source` of them from one address.
    pub fn new(limit: usize, per_source: usize) -> Slots {
        assert!(limit >= 1 && per_source >= 1);
        Slots {
            limit,
            per_source: per_source.min(limit),
            next: 0,
            open: BTreeMap::new(),
        }
    }

    /// Lets in a connection from `ip`, closing another if there is no room for it.
    pub fn admit(&mut self, ip: IpAddr) -> Admitted {
        let ip = ip.to_canonical();
        let from_ip = self.open.values().filter(|e| e.ip == ip).count();
        let victim = if from_ip >= self.per_source {
            self.oldest(|e| e.ip == ip)
                .map(|id| (id, AdminDrop::PerSource))
        } else if self.open.len() >= self.limit {
            self.oldest(|_| true).map(|id| (id, AdminDrop::Full))
        } else {
            None
        };
        let evicted = victim.map(|(id, why)| {
            let entry = self.open.remove(&id).expect("a victim is open");
            entry.close.cancel();
            (entry.ip, why)
        });
        let id = self.next;
        self.next += 1;
        let head_done = Arc::new(AtomicBool::new(false));
        let close = CancellationToken::new();
        self.open.insert(
            id,
            Entry {
                ip,
                head_done: Arc::clone(&head_done),
                close: close.clone(),
            },
        );
        debug_assert!(self.open.len() <= self.limit);
        Admitted {
            id,
            head_done,
            close,
            evicted,
        }
    }

    /// Connection `id` has ended (a no-op if it was closed to make room).
    pub fn leave(&mut self, id: u64) {
        self.open.remove(&id);
    }

    /// How many connections are open.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.len()
    }

    /// The oldest connection `pick` accepts that is still sending its head, else the oldest
    /// it accepts.
    fn oldest(&self, pick: impl Fn(&Entry) -> bool) -> Option<u64> {
        let mut answering = None;
        for (&id, entry) in &self.open {
            if !pick(entry) {
                continue;
            }
            if !entry.head_done.load(Ordering::Acquire) {
                return Some(id);
            }
            answering.get_or_insert(id);
        }
        answering
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn head_holders_make_room_oldest_first_and_never_the_answered() {
        let mut slots = Slots::new(4, 4);
        let a = ip("10.0.0.1");
        let answered = slots.admit(a);
        answered.head_done.store(true, Ordering::Release);
        let stalled: Vec<Admitted> = (0..3).map(|_| slots.admit(a)).collect();
        assert!(stalled.iter().all(|s| s.evicted.is_none()));
        // Full: every newcomer gets in, and the oldest stalled head makes room, not the
        // older connection being answered.
        for (i, victim) in stalled.iter().enumerate() {
            let probe = slots.admit(ip("10.0.0.2"));
            assert_eq!(probe.evicted, Some((a, AdminDrop::Full)), "{i}");
            assert!(victim.close.is_cancelled());
            probe.head_done.store(true, Ordering::Release);
        }
        assert!(!answered.close.is_cancelled());
        assert_eq!(slots.len(), 4);
        // Everyone is being answered: the oldest goes.
        let last = slots.admit(a);
        assert_eq!(last.evicted, Some((a, AdminDrop::Full)));
        assert!(answered.close.is_cancelled());
        slots.leave(answered.id);
        assert_eq!(slots.len(), 4);
    }

    #[test]
    fn an_address_over_its_share_displaces_its_own() {
        let mut slots = Slots::new(8, 2);
        let (a, b) = (ip("10.0.0.1"), ip("::ffff:10.0.0.2"));
        let other = slots.admit(b);
        let first = slots.admit(a);
        let second = slots.admit(a);
        let third = slots.admit(a);
        assert_eq!(third.evicted, Some((a, AdminDrop::PerSource)));
        assert!(first.close.is_cancelled() && !second.close.is_cancelled());
        assert!(!other.close.is_cancelled());
        // A departed connection frees its slot.
        slots.leave(second.id);
        assert!(slots.admit(a).evicted.is_none());
        assert_eq!(slots.len(), 3);
    }
}
