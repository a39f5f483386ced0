//! Fingerprints of ranges of the client-hash space: what anti-entropy compares.
//!
//! Every record has a key hash (where it sorts) and an item hash (what it is; see the
//! `herd-migrations` crate). A [`Node`] is a range of key hashes: those whose top `depth` bits
//! equal `index`. Its [`Fingerprint`] is the number of records in it and the wrapping sum of
//! their item hashes, so it can be updated in O(1) when one record replaces another, and two
//! stores hold the same records in a range exactly when (but for a 2⁻⁶⁴ accident) their
//! fingerprints of it are equal.
//!
//! [`Leaves`] keeps, in memory, the fingerprints of the 65,536 nodes of depth 16 (*buckets*);
//! a node of depth 16 or less is the sum of a run of buckets. Deeper nodes are computed by
//! scanning their (small) key range. The leaves are built at start by one scan of the store,
//! bucket by bucket, on the writer thread, while the node already serves: a merge into a
//! bucket the build has not reached yet changes nothing here, because the build will read it.
//!
//! Invariant (checked in debug builds when the build completes, and by the tests): once
//! [`Leaves::ready`], every bucket's fingerprint equals the fingerprint of its records.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Depth (in bits) of the buckets kept in memory.
pub const BUCKET_DEPTH: u8 = 16;
/// How many buckets there are.
pub const BUCKETS: usize = 1 << BUCKET_DEPTH;
/// The deepest node anti-entropy may name: far below one record per node in any real store.
pub const MAX_DEPTH: u8 = 48;
/// How many bits deeper each child is than its parent (four children).
pub const FANOUT_BITS: u8 = 2;

/// The number of records in a range and the wrapping sum of their item hashes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint {
    pub count: u64,
    pub sum: u64,
}

impl Fingerprint {
    pub fn add(&mut self, item: u64) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(item);
    }

    /// Sixteen bits of the sum, chosen by `window` (0 to 3), as sent for nodes below the root.
    /// Rounds use different windows, so a collision in one round is not one in the next.
    pub fn short(&self, window: u8) -> [u8; 2] {
        ((self.sum >> (16 * u32::from(window % 4))) as u16).to_be_bytes()
    }
}

/// A range of the key-hash space: the hashes whose top `depth` bits are `index`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Node {
    pub depth: u8,
    pub index: u64,
}

impl Node {
    /// The whole space.
    pub const ROOT: Node = Node { depth: 0, index: 0 };

    /// Whether this is a node anti-entropy may name: an even depth no deeper than
    /// [`MAX_DEPTH`], and an index that fits it.
    pub fn is_valid(self) -> bool {
        self.depth <= MAX_DEPTH
            && self.depth.is_multiple_of(FANOUT_BITS)
            && (self.depth == 64 || self.index >> self.depth == 0)
    }

    /// The four nodes that split this one, in key order; `None` at [`MAX_DEPTH`].
    pub fn children(self) -> Option<[Node; 4]> {
        if self.depth + FANOUT_BITS > MAX_DEPTH {
            return None;
        }
        let depth = self.depth + FANOUT_BITS;
        Some(std::array::from_fn(|i| Node {
            depth,
            index: (self.index << FANOUT_BITS) | i as u64,
        }))
    }

    /// The key hashes it covers: `lo..hi`, with `None` for "to the end".
    pub fn range(self) -> (u64, Option<u64>) {
        if self.depth == 0 {
            return (0, None);
        }
        let width = 64 - u32::from(self.depth);
        let lo = self.index << width;
        (lo, lo.checked_add(1u64 << width))
    }

    /// The buckets it covers, if it is no deeper than a bucket.
    pub fn buckets(self) -> Option<std::ops::Range<usize>> {
        if self.depth > BUCKET_DEPTH {
            return None;
        }
        let shift = BUCKET_DEPTH - self.depth;
        let first = (self.index as usize) << shift;
        Some(first..first + (1usize << shift))
    }

    pub fn contains(self, key_hash: u64) -> bool {
        let (lo, hi) = self.range();
        key_hash >= lo && hi.is_none_or(|hi| key_hash < hi)
    }
}

/// The bucket a key hash falls in.
pub fn bucket_of(key_hash: u64) -> usize {
    (key_hash >> (64 - BUCKET_DEPTH)) as usize
}

/// The fingerprints of every bucket, shared between the writer thread (which alone changes
/// them) and anti-entropy (which reads them).
pub struct Leaves {
    counts: Box<[AtomicU32]>,
    sums: Box<[AtomicU64]>,
    /// Buckets below this have been built; merges into them must update them.
    built: AtomicUsize,
    ready: AtomicBool,
    total: AtomicU64,
}

impl Default for Leaves {
    fn default() -> Self {
        Leaves::new()
    }
}

impl Leaves {
    pub fn new() -> Leaves {
        Leaves {
            counts: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            sums: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            built: AtomicUsize::new(0),
            ready: AtomicBool::new(false),
            total: AtomicU64::new(0),
        }
    }

    /// Whether every bucket has been built.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The number of records, once ready.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The first bucket not built yet (`BUCKETS` when ready).
    pub fn built(&self) -> usize {
        self.built.load(Ordering::Acquire)
    }

    /// Sets a freshly built bucket (writer thread only, in bucket order).
    pub fn set_built(&self, bucket: usize, fp: Fingerprint) {
        debug_assert_eq!(bucket, self.built(), "buckets are built in order");
        self.counts[bucket].store(fp.count as u32, Ordering::Relaxed);
        self.sums[bucket].store(fp.sum, Ordering::Relaxed);
        self.total.fetch_add(fp.count, Ordering::Relaxed);
        self.built.store(bucket + 1, Ordering::Release);
        if bucket + 1 == BUCKETS {
            self.ready.store(true, Ordering::Release);
        }
    }

    /// Records that the record under `key_hash` went from `old` (its item hash, if there was
    /// one) to `new` (writer thread only). A bucket not built yet is left to the build.
    pub fn replace(&self, key_hash: u64, old: Option<u64>, new: u64) {
        let b = bucket_of(key_hash);
        if b >= self.built() {
            return;
        }
        let sum = &self.sums[b];
        let old_item = old.unwrap_or(0);
        sum.store(
            sum.load(Ordering::Relaxed)
                .wrapping_sub(old_item)
                .wrapping_add(new),
            Ordering::Relaxed,
        );
        if old.is_none() {
            self.counts[b].fetch_add(1, Ordering::Relaxed);
            self.total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records that the record under `key_hash`, whose item hash was `item`, was removed
    /// (writer thread only). A bucket not built yet is left to the build.
    pub fn remove(&self, key_hash: u64, item: u64) {
        let b = bucket_of(key_hash);
        if b >= self.built() {
            return;
        }
        let sum = &self.sums[b];
        sum.store(
            sum.load(Ordering::Relaxed).wrapping_sub(item),
            Ordering::Relaxed,
        );
        self.counts[b].fetch_sub(1, Ordering::Relaxed);
        self.total.fetch_sub(1, Ordering::Relaxed);
    }

    /// Forgets every bucket, to be built again (writer thread only): the store was reopened.
    pub fn reset(&self) {
        self.ready.store(false, Ordering::Release);
        self.built.store(0, Ordering::Release);
        for b in 0..BUCKETS {
            self.counts[b].store(0, Ordering::Relaxed);
            self.sums[b].store(0, Ordering::Relaxed);
        }
        self.total.store(0, Ordering::Relaxed);
    }

    /// The fingerprint of a node no deeper than a bucket.
    pub fn fingerprint(&self, node: Node) -> Option<Fingerprint> {
        let buckets = node.buckets()?;
        let mut fp = Fingerprint::default();
        for b in buckets {
            fp.count += u64::from(self.counts[b].load(Ordering::Relaxed));
            fp.sum = fp.sum.wrapping_add(self.sums[b].load(Ordering::Relaxed));
        }
        Some(fp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_partition_their_parent() {
        let mut node = Node::ROOT;
        for _ in 0..10 {
            let (lo, hi) = node.range();
            let kids = node.children().unwrap();
            assert_eq!(kids[0].range().0, lo);
            assert_eq!(kids[3].range().1, hi);
            for w in kids.windows(2) {
                assert_eq!(w[0].range().1, Some(w[1].range().0));
            }
            assert!(kids.iter().all(|k| k.is_valid()));
            node = kids[2];
        }
        assert!(!Node { depth: 2, index: 4 }.is_valid());
        assert!(!Node { depth: 3, index: 0 }.is_valid());
        assert!(!Node {
            depth: MAX_DEPTH + 2,
            index: 0
        }
        .is_valid());
        let deepest = Node {
            depth: MAX_DEPTH,
            index: 0,
        };
        assert!(deepest.is_valid() && deepest.children().is_none());
    }

    #[test]
    fn bucket_runs_match_ranges() {
        let node = Node { depth: 4, index: 9 };
        let buckets = node.buckets().unwrap();
        assert_eq!(buckets.len(), BUCKETS / 16);
        let (lo, _) = node.range();
        assert_eq!(bucket_of(lo), buckets.start);
        assert!(node.contains(lo) && !node.contains(lo.wrapping_sub(1)));
        assert_eq!(Node::ROOT.buckets(), Some(0..BUCKETS));
        assert_eq!(
            Node {
                depth: 18,
                index: 0
            }
            .buckets(),
            None
        );
    }

    #[test]
    fn leaves_follow_replacements_only_where_built() {
        let leaves = Leaves::new();
        let kh_first = 5u64; // bucket 0
        let kh_last = u64::MAX; // last bucket
        leaves.set_built(0, Fingerprint::default());
        leaves.replace(kh_first, None, 10);
        leaves.replace(kh_first, Some(10), 30);
        leaves.replace(kh_last, None, 99); // not built: ignored
        assert_eq!(
            leaves.fingerprint(Node {
                depth: 16,
                index: 0
            }),
            Some(Fingerprint { count: 1, sum: 30 })
        );
        assert!(!leaves.ready());
        for b in 1..BUCKETS {
            leaves.set_built(b, Fingerprint::default());
        }
        assert!(leaves.ready());
        assert_eq!(leaves.total(), 1);
        assert_eq!(
            leaves.fingerprint(Node::ROOT),
            Some(Fingerprint { count: 1, sum: 30 })
        );
    }
}
