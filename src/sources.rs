//! Connections counted per source address, so that one address cannot take every connection
//! slot of a node (`[limits] max_connections_per_source`).
//!
//! Promise: at most `limit` [`SourceSlot`]s exist at once for one IP address (an IPv4-mapped
//! IPv6 address counts as its IPv4 address); a slot frees itself when dropped, and an address
//! with no open connection costs no memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections per source address.
#[derive(Clone)]
pub struct Sources {
    limit: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One open connection from one address; dropping it frees the slot.
pub struct SourceSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Sources {
    /// At most `limit` connections per address.
    pub fn new(limit: usize) -> Sources {
        Sources {
            limit,
            open: Arc::default(),
        }
    }

    /// The most connections one address may hold.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A slot for a connection from `ip`, or `None` if that address already holds the limit.
    pub fn try_acquire(&self, ip: IpAddr) -> Option<SourceSlot> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            ip,
            open: Arc::clone(&self.open),
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_is_capped_and_others_are_not() {
        let sources = Sources::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = sources.try_acquire(a).unwrap();
        let _second = sources.try_acquire(mapped).unwrap();
        assert!(
            sources.try_acquire(a).is_none(),
            "the third from one address"
        );
        assert!(
            sources.try_acquire(b).is_some(),
            "another address is unaffected"
        );
        drop(first);
        let _again = sources.try_acquire(a).expect("a freed slot is reusable");
        assert!(sources.try_acquire(a).is_none());
    }

    #[test]
    fn addresses_with_no_connection_cost_nothing() {
        let sources = Sources::new(1);
        for i in 0..100u8 {
            drop(sources.try_acquire(IpAddr::from([10, 0, 1, i])).unwrap());
        }
        assert!(sources.open.lock().unwrap().is_empty());
    }
}
