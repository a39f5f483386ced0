//! The offline provider on the shipped dataset, through the library's `Places` API.

use herd::places::offline::Dataset;
use herd::places::{Places, PlacesConfig};
use herd::protocol::location::Location;
use herd::protocol::number::Radius;
use serde_json::Value;

fn at(latitude: f64, longitude: f64) -> Location {
    Location {
        latitude,
        longitude,
    }
}

fn km(text: &str) -> Radius {
    Radius::parse(text.as_bytes()).expect("a valid radius")
}

async fn ask(places: &Places, location: Location, radius: &str, bound: usize) -> Value {
    let text = places.nearby(location, km(radius), bound).await;
    assert!(!text.contains("\n\n"), "blank line in {text}");
    assert!(!text.ends_with('\n'));
    serde_json::from_str(&text).expect("the answer is JSON")
}

fn names(answer: &Value) -> Vec<&str> {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect()
}

fn offline() -> Places {
    Places::new(&PlacesConfig::default()).expect("the offline provider starts")
}

#[tokio::test]
async fn westwood_and_bel_air_are_near_ucla() {
    let places = offline();
    let answer = ask(&places, at(34.068930, -118.445127), "3", 20).await;
    assert_eq!(answer["status"], "OK");
    let found = names(&answer);
    assert!(found.contains(&"Westwood"), "{found:?}");
    assert!(found.contains(&"Bel Air"), "{found:?}");
    let attributions = answer["html_attributions"].to_string();
    assert!(attributions.contains("GeoNames") && attributions.contains("CC BY 4.0"));
    assert!(attributions.contains("OurAirports"));
    for result in answer["results"].as_array().unwrap() {
        for key in ["name", "place_id", "vicinity"] {
            assert!(result[key].is_string(), "{key} in {result}");
        }
        assert!(result["types"].is_array());
        assert!(result["geometry"]["location"]["lat"].is_f64());
        assert!(result["geometry"]["location"]["lng"].is_f64());
    }
}

#[tokio::test]
async fn results_are_ranked_by_prominence_and_bounded() {
    let places = offline();
    let dataset = places.offline_dataset().await.unwrap().unwrap();
    let ucla = at(34.068930, -118.445127);
    let found = dataset.nearby(ucla, 50_000.0, 20);
    assert_eq!(found.len(), 20);
    assert!(found.windows(2).all(|w| w[0].prominence >= w[1].prominence));
    assert_eq!(found[0].name, "Los Angeles");
    assert!(found.iter().all(|f| f.distance_m <= 50_000.0));
    // The most prominent places come first in the answer too, and the bound is honoured.
    let answer = ask(&places, ucla, "50", 3).await;
    let expected: Vec<&str> = found.iter().take(3).map(|f| f.name).collect();
    assert_eq!(names(&answer), expected);
}

#[tokio::test]
async fn finds_places_across_the_antimeridian() {
    let places = offline();
    // West of the antimeridian, near Taveuni (Fiji); Matei Airport lies at 179.877 W.
    let answer = ask(&places, at(-16.75, 179.95), "30", 20).await;
    let results = answer["results"].as_array().unwrap();
    let east: Vec<&Value> = results
        .iter()
        .filter(|r| r["geometry"]["location"]["lng"].as_f64().unwrap() < -179.0)
        .collect();
    assert!(!east.is_empty(), "{answer}");
    assert!(
        east.iter().any(|r| r["name"] == "Matei Airport"),
        "{answer}"
    );
    assert!(results
        .iter()
        .all(|r| r["geometry"]["location"]["lng"].as_f64().unwrap().abs() > 179.0));
}

#[tokio::test]
async fn answers_at_the_poles() {
    let places = offline();
    let north = ask(&places, at(90.0, 0.0), "50", 20).await;
    assert_eq!(north["status"], "ZERO_RESULTS");
    assert_eq!(north["results"], serde_json::json!([]));
    // At the South Pole every longitude is the same point: asked from longitude 179, the
    // airport listed at (-90, 0) is 0 m away, ranked before the skiway 1.2 km off at
    // longitude -1 (equal prominence, so nearer first).
    let south = ask(&places, at(-90.0, 179.0), "5", 20).await;
    assert_eq!(south["status"], "OK");
    assert_eq!(
        names(&south),
        ["South Pole Station Airport", "Jack F. Paulus Skiway"]
    );
}

#[tokio::test]
async fn the_index_agrees_with_a_full_scan() {
    let places = offline();
    let dataset: std::sync::Arc<Dataset> = places.offline_dataset().await.unwrap().unwrap();
    // Deterministic pseudo-random points, weighted towards the awkward places: the poles,
    // the antimeridian, cell edges.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut points = vec![
        at(90.0, 0.0),
        at(-90.0, 0.0),
        at(-89.9, 12.0),
        at(89.7, -170.0),
        at(-16.75, 180.0),
        at(-16.75, -180.0),
        at(51.5, 0.0),
        at(0.0, 0.25),
    ];
    for _ in 0..60 {
        let lat = next() * 180.0 - 90.0;
        let lng = next() * 360.0 - 180.0;
        points.push(at(lat, lng));
        let near_line = next() * 0.6;
        points.push(at(lat.clamp(-60.0, 70.0), 180.0 - near_line));
        points.push(at(lat.clamp(-60.0, 70.0), near_line - 180.0));
    }
    for point in points {
        for metres in [500.0, 10_000.0, 50_000.0] {
            let indexed = dataset.nearby(point, metres, 20);
            let scanned = dataset.scan(point, metres, 20);
            assert_eq!(indexed, scanned, "at {point:?} within {metres} m");
        }
    }
}

#[tokio::test]
async fn a_missing_dataset_file_is_a_config_error() {
    let config = PlacesConfig {
        dataset: Some("no/such/places.tsv.gz".into()),
        ..PlacesConfig::default()
    };
    let error = Places::new(&config).err().expect("refused");
    assert_eq!(error.exit_code(), 2);
    assert!(
        error.to_string().contains("no/such/places.tsv.gz"),
        "{error}"
    );
}

#[tokio::test]
async fn a_broken_dataset_file_gives_failure_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.tsv");
    std::fs::write(&path, "not a header\n").unwrap();
    let config = PlacesConfig {
        dataset: Some(path),
        ..PlacesConfig::default()
    };
    let places = Places::new(&config).unwrap();
    let answer = ask(&places, at(0.0, 0.0), "1", 5).await;
    assert_eq!(answer["status"], "UNKNOWN_ERROR");
    assert!(answer["error_message"]
        .as_str()
        .unwrap()
        .contains("broken.tsv"));
}
