//! Only proven peers may inject reports: AT and SYNC lines from clients are invalid
//! requests, a peer must prove the herd secret in the handshake (the test speaks it itself,
//! from the documented design in `peer::auth`), and the secret never reaches a log.

mod common;

use std::time::Duration;

use common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const FAST: &str = "[peers]\nbackoff_max_ms = 200\n";
const SECRET: &str = "correct-horse-7f3a9c-battery";
const WAIT: Duration = Duration::from_secs(15);

fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

/// The documented proof: HMAC-SHA256 over `herd-auth-v1`, the role, the dialer, the listener
/// and both nonces, each followed by a NUL, in hex.
fn proof(secret: &str, role: &str, dialer: &str, listener: &str, nd: &str, nl: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    for part in ["herd-auth-v1", role, dialer, listener, nd, nl] {
        mac.update(part.as_bytes());
        mac.update(b"\0");
    }
    hex::encode(mac.finalize().into_bytes())
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Every line is answered `? <line>` on one client connection.
fn assert_refused(client: &mut Client, lines: &[&str]) {
    for line in lines {
        assert_eq!(
            show(&client.request(line.as_bytes())),
            show(format!("? {line}\n").as_bytes()),
        );
    }
}

/// No log file and no node's stderr holds `secret`.
fn assert_not_logged(herd: &Herd, secret: &str) {
    let mut files = 0;
    for entry in std::fs::read_dir(herd.log_dir()).unwrap() {
        let path = entry.unwrap().path();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        assert!(!text.is_empty(), "{} is empty", path.display());
        assert!(
            !text.contains(secret),
            "{} contains the secret",
            path.display()
        );
        files += 1;
    }
    assert!(files > 0, "no log files");
    for name in herd.nodes.keys() {
        assert!(!herd.stderr(name).contains(secret), "{name}'s stderr");
    }
}

/// Clark linked to Bona (not running), Campbell configured but not linked to Clark.
fn clark(secret: Option<&str>) -> Herd {
    let mut herd = Herd::new(
        &["Clark", "Bona", "Campbell"],
        &[("Clark", "Bona"), ("Bona", "Campbell")],
        FAST,
    );
    if let Some(s) = secret {
        herd.env.push(("HERD_SECRET".into(), s.into()));
    }
    herd.start("Clark");
    herd
}

#[test]
fn at_and_sync_lines_from_a_client_are_invalid_and_not_stored() {
    for secret in [None, Some(SECRET)] {
        let herd = clark(secret);
        let mut c = Client::connect(&herd.addr("Clark"));
        let known = c.request(b"IAMAT known +1+1 100");
        assert!(known.starts_with(b"AT Clark "), "{}", show(&known));
        assert_refused(
            &mut c,
            &[
                "AT Bona +0.000000000 evil +1+2 5",
                "AT Clark +0.500000000 evil +1+2 5",
                "AT Mallory +1.000000000 evil +1+2 5",
                "AT Bona +0.000000000 known +9+9 99999999999",
                "SYNC PULL 0 0",
                "SYNC Q 1 AAAAAQ",
                "SYNC A 1 AAAAAQ",
                "SYNC W 1 AAAAAQ",
                "SYNC PULL ff 12",
                "SYNC DONE 0 0",
                "HERD WELCOME",
                "HERD PROOF 00ff",
                "HERD CHALLENGE 00 ff",
            ],
        );
        // Nothing was stored or changed.
        assert_eq!(
            c.request(b"WHATSAT evil 10 1"),
            b"? WHATSAT evil 10 1\n".to_vec()
        );
        assert_eq!(
            herd.at_line_of("Clark", b"known").unwrap(),
            &known[..known.len() - 1]
        );
        // A PULL gets its `? ` and nothing else: no records leak to a client.
        assert_eq!(
            herd.ask("Clark", b"SYNC PULL 0 0\n"),
            b"? SYNC PULL 0 0\n".to_vec()
        );
        assert_eq!(
            herd.ask("Clark", b"SYNC PULL 0 0"),
            b"? SYNC PULL 0 0\n".to_vec()
        );
        if let Some(s) = secret {
            assert_not_logged(&herd, s);
        }
    }
}

#[test]
fn a_peer_that_cannot_prove_the_secret_is_refused() {
    let herd = clark(Some(SECRET));
    let nd = "0123456789abcdef0123456789abcdef";

    let challenge = |c: &mut Client| -> (String, String) {
        let line =
            String::from_utf8(c.request(format!("HERD HELLO Bona Clark {nd}").as_bytes())).unwrap();
        let fields: Vec<&str> = line.trim_end_matches('\n').split(' ').collect();
        assert!(
            fields.len() == 4
                && fields[..2] == ["HERD", "CHALLENGE"]
                && is_hex(fields[2], 32)
                && is_hex(fields[3], 64),
            "{line:?}"
        );
        let nl = fields[2].to_owned();
        // The listener proves the secret too, as documented.
        assert_eq!(
            fields[3],
            proof(SECRET, "listener", "Bona", "Clark", nd, &nl),
            "the challenge's MAC"
        );
        (nl, fields[3].to_owned())
    };

    let wrong_proofs = |nl: &str, mac_l: &str| -> Vec<String> {
        vec![
            proof("not-the-secret", "dialer", "Bona", "Clark", nd, nl),
            // The listener's own proof reflected back.
            mac_l.to_owned(),
            // The right secret for another transcript.
            proof(SECRET, "dialer", "Bona", "Clark", nd, "00"),
            proof(SECRET, "dialer", "Campbell", "Clark", nd, nl),
            "00".repeat(32),
        ]
    };

    let mut refusals = 0;
    for i in 0..5 {
        let log = herd.log_len("Clark");
        let mut c = Client::connect(&herd.addr("Clark"));
        let (nl, mac_l) = challenge(&mut c);
        let bad = wrong_proofs(&nl, &mac_l)[i].clone();
        let line = format!("HERD PROOF {bad}");
        assert_eq!(
            show(&c.request(line.as_bytes())),
            show(format!("? {line}\n").as_bytes())
        );
        refusals += 1;
        eventually(WAIT, "the refusal in Clark's log", || {
            let text = herd.log_since("Clark", log);
            text.contains("peer refused") && text.contains("wrong proof")
        });
        // The connection is still an ordinary client's, not a link.
        assert_refused(&mut c, &["AT Bona +0.000000000 evil +1+2 5"]);
        let answer = c.request(b"IAMAT after-refusal +1+2 3");
        assert!(answer.starts_with(b"AT Clark "), "{}", show(&answer));
    }
    assert_eq!(refusals, 5);
    assert_eq!(herd.at_line_of("Clark", b"evil"), None);

    // A malformed proof line is refused the same way.
    let mut c = Client::connect(&herd.addr("Clark"));
    challenge(&mut c);
    assert_refused(&mut c, &["HERD PROOF not-hex"]);

    // The control: with the right proof the same exchange makes a link, and AT lines on it
    // are stored. (So the refusals above are refusals of the proof, nothing else.)
    let mut peer = Client::connect(&herd.addr("Clark"));
    let (nl, _) = challenge(&mut peer);
    let good = proof(SECRET, "dialer", "Bona", "Clark", nd, &nl);
    assert_eq!(
        show(&peer.request(format!("HERD PROOF {good}").as_bytes())),
        show(b"HERD WELCOME\n")
    );
    peer.send(b"AT Bona +0.250000000 injected +1+2 5\n");
    eventually(WAIT, "the authenticated AT line to be stored", || {
        herd.at_line_of("Clark", b"injected").as_deref()
            == Some(&b"AT Bona +0.250000000 injected +1+2 5"[..])
    });
    assert_not_logged(&herd, SECRET);
}

#[test]
fn a_hello_naming_an_unlinked_or_unknown_server_is_refused() {
    for secret in [Some(SECRET), None] {
        let herd = clark(secret);
        let mut c = Client::connect(&herd.addr("Clark"));
        let n = "00112233445566778899aabbccddeeff";
        for hello in [
            format!("HERD HELLO Campbell Clark {n}"),
            format!("HERD HELLO Mallory Clark {n}"),
            format!("HERD HELLO Clark Clark {n}"),
            format!("HERD HELLO bona Clark {n}"),
            format!("HERD HELLO Bona Campbell {n}"),
            format!("HERD HELLO Bona clark {n}"),
        ] {
            let log = herd.log_len("Clark");
            assert_refused(&mut c, &[&hello]);
            eventually(WAIT, &format!("{hello}: refusal logged"), || {
                herd.log_since("Clark", log).contains("peer refused")
            });
            // Still a client connection: AT lines stay invalid.
            assert_refused(&mut c, &["AT Campbell +0.000000000 evil +1+2 5"]);
        }
        assert_eq!(herd.at_line_of("Clark", b"evil"), None);
        if secret.is_none() {
            // Protected mode, the documented control: without a secret, a loopback connection
            // naming a linked server is accepted at once.
            let mut peer = Client::connect(&herd.addr("Clark"));
            assert_eq!(
                show(&peer.request(format!("HERD HELLO Bona Clark {n}").as_bytes())),
                show(b"HERD WELCOME\n")
            );
        }
    }
}

/// Two linked nodes, Able and Baker, each with its own secret.
fn pair(able: &str, baker: &str) -> Herd {
    let mut herd = Herd::new(&["Able", "Baker"], &[("Able", "Baker")], FAST);
    herd.start_with_env("Able", &[("HERD_SECRET", able)]);
    herd.start_with_env("Baker", &[("HERD_SECRET", baker)]);
    herd
}

#[test]
fn nodes_with_different_secrets_never_link() {
    let (a, b) = ("able-secret-5c1e0d", "baker-secret-9b2f44");
    let herd = pair(a, b);
    let line = herd.ask("Able", b"IAMAT kiwi +1+2 3\n");
    assert!(line.starts_with(b"AT Able "), "{}", show(&line));
    let line = herd.ask("Baker", b"IAMAT lime +3+4 5\n");
    assert!(line.starts_with(b"AT Baker "), "{}", show(&line));
    // Each keeps trying, and each time learns the other cannot prove the secret.
    let count = |name: &str| herd.log(name).matches("peer refused the link").count();
    let (able0, baker0) = (count("Able"), count("Baker"));
    eventually(WAIT, "both sides to refuse at least twice more", || {
        count("Able") >= able0 + 2 && count("Baker") >= baker0 + 2
    });
    for name in ["Able", "Baker"] {
        let log = herd.log(name);
        assert!(log.contains("proof of the herd secret is wrong"), "{log}");
        assert!(!log.contains("link up"), "{name} linked: {log}");
    }
    assert_eq!(herd.at_line_of("Baker", b"kiwi"), None);
    assert_eq!(herd.at_line_of("Able", b"lime"), None);
    assert_not_logged(&herd, a);
    assert_not_logged(&herd, b);
}

#[test]
fn nodes_with_the_same_secret_link_and_flood() {
    let herd = pair(SECRET, SECRET);
    herd.wait_links_up("Able", &["Baker"], 0, WAIT);
    herd.wait_links_up("Baker", &["Able"], 0, WAIT);
    let kiwi = herd.ask("Able", b"IAMAT kiwi +1+2 3\n");
    let lime = herd.ask("Baker", b"IAMAT lime +3+4 5\n");
    eventually(WAIT, "reports to cross the link both ways", || {
        herd.at_line_of("Baker", b"kiwi").as_deref() == Some(&kiwi[..kiwi.len() - 1])
            && herd.at_line_of("Able", b"lime").as_deref() == Some(&lime[..lime.len() - 1])
    });
    for name in ["Able", "Baker"] {
        assert!(
            !herd.log(name).contains("peer refused"),
            "{}",
            herd.log(name)
        );
    }
    assert_not_logged(&herd, SECRET);
}

#[test]
fn a_secret_from_secret_file_links_and_is_not_logged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    let extra = format!("secret_file = {:?}\n{FAST}", path.display().to_string());
    let mut herd = Herd::new(&["Able", "Baker"], &[("Able", "Baker")], &extra);
    herd.start("Able");
    // Baker has the same secret from the environment: the file's trailing newline is not
    // part of the secret.
    herd.start_with_env("Baker", &[("HERD_SECRET", SECRET)]);
    herd.wait_links_up("Able", &["Baker"], 0, WAIT);
    let kiwi = herd.ask("Able", b"IAMAT kiwi +1+2 3\n");
    eventually(WAIT, "the report to cross", || {
        herd.at_line_of("Baker", b"kiwi").as_deref() == Some(&kiwi[..kiwi.len() - 1])
    });
    assert_not_logged(&herd, SECRET);
}

/// Accepts the next connection on `listener`, with a deadline.
fn accept(listener: &std::net::TcpListener) -> Client {
    listener.set_nonblocking(true).unwrap();
    let mut stream = None;
    eventually(WAIT, "the node to dial", || match listener.accept() {
        Ok((s, _)) => {
            stream = Some(s);
            true
        }
        Err(_) => false,
    });
    let s = stream.unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    Client {
        stream: std::io::BufReader::new(s),
    }
}

#[test]
fn a_dialling_node_refuses_a_listener_that_cannot_prove_the_secret() {
    let mut herd = Herd::new(&["Clark", "Bona"], &[("Clark", "Bona")], FAST);
    herd.env.push(("HERD_SECRET".into(), SECRET.into()));
    // The test is Bona: it listens at Bona's address and answers Clark's dials itself.
    let listener = std::net::TcpListener::bind(&herd.addrs["Bona"]).unwrap();
    herd.start("Clark");

    let hello = |c: &mut Client| -> String {
        let line = String::from_utf8(c.line()).unwrap();
        let fields: Vec<&str> = line.trim_end_matches('\n').split(' ').collect();
        assert!(
            fields.len() == 5 && fields[..4] == ["HERD", "HELLO", "Clark", "Bona"],
            "{line:?}"
        );
        assert!(is_hex(fields[4], 32), "{line:?}");
        fields[4].to_owned()
    };
    let nl = "fedcba9876543210fedcba9876543210";

    // A challenge made with another secret: Clark sends no proof and drops the connection.
    let log = herd.log_len("Clark");
    let mut c = accept(&listener);
    let nd = hello(&mut c);
    let wrong = proof("not-the-secret", "listener", "Clark", "Bona", &nd, nl);
    c.send(format!("HERD CHALLENGE {nl} {wrong}\n").as_bytes());
    assert_eq!(show(&c.line()), show(b""), "Clark must hang up, not prove");
    eventually(WAIT, "Clark to log the refusal", || {
        let text = herd.log_since("Clark", log);
        text.contains("peer refused the link") && text.contains("proof of the herd secret is wrong")
    });

    // A listener that skips the challenge: a node with a secret fails closed.
    let log = herd.log_len("Clark");
    let mut c = accept(&listener);
    hello(&mut c);
    c.send(b"HERD WELCOME\n");
    assert_eq!(show(&c.line()), show(b""));
    eventually(WAIT, "Clark to log the refusal", || {
        herd.log_since("Clark", log)
            .contains("without proving the herd secret")
    });
    assert!(!herd.log("Clark").contains("link up"));

    // The control: the right challenge gets the documented proof and a link.
    let mut c = accept(&listener);
    let nd = hello(&mut c);
    let right = proof(SECRET, "listener", "Clark", "Bona", &nd, nl);
    c.send(format!("HERD CHALLENGE {nl} {right}\n").as_bytes());
    let expected = proof(SECRET, "dialer", "Clark", "Bona", &nd, nl);
    assert_eq!(
        show(&c.line()),
        show(format!("HERD PROOF {expected}\n").as_bytes())
    );
    c.send(b"HERD WELCOME\n");
    herd.wait_links_up("Clark", &["Bona"], 0, WAIT);
    let pull = String::from_utf8(c.line()).unwrap();
    assert!(
        pull.starts_with("SYNC Q 1 "),
        "a sync round opens the link: {pull:?}"
    );
    // Reports flow to the proven peer.
    let kiwi = herd.ask("Clark", b"IAMAT kiwi +1+2 3\n");
    loop {
        let line = c.line();
        assert!(!line.is_empty(), "Clark closed the link");
        if line == kiwi {
            break;
        }
    }
    assert_not_logged(&herd, SECRET);
}
