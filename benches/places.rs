//! Places figures: offline load time and memory, offline query cost against a full scan, and
//! Google answers from the cache against answers fetched from a local fake upstream.
//!
//!     cargo bench --bench places
//!
//! Plain `main`, no harness: each figure is measured once in this run, with its baseline in the
//! same run, so ratios hold on any machine even when absolute numbers do not.

#[path = "../tests/support/fake_google.rs"]
mod fake_google;

use std::time::{Duration, Instant};

use herd::places::{Places, PlacesConfig};
use herd::protocol::location::Location;
use herd::protocol::number::Radius;

/// Resident memory of this process.
fn rss_kib() -> u64 {
    herd::bench::rss_kib(std::process::id())
}

/// A deterministic stream of query points near real towns: city centres, jittered.
fn points(count: usize) -> Vec<Location> {
    const CENTRES: [(f64, f64); 10] = [
        (34.0689, -118.4451),
        (48.8566, 2.3522),
        (35.6762, 139.6503),
        (-33.8688, 151.2093),
        (40.7128, -74.0060),
        (19.4326, -99.1332),
        (28.6139, 77.2090),
        (-23.5505, -46.6333),
        (52.5200, 13.4050),
        (-16.75, 179.95),
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    (0..count)
        .map(|i| {
            let (lat, lng) = CENTRES[i % CENTRES.len()];
            let lng = lng + next();
            Location {
                latitude: lat + next(),
                longitude: if lng > 180.0 { lng - 360.0 } else { lng },
            }
        })
        .collect()
}

fn per_op(elapsed: Duration, count: usize) -> f64 {
    elapsed.as_secs_f64() * 1e6 / count as f64
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Offline: load time and memory.
    let rss_before = rss_kib();
    let started = Instant::now();
    let places = Places::new(&PlacesConfig::default()).unwrap();
    let returned = started.elapsed();
    let dataset = places.offline_dataset().await.unwrap().unwrap();
    let loaded = started.elapsed();
    let rss_after = rss_kib();
    println!("offline dataset: {} places", dataset.len());
    println!(
        "  Places::new returned after {:.3} ms; dataset ready after {:.0} ms",
        returned.as_secs_f64() * 1e3,
        loaded.as_secs_f64() * 1e3
    );
    println!(
        "  resident memory {:.1} MiB -> {:.1} MiB (+{:.1} MiB)",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        (rss_after.saturating_sub(rss_before)) as f64 / 1024.0
    );

    // Offline: the grid against a full scan, same points, same answers.
    for km in [10.0, 50.0] {
        let metres = km * 1000.0;
        let queries = points(20_000);
        let started = Instant::now();
        let mut found = 0;
        for &q in &queries {
            found += dataset.nearby(q, metres, 20).len();
        }
        let grid = per_op(started.elapsed(), queries.len());
        let scans = &queries[..200];
        let started = Instant::now();
        for &q in scans {
            std::hint::black_box(dataset.scan(q, metres, 20));
        }
        let scan = per_op(started.elapsed(), scans.len());
        println!(
            "offline query within {km} km: {grid:.1} us (grid) vs {scan:.0} us (full scan): {:.0}x faster; {:.1} results/query",
            scan / grid,
            found as f64 / queries.len() as f64
        );
    }

    // Offline: whole WHATSAT documents (query + JSON), one task.
    let radius = Radius::parse(b"10").unwrap();
    let queries = points(20_000);
    let started = Instant::now();
    for &q in &queries {
        std::hint::black_box(places.nearby(q, radius, 20).await);
    }
    let whole = per_op(started.elapsed(), queries.len());
    println!(
        "offline WHATSAT document (10 km, 20 results): {whole:.1} us each, {:.0}/s on one core",
        1e6 / whole
    );

    // Google: answers fetched from a loopback fake upstream against answers from the cache.
    let google = fake_google::FakeGoogle::start().await;
    let config = PlacesConfig {
        provider: "google".into(),
        google_url: Some(google.legacy_url()),
        ..PlacesConfig::default()
    };
    let places = Places::with_api_key(&config, Some("bench-key".into())).unwrap();
    let cold_points = points(500);
    let started = Instant::now();
    for &q in &cold_points {
        std::hint::black_box(places.nearby(q, radius, 20).await);
    }
    let cold = per_op(started.elapsed(), cold_points.len());
    let warm_count = 20_000;
    let started = Instant::now();
    for i in 0..warm_count {
        let q = cold_points[i % cold_points.len()];
        std::hint::black_box(places.nearby(q, radius, 1 + i % 20).await);
    }
    let warm = per_op(started.elapsed(), warm_count);
    println!(
        "google (legacy) WHATSAT document: {cold:.0} us fetched from loopback upstream, {warm:.1} us from the cache: {:.0}x; {:.0}/s warm on one core",
        cold / warm,
        1e6 / warm
    );
    println!("  upstream requests made: {}", google.count());
}
