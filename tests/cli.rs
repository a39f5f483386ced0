//! The command line and the config file: exit codes and messages that name what is wrong.

mod common;

use std::process::Command;

use common::*;

fn serve(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(HERD)
        .arg("serve")
        .args(args)
        .current_dir(dir)
        .env_remove("HERD_SECRET")
        .env_remove("GOOGLE_PLACES_API_KEY")
        .output()
        .unwrap()
}

fn config_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), text).unwrap();
    let out = serve(dir.path(), &["A", "--config", "bad.toml"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msg = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        msg.contains("bad.toml"),
        "the message must name the file: {msg}"
    );
    msg
}

#[test]
fn config_errors_exit_2_and_name_the_problem() {
    let ok = "[servers]\nA = \"127.0.0.1:1\"\nB = \"127.0.0.1:2\"\n";
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{ok}[places]\nprovider = \"offline\"\nbogus = 1\n"),
            "bogus",
        ),
        (format!("colour = \"red\"\n{ok}"), "colour"),
        (
            format!("links = [[\"A\", \"C\"]]\n{ok}"),
            "unknown server \"C\"",
        ),
        (format!("links = [[\"A\", \"A\"]]\n{ok}"), "itself"),
        (
            "[servers]\nA = \"127.0.0.1:1\"\nA = \"127.0.0.1:2\"\n".into(),
            "duplicate",
        ),
        (
            "[servers]\nA = \"127.0.0.1:1\"\nB = \"127.0.0.1:1\"\n".into(),
            "also the address of A",
        ),
        ("[servers]\nA = \"localhost\"\n".into(), "servers.A"),
        ("[servers]\nA = \"127.0.0.1:70000\"\n".into(), "port"),
        (
            format!("{ok}[places]\nprovider = \"carrier-pigeon\"\n"),
            "carrier-pigeon",
        ),
        ("[servers]\nA = 5\n".into(), "expected a string"),
        ("this is not toml".into(), "bad.toml"),
    ];
    for (text, needle) in cases {
        let msg = config_error(&text);
        assert!(
            msg.to_lowercase().contains(&needle.to_lowercase()),
            "expected {needle:?} in: {msg}"
        );
    }
}

#[test]
fn unknown_name_and_unreadable_config_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = serve(dir.path(), &["Nobody"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Nobody"));

    let out = serve(dir.path(), &["Bailey", "--config", "missing.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("missing.toml") && msg.contains("cannot read"),
        "{msg}"
    );

    let out = Command::new(HERD).arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "bad usage");
}

#[test]
fn a_port_in_use_is_a_clear_error_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("h.toml"),
        format!("[servers]\nA = {addr:?}\n"),
    )
    .unwrap();
    let out = serve(dir.path(), &["A", "--config", "h.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains(&addr) && msg.contains("cannot listen"),
        "{msg}"
    );
}

#[test]
fn defaults_come_from_the_working_directory_and_sigterm_exits_0() {
    // No --config and no data/herd.toml here: the built-in five-server herd. --listen and
    // --admin move the node off the default ports so the test cannot collide with a real herd.
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(HERD);
    cmd.args(["serve", "Bailey", "--listen", &listen, "--admin", &admin])
        .current_dir(dir.path())
        .env_remove("HERD_SECRET")
        .stderr(std::process::Stdio::piped());
    let mut node = spawn(cmd);
    eventually(std::time::Duration::from_secs(20), "readiness", || {
        node.stderr.lock().unwrap().contains(" ready ")
    });
    // The built-in herd serves its admin endpoint (here where --admin put it).
    assert_eq!(get(&admin, "/healthz").status, 200);
    let answer = ask(&listen, b"IAMAT kiwi +1+2 3\n");
    assert!(
        answer.starts_with(b"AT Bailey "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    signal(&node.child, libc::SIGTERM);
    let status =
        wait_with_deadline(&mut node.child, std::time::Duration::from_secs(20)).expect("exit");
    assert_eq!(status.code(), Some(0));
    assert!(
        dir.path().join("state/Bailey/store").is_dir(),
        "default state dir is state/NAME"
    );
    let log = std::fs::read_to_string(dir.path().join("logs/Bailey.log")).unwrap();
    assert!(
        log.contains("IAMAT kiwi +1+2 3"),
        "the log holds every input line"
    );
    assert!(
        log.contains("AT Bailey "),
        "the log holds every output line"
    );
    assert!(log.contains("ready"), "the log announces readiness");
}

#[test]
fn rust_log_filters_the_log_file() {
    let herd = Herd::new(&["Q"], &[], "");
    let mut node = spawn({
        let mut cmd = herd.command("Q");
        cmd.env("RUST_LOG", "warn");
        cmd
    });
    eventually(std::time::Duration::from_secs(20), "readiness", || {
        node.stderr.lock().unwrap().contains(" ready ")
    });
    assert!(herd.ask("Q", b"IAMAT quiet +1+2 3\n").starts_with(b"AT Q "));
    signal(&node.child, libc::SIGTERM);
    wait_with_deadline(&mut node.child, std::time::Duration::from_secs(20)).expect("exit");
    let log = herd.log("Q");
    assert!(
        log.contains("protected mode"),
        "warnings still go to the log: {log}"
    );
    assert!(
        !log.contains("IAMAT quiet"),
        "RUST_LOG=warn must drop the per-line info records: {log}"
    );
}
