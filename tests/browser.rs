//! The admin pages in a real browser.
//!
//! `/status`: headless Chromium loads the page of a running three-node herd, and the rendered
//! DOM shows the node, each link's state (one going down when its peer is killed) and the
//! record count. Without Chromium (`chromium`, `chromium-browser` or `google-chrome` on the
//! PATH, or `HERD_CHROMIUM`) it prints `SKIPPED: ...` and returns.
//!
//! `/herd`: the page for the whole five-server herd, through a node killed and restarted: the
//! topology, the verdict, the plots. It needs Chromium, so it is ignored by a plain
//! `cargo test` and run by `cargo test --test browser -- --ignored` (CI installs Chromium and
//! does); there, a missing Chromium fails it.
//!
//! Screenshots are taken too; with `HERD_UPDATE_SCREENSHOT=1` they replace `docs/status.png`
//! and `docs/herd.png`, the ones the README shows.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HERD_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Runs headless Chromium on `url` with `args`, killed if it takes over a minute.
fn browse(browser: &Path, profile: &Path, args: &[&str], url: &str) -> String {
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        // Root in a container has no user namespace for the sandbox.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
        out
    });
    let status = wait_with_deadline(&mut child, Duration::from_secs(60));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("chromium did not finish within a minute");
    }
    reader.join().unwrap()
}

/// Takes a `size` screenshot of `url` as `dir/name` and checks it is a PNG; with
/// `HERD_UPDATE_SCREENSHOT` set it replaces `docs/name`, the one the README shows.
fn screenshot(
    browser: &Path,
    profile: &Path,
    url: &str,
    (width, height): (u32, u32),
    dir: &Path,
    name: &str,
) {
    let shot = dir.join(name);
    browse(
        browser,
        profile,
        &[
            &format!("--screenshot={}", shot.display()),
            &format!("--window-size={width},{height}"),
            "--hide-scrollbars",
        ],
        url,
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    if std::env::var_os("HERD_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs")
            .join(name);
        std::fs::copy(&shot, docs).unwrap();
    }
}

#[test]
fn the_status_page_in_headless_chromium() {
    let Some(browser) = chromium() else {
        eprintln!(
            "SKIPPED: no Chromium found (install the `chromium` package or set HERD_CHROMIUM)"
        );
        return;
    };
    let names = ["Bailey", "Bona", "Campbell"];
    let (table, admin) = admin_table(&["Bailey"]);
    let mut herd = Herd::new(
        &names,
        &[("Bailey", "Bona"), ("Bailey", "Campbell")],
        &format!("[peers]\nbackoff_max_ms = 200\n{table}"),
    );
    herd.start_all();
    let a = &admin["Bailey"];
    for peer in ["Bona", "Campbell"] {
        eventually(
            Duration::from_secs(10),
            &format!("link to {peer} up"),
            || metric(a, &format!("herd_peer_up{{peer=\"{peer}\"}}")) == 1.0,
        );
    }
    let mut c = Client::connect(&herd.addr("Bona"));
    for (i, place) in [
        "+34.068930-118.445127",
        "+40.7128-074.0060",
        "+51.5072-000.1276",
    ]
    .iter()
    .enumerate()
    {
        c.iamat(&format!("phone-{i}"), place, &now_ts());
    }
    eventually(Duration::from_secs(10), "3 records at Bailey", || {
        metric(a, "herd_records") == 3.0
    });
    let url = format!("http://{a}/status");
    let profile = tempfile::tempdir().unwrap();

    let dom = browse(&browser, profile.path(), &["--dump-dom"], &url);
    assert!(dom.contains("<span id=\"node\">Bailey</span>"), "{dom}");
    assert!(dom.contains("<td id=\"records\">3</td>"), "{dom}");
    for peer in ["Bona", "Campbell"] {
        assert!(
            dom.contains(&format!("data-peer=\"{peer}\" data-state=\"up\"")),
            "{peer} up: {dom}"
        );
    }
    assert!(dom.contains("<tr class=\"report\">"), "{dom}");
    // No script at all: it works with JavaScript off. (Turning scripts off in the browser
    // would also stop --dump-dom, which runs on them.)
    assert!(!dom.contains("<script"), "{dom}");
    assert!(dom.contains("http-equiv=\"refresh\""), "{dom}");

    herd.kill("Campbell");
    eventually(
        Duration::from_secs(10),
        "Bailey to see Campbell down",
        || metric(a, "herd_peer_up{peer=\"Campbell\"}") == 0.0,
    );
    let dom = browse(&browser, profile.path(), &["--dump-dom"], &url);
    assert!(
        dom.contains("data-peer=\"Campbell\" data-state=\"down\"")
            && dom.contains("data-peer=\"Bona\" data-state=\"up\""),
        "{dom}"
    );

    screenshot(
        &browser,
        profile.path(),
        &url,
        (1100, 900),
        herd.dir.path(),
        "status.png",
    );
}

/// The points of every polyline in `svg` drawn with `stroke` at width 2 (a server's line in a
/// plot of `/herd`).
fn server_lines<'a>(svg: &'a str, stroke: &str) -> Vec<Vec<&'a str>> {
    svg.split("<polyline")
        .skip(1)
        .map(|tag| &tag[..tag.find('>').unwrap_or(tag.len())])
        .filter(|tag| {
            tag.contains(&format!("stroke=\"{stroke}\"")) && tag.contains("stroke-width=\"2\"")
        })
        .map(|tag| {
            let points = tag.split("points=\"").nth(1).unwrap_or("");
            points[..points.find('"').unwrap_or(0)]
                .split_whitespace()
                .collect()
        })
        .collect()
}

/// The part of `dom` from `start` to the next `end`.
fn section<'a>(dom: &'a str, start: &str, end: &str) -> &'a str {
    let from = dom
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in {dom}"));
    let rest = &dom[from..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

#[test]
#[ignore = "needs chromium: run with --ignored where it is installed (CI does)"]
fn the_herd_page_in_headless_chromium() {
    let browser = chromium()
        .expect("no Chromium found (install the `chromium` package or set HERD_CHROMIUM)");
    let (table, admin) = admin_table(&FIVE);
    let mut herd = Herd::five(&format!("[peers]\nbackoff_max_ms = 200\n{table}"));
    herd.start_all();
    let links_up = |herd: &Herd| {
        FIVE_LINKS.iter().all(|(a, b)| {
            metric(&admin[*a], &format!("herd_peer_up{{peer=\"{b}\"}}")) == 1.0
                && metric(&admin[*b], &format!("herd_peer_up{{peer=\"{a}\"}}")) == 1.0
        }) && herd.nodes.len() == FIVE.len()
    };
    eventually(Duration::from_secs(20), "every link up", || links_up(&herd));
    let mut c = Client::connect(&herd.addr("Clark"));
    for i in 0..20 {
        c.iamat(&format!("phone-{i}"), "+34.068930-118.445127", &now_ts());
    }
    eventually(Duration::from_secs(10), "20 records everywhere", || {
        FIVE.iter()
            .all(|n| metric(&admin[*n], "herd_records") == 20.0)
    });
    // Two samples (one every 5 s) make a line.
    let bailey = &admin["Bailey"];
    eventually(
        Duration::from_secs(20),
        "two samples of Bailey's history",
        || {
            let summary: serde_json::Value =
                serde_json::from_slice(&get(bailey, "/herd.json").body).unwrap();
            summary["history"].as_array().is_some_and(|h| h.len() >= 2)
        },
    );
    let url = format!("http://{bailey}/herd");
    let profile = tempfile::tempdir().unwrap();

    let dom = browse(&browser, profile.path(), &["--dump-dom"], &url);
    assert!(!dom.contains("<script"), "{dom}");
    assert!(dom.contains("http-equiv=\"refresh\""), "{dom}");
    assert!(dom.contains("data-verdict=\"converged\""), "{dom}");
    assert!(
        dom.contains("converged: 5 servers hold the same 20 records"),
        "{dom}"
    );
    let topology = section(&dom, "<svg id=\"topology\"", "</svg>");
    for name in FIVE {
        assert!(
            topology.contains(&format!(
                "<g class=\"server\" data-server=\"{name}\" data-state=\"ready\">"
            )),
            "{name}: {topology}"
        );
    }
    assert_eq!(topology.matches("<g class=\"server\"").count(), 5);
    assert_eq!(topology.matches("<line class=\"link\"").count(), 6);
    assert_eq!(
        topology.matches("data-state=\"up\"").count(),
        6,
        "{topology}"
    );
    for (a, b) in FIVE_LINKS {
        let (a, b) = if a < b { (a, b) } else { (b, a) };
        assert!(
            topology.contains(&format!("data-a=\"{a}\" data-b=\"{b}\" data-state=\"up\"")),
            "{a}-{b}: {topology}"
        );
    }
    assert!(
        dom.contains("<tr class=\"server\" data-server=\"Campbell\" data-state=\"ready\">"),
        "{dom}"
    );
    // Bailey is the first server: its line is the first colour. The requests plot has a line
    // of at least two points.
    let requests = section(&dom, "data-plot=\"requests\"", "</figure>");
    let lines = server_lines(requests, "#1F77B4");
    assert!(
        lines.iter().any(|points| points.len() >= 2),
        "{lines:?} in {requests}"
    );
    assert_eq!(dom.matches("<figure class=\"plot\"").count(), 4);

    herd.kill("Campbell");
    eventually(
        Duration::from_secs(10),
        "Campbell's peers to see it down",
        || {
            ["Bailey", "Bona", "Jaquez"]
                .iter()
                .all(|n| metric(&admin[*n], "herd_peer_up{peer=\"Campbell\"}") == 0.0)
        },
    );
    let mut c = Client::connect(&herd.addr("Bailey"));
    c.iamat("late", "+40.7128-074.0060", &now_ts());
    let dom = browse(&browser, profile.path(), &["--dump-dom"], &url);
    assert!(dom.contains("data-verdict=\"unreachable\""), "{dom}");
    assert!(dom.contains("unreachable: Campbell"), "{dom}");
    let topology = section(&dom, "<svg id=\"topology\"", "</svg>");
    assert!(
        topology.contains("data-server=\"Campbell\" data-state=\"unreachable\""),
        "{topology}"
    );
    for (a, b) in FIVE_LINKS {
        let (a, b) = if a < b { (a, b) } else { (b, a) };
        let state = if a == "Campbell" || b == "Campbell" {
            "down"
        } else {
            "up"
        };
        assert!(
            topology.contains(&format!(
                "data-a=\"{a}\" data-b=\"{b}\" data-state=\"{state}\""
            )),
            "{a}-{b} {state}: {topology}"
        );
    }

    herd.start("Campbell");
    eventually(
        Duration::from_secs(30),
        "the herd page to converge again",
        || {
            links_up(&herd)
                && get(bailey, "/herd")
                    .text()
                    .contains("converged: 5 servers hold the same 21 records")
        },
    );
    let dom = browse(&browser, profile.path(), &["--dump-dom"], &url);
    assert!(dom.contains("data-verdict=\"converged\""), "{dom}");
    let topology = section(&dom, "<svg id=\"topology\"", "</svg>");
    assert_eq!(
        topology.matches("data-state=\"up\"").count(),
        6,
        "{topology}"
    );
    assert_eq!(
        topology.matches("data-state=\"ready\"").count(),
        5,
        "{topology}"
    );

    screenshot(
        &browser,
        profile.path(),
        &url,
        (1280, 1300),
        herd.dir.path(),
        "herd.png",
    );
}
