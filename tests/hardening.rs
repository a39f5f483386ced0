//! Hardening against a hostile client or peer, each test replaying an attack against the real
//! binary: a report timestamped far in the future (from a client and from a peer), log
//! amplification and log spoofing with Unicode, blank lines against the idle timeout, one
//! source address taking every connection slot, and what the node's files let other users do.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

fn node(extra: &str) -> Herd {
    let mut herd = Herd::new(&["N"], &[], extra);
    herd.start("N");
    herd
}

/// Everything in the node's log files (the current one and every rotated one).
fn all_logs(herd: &Herd) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(herd.log_dir()).unwrap() {
        text.push_str(&String::from_utf8_lossy(
            &std::fs::read(entry.unwrap().path()).unwrap(),
        ));
    }
    text
}

/// Waits until the node has logged `marker` (logging runs on its own thread).
fn wait_logged(herd: &Herd, marker: &str) {
    eventually(Duration::from_secs(10), &format!("{marker} logged"), || {
        herd.log("N").contains(marker)
    });
}

/// Sends `input` from another thread while reading the answers, so that a large exchange
/// cannot deadlock on full socket buffers; returns everything the node answered.
fn ask_while_reading(addr: &str, input: Vec<u8>) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(&input).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    writer.join().unwrap();
    answer
}

// ---------------------------------------------------------------------------------------------
// Timestamps in the future.

#[test]
fn a_far_future_iamat_is_invalid_and_later_reports_win() {
    let herd = node("");
    let mut c = Client::connect(&herd.addr("N"));
    let pin = b"IAMAT victim +1+1 18446744073709551615.999999999";
    let mut refused = b"? ".to_vec();
    refused.extend_from_slice(pin);
    refused.push(b'\n');
    assert_eq!(c.request(pin), refused, "a far-future IAMAT is answered ? ");
    assert_eq!(herd.at_line("N", "victim"), None, "and nothing is stored");

    // The bound is the default, one hour: just beyond it is refused, within it accepted.
    let hour = 3600 * 1_000_000_000i128;
    let beyond = ts_of_nanos(now_nanos() + hour + 60_000_000_000);
    let answer = c.request(format!("IAMAT victim +1+1 {beyond}").as_bytes());
    assert!(answer.starts_with(b"? "), "{answer:?}");

    let now = now_ts();
    let real = c.iamat("victim", "+34.068930-118.445127", &now);
    assert!(real.starts_with("AT N "), "{real}");
    assert_eq!(herd.at_line("N", "victim").as_deref(), Some(real.as_str()));
    let later = now_ts();
    let newer = c.iamat("victim", "+35-118", &later);
    assert_eq!(
        herd.at_line("N", "victim").as_deref(),
        Some(newer.as_str()),
        "every later real report wins"
    );

    let within = ts_of_nanos(now_nanos() + hour - 60_000_000_000);
    assert!(c.iamat("soon", "+1+1", &within).starts_with("AT N "));
    wait_logged(&herd, "IAMAT timestamp too far in the future");
}

#[test]
fn max_future_secs_is_configurable() {
    let herd = node("[limits]\nmax_future_secs = 10\n");
    let mut c = Client::connect(&herd.addr("N"));
    let ahead = ts_of_nanos(now_nanos() + 60_000_000_000);
    let answer = c.request(format!("IAMAT c +1+1 {ahead}").as_bytes());
    assert!(answer.starts_with(b"? "), "{answer:?}");
    assert!(c.iamat("c", "+1+1", &now_ts()).starts_with("AT N "));
}

#[test]
fn a_peers_far_future_at_line_is_dropped_and_logged() {
    // Only N runs; the test plays its linked peer P.
    let mut herd = Herd::new(
        &["N", "P"],
        &[("N", "P")],
        "[peers]\nbackoff_min_ms = 5000\nbackoff_max_ms = 5000\n",
    );
    herd.start("N");
    let mut peer = herd.link_as("N", "P");
    let w = peer.get_mut();
    w.write_all(b"AT P +0.000000000 victim +1+1 18446744073709551615.999999999\n")
        .unwrap();
    let ahead = ts_of_nanos(now_nanos() + 2 * 3600 * 1_000_000_000);
    w.write_all(format!("AT P +0.000000000 victim2 +1+1 {ahead}\n").as_bytes())
        .unwrap();
    // A good report after them: once it is stored, the two before it have been handled.
    w.write_all(format!("AT P +0.000000000 marker +1+1 {}\n", now_ts()).as_bytes())
        .unwrap();
    eventually(Duration::from_secs(10), "the good report stored", || {
        herd.at_line("N", "marker").is_some()
    });
    assert_eq!(herd.at_line("N", "victim"), None);
    assert_eq!(herd.at_line("N", "victim2"), None);
    wait_logged(
        &herd,
        "dropping a peer's report timestamped too far in the future",
    );
    let log = herd.log("N");
    let dropped = log
        .lines()
        .filter(|l| l.contains("too far in the future") && l.contains("peer=P"))
        .count();
    // Both are refused; the log says so once for the two (refusals are logged at a bounded
    // rate, the metric counts each).
    assert_eq!(dropped, 1, "{log}");

    // A real report of the victim from a client is stored and wins.
    let mut c = Client::connect(&herd.addr("N"));
    let real = c.iamat("victim", "+2+2", &now_ts());
    assert_eq!(herd.at_line("N", "victim").as_deref(), Some(real.as_str()));
}

// ---------------------------------------------------------------------------------------------
// Logs.

#[test]
fn long_lines_of_nuls_grow_the_log_by_a_bounded_amount() {
    let herd = node("");
    wait_logged(&herd, " ready ");
    let before = herd.log_len("N");
    let mut input = Vec::with_capacity(200 * 65_001 + 64);
    for _ in 0..200 {
        input.extend(std::iter::repeat_n(0u8, 65_000));
        input.push(b'\n');
    }
    input.extend_from_slice(b"IAMAT after-the-nuls +1+1 1\n");
    let answer = ask_while_reading(&herd.addr("N"), input.clone());
    assert_eq!(
        answer.iter().filter(|&&b| b == b'\n').count(),
        201,
        "every line answered"
    );
    wait_logged(&herd, "after-the-nuls");
    let grown = herd.log_len("N") - before;
    eprintln!(
        "200 lines of 65,000 NULs ({} bytes in) grew the log by {grown} bytes",
        input.len()
    );
    assert!(
        grown < 1024 * 1024,
        "the log grew by {grown} bytes for 13 MB of NULs"
    );
    let log = herd.log("N");
    assert!(
        log.contains("…(65000 bytes)"),
        "a long line is shown with its length"
    );
}

#[test]
fn the_log_is_rotated_by_size() {
    let herd = node("[log]\nmax_bytes = 65536\nkeep = 2\nline_bytes = 1000\n");
    // About 2 KB of log per request (in and out): 400 KB in all, several rotations.
    let mut input = Vec::new();
    for i in 0..200 {
        input.extend_from_slice(format!("junk{i} ").as_bytes());
        input.extend(std::iter::repeat_n(b'x', 900));
        input.push(b'\n');
    }
    input.extend_from_slice(b"IAMAT rotation-marker +1+1 1\n");
    ask_while_reading(&herd.addr("N"), input);
    wait_logged(&herd, "rotation-marker");
    let dir = herd.log_dir();
    let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len());
    for name in ["N.log", "N.log.1", "N.log.2"] {
        let len = size(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(len <= 65_536, "{name} holds {len} bytes");
    }
    assert!(
        size(dir.join("N.log.3")).is_err(),
        "only `keep` rotated files are kept"
    );
    assert!(herd.log("N").contains("log rotated"), "rotation is logged");
}

#[test]
fn unicode_format_and_separator_characters_are_escaped_in_the_log() {
    let herd = node("");
    let client = "spoof\u{202E}gnp.exe\u{2028}next\u{2029}\u{200B}\u{FEFF}";
    let mut c = Client::connect(&herd.addr("N"));
    let answer = c.iamat(client, "+1+1", &now_ts());
    assert!(answer.starts_with("AT N "), "{answer}");
    wait_logged(&herd, "spoof");
    let log = all_logs(&herd);
    for raw in ['\u{202E}', '\u{2028}', '\u{2029}', '\u{200B}', '\u{FEFF}'] {
        assert!(
            !log.contains(raw),
            "U+{:04X} reached the log raw",
            raw as u32
        );
    }
    assert!(
        log.contains(r"spoof\u{202e}gnp.exe\u{2028}next\u{2029}\u{200b}\u{feff}"),
        "{log}"
    );
}

/// The value of `key=value` in a log record.
fn field<'a>(record: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    record
        .split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key} in {record}"))
}

/// A client ID no other run of this test uses.
fn unique(what: &str) -> String {
    format!("{what}-{}-{}", std::process::id(), now_nanos())
}

/// Stores a report of client `marker` and waits until the node has logged it.
fn log_marker(herd: &Herd, marker: &str) {
    let mut c = Client::connect(&herd.addr("N"));
    assert!(c.iamat(marker, "+1+1", &now_ts()).starts_with("AT N "));
    wait_logged(herd, marker);
}

/// The connection id of a log record (`conn{id=7 ...`).
fn conn_id(record: &str) -> Option<&str> {
    record.split("conn{id=").nth(1)?.split(' ').next()
}

#[test]
fn two_million_blank_lines_are_one_counted_record_and_rotate_nothing_out() {
    // A log of 2 MiB in all: one record per blank line (about 100 bytes each) would rotate
    // the marker out a hundred times over.
    let herd = node("[log]\nmax_bytes = 1048576\nkeep = 1\n");
    let marker = unique("before-the-blanks");
    log_marker(&herd, &marker);

    const BLANKS: usize = 2_000_000;
    let mut input = vec![b'\n'; BLANKS];
    input.extend_from_slice(b"IAMAT after-the-blanks +1+1 1\n");
    let answer = ask_while_reading(&herd.addr("N"), input);
    assert!(
        answer.starts_with(b"AT N "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(answer.iter().filter(|&&b| b == b'\n').count(), 1);
    wait_logged(&herd, "after-the-blanks");

    let log = all_logs(&herd);
    assert!(log.contains(&marker), "the marker was rotated out");
    let counted: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("blank_lines="))
        .map(|l| field(l, "blank_lines").parse().unwrap())
        .collect();
    assert_eq!(counted.iter().sum::<u64>(), BLANKS as u64, "{counted:?}");
    assert_eq!(counted.len(), 1, "one run, one record: {counted:?}");
    assert!(!log.contains("log rotated"), "nothing was rotated");
}

#[test]
fn a_flood_past_the_log_budget_is_one_record_of_what_was_not_logged() {
    // Without the budget, the flood's 200,000 records (about 20 MB) would rotate the 2 MiB
    // log many times over.
    let herd = node(
        "[log]\nmax_bytes = 1048576\nkeep = 1\nconnection_records = 500\ninterval_secs = 3600\n",
    );
    let marker = unique("before-the-flood");
    log_marker(&herd, &marker);

    const JUNK: usize = 100_000;
    let mut input = Vec::new();
    for i in 0..JUNK {
        input.extend_from_slice(format!("junk {i}\n").as_bytes());
    }
    let answer = ask_while_reading(&herd.addr("N"), input);
    assert_eq!(
        answer
            .split(|&b| b == b'\n')
            .filter(|l| l.starts_with(b"? junk "))
            .count(),
        JUNK,
        "every line is answered"
    );
    wait_logged(&herd, "lines not logged");

    let log = all_logs(&herd);
    assert!(log.contains(&marker), "the marker was rotated out");
    let held: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lines not logged"))
        .collect();
    assert_eq!(held.len(), 1, "{held:?}");
    let flood = conn_id(held[0]).unwrap();
    let records = |dir: &str| {
        log.lines()
            .filter(|l| conn_id(l) == Some(flood) && l.contains(dir))
            .count()
    };
    let (logged_in, logged_out) = (records("dir=\"in\""), records("dir=\"out\""));
    assert_eq!(logged_in + logged_out, 500, "the budget, spent");
    let not_logged: usize = field(held[0], "lines").parse().unwrap();
    let answers_not_logged: usize = field(held[0], "answers").parse().unwrap();
    assert_eq!(logged_in + not_logged, JUNK, "{}", held[0]);
    assert_eq!(logged_out + answers_not_logged, JUNK, "{}", held[0]);
    assert!(!log.contains("log rotated"), "nothing was rotated");
}

// ---------------------------------------------------------------------------------------------
// Connections.

#[test]
fn blank_lines_do_not_keep_a_connection_open() {
    let herd = node("[limits]\nidle_timeout_secs = 2\nline_timeout_secs = 30\n");
    let mut s = TcpStream::connect(herd.addr("N")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"IAMAT keepalive +1+1 1\n").unwrap();
    let mut first = [0u8; 4];
    s.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"AT N");
    let last_request = Instant::now();
    // A blank line every 300 ms, far more often than the idle timeout, until the node closes.
    let mut w = s.try_clone().unwrap();
    let blanks = std::thread::spawn(move || {
        let mut sent = 0u32;
        while w.write_all(b"\n").is_ok() && sent < 100 {
            sent += 1;
            std::thread::sleep(Duration::from_millis(300));
        }
        sent
    });
    let mut rest = Vec::new();
    let closed = s.read_to_end(&mut rest);
    let after = last_request.elapsed();
    assert!(
        closed.is_ok()
            || closed
                .as_ref()
                .is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
        "{closed:?}"
    );
    assert!(
        after < Duration::from_secs(10),
        "closed {after:?} after the last request"
    );
    assert!(
        after >= Duration::from_millis(1900),
        "closed early: {after:?}"
    );
    let sent = blanks.join().unwrap();
    assert!(sent >= 5, "only {sent} blank lines were sent");
    wait_logged(&herd, "closing an idle connection");
}

/// A connection to `addr` from the loopback address `from` (say 127.0.0.2), or `None` if this
/// system cannot bind it.
fn connect_from(from: &str, addr: &str) -> Option<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind(format!("{from}:0").parse().unwrap()).ok()?;
        socket.connect(addr.parse().unwrap()).await.ok()
    })?;
    let std = stream.into_std().unwrap();
    std.set_nonblocking(false).unwrap();
    Some(std)
}

#[test]
fn one_source_address_cannot_take_every_slot() {
    let herd = node("[limits]\nmax_connections = 10\nmax_connections_per_source = 3\n");
    let mut held: Vec<Client> = (0..3).map(|_| Client::connect(&herd.addr("N"))).collect();
    for (i, c) in held.iter_mut().enumerate() {
        assert!(c
            .iamat(&format!("held{i}"), "+1+2", "3")
            .starts_with("AT N "));
    }
    // A fourth from the same address is closed unanswered.
    let mut extra = TcpStream::connect(herd.addr("N")).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = extra.write_all(b"IAMAT extra +1+2 3\n");
    let mut buf = Vec::new();
    let _ = extra.read_to_end(&mut buf);
    assert!(buf.is_empty(), "the fourth connection must be refused");
    wait_logged(&herd, "per-source connection limit reached");
    assert!(held[0].iamat("held0", "+1+2", "4").starts_with("AT N "));

    // Another address still gets in.
    let Some(mut other) = connect_from("127.0.0.2", &herd.addr("N")) else {
        eprintln!("SKIPPED: the other-address half: cannot bind 127.0.0.2 on this system");
        return;
    };
    other
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    other.write_all(b"IAMAT other +1+2 3\n").unwrap();
    other.shutdown(Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    other.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"AT N "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // And a freed slot is usable again from the first address.
    drop(held.pop());
    eventually(Duration::from_secs(5), "a slot to free up", || {
        let mut s = TcpStream::connect(herd.addr("N")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"IAMAT again +1+2 3\n");
        let mut b = [0u8; 4];
        matches!(s.read(&mut b), Ok(4) if &b == b"AT N")
    });
}

#[test]
fn refused_connections_are_summarised_per_source_not_logged_one_by_one() {
    let (table, admin) = admin_table(&["N"]);
    // A long interval: besides the first refusal, the only record is the summary at the stop.
    let mut herd = node(&format!(
        "[limits]\nmax_connections_per_source = 2\n[log]\ninterval_secs = 3600\n{table}"
    ));
    let mut held: Vec<Client> = (0..2).map(|_| Client::connect(&herd.addr("N"))).collect();
    for (i, c) in held.iter_mut().enumerate() {
        assert!(c
            .iamat(&format!("held{i}"), "+1+2", "3")
            .starts_with("AT N "));
    }
    const REFUSED: usize = 300;
    for i in 0..REFUSED {
        let mut s = TcpStream::connect(herd.addr("N")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(b"IAMAT refused +1+2 3\n");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        assert!(buf.is_empty(), "connection {i} was answered");
    }
    assert_eq!(
        metric(
            &admin["N"],
            "herd_connections_refused_total{reason=\"per_source\"}"
        ),
        REFUSED as f64
    );
    assert!(held[1].iamat("held1", "+1+2", "4").starts_with("AT N "));
    let refusal_records = |log: &str| {
        log.lines()
            .filter(|l| l.contains("limit reached") || l.contains("connections refused"))
            .count()
    };
    assert_eq!(refusal_records(&herd.log("N")), 1, "{}", herd.log("N"));

    drop(held);
    assert_eq!(herd.stop("N").code(), Some(0));
    let log = herd.log("N");
    assert_eq!(refusal_records(&log), 2, "{log}");
    let summary = log
        .lines()
        .find(|l| l.contains("connections refused in the last interval"))
        .unwrap();
    assert_eq!(field(summary, "refused"), REFUSED.to_string(), "{summary}");
    assert_eq!(field(summary, "sources"), "1", "{summary}");
    assert!(
        summary.contains(&format!("reasons=per_source={REFUSED} ")),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("top=127.0.0.1={REFUSED} ")),
        "{summary}"
    );
}

// ---------------------------------------------------------------------------------------------
// Files.

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every file and directory under `dir`, `dir` included.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![dir.to_owned()];
    let mut i = 0;
    while i < found.len() {
        if found[i].is_dir() {
            for entry in std::fs::read_dir(&found[i]).unwrap() {
                found.push(entry.unwrap().path());
            }
        }
        i += 1;
    }
    found
}

#[test]
fn state_and_logs_are_private_to_the_nodes_user() {
    let herd = node("");
    let mut c = Client::connect(&herd.addr("N"));
    assert!(c.iamat("kiwi", "+1+1", &now_ts()).starts_with("AT N "));
    assert_eq!(mode(&herd.log_dir()), 0o700);
    assert_eq!(mode(&herd.log_dir().join("N.log")), 0o600);
    let state = herd.state_dir("N");
    assert_eq!(mode(state.parent().unwrap()), 0o700, "state/");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("herd.lock")), 0o600);
    let everything = walk(&state);
    assert!(everything.len() > 3, "{everything:?}");
    for path in everything {
        assert_eq!(
            mode(&path) & 0o077,
            0,
            "{} is mode {:o}",
            path.display(),
            mode(&path)
        );
    }
}

/// Starts N and waits for it to exit (it must refuse to start); returns its stderr.
fn refused_start(herd: &Herd) -> String {
    let mut node = spawn(herd.command("N"));
    let status =
        wait_with_deadline(&mut node.child, Duration::from_secs(20)).expect("the node must exit");
    assert_eq!(status.code(), Some(2), "{status:?}");
    // The stderr reader thread may lag the exit by a moment.
    eventually(Duration::from_secs(5), "stderr", || {
        node.stderr.lock().unwrap().contains("herd: ")
    });
    let text = node.stderr.lock().unwrap().clone();
    text
}

#[test]
fn a_symlinked_log_file_is_refused_not_followed() {
    let herd = Herd::new(&["N"], &[], "");
    let victim = herd.dir.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    std::fs::create_dir_all(herd.log_dir()).unwrap();
    std::os::unix::fs::symlink(&victim, herd.log_dir().join("N.log")).unwrap();
    let stderr = refused_start(&herd);
    assert!(
        stderr.contains("N.log") && stderr.contains("symbolic link"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
}

#[test]
fn a_symlinked_lock_file_is_refused_not_followed() {
    let herd = Herd::new(&["N"], &[], "");
    let victim = herd.dir.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    std::fs::create_dir_all(herd.state_dir("N")).unwrap();
    std::os::unix::fs::symlink(&victim, herd.state_dir("N").join("herd.lock")).unwrap();
    let stderr = refused_start(&herd);
    assert!(
        stderr.contains("herd.lock") && stderr.contains("symbolic link"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
}

#[test]
fn a_secret_file_others_can_read_is_warned_about_by_name() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("herd-secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef-herd\n").unwrap();
    let extra = format!("secret_file = {:?}\n", secret.display().to_string());
    let set_mode =
        |m: u32| std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(m)).unwrap();

    set_mode(0o644);
    let mut herd = Herd::new(&["N"], &[], &extra);
    herd.start("N");
    let warning = format!("secret_file={}", secret.display());
    eventually(Duration::from_secs(5), "the warning on stderr", || {
        herd.stderr("N").contains(&warning)
    });
    assert!(
        herd.stderr("N").contains("mode=644"),
        "{}",
        herd.stderr("N")
    );
    herd.kill("N");

    set_mode(0o600);
    let mut herd = Herd::new(&["N"], &[], &extra);
    herd.start("N");
    let mut c = Client::connect(&herd.addr("N"));
    assert!(c.iamat("x", "+1+1", "1").starts_with("AT N "));
    assert!(
        !herd.stderr("N").contains("secret_file="),
        "{}",
        herd.stderr("N")
    );
}
