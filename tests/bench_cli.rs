//! `herd bench` as a command: one JSON line for scripts, a live progress line on a terminal.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn json_for_scripts_and_no_progress_line_without_a_terminal() {
    let mut herd = Herd::new(&["Clark"], &[], "");
    herd.start("Clark");
    let out = Command::new(HERD)
        .args(["bench", "--addr", &herd.addr("Clark")])
        .args(["--connections", "4", "--requests", "400", "--json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["requests"], 400);
    assert_eq!(report["errors"], 0);
    assert!(report["latency_us"]["p99"].as_u64().is_some());
    assert!(
        !out.stderr.contains(&b'\r'),
        "no progress line when stderr is not a terminal"
    );
}

#[test]
fn a_live_progress_line_on_a_terminal() {
    if !tmux_installed() {
        eprintln!("SKIPPED: tmux is not installed (the progress line test needs a terminal)");
        return;
    }
    let mut herd = Herd::new(&["Clark"], &[], "[store]\ndurability = \"none\"\n");
    herd.start("Clark");
    let tmux = Tmux::new("bench");
    let command = format!(
        "{HERD} bench --addr {} --connections 2 --duration 4; echo exited-$?; sleep 60",
        herd.addr("Clark")
    );
    let started = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "herd",
        "-x",
        "160",
        "-y",
        "40",
        &command,
    ]);
    assert!(started.status.success());
    eventually(Duration::from_secs(10), "the progress line", || {
        let screen = tmux.screen();
        screen.contains("herd bench: ")
            && screen.contains(" answered, ")
            && screen.contains(" req/s now")
    });
    eventually(Duration::from_secs(20), "the report", || {
        tmux.screen().contains("exited-0")
    });
    let screen = tmux.screen();
    assert!(screen.contains("p99"), "{screen}");
    assert!(
        !screen.contains("req/s now"),
        "the progress line is cleared: {screen}"
    );
}
