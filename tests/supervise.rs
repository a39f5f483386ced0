//! `herd up` supervises: a server killed with SIGKILL is started again within two seconds and
//! the herd converges; with `--no-restart` it is only reported.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The pid of `herd up`'s child running `serve NAME`.
fn child_pid(up: u32, name: &str) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()? {
        let path = entry.ok()?.path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: the comm may hold spaces, so split after its ')'.
        let Some(after) = stat.rsplit_once(')').map(|x| x.1) else {
            continue;
        };
        let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
        if ppid != up {
            continue;
        }
        let cmdline = std::fs::read(path.join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args
            .windows(2)
            .any(|w| w[0] == b"serve" && w[1] == name.as_bytes())
        {
            return path.file_name()?.to_str()?.parse().ok();
        }
    }
    None
}

fn ready_lines(up: &Node, name: &str) -> usize {
    up.stderr
        .lock()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(" ready "))
        .count()
}

fn herd_up(herd: &Herd, extra: &[&str]) -> Node {
    let mut cmd = Command::new(HERD);
    cmd.args(["up", "--config"])
        .arg(&herd.config)
        .args(extra)
        .current_dir(herd.dir.path())
        .env_remove("HERD_SECRET")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let up = spawn(cmd);
    let names: Vec<String> = herd.addrs.keys().cloned().collect();
    eventually(Duration::from_secs(30), "every server to be ready", || {
        names.iter().all(|n| ready_lines(&up, n) == 1)
    });
    up
}

#[test]
fn a_killed_server_is_restarted_within_two_seconds_and_the_herd_converges() {
    let herd = Herd::new(
        &["Bailey", "Bona", "Campbell"],
        &[("Bailey", "Bona"), ("Bona", "Campbell")],
        "[peers]\nbackoff_max_ms = 200\n",
    );
    let mut up = herd_up(&herd, &[]);
    let before = herd.ask(
        "Bailey",
        format!("IAMAT early +1+2 {}\n", now_ts()).as_bytes(),
    );
    assert!(before.starts_with(b"AT Bailey "));

    let pid = child_pid(up.child.id(), "Bona").expect("Bona's process");
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let killed = Instant::now();
    // A report made while Bona is down (or coming back) must still cross it.
    let late = herd.ask(
        "Campbell",
        format!("IAMAT late +3+4 {}\n", now_ts()).as_bytes(),
    );
    assert!(late.starts_with(b"AT Campbell "));
    eventually(Duration::from_secs(3), "Bona ready again", || {
        ready_lines(&up, "Bona") == 2
    });
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(2), "restarted after {took:?}");
    let said = up.stderr.lock().unwrap().clone();
    assert!(
        said.contains("herd up: Bona exited unexpectedly (signal: 9 (SIGKILL))")
            && said.contains("restarting it in"),
        "{said}"
    );
    assert_ne!(child_pid(up.child.id(), "Bona"), Some(pid));

    // The herd converges: every server holds both reports, as first produced.
    let early = String::from_utf8(before).unwrap();
    let late = String::from_utf8(late).unwrap();
    for name in ["Bailey", "Bona", "Campbell"] {
        eventually(
            Duration::from_secs(10),
            &format!("{name} to converge"),
            || {
                herd.at_line(name, "early").as_deref() == Some(early.trim_end())
                    && herd.at_line(name, "late").as_deref() == Some(late.trim_end())
            },
        );
    }

    // Ctrl-C still stops everything; the death is not hidden from the exit code.
    signal(&up.child, libc::SIGINT);
    let status = wait_with_deadline(&mut up.child, Duration::from_secs(30)).expect("herd up stops");
    assert_eq!(status.code(), Some(1));
    let said = up.stderr.lock().unwrap().clone();
    assert!(
        said.contains("Bona exited unexpectedly 1 time(s) and was restarted"),
        "{said}"
    );
    for name in ["Bailey", "Bona", "Campbell"] {
        assert!(
            herd.log(name).contains("stopped; store flushed"),
            "{name} did not stop cleanly"
        );
    }
}

#[test]
fn with_no_restart_a_killed_server_stays_down() {
    let herd = Herd::new(&["Bailey", "Bona"], &[("Bailey", "Bona")], "");
    let mut up = herd_up(&herd, &["--no-restart"]);
    let pid = child_pid(up.child.id(), "Bona").expect("Bona's process");
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    eventually(Duration::from_secs(5), "the death to be reported", || {
        up.stderr
            .lock()
            .unwrap()
            .contains("Bona exited unexpectedly (signal: 9 (SIGKILL)); the others keep running")
    });
    assert!(!up.stderr.lock().unwrap().contains("restarting"));
    assert_eq!(child_pid(up.child.id(), "Bona"), None);
    signal(&up.child, libc::SIGINT);
    let status = wait_with_deadline(&mut up.child, Duration::from_secs(30)).expect("herd up stops");
    assert_eq!(status.code(), Some(1));
}

#[test]
fn a_server_that_keeps_dying_is_given_up_on_and_the_others_keep_running() {
    let herd = Herd::new(&["Bailey", "Bona"], &[("Bailey", "Bona")], "");
    // Bona's port is taken: every start fails at once.
    let _squatter = std::net::TcpListener::bind(&herd.addrs["Bona"]).unwrap();
    let mut cmd = Command::new(HERD);
    cmd.args(["up", "--config"])
        .arg(&herd.config)
        .current_dir(herd.dir.path())
        .env_remove("HERD_SECRET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut up = spawn(cmd);
    eventually(Duration::from_secs(30), "Bona to be given up on", || {
        up.stderr.lock().unwrap().contains("giving up on it")
    });
    let said = up.stderr.lock().unwrap().clone();
    assert!(
        said.contains("Bona exited (exit status: 2), its 5th death in a row"),
        "{said}"
    );
    assert_eq!(
        said.matches("herd up: restarting Bona").count(),
        4,
        "{said}"
    );
    // Bailey still answers.
    eventually(Duration::from_secs(10), "Bailey ready", || {
        ready_lines(&up, "Bailey") == 1
    });
    assert!(herd
        .ask("Bailey", format!("IAMAT x +1+2 {}\n", now_ts()).as_bytes())
        .starts_with(b"AT Bailey "));
    signal(&up.child, libc::SIGINT);
    let status = wait_with_deadline(&mut up.child, Duration::from_secs(30)).expect("herd up stops");
    assert_eq!(status.code(), Some(1));
}
