//! `/status` in a real browser: headless Chromium loads the page of a running three-node herd,
//! and the rendered DOM shows the node, each link's state (one going down when its peer is
//! killed) and the record count. A screenshot is taken too; with `HERD_UPDATE_SCREENSHOT=1` it
//! replaces `docs/status.png`, the one the README shows.
//!
//! Without Chromium (`chromium`, `chromium-browser` or `google-chrome` on the PATH, or
//! `HERD_CHROMIUM`) the test prints `SKIPPED: ...` and returns.

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

    let shot = herd.dir.path().join("status.png");
    browse(
        &browser,
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1100,900",
            "--hide-scrollbars",
        ],
        &url,
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    if std::env::var_os("HERD_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status.png");
        std::fs::copy(&shot, docs).unwrap();
    }
}
