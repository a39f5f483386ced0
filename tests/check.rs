//! `herd check` against real herds: it names a server that is down while the others take
//! writes, agrees again (with `--wait`) once that server is back and synced, names servers
//! whose stores differ with their record counts, and refuses a config it cannot check.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

fn check(herd: &Herd, args: &[&str]) -> Output {
    Command::new(HERD)
        .arg("check")
        .arg("--config")
        .arg(&herd.config)
        .args(args)
        .current_dir(herd.dir.path())
        .env_remove("HERD_SECRET")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn check_names_a_server_that_is_down_and_agrees_once_it_is_back() {
    let (table, admin) = admin_table(&FIVE);
    let mut herd = Herd::five(&format!("[peers]\nbackoff_max_ms = 200\n{table}"));
    herd.start_all();
    let mut c = Client::connect(&herd.addr("Clark"));
    c.iamat("kiwi", "+34.068930-118.445127", &now_ts());
    let out = check(&herd, &["--wait", "20"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        "converged: 5 servers hold the same 1 record\n"
    );

    herd.kill("Campbell");
    let mut c = Client::connect(&herd.addr("Bailey"));
    c.iamat("plum", "+40.7128-074.0060", &now_ts());
    c.iamat("pear", "+51.5072-000.1276", &now_ts());
    eventually(
        Duration::from_secs(10),
        "the writes to reach Jaquez",
        || metric(&admin["Jaquez"], "herd_records") == 3.0,
    );
    let out = check(&herd, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("unreachable: Campbell"), "{text}");
    assert!(
        text.contains("  Campbell did not answer: cannot connect to http://"),
        "{text}"
    );
    assert!(
        text.contains("  Bailey, Bona, Clark, Jaquez hold 3 records"),
        "{text}"
    );
    // --wait does not turn a dead server into an answer: it gives up when the time is up.
    let started = Instant::now();
    let out = check(&herd, &["--wait", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() >= Duration::from_millis(800));

    herd.start("Campbell");
    let out = check(&herd, &["--wait", "30"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        "converged: 5 servers hold the same 3 records\n"
    );
    assert_eq!(metric(&admin["Campbell"], "herd_records"), 3.0);
}

#[test]
fn check_names_servers_that_differ_with_their_counts() {
    // Unlinked: nothing a server is told reaches the other.
    let (table, _) = admin_table(&["A", "B"]);
    let mut herd = Herd::new(&["A", "B"], &[], &table);
    herd.start_all();
    Client::connect(&herd.addr("A")).iamat("one", "+1+2", &now_ts());
    let mut b = Client::connect(&herd.addr("B"));
    b.iamat("two", "+1+2", &now_ts());
    b.iamat("three", "+1+2", &now_ts());
    let out = check(&herd, &["--wait", "0.5"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "differ: A, B", "{text}");
    assert!(
        lines[1].starts_with("  A holds 1 record (fingerprint "),
        "{text}"
    );
    assert!(
        lines[2].starts_with("  B holds 2 records (fingerprint "),
        "{text}"
    );
    assert_eq!(lines.len(), 3, "{text}");
}

#[test]
fn check_needs_an_admin_address_for_every_server() {
    let (table, _) = admin_table(&["A"]);
    let herd = Herd::new(&["A", "B"], &[("A", "B")], &table);
    let out = check(&herd, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin.B") && err.contains("server B has no admin address"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let out = check(&herd, &["--wait", "soon"]);
    assert_eq!(out.status.code(), Some(2));
}
