//! WHATSAT end to end: a real node answering with real places, from the shipped dataset and
//! from a real HTTP server speaking Google's formats, including when that server fails.

mod common;
#[path = "support/fake_google.rs"]
mod fake_google;

use std::time::Duration;

use common::*;
use fake_google::{FakeGoogle, Reply};

const UCLA: &str = "+34.068930-118.445127";
const KEY: &str = "test-key-8d1f0c";

/// Splits a WHATSAT answer into its AT line and JSON document, checking the framing.
fn split(answer: &[u8]) -> (String, serde_json::Value) {
    let text = String::from_utf8(answer.to_vec()).expect("UTF-8 answer");
    assert!(text.ends_with("}\n\n"), "must end in }}\\n\\n: {text:?}");
    let (at, doc) = text.split_once('\n').unwrap();
    assert!(
        !doc.trim_end().contains("\n\n"),
        "no blank line inside: {doc:?}"
    );
    (
        at.to_owned(),
        serde_json::from_str(doc).expect("JSON document"),
    )
}

fn names(doc: &serde_json::Value) -> Vec<String> {
    doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn offline_places_near_ucla() {
    let mut herd = Herd::new(&["Clark", "Bona"], &[("Clark", "Bona")], "");
    herd.start_all();
    let at = String::from_utf8(herd.ask(
        "Clark",
        format!("IAMAT kiwi {UCLA} 1621464827.959498503\n").as_bytes(),
    ))
    .unwrap();
    eventually(Duration::from_secs(5), "the report to reach Bona", || {
        herd.at_line("Bona", "kiwi").is_some()
    });
    let (line, doc) = split(&herd.ask("Bona", b"WHATSAT kiwi 3 5\n"));
    assert_eq!(
        line,
        at.trim_end(),
        "the stored AT line, as Clark produced it"
    );
    let found = names(&doc);
    assert!(
        found.contains(&"Westwood".to_owned()) && found.contains(&"Bel Air".to_owned()),
        "{found:?}"
    );
    assert_eq!(doc["status"], "OK");
    assert!(
        doc["html_attributions"].to_string().contains("GeoNames"),
        "{}",
        doc["html_attributions"]
    );
    let first = &doc["results"][0];
    for key in ["name", "place_id", "types", "vicinity"] {
        assert!(!first[key].is_null(), "result lacks {key}: {first}");
    }
    assert!(first["geometry"]["location"]["lat"].is_f64());

    // The bound caps the results; a place-less spot is ZERO_RESULTS.
    let (_, wide) = split(&herd.ask("Bona", b"WHATSAT kiwi 50 3\n"));
    assert_eq!(wide["results"].as_array().unwrap().len(), 3);
    herd.ask("Clark", b"IAMAT sea -40.0-140.0 1\n");
    eventually(Duration::from_secs(5), "sea at Bona", || {
        herd.at_line("Bona", "sea").is_some()
    });
    let (_, none) = split(&herd.ask("Bona", b"WHATSAT sea 1 5\n"));
    assert_eq!(none["status"], "ZERO_RESULTS");
    assert_eq!(none["results"], serde_json::json!([]));
}

fn google_node(rt: &tokio::runtime::Runtime, provider: &str) -> (Herd, FakeGoogle) {
    let fake = rt.block_on(FakeGoogle::start());
    let url = if provider == "google" {
        fake.legacy_url()
    } else {
        fake.new_url()
    };
    let mut herd = Herd::new(
        &["G"],
        &[],
        &format!("[places]\nprovider = {provider:?}\ngoogle_url = {url:?}\ntimeout_ms = 1500\ncache_ttl_secs = 60\n"),
    );
    herd.env.push(("GOOGLE_PLACES_API_KEY".into(), KEY.into()));
    herd.start("G");
    herd.ask(
        "G",
        format!("IAMAT kiwi {UCLA} 1621464827.959498503\n").as_bytes(),
    );
    (herd, fake)
}

#[test]
fn google_legacy_through_a_node() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (herd, fake) = google_node(&rt, "google");
    let (at, doc) = split(&herd.ask("G", b"WHATSAT kiwi 10 5\n"));
    assert!(
        at.starts_with("AT G ") && at.ends_with(&format!(" kiwi {UCLA} 1621464827.959498503")),
        "{at}"
    );
    assert_eq!(
        doc["results"].as_array().unwrap().len(),
        5,
        "truncated to the bound"
    );
    assert_eq!(
        doc["next_page_token"], "page-two",
        "Google's other keys are kept"
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "GET");
    assert_eq!(r.param("location").as_deref(), Some("34.06893,-118.445127"));
    assert_eq!(r.param("radius").as_deref(), Some("10000"));
    assert_eq!(r.param("key").as_deref(), Some(KEY));

    // Another bound for the same place and radius: from the cache.
    let (_, more) = split(&herd.ask("G", b"WHATSAT kiwi 10 20\n"));
    assert_eq!(more["results"].as_array().unwrap().len(), 20);
    assert_eq!(
        fake.count(),
        1,
        "a second WHATSAT with another bound makes no request"
    );

    // Failures are answers in the protocol's shape; the node goes on serving.
    fake.reply_with(|_| Reply::raw(500, "upstream exploded"));
    let (at2, failed) = split(&herd.ask("G", b"WHATSAT kiwi 7 5\n"));
    assert_eq!(at2, at);
    assert_eq!(failed["status"], "UNKNOWN_ERROR");
    assert!(
        failed["error_message"].as_str().unwrap().contains("500"),
        "{failed}"
    );
    fake.reply_with(|_| Reply::json(200, serde_json::json!({"status": "REQUEST_DENIED", "error_message": "bad key", "results": []})));
    let (_, denied) = split(&herd.ask("G", b"WHATSAT kiwi 8 5\n"));
    assert_eq!(denied["status"], "REQUEST_DENIED");
    fake.reply_with(|_| {
        Reply::json(200, serde_json::json!({"results": []})).after(Duration::from_secs(5))
    });
    let (_, slow) = split(&herd.ask("G", b"WHATSAT kiwi 9 5\n"));
    assert_eq!(slow["status"], "UNKNOWN_ERROR");
    assert!(
        herd.ask("G", b"IAMAT after +1+2 3\n").starts_with(b"AT G "),
        "still serving"
    );
    for answer in [&failed, &denied, &slow] {
        assert!(
            !answer.to_string().contains(KEY),
            "the key leaked: {answer}"
        );
    }
    assert!(!herd.log("G").contains(KEY), "the key must never be logged");
}

#[test]
fn google_new_through_a_node() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (herd, fake) = google_node(&rt, "google-new");
    let (_, doc) = split(&herd.ask("G", b"WHATSAT kiwi 2.5 3\n"));
    assert_eq!(doc["status"], "OK");
    assert_eq!(doc["results"].as_array().unwrap().len(), 3);
    let first = &doc["results"][0];
    assert_eq!(first["name"], "New Place 0");
    assert_eq!(first["place_id"], "new-0");
    assert!(first["geometry"]["location"]["lat"].is_f64());
    let r = &fake.requests()[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("x-goog-api-key"), Some(KEY));
    assert!(r
        .header("x-goog-fieldmask")
        .unwrap()
        .contains("places.displayName"));
    let body = r.json();
    assert_eq!(body["locationRestriction"]["circle"]["radius"], 2500.0);
    assert_eq!(
        body["locationRestriction"]["circle"]["center"]["latitude"],
        34.06893
    );
}

#[test]
fn a_google_provider_without_a_key_will_not_start() {
    let herd = Herd::new(&["G"], &[], "[places]\nprovider = \"google\"\n");
    let out = herd
        .command("G")
        .env_remove("GOOGLE_PLACES_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GOOGLE_PLACES_API_KEY"));
}
