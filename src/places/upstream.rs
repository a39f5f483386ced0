//! The HTTP side both Google providers share: one reqwest client, the API key, a bound on
//! concurrent requests and a deadline on each.
//!
//! [`Upstream::send`] promises an outcome within `places.timeout_ms`, counted from the moment
//! the request asks for a slot, so a burst of queries against a slow upstream queues for at
//! most that long instead of forever. Its failures carry messages meant for a client's eyes:
//! reqwest's own errors quote the URL, and the legacy API's URL holds the key, so URLs are
//! stripped and every message is scrubbed of the key besides.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::{RequestBuilder, StatusCode};
use tokio::sync::Semaphore;

use super::document::Failure;

/// The environment variable holding the Google API key.
pub const API_KEY_ENV: &str = "GOOGLE_PLACES_API_KEY";

/// An upstream endpoint with its key. Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    client: reqwest::Client,
    url: Arc<str>,
    key: Arc<str>,
    slots: Arc<Semaphore>,
    timeout: Duration,
}

impl Upstream {
    pub fn new(
        url: &str,
        key: &str,
        timeout: Duration,
        max_concurrent: usize,
    ) -> Result<Upstream, String> {
        reqwest::Url::parse(url).map_err(|e| format!("google_url {url:?}: {e}"))?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("herd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", e.without_url()))?;
        Ok(Upstream {
            client,
            url: url.into(),
            key: key.into(),
            slots: Arc::new(Semaphore::new(max_concurrent)),
            timeout,
        })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Sends a request and reads the whole answer, within the deadline. Any HTTP status is an
    /// answer here; what it means is the provider's business.
    pub async fn send(&self, request: RequestBuilder) -> Result<(StatusCode, Bytes), Failure> {
        let exchange = async {
            // The semaphore is never closed, so acquiring fails only in theory.
            let _slot = self
                .slots
                .acquire()
                .await
                .map_err(|_| Failure::unknown("the upstream request slots are closed"))?;
            let response = request.send().await.map_err(describe)?;
            let status = response.status();
            let body = response.bytes().await.map_err(describe)?;
            Ok((status, body))
        };
        let outcome = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::unknown(format!(
                "the places upstream did not answer within {} ms",
                self.timeout.as_millis()
            ))),
        };
        let outcome = outcome.map_err(|failure| failure.redact(&self.key));
        match &outcome {
            Ok((status, body)) => {
                tracing::debug!(
                    status = status.as_u16(),
                    bytes = body.len(),
                    "places upstream answered"
                )
            }
            Err(failure) => tracing::warn!(error = %failure, "places upstream failed"),
        }
        outcome
    }
}

/// A reqwest error as a failure: its kind, then every cause, without the URL.
fn describe(error: reqwest::Error) -> Failure {
    let kind = if error.is_connect() {
        "cannot connect to the places upstream"
    } else if error.is_timeout() {
        "the places upstream timed out"
    } else if error.is_body() || error.is_decode() {
        "the places upstream's answer broke off"
    } else {
        "the places upstream request failed"
    };
    let error = error.without_url();
    let mut message = format!("{kind}: {error}");
    let mut cause = error.source();
    while let Some(inner) = cause {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    Failure::unknown(message)
}

/// Parses an upstream body as a JSON object, or says how it is not one.
pub fn parse_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, Failure> {
    match serde_json::from_slice(body) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(Failure::unknown(
            "malformed answer from the places upstream: not a JSON object",
        )),
        Err(e) => Err(Failure::unknown(format!(
            "malformed answer from the places upstream: {e}"
        ))),
    }
}
