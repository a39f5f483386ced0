//! `herd client` against a real node: lines from arguments and from stdin, `--pretty`, NAME
//! resolution, an unreachable or hanging-up server, and an interactive session in tmux.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

fn client(args: &[&str]) -> Command {
    let mut cmd = Command::new(HERD);
    cmd.arg("client").args(args).env_remove("RUST_LOG");
    cmd
}

fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn lines_from_arguments_and_stdin_are_answered_in_order() {
    let mut herd = Herd::new(&["Clark"], &[], "");
    herd.start("Clark");
    let addr = herd.addr("Clark");
    let iamat = format!("IAMAT kiwi +34.068930-118.445127 {}", now_ts());

    let out = run(
        client(&[&addr, &iamat, "WHATSAT kiwi 10 2", "BOGUS line"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("AT Clark "), "{stdout}");
    let (first, rest) = stdout.split_once('\n').unwrap();
    assert!(first.ends_with(&iamat["IAMAT ".len()..]), "{first}");
    let (whatsat, invalid) = rest.split_at(rest.find("}\n\n").unwrap() + 3);
    check_whatsat_answer(whatsat.as_bytes(), 2);
    assert_eq!(invalid, "? BOGUS line\n");

    // From stdin: blank lines get no answer and are skipped; CRLF is a line end; the last
    // line may lack its newline.
    let out = run(
        client(&[&addr]),
        b"WHATSAT nobody 10 1\n\n   \nIAMAT bird +1+2 1700000000\r\nWHATSAT bird 1 1",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "? WHATSAT nobody 10 1");
    assert!(
        lines[1].starts_with("AT Clark ") && lines[1].ends_with(" bird +1+2 1700000000"),
        "{stdout}"
    );
    assert_eq!(
        lines[2], lines[1],
        "the WHATSAT answer starts with the stored line"
    );
    assert!(stdout.ends_with("}\n\n"), "{stdout}");
}

#[test]
fn pretty_indents_whatsat_and_names_come_from_the_config() {
    let mut herd = Herd::new(&["Clark", "Bona"], &[], "");
    herd.start("Clark");
    let config = herd.config.to_str().unwrap().to_owned();
    let iamat = format!("IAMAT kiwi +34.068930-118.445127 {}", now_ts());
    let out = run(
        client(&[
            "Clark",
            "--config",
            &config,
            "--pretty",
            &iamat,
            "WHATSAT kiwi 10 2",
        ]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    assert!(lines.next().unwrap().starts_with("AT Clark "));
    assert!(lines.next().unwrap().starts_with("AT Clark "));
    assert_eq!(lines.next(), Some("{"), "{stdout}");
    assert!(
        stdout.contains("\n  \"results\": [\n"),
        "indented: {stdout}"
    );
    let doc_start = stdout.find("\n{").unwrap() + 1;
    let doc: serde_json::Value =
        serde_json::from_str(stdout[doc_start..].trim_end()).expect("the document is JSON");
    assert!(doc["results"].as_array().unwrap().len() <= 2);

    // A name that is not a server of the config: a usage error naming it and the config.
    let out = run(
        client(&["Nobody", "--config", &config, "IAMAT x +1+2 1"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("Nobody") && err.contains(&config), "{err}");
}

#[test]
fn an_unreachable_or_hanging_up_server_is_exit_1() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let out = run(client(&[&addr, "IAMAT x +1+2 1"]), b"");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&addr), "{err}");

    // A server that reads one line and closes without an answer.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut byte = [0u8; 1];
        while s.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {}
    });
    let out = run(client(&[&addr]), b"IAMAT x +1+2 1\nIAMAT y +1+2 1\n");
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("closed the connection"), "{err}");
}

#[test]
fn an_interactive_session_in_a_terminal() {
    if !tmux_installed() {
        eprintln!("SKIPPED: tmux is not installed (the interactive client test needs it)");
        return;
    }
    let mut herd = Herd::new(&["Clark"], &[], "");
    herd.start("Clark");
    let home = herd.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let tmux = Tmux::new("client");
    let command = format!(
        "env HOME={} {} client {}; echo exited-$?; sleep 60",
        home.display(),
        HERD,
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
    assert!(started.status.success(), "{}", text(&started.stderr));
    // capture-pane trims the prompt's trailing space.
    let prompt = format!("{}>", herd.addr("Clark"));
    eventually(Duration::from_secs(10), "the prompt", || {
        tmux.screen().contains(&prompt)
    });

    // Type a line, read the answer off the screen.
    tmux.keys(&["-l", "IAMAT kiwi +34.068930-118.445127 1700000000"]);
    tmux.keys(&["Enter"]);
    eventually(Duration::from_secs(10), "the AT answer on screen", || {
        tmux.screen().lines().any(|l| {
            l.starts_with("AT Clark ") && l.ends_with("kiwi +34.068930-118.445127 1700000000")
        })
    });
    // Line editing: the previous line from history, its end replaced.
    tmux.keys(&["Up"]);
    for _ in 0.."1700000000".len() {
        tmux.keys(&["BSpace"]);
    }
    tmux.keys(&["-l", "1700000001"]);
    tmux.keys(&["Enter"]);
    eventually(Duration::from_secs(10), "the edited line's answer", || {
        tmux.screen().lines().any(|l| {
            l.starts_with("AT Clark ") && l.ends_with("kiwi +34.068930-118.445127 1700000001")
        })
    });
    tmux.keys(&["-l", "WHATSAT kiwi 10 1"]);
    tmux.keys(&["Enter"]);
    eventually(Duration::from_secs(10), "the places document", || {
        tmux.screen().contains("\"status\"")
    });
    // Ctrl-D ends the session with exit 0, and the history is saved.
    tmux.keys(&["C-d"]);
    eventually(Duration::from_secs(10), "the client to exit 0", || {
        tmux.screen().contains("exited-0")
    });
    assert!(tmux.alive());
    let history = std::fs::read_to_string(home.join(".herd_history")).unwrap();
    assert!(
        history.contains("IAMAT kiwi +34.068930-118.445127 1700000001"),
        "{history}"
    );
}
