//! Where WHATSAT gets its places: one small provider interface, three providers (the offline
//! dataset, Google's legacy Nearby Search, Places API (New)), and one cache in front of them.

use serde::Deserialize;

use crate::protocol::location::Location;
use crate::protocol::number::Radius;

/// `[places]` in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacesConfig {
    /// `"offline"`, `"google"` or `"google-new"`.
    pub provider: String,
    /// The Google endpoint, for either google provider.
    pub google_url: Option<String>,
}

impl Default for PlacesConfig {
    fn default() -> Self {
        PlacesConfig {
            provider: "offline".into(),
            google_url: None,
        }
    }
}

impl PlacesConfig {
    /// Checks what the config text alone can tell.
    pub fn validate(&self) -> Result<(), String> {
        match self.provider.as_str() {
            "offline" | "google" | "google-new" => Ok(()),
            other => Err(format!("provider: unknown provider {other:?} (expected \"offline\", \"google\" or \"google-new\")")),
        }
    }
}

/// The places service of one node: provider plus cache. Cheap to clone.
#[derive(Clone)]
pub struct Places {}

impl Places {
    /// Builds the configured provider. Slow loading happens in the background.
    pub fn new(config: &PlacesConfig) -> crate::error::Result<Places> {
        let _ = config;
        Ok(Places {})
    }

    /// The places document for a WHATSAT: a JSON object in Google's Nearby Search shape with
    /// at most `bound` results, without trailing newline and without blank lines. Never fails:
    /// provider errors become a document whose `status` says what happened.
    pub async fn nearby(&self, location: Location, radius: Radius, bound: usize) -> String {
        let _ = (location, radius, bound);
        serde_json::to_string_pretty(&serde_json::json!({
            "html_attributions": [],
            "results": [],
            "status": "ZERO_RESULTS",
        }))
        .expect("JSON values serialise")
    }
}
