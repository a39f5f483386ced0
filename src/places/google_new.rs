//! The `google-new` provider: Places API (New), `places:searchNearby`.
//!
//! `POST {google_url}` with the key in `X-Goog-Api-Key`, a field mask naming only the fields
//! the answer uses (Google bills by the fields asked for), and a circle of the query's radius.
//! The answer (`{"places": [...]}`, or `{}` when nothing is near) is translated into the legacy
//! shape the protocol speaks: `name`, `place_id`, `geometry.location`, `types`, `vicinity`, and
//! `rating`, `user_ratings_total`, `business_status` when Google has them. A place without an
//! id or a location cannot be shown in that shape and is left out rather than invented.
//!
//! Errors come as HTTP error statuses with `{"error": {"status": "PERMISSION_DENIED", ...}}`;
//! their gRPC-style status is mapped to the legacy name a client of the old API would expect.

use serde_json::{json, Map, Value};

use super::document::{Document, Failure, MAX_RESULTS, UNKNOWN_ERROR};
use super::upstream::{parse_object, Upstream};
use crate::protocol::location::Location;
use crate::protocol::number::Radius;

/// Where Places API (New) lives.
pub const DEFAULT_URL: &str = "https://places.googleapis.com/v1/places:searchNearby";

/// The fields asked for: exactly those [`translate`] reads.
pub const FIELD_MASK: &str = "places.displayName,places.id,places.location,places.types,\
places.shortFormattedAddress,places.rating,places.userRatingCount,places.businessStatus";

pub struct GoogleNew {
    upstream: Upstream,
}

impl GoogleNew {
    pub fn new(upstream: Upstream) -> GoogleNew {
        GoogleNew { upstream }
    }

    /// Asks for up to [`MAX_RESULTS`] places within `radius` of `location`.
    pub async fn fetch(&self, location: Location, radius: Radius) -> Result<Document, Failure> {
        let body = json!({
            "locationRestriction": {
                "circle": {
                    "center": {
                        "latitude": location.latitude,
                        "longitude": location.longitude,
                    },
                    "radius": radius.metres(),
                }
            },
            "maxResultCount": MAX_RESULTS,
        });
        let request = self
            .upstream
            .client()
            .post(self.upstream.url())
            .header("X-Goog-Api-Key", self.upstream.key())
            .header("X-Goog-FieldMask", FIELD_MASK)
            .json(&body);
        let (http_status, body) = self.upstream.send(request).await?;
        let result = if http_status.is_success() {
            parse_object(&body).and_then(|answer| translate(&answer))
        } else {
            Err(error_failure(http_status, &body))
        };
        result.map_err(|failure| failure.redact(self.upstream.key()))
    }
}

/// The legacy-shaped document for a searchNearby answer.
pub fn translate(answer: &Map<String, Value>) -> Result<Document, Failure> {
    let places = match answer.get("places") {
        None => &[][..],
        Some(Value::Array(places)) => &places[..],
        Some(_) => {
            return Err(Failure::unknown(
                "malformed answer from the places upstream: places is not an array",
            ))
        }
    };
    let results: Vec<Value> = places.iter().filter_map(translate_place).collect();
    let status = if results.is_empty() {
        "ZERO_RESULTS"
    } else {
        "OK"
    };
    let mut document = Document::new();
    document.insert("html_attributions".into(), json!([]));
    document.insert("results".into(), Value::Array(results));
    document.insert("status".into(), json!(status));
    Ok(document)
}

fn translate_place(place: &Value) -> Option<Value> {
    let place_id = place.get("id")?.as_str()?;
    let location = place.get("location")?;
    let lat = location.get("latitude")?.as_f64()?;
    let lng = location.get("longitude")?.as_f64()?;
    let name = place
        .pointer("/displayName/text")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let types = match place.get("types") {
        Some(Value::Array(types)) => types.iter().filter(|t| t.is_string()).cloned().collect(),
        _ => Vec::new(),
    };
    let vicinity = place
        .get("shortFormattedAddress")
        .and_then(Value::as_str)
        .unwrap_or_default();
    // Keys in the order Google's legacy answers use (alphabetical).
    let mut result = Map::new();
    if let Some(status) = place.get("businessStatus").filter(|s| s.is_string()) {
        result.insert("business_status".into(), status.clone());
    }
    result.insert(
        "geometry".into(),
        json!({ "location": { "lat": lat, "lng": lng } }),
    );
    result.insert("name".into(), json!(name));
    result.insert("place_id".into(), json!(place_id));
    if let Some(rating) = place.get("rating").filter(|r| r.is_number()) {
        result.insert("rating".into(), rating.clone());
    }
    result.insert("types".into(), Value::Array(types));
    if let Some(count) = place.get("userRatingCount").filter(|c| c.is_number()) {
        result.insert("user_ratings_total".into(), count.clone());
    }
    result.insert("vicinity".into(), json!(vicinity));
    Some(Value::Object(result))
}

/// The failure for an HTTP error answer, named in the legacy vocabulary where one fits.
fn error_failure(http_status: reqwest::StatusCode, body: &[u8]) -> Failure {
    let error = serde_json::from_slice::<Value>(body).ok();
    let error = error.as_ref().and_then(|e| e.get("error"));
    let grpc_status = error
        .and_then(|e| e.get("status"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let status = match grpc_status {
        "PERMISSION_DENIED" | "UNAUTHENTICATED" => "REQUEST_DENIED",
        "RESOURCE_EXHAUSTED" => "OVER_QUERY_LIMIT",
        "INVALID_ARGUMENT" => "INVALID_REQUEST",
        _ => UNKNOWN_ERROR,
    };
    let message = match error.and_then(|e| e.get("message")).and_then(Value::as_str) {
        Some(message) => format!("the places upstream answered HTTP {http_status}: {message}"),
        None => format!("the places upstream answered HTTP {http_status}"),
    };
    Failure::with_status(status, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn translates_into_the_legacy_shape() {
        let answer = object(json!({ "places": [
            {
                "id": "abc",
                "displayName": { "text": "Diddy Riese", "languageCode": "en" },
                "location": { "latitude": 34.0631, "longitude": -118.4468 },
                "types": ["bakery", "food"],
                "shortFormattedAddress": "926 Broxton Ave, Los Angeles",
                "rating": 4.7,
                "userRatingCount": 7000,
                "businessStatus": "OPERATIONAL"
            },
            { "id": "no-location" },
            { "location": { "latitude": 1.0, "longitude": 2.0 } },
            { "id": "bare", "location": { "latitude": 1.0, "longitude": 2.0 } }
        ]}));
        let document = translate(&answer).unwrap();
        assert_eq!(document["status"], "OK");
        let results = document["results"].as_array().unwrap();
        assert_eq!(results.len(), 2);
        assert_eq!(
            results[0],
            json!({
                "business_status": "OPERATIONAL",
                "geometry": { "location": { "lat": 34.0631, "lng": -118.4468 } },
                "name": "Diddy Riese",
                "place_id": "abc",
                "rating": 4.7,
                "types": ["bakery", "food"],
                "user_ratings_total": 7000,
                "vicinity": "926 Broxton Ave, Los Angeles"
            })
        );
        assert_eq!(
            results[1],
            json!({
                "geometry": { "location": { "lat": 1.0, "lng": 2.0 } },
                "name": "", "place_id": "bare", "types": [], "vicinity": ""
            })
        );
    }

    #[test]
    fn nothing_near_is_zero_results_and_garbage_is_a_failure() {
        let empty = translate(&Map::new()).unwrap();
        assert_eq!(empty["status"], "ZERO_RESULTS");
        assert_eq!(empty["results"], json!([]));
        assert!(translate(&object(json!({ "places": 3 }))).is_err());
    }

    #[test]
    fn maps_error_statuses() {
        let body =
            br#"{"error":{"code":403,"message":"API key not valid","status":"PERMISSION_DENIED"}}"#;
        let failure = error_failure(reqwest::StatusCode::FORBIDDEN, body);
        assert_eq!(failure.status, "REQUEST_DENIED");
        assert!(failure.message.contains("API key not valid"));
        let failure = error_failure(reqwest::StatusCode::INTERNAL_SERVER_ERROR, b"oops");
        assert_eq!(failure.status, "UNKNOWN_ERROR");
        assert!(failure.message.contains("500"));
    }
}
