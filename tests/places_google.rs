//! Both Google providers against a real HTTP server on loopback that speaks Google's formats
//! and records every request: what is sent, what is answered, the cache, and every failure.

#[path = "support/fake_google.rs"]
mod fake_google;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_google::{FakeGoogle, Reply};
use herd::places::cache::Stats;
use herd::places::google_new::FIELD_MASK;
use herd::places::upstream::API_KEY_ENV;
use herd::places::{Places, PlacesConfig};
use herd::protocol::location::Location;
use herd::protocol::number::Radius;
use serde_json::{json, Value};

const KEY: &str = "test-KEY-5ecr3t";

const UCLA: Location = Location {
    latitude: 34.06893,
    longitude: -118.445127,
};

fn km(text: &str) -> Radius {
    Radius::parse(text.as_bytes()).expect("a valid radius")
}

fn config(provider: &str, url: String) -> PlacesConfig {
    PlacesConfig {
        provider: provider.into(),
        google_url: Some(url),
        timeout_ms: 500,
        ..PlacesConfig::default()
    }
}

fn places(config: &PlacesConfig) -> Places {
    Places::with_api_key(config, Some(KEY.into())).expect("the provider starts")
}

/// Asks, checks the text promises of every answer, and parses it.
async fn ask(places: &Places, location: Location, radius: &str, bound: usize) -> Value {
    let text = places.nearby(location, km(radius), bound).await;
    assert!(!text.contains("\n\n"), "blank line in {text}");
    assert!(!text.ends_with('\n'), "trailing newline in {text}");
    assert!(!text.contains(KEY), "the key leaked into {text}");
    serde_json::from_str(&text).expect("the answer is JSON")
}

fn result_count(answer: &Value) -> usize {
    answer["results"].as_array().expect("results").len()
}

fn keys(answer: &Value) -> Vec<&str> {
    answer
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

#[tokio::test]
async fn legacy_request_and_passthrough() {
    let google = FakeGoogle::start().await;
    let places = places(&config("google", google.legacy_url()));

    let answer = ask(&places, UCLA, "10", 5).await;
    let requests = google.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/maps/api/place/nearbysearch/json");
    assert!(!request.query.contains('+') && !request.query.contains("%2B"));
    assert_eq!(request.param("location").unwrap(), "34.06893,-118.445127");
    assert_eq!(request.param("radius").unwrap(), "10000");
    assert_eq!(request.param("key").unwrap(), KEY);

    // Google's document, every key in Google's order, results cut to the bound.
    assert_eq!(
        keys(&answer),
        ["html_attributions", "next_page_token", "results", "status"]
    );
    assert_eq!(answer["status"], "OK");
    assert_eq!(result_count(&answer), 5);
    assert_eq!(
        answer["results"][0]["icon"],
        "https://example.invalid/icon.png"
    );
    assert_eq!(answer["results"][4]["place_id"], "legacy-4");

    // Another bound for the same query is answered from the cache.
    let answer = ask(&places, UCLA, "10", 20).await;
    assert_eq!(result_count(&answer), 20);
    let answer = ask(&places, UCLA, "10.000", 1).await;
    assert_eq!(result_count(&answer), 1);
    assert_eq!(google.count(), 1);
    assert_eq!(places.cache_stats(), Some(Stats { hits: 2, misses: 1 }));

    // A fractional radius reaches Google exactly, and is another query.
    ask(&places, UCLA, "2.5005", 3).await;
    assert_eq!(google.count(), 2);
    assert_eq!(google.requests()[1].param("radius").unwrap(), "2500.5");
}

#[tokio::test]
async fn new_api_request_and_translation() {
    let google = FakeGoogle::start().await;
    let places = places(&config("google-new", google.new_url()));
    let west = Location {
        latitude: -16.75,
        longitude: -179.95,
    };

    let answer = ask(&places, west, "2.5005", 3).await;
    let requests = google.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/places:searchNearby");
    assert_eq!(request.query, "");
    assert_eq!(request.header("X-Goog-Api-Key"), Some(KEY));
    let mut mask: Vec<&str> = request
        .header("X-Goog-FieldMask")
        .unwrap()
        .split(',')
        .collect();
    mask.sort_unstable();
    assert_eq!(
        mask,
        [
            "places.businessStatus",
            "places.displayName",
            "places.id",
            "places.location",
            "places.rating",
            "places.shortFormattedAddress",
            "places.types",
            "places.userRatingCount",
        ]
    );
    assert_eq!(request.header("X-Goog-FieldMask"), Some(FIELD_MASK));
    assert!(request
        .header("Content-Type")
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(
        request.json(),
        json!({
            "locationRestriction": {
                "circle": {
                    "center": { "latitude": -16.75, "longitude": -179.95 },
                    "radius": 2500.5
                }
            },
            "maxResultCount": 20
        })
    );

    assert_eq!(keys(&answer), ["html_attributions", "results", "status"]);
    assert_eq!(answer["status"], "OK");
    assert_eq!(result_count(&answer), 3);
    assert_eq!(
        answer["results"][2],
        json!({
            "business_status": "OPERATIONAL",
            "geometry": { "location": { "lat": 34.06 + 2.0 / 1000.0, "lng": -118.44 } },
            "name": "New Place 2",
            "place_id": "new-2",
            "rating": 4.5,
            "types": ["restaurant", "food"],
            "user_ratings_total": 102,
            "vicinity": "2 Gayley Ave, Los Angeles"
        })
    );

    let answer = ask(&places, west, "2.5005", 20).await;
    assert_eq!(result_count(&answer), 20);
    assert_eq!(google.count(), 1);

    // Nothing near: Google answers `{}`.
    google.reply_with(|_| Reply::json(200, json!({})));
    let answer = ask(&places, UCLA, "1", 20).await;
    assert_eq!(answer["status"], "ZERO_RESULTS");
    assert_eq!(answer["results"], json!([]));
}

#[tokio::test]
async fn answers_expire_after_the_ttl() {
    let google = FakeGoogle::start().await;
    let places = places(&PlacesConfig {
        cache_ttl_secs: 1,
        ..config("google", google.legacy_url())
    });
    let started = Instant::now();
    ask(&places, UCLA, "5", 5).await;
    assert_eq!(google.count(), 1);
    let deadline = started + Duration::from_secs(10);
    while google.count() < 2 {
        assert!(Instant::now() < deadline, "the answer never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
        ask(&places, UCLA, "5", 5).await;
    }
    let expired_after = started.elapsed();
    assert!(
        expired_after >= Duration::from_millis(950),
        "expired after only {expired_after:?}"
    );
    assert_eq!(google.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_queries_make_one_request() {
    let google = FakeGoogle::start().await;
    // Slow enough that every query arrives while the first is still out.
    google.reply_with(|r| fake_google::default_reply(r).after(Duration::from_millis(300)));
    let places = places(&config("google-new", google.new_url()));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let places = places.clone();
            tokio::spawn(async move { ask(&places, UCLA, "3", 1 + i % 20).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let answer = task.await.unwrap();
        assert_eq!(answer["status"], "OK");
        assert_eq!(result_count(&answer), 1 + i % 20);
    }
    assert_eq!(google.count(), 1);
    assert_eq!(
        places.cache_stats(),
        Some(Stats {
            hits: 49,
            misses: 1
        })
    );
}

/// A shared buffer the test's tracing output goes to.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every failure mode, for both providers: the answer's status and message, no key in the
/// answer or in any log line, and a working answer for the very same query afterwards (so a
/// failure is never cached).
#[tokio::test]
async fn failures_become_answers_without_the_key() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let google = FakeGoogle::start().await;
    for provider in ["google", "google-new"] {
        let url = if provider == "google" {
            google.legacy_url()
        } else {
            google.new_url()
        };
        let places = places(&config(provider, url));
        let legacy = provider == "google";
        let denied = if legacy {
            Reply::json(
                200,
                json!({
                    "error_message": format!("The provided API key {KEY} is invalid."),
                    "html_attributions": [],
                    "results": [],
                    "status": "REQUEST_DENIED"
                }),
            )
        } else {
            Reply::json(
                403,
                json!({ "error": {
                    "code": 403,
                    "message": format!("API key not valid: {KEY}"),
                    "status": "PERMISSION_DENIED"
                }}),
            )
        };
        let cases: Vec<(&str, Reply, &str, &str)> = vec![
            (
                "timeout",
                fake_google::default_reply(&dummy(legacy)).after(Duration::from_secs(5)),
                "UNKNOWN_ERROR",
                "did not answer within 500 ms",
            ),
            (
                "http 500",
                Reply::raw(500, "oops"),
                "UNKNOWN_ERROR",
                "HTTP 500",
            ),
            ("denied", denied, "REQUEST_DENIED", "[redacted]"),
            (
                "malformed",
                Reply::raw(200, "{\"status\": \"OK\", \"resul"),
                "UNKNOWN_ERROR",
                "malformed",
            ),
            (
                "not an object",
                Reply::raw(200, "[1, 2]"),
                "UNKNOWN_ERROR",
                "malformed",
            ),
        ];
        // Each case asks about a place of its own, as a successful answer is cached.
        for (i, (case, reply, status, message)) in cases.into_iter().enumerate() {
            let here = Location {
                latitude: 10.0 + i as f64,
                longitude: -20.0,
            };
            google.reply_with(move |_| reply.clone());
            let before = google.count();
            let started = Instant::now();
            let answer = ask(&places, here, "7", 20).await;
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{provider} {case}: too slow"
            );
            assert_eq!(google.count(), before + 1, "{provider} {case}");
            assert_eq!(answer["status"], status, "{provider} {case}: {answer}");
            assert_eq!(answer["results"], json!([]), "{provider} {case}");
            assert_eq!(answer["html_attributions"], json!([]), "{provider} {case}");
            let error_message = answer["error_message"].as_str().unwrap();
            assert!(
                error_message.contains(message),
                "{provider} {case}: {error_message}"
            );

            google.reply_normally();
            let answer = ask(&places, here, "7", 20).await;
            assert_eq!(answer["status"], "OK", "{provider} after {case}: {answer}");
            assert_eq!(result_count(&answer), 20);
        }
    }

    // Refused connections: an address where nothing listens any more.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    for (provider, path) in [
        ("google", "/json"),
        ("google-new", "/v1/places:searchNearby"),
    ] {
        let places = places(&config(provider, format!("http://{closed}{path}")));
        let answer = ask(&places, UCLA, "7", 20).await;
        assert_eq!(answer["status"], "UNKNOWN_ERROR");
        let error_message = answer["error_message"].as_str().unwrap();
        assert!(error_message.contains("cannot connect"), "{error_message}");
    }

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("places upstream failed"), "{logs}");
    assert!(!logs.contains(KEY), "the key leaked into the logs:\n{logs}");
}

fn dummy(legacy: bool) -> fake_google::Recorded {
    fake_google::Recorded {
        method: if legacy { "GET" } else { "POST" }.into(),
        path: String::new(),
        query: String::new(),
        headers: Vec::new(),
        body: Vec::new(),
    }
}

#[tokio::test]
async fn google_without_a_key_is_a_config_error() {
    for provider in ["google", "google-new"] {
        let config = config(provider, "http://127.0.0.1:9/".into());
        for key in [None, Some(String::new())] {
            let error = Places::with_api_key(&config, key).err().expect("refused");
            assert_eq!(error.exit_code(), 2);
            assert!(error.to_string().contains(API_KEY_ENV), "{error}");
        }
        if std::env::var_os(API_KEY_ENV).is_none() {
            let error = Places::new(&config).err().expect("refused");
            assert!(error.to_string().contains(API_KEY_ENV), "{error}");
        }
    }
}
