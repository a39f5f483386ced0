//! `herd inspect`: a stopped node's records, offline, in JSON or as a table.

mod common;

use std::process::Command;

use common::*;

fn inspect_cmd(args: &[&str], state_dir: &std::path::Path) -> std::process::Output {
    Command::new(HERD)
        .arg("inspect")
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn prints_every_field_of_every_record_and_refuses_a_running_node() {
    let mut herd = Herd::new(&["Clark"], &[], "");
    herd.start("Clark");
    let mut c = Client::connect(&herd.addr("Clark"));
    let kiwi = c.iamat(
        "kiwi.cs.ucla.edu",
        "+34.068930-118.445127",
        "1621464827.959498503",
    );
    c.send(b"IAMAT \xff\xfeodd\\id -33.8688+151.2093 1700000000\n");
    let odd = String::from_utf8_lossy(&c.line()).trim_end().to_owned();
    assert!(odd.starts_with("AT Clark "), "{odd}");

    // While the node runs, the store is locked: a clear message and a non-zero exit.
    let busy = inspect_cmd(&[], &herd.state_dir("Clark"));
    assert!(!busy.status.success());
    let msg = String::from_utf8_lossy(&busy.stderr);
    assert!(msg.contains("in use by a running node"), "{msg}");

    assert_eq!(herd.stop("Clark").code(), Some(0));
    let before = snapshot(&herd.state_dir("Clark"));
    let records = inspect(&herd.state_dir("Clark"));
    assert_eq!(
        snapshot(&herd.state_dir("Clark")),
        before,
        "inspect must not change the store's files"
    );
    assert_eq!(records.len(), 2);
    let k = records
        .iter()
        .find(|r| r["client"] == "kiwi.cs.ucla.edu")
        .expect("kiwi");
    assert_eq!(k["server"], "Clark");
    assert_eq!(k["location"], "+34.068930-118.445127");
    assert_eq!(k["latitude"], 34.06893);
    assert_eq!(k["longitude"], -118.445127);
    assert_eq!(k["timestamp"], "1621464827.959498503");
    assert_eq!(k["at"], kiwi);
    let diff = k["time_diff"].as_str().unwrap();
    assert!(kiwi.contains(&format!(" {diff} ")), "{diff} not in {kiwi}");

    // A non-UTF-8 ID is escaped (and a backslash doubled), never mangled; its bytes are exact in hex.
    let o = records
        .iter()
        .find(|r| r["client_hex"] == hex::encode(b"\xff\xfeodd\\id"))
        .expect("odd id");
    assert_eq!(o["client"], "\\xff\\xfeodd\\\\id");

    // One client, as JSON and as a table.
    let one = inspect_cmd(
        &["--client", "kiwi.cs.ucla.edu", "--format", "json"],
        &herd.state_dir("Clark"),
    );
    assert!(one.status.success());
    assert_eq!(String::from_utf8(one.stdout).unwrap().lines().count(), 1);
    let table = inspect_cmd(&["--format", "table"], &herd.state_dir("Clark"));
    let text = String::from_utf8(table.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("CLIENT") && lines[0].contains("TIMESTAMP"),
        "{text}"
    );
    assert!(
        text.contains("kiwi.cs.ucla.edu") && text.contains("1621464827.959498503"),
        "{text}"
    );

    // A client that is not there is an error, not an empty success.
    let missing = inspect_cmd(&["--client", "nobody"], &herd.state_dir("Clark"));
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no record of client nobody"));
}

#[test]
fn a_missing_state_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = inspect_cmd(&[], &dir.path().join("nope"));
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("nope") && msg.contains("no such state directory"),
        "{msg}"
    );
}

/// Every file under `dir` with its bytes, in path order.
fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(snapshot(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}
