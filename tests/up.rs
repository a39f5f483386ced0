//! `herd up`: a whole herd from one command, stopped cleanly by one Ctrl-C.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn herd_up_runs_every_server_and_stops_them_on_ctrl_c() {
    let (admin, admin_addrs) = admin_table(&["Bailey"]);
    let herd = Herd::five(&format!("[peers]\nbackoff_max_ms = 200\n{admin}"));
    let work = herd.dir.path();
    let mut cmd = Command::new(HERD);
    cmd.args(["up", "--config"])
        .arg(&herd.config)
        .current_dir(work)
        .env_remove("HERD_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // `spawn` collects stderr; stdout (the table of servers) is read below.
    let mut up = spawn(cmd);
    let mut stdout = up.child.stdout.take().unwrap();
    eventually(Duration::from_secs(30), "every server to be ready", || {
        let err = up.stderr.lock().unwrap();
        FIVE.iter().all(|n| {
            err.lines()
                .any(|l| l.starts_with(n) && l.contains(" ready "))
        })
    });
    let at = String::from_utf8(herd.ask(
        "Clark",
        b"IAMAT kiwi +34.068930-118.445127 1621464827.959498503\n",
    ))
    .unwrap();
    assert!(at.starts_with("AT Clark "), "{at}");
    eventually(Duration::from_secs(5), "the report to reach Bailey", || {
        herd.at_line("Bailey", "kiwi").as_deref() == Some(at.trim_end())
    });

    signal(&up.child, libc::SIGINT);
    let status =
        wait_with_deadline(&mut up.child, Duration::from_secs(30)).expect("herd up to stop");
    assert_eq!(
        status.code(),
        Some(0),
        "stderr: {}",
        up.stderr.lock().unwrap()
    );
    let mut table = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut table).unwrap();
    let bailey = table.lines().find(|l| l.starts_with("Bailey")).unwrap();
    assert!(
        bailey.ends_with(&format!("  http://{}/status", admin_addrs["Bailey"])),
        "{table}"
    );
    for name in FIVE {
        assert!(
            table.contains(name) && table.contains(&herd.addrs[name]),
            "{table}"
        );
        assert!(
            work.join("state").join(name).join("store").is_dir(),
            "state/{name}"
        );
        let log = std::fs::read_to_string(work.join("logs").join(format!("{name}.log"))).unwrap();
        assert!(
            log.contains("stopped; store flushed"),
            "{name} did not stop cleanly:\n{log}"
        );
    }
}
