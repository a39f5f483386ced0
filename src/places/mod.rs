//! Where WHATSAT gets its places: one small provider interface, three providers (the offline
//! dataset, Google's legacy Nearby Search, Places API (New)), and one cache in front of them.
//!
//! [`Places::nearby`] never fails and never hangs: whatever a provider does (time out, refuse,
//! answer garbage), the caller gets a document in the protocol's shape, whose `status` and
//! `error_message` say what happened (see [`document`]). The Google API key comes from the
//! environment, is sent only to the configured endpoint, and never appears in a log, an error
//! or an answer.
//!
//! - [`offline`]: the shipped dataset, loaded in the background and indexed in memory.
//! - [`google`]: legacy Nearby Search, its document passed through.
//! - [`google_new`]: Places API (New), translated into the legacy shape.
//! - [`upstream`]: the HTTP client both Google providers share (timeout, concurrency bound,
//!   error redaction).
//! - [`cache`]: answers of the Google providers, shared across bounds, one upstream request
//!   per distinct query at a time.

pub mod cache;
pub mod document;
pub mod google;
pub mod google_new;
pub mod offline;
pub mod upstream;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::protocol::location::Location;
use crate::protocol::number::Radius;
use crate::telemetry::Telemetry;

use cache::{Cache, Key, Stats};
use document::{Document, Failure, MAX_RESULTS};
use google::Google;
use google_new::GoogleNew;
use offline::Offline;
use upstream::{Upstream, API_KEY_ENV};

/// `[places]` in the config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacesConfig {
    /// `"offline"`, `"google"` or `"google-new"`.
    pub provider: String,
    /// The Google endpoint, for either google provider.
    pub google_url: Option<String>,
    /// For the offline provider: a dataset file to use instead of the one compiled in (same
    /// columns as `data/places.tsv.gz`, gzip'd or not). Relative to the working directory.
    pub dataset: Option<PathBuf>,
    /// How long a Google answer is reused, in seconds.
    pub cache_ttl_secs: u64,
    /// How many distinct queries' answers the cache holds, at most.
    pub cache_capacity: u64,
    /// How many MiB of answers the cache holds, at most (whatever their number).
    pub cache_mib: u64,
    /// How long one upstream request may take, waiting for a free slot included, in
    /// milliseconds. Past it the client gets an `UNKNOWN_ERROR` answer.
    pub timeout_ms: u64,
    /// How many upstream requests a node makes at once.
    pub max_concurrent: usize,
}

impl Default for PlacesConfig {
    fn default() -> Self {
        PlacesConfig {
            provider: "offline".into(),
            google_url: None,
            dataset: None,
            cache_ttl_secs: 300,
            cache_capacity: 10_000,
            cache_mib: 32,
            timeout_ms: 5_000,
            max_concurrent: 8,
        }
    }
}

impl PlacesConfig {
    /// Checks what the config text alone can tell.
    pub fn validate(&self) -> Result<(), String> {
        match self.provider.as_str() {
            "offline" | "google" | "google-new" => {}
            other => return Err(format!("provider: unknown provider {other:?} (expected \"offline\", \"google\" or \"google-new\")")),
        }
        if self.dataset.is_some() && self.provider != "offline" {
            return Err("dataset: only the offline provider reads a dataset".into());
        }
        if self.cache_mib == 0 {
            return Err("cache_mib: must be at least 1".into());
        }
        if self.cache_ttl_secs == 0 {
            return Err("cache_ttl_secs: must be at least 1".into());
        }
        if self.timeout_ms == 0 {
            return Err("timeout_ms: must be at least 1".into());
        }
        if self.max_concurrent == 0 {
            return Err("max_concurrent: must be at least 1".into());
        }
        Ok(())
    }
}

/// The provider a node asks.
enum Provider {
    Offline(Offline),
    Google(Google, Cache),
    GoogleNew(GoogleNew, Cache),
}

/// The places service of one node: provider plus cache. Cheap to clone.
#[derive(Clone)]
pub struct Places {
    provider: Arc<Provider>,
    /// Told of every cache hit or miss and every upstream request's time.
    telemetry: Option<Telemetry>,
}

impl Places {
    /// Builds the configured provider. Slow loading happens in the background. A google
    /// provider takes its key from the environment variable `GOOGLE_PLACES_API_KEY`.
    pub fn new(config: &PlacesConfig) -> Result<Places> {
        let key = match config.provider.as_str() {
            "offline" => None,
            _ => std::env::var(API_KEY_ENV).ok(),
        };
        Places::with_api_key(config, key)
    }

    /// [`Places::new`] with the API key given rather than read from the environment (`None`
    /// or empty: no key, an error for a google provider).
    pub fn with_api_key(config: &PlacesConfig, key: Option<String>) -> Result<Places> {
        config
            .validate()
            .map_err(|why| Error::config("places", why))?;
        let provider = match config.provider.as_str() {
            "offline" => {
                let source = match &config.dataset {
                    Some(path) => {
                        // Fail now, with the path, rather than on the first WHATSAT.
                        std::fs::metadata(path).map_err(|e| {
                            Error::config("places.dataset", format!("{}: {e}", path.display()))
                        })?;
                        offline::Source::File(path.clone())
                    }
                    None => offline::Source::Embedded,
                };
                Provider::Offline(Offline::start(source))
            }
            provider => {
                let key = key.filter(|k| !k.trim().is_empty()).ok_or_else(|| {
                    Error::config(
                        API_KEY_ENV,
                        format!(
                            "not set; places.provider {provider:?} needs a Google Places API key \
                             in this environment variable"
                        ),
                    )
                })?;
                let default_url = match provider {
                    "google" => google::DEFAULT_URL,
                    _ => google_new::DEFAULT_URL,
                };
                let url = config.google_url.as_deref().unwrap_or(default_url);
                let upstream = Upstream::new(
                    url,
                    key.trim(),
                    Duration::from_millis(config.timeout_ms),
                    config.max_concurrent,
                )
                .map_err(|why| Error::config("places.google_url", why))?;
                let cache = Cache::new(
                    config.cache_capacity,
                    config.cache_mib,
                    Duration::from_secs(config.cache_ttl_secs),
                );
                match provider {
                    "google" => Provider::Google(Google::new(upstream), cache),
                    _ => Provider::GoogleNew(GoogleNew::new(upstream), cache),
                }
            }
        };
        Ok(Places {
            provider: Arc::new(provider),
            telemetry: None,
        })
    }

    /// Reports cache hits and misses and upstream times to `telemetry`.
    pub fn observed_by(mut self, telemetry: Telemetry) -> Places {
        self.telemetry = Some(telemetry);
        self
    }

    /// The places document for a WHATSAT: a JSON object in Google's Nearby Search shape with
    /// at most `bound` results, without trailing newline and without blank lines. Never fails:
    /// provider errors become a document whose `status` says what happened.
    pub async fn nearby(&self, location: Location, radius: Radius, bound: usize) -> String {
        match self.fetch(location, radius).await {
            Ok(found) => document::render(&found, bound.min(MAX_RESULTS)),
            Err(failure) => document::render(&failure.to_document(), bound),
        }
    }

    async fn fetch(&self, location: Location, radius: Radius) -> Result<Arc<Document>, Failure> {
        let key = Key::new(location, radius);
        match &*self.provider {
            // Answered from memory in microseconds: caching would only spend memory.
            Provider::Offline(offline) => {
                offline.fetch(location, radius.metres()).await.map(Arc::new)
            }
            Provider::Google(google, cache) => {
                self.cached(cache, key, google.fetch(location, radius))
                    .await
            }
            Provider::GoogleNew(google, cache) => {
                self.cached(cache, key, google.fetch(location, radius))
                    .await
            }
        }
    }

    /// Asks the cache, timing the upstream request when the cache runs it.
    async fn cached(
        &self,
        cache: &Cache,
        key: Key,
        fetch: impl std::future::Future<Output = Result<Document, Failure>>,
    ) -> Result<Arc<Document>, Failure> {
        let mut fetched = false;
        let telemetry = self.telemetry.as_ref();
        let timed = async {
            fetched = true;
            let began = std::time::Instant::now();
            let result = fetch.await;
            if let Some(t) = telemetry {
                t.places_upstream(began.elapsed());
            }
            result
        };
        let answer = cache.get_or_fetch(key, timed).await;
        if let Some(t) = telemetry {
            t.places_cache(!fetched);
        }
        answer
    }

    /// The cache's hit and miss counts; `None` for the offline provider, which has no cache.
    pub fn cache_stats(&self) -> Option<Stats> {
        match &*self.provider {
            Provider::Offline(_) => None,
            Provider::Google(_, cache) | Provider::GoogleNew(_, cache) => Some(cache.stats()),
        }
    }

    /// The loaded offline dataset, waiting for the load if needed; `None` for other providers.
    pub async fn offline_dataset(&self) -> Option<Result<Arc<offline::Dataset>, Failure>> {
        match &*self.provider {
            Provider::Offline(offline) => Some(offline.dataset().await),
            _ => None,
        }
    }
}
