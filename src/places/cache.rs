//! The answer cache in front of the Google providers.
//!
//! Keyed on the query's exact location (the bits of both floats) and radius (millimetres), and
//! not on the bound: a miss asks the provider for its maximum ([`MAX_RESULTS`]) and every later
//! request cuts that one answer to its own bound. Entries live `cache_ttl_secs` and the cache
//! holds at most `cache_capacity` of them and `cache_mib` of their bytes, whichever bites first
//! (moka evicts the least useful first): each entry weighs its JSON size in KiB, at least one.
//!
//! Concurrent misses for one key make a single upstream request: moka runs one caller's fetch
//! and the others wait for its outcome (and if that caller is cancelled, another one's fetch
//! runs instead). Failures are returned to everyone waiting on them but never stored, so the
//! next request for the key asks upstream again; the semaphore in [`super::upstream`] keeps
//! that from becoming a stampede.
//!
//! [`MAX_RESULTS`]: super::document::MAX_RESULTS

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::document::{Document, Failure};
use crate::protocol::location::Location;
use crate::protocol::number::Radius;

/// What a query is cached under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    latitude_bits: u64,
    longitude_bits: u64,
    radius_mm: u64,
}

impl Key {
    pub fn new(location: Location, radius: Radius) -> Key {
        // Adding zero turns -0.0 into 0.0, so `-0.0+0` and `+0+0` share an entry.
        Key {
            latitude_bits: (location.latitude + 0.0).to_bits(),
            longitude_bits: (location.longitude + 0.0).to_bits(),
            radius_mm: radius.millimetres,
        }
    }
}

/// An answer's weight: its size as JSON, in KiB, at least one.
fn weight(document: &Document) -> u32 {
    let bytes = serde_json::to_vec(document).map_or(0, |v| v.len());
    u32::try_from(bytes / 1024).unwrap_or(u32::MAX).max(1)
}

/// How the cache has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests answered without a fetch of their own: from a stored answer, or by waiting for
    /// a concurrent request's fetch.
    pub hits: u64,
    /// Requests that ran a fetch (successful or not).
    pub misses: u64,
}

/// Cached answers. Shared by all of a node's connections.
pub struct Cache {
    entries: moka::future::Cache<Key, Arc<Document>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Cache {
    pub fn new(capacity: u64, mib: u64, ttl: Duration) -> Cache {
        // Every entry weighs at least one unit, so a weight limit of `capacity` also bounds
        // their number.
        let limit = capacity.min(mib.saturating_mul(1024));
        Cache {
            entries: moka::future::Cache::builder()
                .weigher(|_, document: &Arc<Document>| weight(document))
                .max_capacity(limit)
                .time_to_live(ttl)
                .build(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The answer for `key`: the stored one, or the one `fetch` produces (stored if it is a
    /// success). `fetch` runs only if no answer is stored or being fetched.
    pub async fn get_or_fetch<F>(&self, key: Key, fetch: F) -> Result<Arc<Document>, Failure>
    where
        F: Future<Output = Result<Document, Failure>>,
    {
        let mut fetched = false;
        let answer = self
            .entries
            .try_get_with(key, async {
                fetched = true;
                fetch.await.map(Arc::new)
            })
            .await
            .map_err(|failure| (*failure).clone());
        let (hits, misses) = if fetched {
            (
                self.hits.load(Ordering::Relaxed),
                self.misses.fetch_add(1, Ordering::Relaxed) + 1,
            )
        } else {
            (
                self.hits.fetch_add(1, Ordering::Relaxed) + 1,
                self.misses.load(Ordering::Relaxed),
            )
        };
        tracing::debug!(hit = !fetched, hits, misses, "places cache");
        answer
    }

    /// Hit and miss counts since the cache was made.
    pub fn stats(&self) -> Stats {
        Stats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(latitude: f64, longitude: f64, millimetres: u64) -> Key {
        Key::new(
            Location {
                latitude,
                longitude,
            },
            Radius { millimetres },
        )
    }

    fn ok() -> Result<Document, Failure> {
        Ok(Document::new())
    }

    #[test]
    fn keys_are_exact_but_ignore_the_sign_of_zero() {
        assert_eq!(key(-0.0, 0.0, 5), key(0.0, -0.0, 5));
        let next_up = f64::from_bits(34.06893f64.to_bits() + 1);
        assert_ne!(key(34.06893, 1.0, 5), key(next_up, 1.0, 5));
        assert_ne!(key(34.06893, 1.0, 5), key(34.06893, 1.0, 6));
        assert_ne!(key(1.0, 2.0, 5), key(2.0, 1.0, 5));
    }

    #[tokio::test]
    async fn counts_hits_and_misses_and_never_stores_failures() {
        let cache = Cache::new(10, 1, Duration::from_secs(60));
        let k = key(1.0, 2.0, 3);
        let failed = cache
            .get_or_fetch(k, async { Err(Failure::unknown("down")) })
            .await;
        assert_eq!(failed.unwrap_err().message, "down");
        cache.get_or_fetch(k, async { ok() }).await.unwrap();
        cache
            .get_or_fetch(k, async { panic!("must not fetch: stored") })
            .await
            .unwrap();
        assert_eq!(cache.stats(), Stats { hits: 1, misses: 2 });
    }
}
