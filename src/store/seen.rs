//! The AT lines the writer stored last, so that a second copy of a report (flooding brings
//! most reports over more than one link) is known stale without reading the store, and a link
//! reader can drop one before it is parsed or queued for the writer.
//!
//! That is exactly what newest-wins would decide: a stored record is only ever replaced by a
//! report that beats it, and an identical report does not, so a line that was stored once can
//! never win again. The memory is direct-mapped and lossy: each slot holds the last line that
//! hashed to it, and a line not found there is decided as usual.
//!
//! The links keep a second such memory of the lines this node flooded
//! ([`Seen::first_sight`]), so that each line is flooded once, by whichever sees it first.

use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use bytes::Bytes;

/// Slots, a power of two.
const SLOTS: usize = 8 * 1024;

/// Recently stored AT lines (without their newline).
pub struct Seen {
    slots: Box<[Mutex<Bytes>]>,
    hasher: RandomState,
}

impl Default for Seen {
    fn default() -> Seen {
        Seen {
            slots: (0..SLOTS).map(|_| Mutex::new(Bytes::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Seen {
    fn slot(&self, line: &[u8]) -> std::sync::MutexGuard<'_, Bytes> {
        let i = self.hasher.hash_one(line) as usize & (SLOTS - 1);
        self.slots[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers `line`, the AT line of a report that was just stored.
    pub fn remember(&self, line: &Bytes) {
        *self.slot(line) = line.clone();
    }

    /// Forgets every line (the store was reopened: what it holds is read again).
    pub fn clear(&self) {
        for slot in self.slots.iter() {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Bytes::new();
        }
    }

    /// Whether `line` is the AT line of a report this node stored (and still remembers).
    pub fn holds(&self, line: &[u8]) -> bool {
        let held = self.slot(line);
        !held.is_empty() && held[..] == *line
    }

    /// Remembers `line` and says whether it was new: `false` when its slot already held it.
    /// One lock, so of two threads offering the same line at once exactly one hears `true`.
    pub fn first_sight(&self, line: &Bytes) -> bool {
        let mut held = self.slot(line);
        if !held.is_empty() && held[..] == line[..] {
            return false;
        }
        *held = line.clone();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sight_is_true_once_per_line_while_remembered() {
        let seen = Seen::default();
        let line = Bytes::from_static(b"AT A +0.100000000 kiwi +1+2 100");
        assert!(seen.first_sight(&line));
        assert!(!seen.first_sight(&line));
        assert!(seen.holds(&line));
        assert!(seen.first_sight(&Bytes::from_static(b"AT A +0.100000000 kiwi +1+2 101")));
    }

    #[test]
    fn holds_exactly_what_was_stored_while_its_slot_keeps_it() {
        let seen = Seen::default();
        let line = Bytes::from_static(b"AT A +0.100000000 kiwi +1+2 100");
        assert!(!seen.holds(&line));
        assert!(!seen.holds(b""), "an empty slot holds nothing");
        seen.remember(&line);
        assert!(seen.holds(b"AT A +0.100000000 kiwi +1+2 100"));
        assert!(!seen.holds(b"AT A +0.100000000 kiwi +1+2 101"));
        assert!(!seen.holds(b"AT A +0.100000000 kiwi +1+2 10"));
        // A slot keeps only its last line: the first is pushed out once another lands on its
        // slot (the slots are random per run; among a million lines one surely does).
        let pushed_out = (0..1_000_000).any(|i| {
            seen.remember(&Bytes::from(format!("AT B +0.100000000 x{i} +1+2 100")));
            !seen.holds(&line)
        });
        assert!(pushed_out);
        // Far more lines than slots: the newest is held, and never more than a slot each.
        let lines: Vec<Bytes> = (0..4 * SLOTS)
            .map(|i| Bytes::from(format!("AT A +0.100000000 c{i} +1+2 100")))
            .collect();
        for l in &lines {
            seen.remember(l);
        }
        assert!(seen.holds(&lines[4 * SLOTS - 1]));
        let held = lines.iter().filter(|l| seen.holds(l)).count();
        assert!(held <= SLOTS && held > SLOTS / 2, "{held}");
    }
}
