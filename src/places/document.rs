//! The places document: the JSON object a WHATSAT answer carries, in the shape of Google's
//! legacy Nearby Search (`html_attributions`, `results`, `status`, and whatever else the
//! provider returned), and the failure that stands in for it when a provider cannot answer.
//!
//! Providers produce a [`Document`] holding up to [`MAX_RESULTS`] results; the cache keeps it
//! whole, and [`render`] cuts `results` to each request's bound while writing, so one upstream
//! answer serves every bound. Keys keep the order the provider gave them (serde_json's
//! `preserve_order`), so Google's documents pass through as Google wrote them.

use std::fmt;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// A places document: a JSON object with at least `html_attributions`, `results` and `status`.
pub type Document = Map<String, Value>;

/// The most results any provider returns, and the most a WHATSAT may ask for.
pub const MAX_RESULTS: usize = 20;

/// The status of a failure that has no better name.
pub const UNKNOWN_ERROR: &str = "UNKNOWN_ERROR";

/// Why a provider could not answer: a Google-style status and a message for humans. Neither
/// ever holds the API key (see [`Failure::redact`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The upstream status (`REQUEST_DENIED`, `OVER_QUERY_LIMIT`, ...) or `UNKNOWN_ERROR`.
    pub status: String,
    /// What happened.
    pub message: String,
}

impl Failure {
    /// A failure without a status of its own.
    pub fn unknown(message: impl Into<String>) -> Failure {
        Failure {
            status: UNKNOWN_ERROR.to_owned(),
            message: message.into(),
        }
    }

    /// A failure with the upstream's own status.
    pub fn with_status(status: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure {
            status: status.into(),
            message: message.into(),
        }
    }

    /// Removes every occurrence of `secret` from the message and the status. Upstream error
    /// texts may quote the request, and the request carries the key.
    pub fn redact(mut self, secret: &str) -> Failure {
        if !secret.is_empty() {
            self.message = self.message.replace(secret, "[redacted]");
            self.status = self.status.replace(secret, "[redacted]");
        }
        self
    }

    /// The document a client gets instead of places.
    pub fn to_document(&self) -> Document {
        let value = json!({
            "html_attributions": [],
            "results": [],
            "status": self.status,
            "error_message": self.message,
        });
        match value {
            Value::Object(map) => map,
            _ => unreachable!("json! of an object literal is an object"),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for Failure {}

/// Writes `document` as a WHATSAT answer: pretty-printed, `results` cut to `bound`, every run
/// of newlines collapsed to one, no trailing newline.
pub fn render(document: &Document, bound: usize) -> String {
    let truncated = Truncated { document, bound };
    let mut text = match serde_json::to_string_pretty(&truncated) {
        Ok(text) => text,
        // A Map of Values always serialises; keep the promise of an answer regardless.
        Err(e) => serde_json::to_string_pretty(&Failure::unknown(e.to_string()).to_document())
            .unwrap_or_default(),
    };
    collapse_newlines(&mut text);
    text
}

/// Collapses every run of two or more newlines into one and drops trailing newlines. The
/// pretty printer escapes newlines inside strings, so this only ever touches layout; it is
/// here because the protocol promises it whatever a serializer does.
fn collapse_newlines(text: &mut String) {
    if text.contains("\n\n") {
        let mut out = String::with_capacity(text.len());
        let mut previous_newline = false;
        for c in text.chars() {
            if c == '\n' && previous_newline {
                continue;
            }
            previous_newline = c == '\n';
            out.push(c);
        }
        *text = out;
    }
    while text.ends_with('\n') {
        text.pop();
    }
}

/// A document seen with its `results` cut to a bound, serialised without copying it.
struct Truncated<'a> {
    document: &'a Document,
    bound: usize,
}

impl Serialize for Truncated<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.document.len()))?;
        for (key, value) in self.document {
            match value {
                Value::Array(results) if key == "results" => {
                    let kept = &results[..results.len().min(self.bound)];
                    map.serialize_entry(key, kept)?;
                }
                _ => map.serialize_entry(key, value)?,
            }
        }
        map.end()
    }
}

/// Cuts a document's `results` to at most `bound` entries in place.
pub fn truncate(document: &mut Document, bound: usize) {
    if let Some(Value::Array(results)) = document.get_mut("results") {
        results.truncate(bound);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(results: usize) -> Document {
        let results: Vec<Value> = (0..results).map(|i| json!({ "name": i })).collect();
        match json!({ "html_attributions": [], "results": results, "status": "OK", "extra": "kept" })
        {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn render_truncates_and_keeps_key_order() {
        let text = render(&doc(5), 2);
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["results"].as_array().unwrap().len(), 2);
        let keys: Vec<&String> = back.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["html_attributions", "results", "status", "extra"]);
        assert!(!text.contains("\n\n"));
        assert!(!text.ends_with('\n'));
    }

    #[test]
    fn collapse_newlines_collapses_runs_and_trims() {
        let mut text = "{\n\n\n  \"a\": 1\n\n}\n\n".to_owned();
        collapse_newlines(&mut text);
        assert_eq!(text, "{\n  \"a\": 1\n}");
    }

    #[test]
    fn failures_render_in_protocol_shape_without_the_secret() {
        let failure =
            Failure::with_status("REQUEST_DENIED", "key=SECRET rejected").redact("SECRET");
        let back: Value = serde_json::from_str(&render(&failure.to_document(), 20)).unwrap();
        assert_eq!(back["status"], "REQUEST_DENIED");
        assert_eq!(back["results"], json!([]));
        assert_eq!(back["error_message"], "key=[redacted] rejected");
    }
}
