//! Mutual TLS on peer links, with the real binary: nodes whose certificates come from one CA
//! link and flood; a certificate from another CA, a certificate naming another server, a
//! plaintext peer and an expired certificate are each refused and logged while the herd goes
//! on; a captured link holds no report in clear; certificates are reloaded on SIGHUP; and the
//! `herd certs` and `[tls] dir` surfaces behave as documented.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(20);
const TLS: &str = "[tls]\ndir = \"certs\"\n[peers]\nbackoff_max_ms = 300\n";

fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

fn certs(herd: &Herd, out: &Path, names: &[&str], force: bool) -> std::process::Output {
    herd.certs(out, names, force)
}

fn certs_ok(herd: &Herd, out: &Path, names: &[&str], force: bool) {
    let out = certs(herd, out, names, force);
    assert!(
        out.status.success(),
        "herd certs exited {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cert_dir(herd: &Herd) -> std::path::PathBuf {
    herd.dir.path().join("certs")
}

/// A herd of `names` all linked to Able, with certificates for every one from one CA.
fn herd_with_certs(names: &[&str], links: &[(&str, &str)]) -> Herd {
    let herd = Herd::new(names, links, TLS);
    certs_ok(&herd, &cert_dir(&herd), names, false);
    herd
}

fn flooded(herd: &Herd, from: &str, to: &str, client: &str) {
    let answer = herd.ask(
        from,
        format!("IAMAT {client} +1+2 {}\n", now_ts()).as_bytes(),
    );
    assert!(answer.starts_with(b"AT "), "{}", show(&answer));
    let at = &answer[..answer.len() - 1];
    eventually(WAIT, &format!("{client} to reach {to}"), || {
        herd.at_line_of(to, client.as_bytes()).as_deref() == Some(at)
    });
}

#[test]
fn herd_certs_writes_a_ca_and_named_certificates_and_reuses_an_existing_ca() {
    let herd = Herd::new(&["Able", "Baker"], &[("Able", "Baker")], "");
    let dir = cert_dir(&herd);
    certs_ok(&herd, &dir, &["Able", "Baker"], false);
    for file in [
        "ca.pem",
        "ca.key",
        "Able.pem",
        "Able.key",
        "Baker.pem",
        "Baker.key",
    ] {
        assert!(dir.join(file).exists(), "{file}");
    }
    for key in ["ca.key", "Able.key", "Baker.key"] {
        let mode = std::fs::metadata(dir.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    // Each certificate names its server and the host of its configured address.
    let pem = std::fs::read(dir.join("Able.pem")).unwrap();
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    assert!(herd::peer::tls::names(&der, "Able"));
    assert!(!herd::peer::tls::names(&der, "Baker"));
    let ip = rustls::pki_types::ServerName::IpAddress(
        "127.0.0.1".parse::<std::net::IpAddr>().unwrap().into(),
    );
    assert!(webpki::EndEntityCert::try_from(&der)
        .unwrap()
        .verify_is_valid_for_subject_name(&ip)
        .is_ok());

    // An existing CA is reused, never overwritten: only the named server's files are written,
    // signed by it.
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let ca_key = std::fs::read(dir.join("ca.key")).unwrap();
    let able = std::fs::read(dir.join("Able.pem")).unwrap();
    let out = certs(&herd, &dir, &["Charlie"], false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("Charlie.pem") && listed.contains("Charlie.key"),
        "{listed}"
    );
    assert!(!listed.contains("ca."), "{listed}");
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);
    assert_eq!(std::fs::read(dir.join("ca.key")).unwrap(), ca_key);
    assert_eq!(std::fs::read(dir.join("Able.pem")).unwrap(), able);
    let charlie = rustls::pki_types::CertificateDer::from_pem_slice(
        &std::fs::read(dir.join("Charlie.pem")).unwrap(),
    )
    .unwrap();
    assert!(herd::peer::tls::names(&charlie, "Charlie"));
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(&ca).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    verifier
        .verify_client_cert(&charlie, &[], rustls::pki_types::UnixTime::now())
        .expect("the new certificate chains to the existing CA");
    // Half a CA is an error naming the missing half, and writes nothing.
    let half = herd.dir.path().join("half");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("ca.pem"), &ca).unwrap();
    let out = certs(&herd, &half, &["Able"], false);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ca.key") && err.contains("--force"), "{err}");
    assert!(!half.join("Able.pem").exists());
    // --force makes a new CA.
    certs_ok(&herd, &dir, &["Able"], true);
    assert_ne!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);

    // A name the config does not list gets a certificate naming only itself, with a note.
    let other = herd.dir.path().join("other");
    let out = certs(&herd, &other, &["Mallory"], false);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Mallory is not a server"));
    let pem = std::fs::read(other.join("Mallory.pem")).unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    assert!(herd::peer::tls::names(&der, "Mallory"));
    // A name no certificate can carry is an error naming it.
    let out = certs(&herd, &other, &["bad_name!"], true);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad_name!"));
}

#[test]
fn two_nodes_from_one_ca_link_and_flood() {
    let mut herd = herd_with_certs(&["Able", "Baker"], &[("Able", "Baker")]);
    herd.start_all();
    herd.wait_links_up("Able", &["Baker"], 0, WAIT);
    herd.wait_links_up("Baker", &["Able"], 0, WAIT);
    flooded(&herd, "Able", "Baker", "kiwi");
    flooded(&herd, "Baker", "Able", "lime");
    // Clients stay plain TCP on the same port (the asks above), and nothing was refused.
    for name in ["Able", "Baker"] {
        assert!(!herd.log(name).contains("refused"), "{}", herd.log(name));
    }
}

/// Re-signs a certificate for `name` with the CA in `dir` (rebuilt from its key and name),
/// valid only in the past.
fn expired_cert(dir: &Path, name: &str) {
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca.key")).unwrap()).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "herd development CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    std::fs::set_permissions(
        dir.join(format!("{name}.key")),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

/// Jaquez and Bona are good nodes; Clark, linked to Jaquez, is started with bad certificates
/// made by `spoil`. Both ends refuse and log, and Jaquez goes on flooding to Bona.
fn refused_peer(spoil: impl FnOnce(&Herd, &Path), jaquez_says: &str, clark_says: &str) {
    let mut herd = herd_with_certs(
        &["Jaquez", "Clark", "Bona"],
        &[("Jaquez", "Clark"), ("Jaquez", "Bona")],
    );
    herd.start("Jaquez");
    herd.start("Bona");
    herd.wait_links_up("Jaquez", &["Bona"], 0, WAIT);
    spoil(&herd, &cert_dir(&herd));
    herd.start("Clark");
    eventually(WAIT, &format!("Jaquez to log: {jaquez_says}"), || {
        herd.log("Jaquez").contains(jaquez_says)
    });
    eventually(WAIT, &format!("Clark to log: {clark_says}"), || {
        herd.log("Clark").contains(clark_says)
    });
    assert!(!herd.log("Jaquez").contains("link up peer=Clark"));
    assert!(!herd.log("Clark").contains("link up"));
    // The herd is unaffected: Jaquez still floods to Bona, and Clark heard nothing.
    flooded(&herd, "Jaquez", "Bona", "after-refusal");
    assert_eq!(herd.at_line_of("Clark", b"after-refusal"), None);
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    refused_peer(
        |herd, dir| {
            let other = herd.dir.path().join("other-ca");
            certs_ok(herd, &other, &["Clark"], false);
            for f in ["Clark.pem", "Clark.key"] {
                std::fs::copy(other.join(f), dir.join(f)).unwrap();
            }
        },
        "peer refused: TLS handshake failed",
        "peer refused the link",
    );
}

#[test]
fn bonas_certificate_cannot_pose_as_clark() {
    // Clark presents Bona's certificate (from the right CA) while claiming to be Clark.
    refused_peer(
        |_, dir| {
            for ext in ["pem", "key"] {
                std::fs::copy(
                    dir.join(format!("Bona.{ext}")),
                    dir.join(format!("Clark.{ext}")),
                )
                .unwrap();
            }
        },
        "its certificate does not name the server it claims to be",
        "peer refused the link",
    );
}

#[test]
fn an_expired_certificate_is_refused() {
    refused_peer(
        |_, dir| expired_cert(dir, "Clark"),
        "peer refused: TLS handshake failed",
        "peer refused the link",
    );
}

#[test]
fn a_plaintext_peer_is_refused_and_logged() {
    let mut herd = herd_with_certs(&["Able", "Baker"], &[("Able", "Baker")]);
    herd.start("Able");
    // The test is a plaintext Baker, from loopback, as a peer without TLS would dial.
    let hello = "HERD HELLO Baker Able 00112233445566778899aabbccddeeff";
    let answer = herd.ask(
        "Able",
        format!("{hello}\nAT Baker +0.1 evil +1+2 5\n").as_bytes(),
    );
    assert_eq!(
        show(&answer),
        show(format!("? {hello}\n? AT Baker +0.1 evil +1+2 5\n").as_bytes())
    );
    eventually(WAIT, "the refusal to be logged", || {
        herd.log("Able").contains("plaintext peer")
    });
    assert_eq!(herd.at_line_of("Able", b"evil"), None);
    // A real node without TLS is refused the same way.
    let plain = herd.dir.path().join("plain.toml");
    let text = std::fs::read_to_string(&herd.config)
        .unwrap()
        .replace("[tls]\ndir = \"certs\"\n", "");
    std::fs::write(&plain, text).unwrap();
    let mut cmd = Command::new(HERD);
    cmd.args(["serve", "Baker", "--config"])
        .arg(&plain)
        .arg("--state-dir")
        .arg(herd.state_dir("Baker"))
        .arg("--log-dir")
        .arg(herd.log_dir())
        .env_remove("HERD_SECRET")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let log = herd.log_len("Able");
    let baker = spawn(cmd);
    herd.nodes.insert("Baker".into(), baker);
    eventually(WAIT, "the plaintext node to be refused", || {
        herd.log_since("Able", log).contains("plaintext peer")
    });
    assert!(!herd.log("Able").contains("link up"));
}

/// A relay from `listen` to `upstream` that keeps every byte it carries, both ways.
fn capture_proxy(listen: &str, upstream: String) -> Arc<Mutex<Vec<u8>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind(listen).unwrap();
    let keep = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { return };
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let keep = keep.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = to.shutdown(std::net::Shutdown::Write);
                                return;
                            }
                            Ok(n) => {
                                keep.lock().unwrap().extend_from_slice(&buf[..n]);
                                if to.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        }
    });
    seen
}

/// Starts Able and Baker with Baker behind a capturing proxy, floods reports through the
/// link, and returns every byte the link carried.
fn captured_link(extra: &str, with_certs: bool) -> Vec<u8> {
    let mut herd = Herd::new(&["Able", "Baker"], &[("Able", "Baker")], extra);
    if with_certs {
        certs_ok(&herd, &cert_dir(&herd), &["Able", "Baker"], false);
    }
    let real = format!("127.0.0.1:{}", free_port());
    herd.listen.insert("Baker".into(), real.clone());
    let seen = capture_proxy(&herd.addrs["Baker"].clone(), real);
    // Nothing listens at Able's listed address, so Baker's dials fail and the one link is
    // the one Able dials, through the proxy.
    herd.listen
        .insert("Able".into(), format!("127.0.0.1:{}", free_port()));
    herd.start("Baker");
    herd.start("Able");
    eventually(WAIT, "the link through the proxy", || {
        herd.log("Baker").contains("link up peer=Able dialer=Able")
    });
    for i in 0..20 {
        flooded(&herd, "Able", "Baker", &format!("secret-client-{i}"));
    }
    let bytes = seen.lock().unwrap().clone();
    assert!(
        bytes.len() > 1000,
        "the proxy saw the link: {} bytes",
        bytes.len()
    );
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_captured_tls_link_holds_no_report_in_clear() {
    let clear = captured_link("[peers]\nbackoff_max_ms = 300\n", false);
    assert!(
        contains(&clear, b"AT Able ") && contains(&clear, b"secret-client-7"),
        "the control: a plaintext link carries reports in clear"
    );
    let tls = captured_link(TLS, true);
    for needle in [&b"AT "[..], b"secret-client", b"HERD HELLO", b"SYNC "] {
        assert!(!contains(&tls, needle), "{} in clear", show(needle));
    }
}

#[test]
fn certificates_are_reloaded_on_sighup() {
    let mut herd = herd_with_certs(&["Able", "Baker"], &[("Able", "Baker")]);
    herd.start_all();
    herd.wait_links_up("Able", &["Baker"], 0, WAIT);
    flooded(&herd, "Able", "Baker", "before");

    // A new CA: after Able reloads, Able and Baker no longer trust each other.
    certs_ok(&herd, &cert_dir(&herd), &["Able", "Baker"], true);
    let (able, baker) = (herd.log_len("Able"), herd.log_len("Baker"));
    signal(&herd.nodes["Able"].child, libc::SIGHUP);
    eventually(WAIT, "Able to reload and lose the link", || {
        let log = herd.log_since("Able", able);
        log.contains("TLS certificates reloaded") && log.contains("link dropped")
    });
    eventually(WAIT, "the old and new certificates not to link", || {
        herd.log_since("Able", able).contains("refused")
            || herd.log_since("Baker", baker).contains("refused")
    });
    // Baker reloads too: the link comes back on the new certificates.
    let able = herd.log_len("Able");
    signal(&herd.nodes["Baker"].child, libc::SIGHUP);
    herd.wait_links_up("Able", &["Baker"], able, WAIT);
    flooded(&herd, "Able", "Baker", "after");
    flooded(&herd, "Baker", "Able", "back");
}

#[test]
fn a_bad_sighup_keeps_the_old_certificates() {
    let mut herd = herd_with_certs(&["Able", "Baker"], &[("Able", "Baker")]);
    herd.start_all();
    herd.wait_links_up("Able", &["Baker"], 0, WAIT);
    std::fs::remove_file(cert_dir(&herd).join("Able.key")).unwrap();
    signal(&herd.nodes["Able"].child, libc::SIGHUP);
    eventually(WAIT, "the failed reload to be logged", || {
        let log = herd.log("Able");
        log.contains("cannot reload the TLS certificates") && log.contains("Able.key")
    });
    flooded(&herd, "Able", "Baker", "still-linked");
}

#[test]
fn tls_dir_with_a_missing_file_exits_2_naming_it() {
    let herd = herd_with_certs(&["Able", "Baker"], &[("Able", "Baker")]);
    for missing in ["ca.pem", "Able.pem", "Able.key"] {
        let path = cert_dir(&herd).join(missing);
        let saved = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let out = herd.command("Able").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{missing}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("certs/{missing}")),
            "{missing}: {err}"
        );
        std::fs::write(&path, saved).unwrap();
    }
    // An unknown key in [tls] is an error naming it.
    let bad = Herd::new(&["Able"], &[], "[tls]\ndir = \"certs\"\nfolder = 1\n");
    let out = bad.command("Able").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("folder"));
}

#[test]
fn a_key_readable_by_others_is_warned_about() {
    let mut herd = herd_with_certs(&["Able", "Baker"], &[("Able", "Baker")]);
    let key = cert_dir(&herd).join("Able.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    herd.start("Able");
    eventually(WAIT, "the warning", || {
        let log = herd.log("Able");
        log.contains("readable by other users") && log.contains("Able.key")
    });
    herd.start("Baker");
    assert!(!herd.log("Baker").contains("readable by other users"));
}
