//! The `google` provider: Google Places Nearby Search (legacy).
//!
//! `GET {google_url}?location=LAT,LNG&radius=METRES&key=KEY`. Google's document is already
//! in the protocol's shape, so an `OK` or `ZERO_RESULTS` answer passes through untouched: every
//! key, in Google's order (the cache, not this module, cuts `results` to a bound). Any other
//! status (`REQUEST_DENIED`, `OVER_QUERY_LIMIT`, `INVALID_REQUEST`, ...) is a failure carrying
//! that status and Google's `error_message`, so it is answered but never cached.

use super::document::{Document, Failure};
use super::upstream::{parse_object, Upstream};
use crate::protocol::location::Location;
use crate::protocol::number::Radius;

/// Where the legacy API lives.
pub const DEFAULT_URL: &str = "https://maps.googleapis.com/maps/api/place/nearbysearch/json";

pub struct Google {
    upstream: Upstream,
}

impl Google {
    pub fn new(upstream: Upstream) -> Google {
        Google { upstream }
    }

    /// Asks for the places within `radius` of `location` (Google returns at most 20).
    pub async fn fetch(&self, location: Location, radius: Radius) -> Result<Document, Failure> {
        let request = self.upstream.client().get(self.upstream.url()).query(&[
            ("location", format_location(location)),
            ("radius", format_metres(radius)),
            ("key", self.upstream.key().to_owned()),
        ]);
        let (http_status, body) = self.upstream.send(request).await?;
        if !http_status.is_success() {
            return Err(Failure::unknown(format!(
                "the places upstream answered HTTP {http_status}"
            )));
        }
        let document = parse_object(&body)?;
        interpret(document).map_err(|failure| failure.redact(self.upstream.key()))
    }
}

/// Accepts a document whose status is a success, and turns any other into a failure.
fn interpret(document: Document) -> Result<Document, Failure> {
    let status = match document.get("status") {
        Some(serde_json::Value::String(status)) => status.clone(),
        _ => {
            return Err(Failure::unknown(
                "malformed answer from the places upstream: no status",
            ))
        }
    };
    match status.as_str() {
        "OK" | "ZERO_RESULTS" => {
            if !document.get("results").is_some_and(|r| r.is_array()) {
                return Err(Failure::unknown(
                    "malformed answer from the places upstream: no results array",
                ));
            }
            Ok(document)
        }
        _ => {
            let message = match document.get("error_message") {
                Some(serde_json::Value::String(message)) => message.clone(),
                _ => format!("the places upstream answered {status}"),
            };
            Err(Failure::with_status(status, message))
        }
    }
}

/// `LAT,LNG` in plain decimals: Rust prints floats without exponents or `+` signs, and
/// shortest-round-trip, so the client's coordinates reach Google unchanged.
pub fn format_location(location: Location) -> String {
    format!("{},{}", location.latitude + 0.0, location.longitude + 0.0)
}

/// The radius in metres, exactly: `10000`, `1234.5`.
pub fn format_metres(radius: Radius) -> String {
    let (metres, millimetres) = (radius.millimetres / 1000, radius.millimetres % 1000);
    if millimetres == 0 {
        metres.to_string()
    } else {
        let fraction = format!("{millimetres:03}");
        format!("{metres}.{}", fraction.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: serde_json::Value) -> Document {
        match value {
            serde_json::Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn formats_parameters_without_plus_signs_or_exponents() {
        let here = Location {
            latitude: 34.06893,
            longitude: -118.445127,
        };
        assert_eq!(format_location(here), "34.06893,-118.445127");
        let tiny = Location {
            latitude: 1e-7,
            longitude: -0.0,
        };
        assert_eq!(format_location(tiny), "0.0000001,0");
        assert_eq!(
            format_metres(Radius {
                millimetres: 10_000_000
            }),
            "10000"
        );
        assert_eq!(
            format_metres(Radius {
                millimetres: 1_234_500
            }),
            "1234.5"
        );
        assert_eq!(format_metres(Radius { millimetres: 1 }), "0.001");
    }

    #[test]
    fn passes_success_through_and_names_failures() {
        let ok = object(json!({"html_attributions": [], "results": [], "status": "ZERO_RESULTS"}));
        assert_eq!(interpret(ok.clone()), Ok(ok));
        let denied =
            object(json!({"error_message": "bad key", "results": [], "status": "REQUEST_DENIED"}));
        assert_eq!(
            interpret(denied),
            Err(Failure::with_status("REQUEST_DENIED", "bad key"))
        );
        let quota = object(json!({"status": "OVER_QUERY_LIMIT"}));
        assert_eq!(interpret(quota).unwrap_err().status, "OVER_QUERY_LIMIT");
        assert_eq!(
            interpret(object(json!({"results": []})))
                .unwrap_err()
                .status,
            "UNKNOWN_ERROR"
        );
        assert_eq!(
            interpret(object(json!({"status": "OK"})))
                .unwrap_err()
                .status,
            "UNKNOWN_ERROR"
        );
    }
}
