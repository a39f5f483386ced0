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
    assert_eq!(
        table.lines().last(),
        Some(format!("the whole herd: http://{}/herd", admin_addrs["Bailey"]).as_str()),
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

#[test]
fn herd_up_with_the_built_in_config_prints_an_admin_endpoint_for_every_server() {
    // The shipped data/herd.toml as it is, but for its ports: every 127.0.0.1:PORT moves to a
    // free one, so the test cannot collide with a real herd (or another test).
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/herd.toml"),
    )
    .unwrap();
    let mut config = String::new();
    let mut moved = 0;
    for line in shipped.lines() {
        match line.split_once("= \"127.0.0.1:") {
            Some((key, _)) if !line.starts_with('#') => {
                config.push_str(&format!("{key}= \"127.0.0.1:{}\"\n", free_port()));
                moved += 1;
            }
            _ => {
                config.push_str(line);
                config.push('\n');
            }
        }
    }
    assert_eq!(moved, 10, "five client and five admin addresses:\n{config}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herd.toml");
    std::fs::write(&path, &config).unwrap();
    let parsed = herd::config::Config::parse(&config, "herd.toml", None).unwrap();

    let mut cmd = Command::new(HERD);
    cmd.args(["up", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .env_remove("HERD_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut up = spawn(cmd);
    let stdout = up.child.stdout.take().unwrap();
    let table = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let line = line.unwrap();
            let last = line.starts_with("the whole herd: ");
            lines.push(line);
            if last {
                break;
            }
        }
        lines
    })
    .join()
    .unwrap();
    let url_in = |line: &str| line.split_whitespace().last().unwrap().to_owned();
    for name in FIVE {
        let line = table
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}: {table:?}"));
        let status = url_in(line);
        assert_eq!(
            status,
            format!("http://{}/status", parsed.admin[name]),
            "{table:?}"
        );
        let admin = status
            .trim_start_matches("http://")
            .trim_end_matches("/status");
        eventually(
            Duration::from_secs(30),
            &format!("{name}'s /healthz at {admin}"),
            || http(admin, "GET", "/healthz").is_some_and(|h| h.status == 200),
        );
    }
    let page = url_in(table.last().unwrap());
    assert_eq!(page, format!("http://{}/herd", parsed.admin["Bailey"]));
    let bailey = &parsed.admin["Bailey"];
    eventually(
        Duration::from_secs(30),
        "the herd page to show convergence",
        || {
            get(bailey, "/herd")
                .text()
                .contains("data-verdict=\"converged\"")
        },
    );

    signal(&up.child, libc::SIGINT);
    let status =
        wait_with_deadline(&mut up.child, Duration::from_secs(30)).expect("herd up to stop");
    assert_eq!(status.code(), Some(0), "{}", up.stderr.lock().unwrap());
}
