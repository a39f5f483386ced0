//! The peer handshake as an attacker meets it: the listener reveals nothing derived from the
//! secret before the dialer has proven it, short secrets are refused at start, refused
//! handshakes are limited per connection and per source, and a healthy link cannot be taken
//! over by a second connection claiming the same name.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SECRET: &str = "5b1d0c9e7a3f48e2b6c4d1a0f9e8d7c6-handshake";
const WAIT: Duration = Duration::from_secs(15);

fn proof(role: &str, dialer: &str, listener: &str, nd: &str, nl: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    for part in ["herd-auth-v2", role, dialer, listener, nd, nl] {
        mac.update(part.as_bytes());
        mac.update(b"\0");
    }
    hex::encode(mac.finalize().into_bytes())
}

fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

/// N linked to L; the test plays L. With `secret`, both have it.
fn node(secret: bool, extra: &str) -> Herd {
    let mut herd = Herd::new(&["N", "L"], &[("N", "L")], extra);
    if secret {
        herd.env.push(("HERD_SECRET".into(), SECRET.into()));
    }
    herd.start("N");
    herd
}

fn connect(addr: &str) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    BufReader::new(s)
}

fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l
}

/// Links to N as L, proving the secret when there is one; returns the link after WELCOME.
fn link_as_l(herd: &Herd, secret: bool) -> BufReader<TcpStream> {
    let mut r = connect(&herd.addr("N"));
    let nd = "00112233445566778899aabbccddeeff";
    r.get_mut()
        .write_all(format!("HERD HELLO L N {nd}\n").as_bytes())
        .unwrap();
    let first = line(&mut r);
    if !secret {
        assert_eq!(first, "HERD WELCOME\n");
        return r;
    }
    let nl = first
        .strip_prefix("HERD CHALLENGE ")
        .unwrap_or_else(|| panic!("{first:?}"))
        .trim_end()
        .to_owned();
    let mac = proof("dialer", "L", "N", nd, &nl);
    r.get_mut()
        .write_all(format!("HERD PROOF {mac}\n").as_bytes())
        .unwrap();
    assert_eq!(
        line(&mut r),
        format!("HERD WELCOME {}\n", proof("listener", "L", "N", nd, &nl))
    );
    r
}

#[test]
fn the_listener_reveals_nothing_derived_from_the_secret_before_the_dialer_proves() {
    let herd = node(true, "");
    for i in 0..5 {
        let mut c = connect(&herd.addr("N"));
        let nd = format!("{i:032x}");
        c.get_mut()
            .write_all(format!("HERD HELLO L N {nd}\n").as_bytes())
            .unwrap();
        let challenge = line(&mut c);
        let fields: Vec<&str> = challenge.trim_end().split(' ').collect();
        assert!(
            fields.len() == 3
                && fields[..2] == ["HERD", "CHALLENGE"]
                && fields[2].len() == 32
                && fields[2].bytes().all(|b| b.is_ascii_hexdigit()),
            "the challenge is a bare 16-byte nonce: {challenge:?}"
        );
        // A wrong proof gets its `? ` and nothing else: no MAC of the listener, ever.
        let bad = format!("HERD PROOF {}", "ab".repeat(32));
        c.get_mut()
            .write_all(format!("{bad}\n").as_bytes())
            .unwrap();
        assert_eq!(line(&mut c), format!("? {bad}\n"));
        c.get_mut().shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "more after the refusal: {}", show(&rest));
    }
    // The control: the listener's proof does come, after a right proof.
    link_as_l(&herd, true);
}

fn serve_exit(herd: &Herd, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = herd.command("N");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.stdout(Stdio::null()).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_short_secret_is_refused_at_start_with_exit_2() {
    let herd = Herd::new(&["N", "L"], &[("N", "L")], "");
    let (code, err) = serve_exit(&herd, &[("HERD_SECRET", "hunter2")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("HERD_SECRET") && err.contains("at least 32 bytes"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "the secret is not printed: {err}");

    let path = herd.dir.path().join("secret");
    std::fs::write(&path, format!("{}\n", "x".repeat(31))).unwrap();
    let with_file = Herd::new(
        &["N", "L"],
        &[("N", "L")],
        &format!("secret_file = {:?}\n", path.display().to_string()),
    );
    let (code, err) = serve_exit(&with_file, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("secret_file") && err.contains(&path.display().to_string()),
        "{err}"
    );
    // The control: 32 bytes are enough.
    std::fs::write(&path, "x".repeat(32)).unwrap();
    let mut with_file = with_file;
    with_file.start("N");
}

/// Sends a HELLO as L and a wrong proof; expects the challenge, then the refusal.
fn wrong_proof(c: &mut BufReader<TcpStream>, nonce: &str) {
    c.get_mut()
        .write_all(format!("HERD HELLO L N {nonce}\n").as_bytes())
        .unwrap();
    assert!(line(c).starts_with("HERD CHALLENGE "));
    let bad = format!("HERD PROOF {}", "ab".repeat(32));
    c.get_mut()
        .write_all(format!("{bad}\n").as_bytes())
        .unwrap();
    assert_eq!(line(c), format!("? {bad}\n"));
}

#[test]
fn refused_hellos_close_the_connection_and_then_the_source() {
    let herd = node(true, "");
    // Per connection: the third refusal closes it.
    let mut c = connect(&herd.addr("N"));
    for i in 0..3 {
        wrong_proof(&mut c, &format!("{i:02x}"));
    }
    assert_eq!(
        line(&mut c),
        "",
        "the connection is closed after three refusals"
    );
    eventually(WAIT, "the close to be logged", || {
        herd.log("N").contains("too many refused peer handshakes")
    });

    // Per source: after 20 refusals in a minute, even a HELLO that would be welcome is refused
    // at once, without a challenge.
    for i in 3..20 {
        let mut c = connect(&herd.addr("N"));
        wrong_proof(&mut c, &format!("{i:02x}"));
    }
    let log = herd.log_len("N");
    let mut c = connect(&herd.addr("N"));
    c.get_mut().write_all(b"HERD HELLO L N 00ff\n").unwrap();
    assert_eq!(line(&mut c), "? HERD HELLO L N 00ff\n");
    eventually(WAIT, "the source limit to be logged", || {
        herd.log_since("N", log)
            .contains("too many refused handshakes from this address")
    });
    // Clients from that address are still served.
    let answer = herd.ask("N", b"IAMAT kiwi +1+2 3\n");
    assert!(answer.starts_with(b"AT N "), "{}", show(&answer));
}

#[test]
fn a_server_this_node_does_not_link_to_yet_is_refused_without_locking_out_its_address() {
    // What a server added to the herd meets at a node that has not reloaded its config: many
    // more refusals than lock an address out, and the address is still let in afterwards.
    for secret in [true, false] {
        let herd = node(secret, "");
        for i in 0..3 * 20 {
            let mut c = connect(&herd.addr("N"));
            for hello in [
                format!("HERD HELLO Newcomer N {i:04x}"),
                format!("HERD HELLO L Elsewhere {i:04x}"),
            ] {
                c.get_mut()
                    .write_all(format!("{hello}\n").as_bytes())
                    .unwrap();
                assert_eq!(line(&mut c), format!("? {hello}\n"));
            }
        }
        assert!(herd.log("N").contains("not counted against its address"));
        assert!(!herd
            .log("N")
            .contains("too many refused handshakes from this address"));
        link_as_l(&herd, secret);
    }
}

/// A second connection claiming to be L does not replace L's healthy link: it is closed and
/// the first keeps carrying reports.
fn not_hijacked(secret: bool) {
    let herd = node(secret, "");
    let mut first = link_as_l(&herd, secret);
    first
        .get_mut()
        .write_all(b"AT L +0.100000000 before +1+2 100\n")
        .unwrap();
    eventually(WAIT, "the first link to carry a report", || {
        herd.at_line_of("N", b"before").is_some()
    });
    let log = herd.log_len("N");
    let mut second = link_as_l(&herd, secret);
    second
        .get_mut()
        .write_all(b"AT L +0.100000000 hijack +1+2 100\n")
        .unwrap();
    // The second connection is closed by N.
    let mut rest = Vec::new();
    let _ = second.read_to_end(&mut rest);
    eventually(WAIT, "N to keep the existing link", || {
        herd.log_since("N", log)
            .contains("keeping the existing link")
    });
    assert!(
        !herd.log_since("N", log).contains("link replaced"),
        "{}",
        herd.log_since("N", log)
    );
    first
        .get_mut()
        .write_all(b"AT L +0.100000000 after +1+2 100\n")
        .unwrap();
    eventually(WAIT, "the first link to keep carrying reports", || {
        herd.at_line_of("N", b"after").is_some()
    });
    assert_eq!(herd.at_line_of("N", b"hijack"), None);
}

#[test]
fn a_healthy_link_is_not_hijacked_in_protected_mode() {
    not_hijacked(false);
}

#[test]
fn a_healthy_link_is_not_hijacked_with_a_secret() {
    not_hijacked(true);
}

#[test]
fn a_link_proven_dead_is_replaced() {
    // With syncs every second, a peer silent for two seconds is dead.
    let herd = node(false, "[peers]\nsync_interval_secs = 1\n");
    let mut first = link_as_l(&herd, false);
    let log = herd.log_len("N");
    // The first connection stays silent; N's sync requests go unanswered. The wait is the
    // condition under test (two seconds of silence), not a guess at when something is done.
    std::thread::sleep(Duration::from_millis(2500));
    let mut second = link_as_l(&herd, false);
    eventually(WAIT, "the silent link to be replaced", || {
        herd.log_since("N", log).contains("link replaced")
    });
    second
        .get_mut()
        .write_all(b"AT L +0.100000000 fresh +1+2 100\n")
        .unwrap();
    eventually(WAIT, "the new link to carry a report", || {
        herd.at_line_of("N", b"fresh").is_some()
    });
    let mut rest = Vec::new();
    assert!(
        first.read_to_end(&mut rest).is_ok(),
        "the replaced connection is closed"
    );
}
