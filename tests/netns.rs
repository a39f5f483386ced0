//! The herd as five hosts: each server in its own network namespace with its own address,
//! joined by veth pairs to a bridge, TLS on, the real binary. It checks flooding over the
//! default topology, a host cut off at its interface (the others route around it and it
//! catches up when its interface comes back), `kill -9` and restart of a node, and a host
//! whose clock runs 5 s ahead (libfaketime preloaded into that node) still converging on
//! newest-wins. It also checks the delay line the flood bench uses where netem is missing:
//! hosts on TAP devices reach each other through it, each frame held for its delay.
//!
//! Needs root and iproute2; elsewhere it prints `SKIPPED: <why>` and returns.

mod common;
#[path = "common/netns.rs"]
mod netns;

use std::time::Duration;

use common::*;
use netns::Net;

const WAIT: Duration = Duration::from_secs(30);

fn ask_at(net: &Net, name: &str, bytes: &[u8]) -> Vec<u8> {
    let (addr, bytes) = (net.addr(name), bytes.to_vec());
    net.in_client(move || ask(&addr, &bytes))
}

/// The AT line a WHATSAT for `client` returns at `name`, or `None`.
fn at_of(net: &Net, name: &str, client: &str) -> Option<String> {
    let answer = ask_at(net, name, format!("WHATSAT {client} 10 1\n").as_bytes());
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.starts_with("AT ")
        .then(|| text.lines().next().unwrap().to_owned())
}

fn iamat(net: &Net, name: &str, client: &str, ts: &str) -> String {
    let answer = ask_at(
        net,
        name,
        format!("IAMAT {client} +10+20 {ts}\n").as_bytes(),
    );
    let text = String::from_utf8(answer).unwrap();
    assert!(text.starts_with(&format!("AT {name} ")), "{text:?}");
    text.trim_end().to_owned()
}

/// What `ip ARGS` prints.
fn ip_says(args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn everywhere(net: &Net, names: &[&str], client: &str, at: &str) {
    for name in names {
        eventually(WAIT, &format!("{client} at {name}: {at}"), || {
            at_of(net, name, client).as_deref() == Some(at)
        });
    }
}

#[test]
fn five_hosts_flood_route_around_a_cut_survive_kill_9_and_a_skewed_clock() {
    if let Some(why) = netns::unavailable() {
        netns::skipped(&why);
        return;
    }
    if !std::path::Path::new(netns::FAKETIME_LIB).exists() {
        netns::skipped(&format!(
            "{} is missing (apt-get install libfaketime)",
            netns::FAKETIME_LIB
        ));
        return;
    }
    let mut net = Net::new(
        "[peers]\nbackoff_max_ms = 500\nsync_interval_secs = 2\n",
        &[],
    );
    // Jaquez's host clock runs 5 s ahead: wall-clock reads are shifted, timers are not.
    net.env.insert(
        "Jaquez".into(),
        vec![
            ("LD_PRELOAD".into(), netns::FAKETIME_LIB.into()),
            ("FAKETIME".into(), "+5s".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ],
    );
    net.start_all();
    for (a, b) in FIVE_LINKS {
        eventually(WAIT, &format!("link {a}-{b} up"), || {
            net.log(a).contains(&format!("link up peer={b} "))
                || net.log(b).contains(&format!("link up peer={a} "))
        });
    }
    for name in FIVE {
        let log = net.log(name);
        assert!(!log.contains("peer refused"), "{name}: {log}");
        assert!(
            log.contains(&format!("listen={}", net.addr(name))),
            "{name} binds its own address"
        );
    }

    // Flooding across the default topology.
    let at = iamat(&net, "Bailey", "everyone", &now_ts());
    everywhere(&net, &FIVE, "everyone", &at);

    // The skew is real: Jaquez stamps a report sent now about 5 s late.
    let at = iamat(&net, "Jaquez", "skew-probe", &now_ts());
    let diff = time_diff_nanos(&parse_at(at.as_bytes()).diff);
    assert!(
        (4_000_000_000..6_500_000_000).contains(&diff),
        "Jaquez's time difference {diff} ns is not about +5 s"
    );
    // Newest-wins on the clients' timestamps, whatever the servers' clocks say: an older
    // report at the skewed host loses to a newer one elsewhere, and the other way round.
    let t = now_nanos();
    iamat(&net, "Jaquez", "drift", &ts_of_nanos(t));
    let newer = iamat(&net, "Bailey", "drift", &ts_of_nanos(t + 1_000_000));
    everywhere(&net, &FIVE, "drift", &newer);
    let newest = iamat(&net, "Jaquez", "drift", &ts_of_nanos(t + 2_000_000));
    everywhere(&net, &FIVE, "drift", &newest);
    let stale = ask_at(
        &net,
        "Clark",
        format!("IAMAT drift +1+1 {}\n", ts_of_nanos(t + 1_500_000)).as_bytes(),
    );
    assert!(stale.starts_with(b"AT Clark "), "{stale:?}");
    everywhere(&net, &FIVE, "drift", &newest);

    // Bona's host loses its interface: the others route around it...
    net.set_link("Bona", false);
    let during = iamat(&net, "Clark", "during-cut", &now_ts());
    everywhere(
        &net,
        &["Bailey", "Campbell", "Jaquez"],
        "during-cut",
        &during,
    );
    // ...and it catches up once its interface is back.
    net.set_link("Bona", true);
    everywhere(&net, &["Bona"], "during-cut", &during);
    let from_bona = iamat(&net, "Bona", "after-cut", &now_ts());
    everywhere(&net, &FIVE, "after-cut", &from_bona);

    // kill -9 of Campbell's node, a report while it is down, and a restart.
    net.kill("Campbell");
    let while_dead = iamat(&net, "Jaquez", "while-dead", &now_ts());
    everywhere(
        &net,
        &["Bailey", "Bona", "Clark"],
        "while-dead",
        &while_dead,
    );
    net.start("Campbell");
    everywhere(&net, &["Campbell"], "while-dead", &while_dead);
    everywhere(
        &net,
        &["Campbell"],
        "everyone",
        &at_of(&net, "Bailey", "everyone").unwrap(),
    );
    let back = iamat(&net, "Campbell", "back", &now_ts());
    everywhere(&net, &FIVE, "back", &back);
}

#[test]
fn namespaces_are_removed_at_the_end() {
    if let Some(why) = netns::unavailable() {
        netns::skipped(&why);
        return;
    }
    let tag = {
        let net = Net::new("", &[]);
        assert!(ip_says(&["netns", "list"]).contains(&net.ns_bridge()));
        net.tag.clone()
    };
    let text = ip_says(&["netns", "list"]);
    assert!(!text.contains(&tag), "left behind: {text}");
}

/// The delay line the flood bench uses where the kernel has no netem: hosts on TAP devices
/// reach each other through it, every frame held for the delay, and it is gone at the end.
#[test]
fn a_delay_line_joins_the_hosts_and_holds_every_frame() {
    if let Some(why) = netns::unavailable() {
        netns::skipped(&why);
        return;
    }
    if let Some(why) = netns::tap_unavailable() {
        netns::skipped(&why);
        return;
    }
    let delay = Duration::from_millis(25);
    let tag = {
        let net = Net::with_delay("", &[], delay);
        // An echo server on host 0; the client namespace connects and sends a line.
        let (tx, rx) = std::sync::mpsc::channel();
        let host = net.ns_host(0);
        let server = std::thread::spawn(move || {
            netns::enter_ns(&host);
            let listener = std::net::TcpListener::bind((Net::host_ip(0), 7999)).unwrap();
            tx.send(()).unwrap();
            let (mut s, _) = listener.accept().unwrap();
            let mut line = [0u8; 6];
            std::io::Read::read_exact(&mut s, &mut line).unwrap();
            std::io::Write::write_all(&mut s, &line).unwrap();
        });
        rx.recv().unwrap();
        let addr = format!("{}:7999", Net::host_ip(0));
        let (connect, echo) = net.in_client(move || {
            let started = std::time::Instant::now();
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            let connect = started.elapsed();
            let started = std::time::Instant::now();
            std::io::Write::write_all(&mut s, b"hello\n").unwrap();
            let mut back = [0u8; 6];
            std::io::Read::read_exact(&mut s, &mut back).unwrap();
            assert_eq!(&back, b"hello\n");
            (connect, started.elapsed())
        });
        server.join().unwrap();
        // A connect is a SYN there and a SYN-ACK back; an echo, the line there and back
        // (the first contact also waits for ARP, which the line delays as well).
        assert!(connect >= 2 * delay, "connect took {connect:?}");
        assert!(echo >= 2 * delay, "echo took {echo:?}");
        assert!(echo < 20 * delay, "echo took {echo:?}");
        assert!(net.frames() >= 6, "{} frames", net.frames());
        net.tag.clone()
    };
    let text = ip_says(&["-br", "link"]);
    assert!(!text.contains(&tag), "left behind: {text}");
}
