//! Flood latency across network namespaces: the default five-server herd, each server on its
//! own host (network namespace) with TLS on, and open-loop load at Bailey. For each report it
//! measures the time from the IAMAT's answer at Bailey (and, separately, from the moment it
//! was sent) until the report is visible at the farthest server, Jaquez, two hops away.
//! "Visible at Jaquez" is observed by a TLS peer `Probe` linked to Jaquez (the bench holds its
//! certificate), to which Jaquez floods each report it stores, so the figure includes that last
//! hop as well.
//!
//! Run as root: `cargo bench --bench netns_flood [-- WORD...]`. `HERD_BENCH_SECS` (default 5)
//! sets the length of each run; with words, only the runs whose label contains one of them are
//! made. Each run builds a fresh herd and waits until every node has finished its start-up
//! work (loading the offline places, building its store's fingerprints) before it loads
//! Bailey. The runs:
//!
//! - 5,000 reports/s with `durability = "none"` (an answer does not wait for the disk, so
//!   "from the answer" is the flood alone), without added delay: the target's run;
//! - the same at 1,000 reports/s, where the two cores are not saturated;
//! - 5,000 reports/s with `durability = "flush"`, the default: every hop floods a report only
//!   once it is synced to disk;
//! - 5,000 reports/s with `tc netem` adding 1 ms to every host's veth (one millisecond per
//!   hop); where netem is not available it says why and makes the same delay another way:
//!   every host's interface is a TAP device, and a user-space switch in the bench
//!   ([`netns::DelayLine`]) holds each frame 1 ms before it forwards it.
//!
//! Each run also prints the CPU the five nodes used while loaded, and the Ethernet frames the
//! hosts sent (into the bridge, or the delay line) per report.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/netns.rs"]
mod netns;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use netns::Net;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The target's load, in reports per second.
const RATE: u64 = 5_000;

/// `[store]` for a run whose answers do not wait for the disk.
const NONE: &str = "durability = \"none\"";

fn main() {
    if let Some(why) = netns::unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let secs: u64 = std::env::var("HERD_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    // Runs whose label contains any argument, or every run.
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |label: &str| which.is_empty() || which.iter().any(|w| label.contains(w.as_str()));
    let runs = [
        ("5,000/s, no added delay, durability none", RATE, NONE),
        ("1,000/s, no added delay, durability none", 1_000, NONE),
        (
            "5,000/s, no added delay, durability flush",
            RATE,
            "durability = \"flush\"",
        ),
    ];
    for (label, rate, store) in runs {
        if wants(label) {
            run(label, secs, rate, store, Delay::None);
        }
    }
    if wants("1 ms")
        && !run(
            "5,000/s, 1 ms netem delay per veth, durability none",
            secs,
            RATE,
            NONE,
            Delay::Netem,
        )
    {
        let label =
            "5,000/s, 1 ms delay per host link (TAP devices and a delay line), durability none";
        match netns::tap_unavailable() {
            Some(why) => println!("{label}: SKIPPED: {why}"),
            None => {
                run(label, secs, RATE, NONE, Delay::Line);
            }
        }
    }
}

/// How the hosts' links are delayed.
#[derive(PartialEq)]
enum Delay {
    None,
    /// `tc netem delay 1ms` on every host's veth.
    Netem,
    /// Every host on a TAP device, joined by a user-space switch that holds each frame 1 ms.
    Line,
}

/// One run; false if it could not be made.
fn run(label: &str, secs: u64, rate: u64, store: &str, delay: Delay) -> bool {
    let extra = format!("[peers]\nbackoff_max_ms = 500\n[store]\n{store}\n");
    let probe: &[(&str, &[&str])] = &[("Probe", &["Jaquez"])];
    let mut net = match delay {
        Delay::Line => Net::with_delay(&extra, probe, Duration::from_millis(1)),
        _ => Net::new(&extra, probe),
    };
    if delay == Delay::Netem {
        for i in 0..6 {
            let ns = if i == 5 {
                net.ns_client()
            } else {
                net.ns_host(i)
            };
            let dev = format!("vh{i}");
            if let Err(e) = netns::try_cmd(
                "ip",
                &[
                    "netns", "exec", &ns, "tc", "qdisc", "add", "dev", &dev, "root", "netem",
                    "delay", "1ms",
                ],
            ) {
                println!(
                    "{label}: SKIPPED: `tc qdisc add dev {dev} root netem delay 1ms` failed: {e}"
                );
                return false;
            }
        }
    }
    net.start_all();
    for (a, b) in common::FIVE_LINKS {
        common::eventually(Duration::from_secs(30), &format!("link {a}-{b}"), || {
            net.log(a).contains(&format!("link up peer={b} "))
                || net.log(b).contains(&format!("link up peer={a} "))
        });
    }
    // Start-up work (each node loads the offline places and builds its store's fingerprints
    // in the background) would otherwise share the two cores with the first second of load.
    for name in common::FIVE {
        common::eventually(
            Duration::from_secs(30),
            &format!("{name} to settle"),
            || {
                let log = net.log(name);
                log.contains("offline places loaded") && log.contains("store fingerprints built")
            },
        );
    }
    let certs = net.dir.path().join("certs");
    let client_ns = net.ns_client();
    let (bailey, jaquez) = (net.addr("Bailey"), net.addr("Jaquez"));
    let total = rate * secs;

    // The probe: a TLS peer of Jaquez that timestamps every report flooded to it.
    let seen: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let probe = {
        let (seen, ns) = (seen.clone(), client_ns.clone());
        std::thread::spawn(move || {
            netns::enter_ns(&ns);
            let mut lines = probe_link(&certs, &jaquez);
            ready_tx.send(()).unwrap();
            let mut line = String::new();
            let mut got = 0;
            while got < total {
                line.clear();
                match lines.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let now = Instant::now();
                let mut f = line.split(' ');
                if f.next() != Some("AT") {
                    continue;
                }
                let client = f.nth(2).unwrap_or("");
                if let Some(i) = client.strip_prefix("flood-").and_then(|n| n.parse().ok()) {
                    seen.lock().unwrap().insert(i, now);
                    got += 1;
                }
            }
        })
    };
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the probe links to Jaquez");

    // Open-loop load at Bailey: report i is due at start + i / rate.
    let stream = netns::in_ns(&client_ns, move || TcpStream::connect(bailey).unwrap());
    stream.set_nodelay(true).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let answers = std::thread::spawn(move || {
        let mut at = Vec::with_capacity(total as usize);
        let mut line = String::new();
        for _ in 0..total {
            line.clear();
            reader.read_line(&mut line).unwrap();
            assert!(line.starts_with("AT Bailey "), "{line:?}");
            at.push(Instant::now());
        }
        at
    });
    let pids: Vec<u32> = net.nodes.values().map(|n| n.child.id()).collect();
    let cpu_before = cpu_secs(&pids);
    let frames_before = net.frames();
    net.line_lateness();
    let start = Instant::now();
    let mut out = stream;
    let mut buf = Vec::new();
    let mut i = 0u64;
    while i < total {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due - now);
        }
        buf.clear();
        let mut batch = 0;
        // Everything due by now goes out in one write.
        while i < total && start + Duration::from_nanos(i * 1_000_000_000 / rate) <= Instant::now()
        {
            buf.extend_from_slice(
                format!("IAMAT flood-{i} +10+20 {}\n", common::now_ts()).as_bytes(),
            );
            i += 1;
            batch += 1;
        }
        let t = Instant::now();
        sent.lock().unwrap().extend(std::iter::repeat_n(t, batch));
        out.write_all(&buf).unwrap();
    }
    let answered = answers.join().unwrap();
    let busy = (cpu_secs(&pids) - cpu_before) / start.elapsed().as_secs_f64();
    let frames = net.frames() - frames_before;
    let lateness = net.line_lateness();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < total as usize && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = start.elapsed();
    let seen = seen.lock().unwrap().clone();
    drop(probe);
    let sent = sent.lock().unwrap().clone();
    let mut from_answer = Histogram::<u64>::new(3).unwrap();
    let mut from_send = Histogram::<u64>::new(3).unwrap();
    let mut before_answer = 0;
    for i in 0..total {
        let Some(&visible) = seen.get(&i) else {
            continue;
        };
        let us = |d: Duration| d.as_micros() as u64;
        from_send.record(us(visible - sent[i as usize])).unwrap();
        match visible.checked_duration_since(answered[i as usize]) {
            Some(d) => from_answer.record(us(d)).unwrap(),
            None => {
                before_answer += 1;
                from_answer.record(0).unwrap();
            }
        }
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{label}: {} reports over {:.1} s, {} seen at the farthest host",
        total,
        elapsed.as_secs_f64(),
        seen.len()
    );
    println!(
        "  the five nodes used {:.2} cores while loaded ({} cores here); {:.1} frames sent per report",
        busy,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        frames as f64 / total as f64
    );
    println!(
        "  answer at Bailey -> visible past Jaquez: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} arrived before their answer, counted as 0)",
        ms(&from_answer, 0.5),
        ms(&from_answer, 0.99),
        from_answer.max() as f64 / 1000.0,
        before_answer
    );
    println!(
        "  sent to Bailey   -> visible past Jaquez: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms(&from_send, 0.5),
        ms(&from_send, 0.99),
        from_send.max() as f64 / 1000.0
    );
    if let Some((p50, p99, max)) = lateness {
        println!(
            "  the delay line let frames go late by p50 {p50} µs, p99 {p99} µs, max {max} µs (past their 1 ms)"
        );
    }
    true
}

/// CPU time (user and system) the processes `pids` have used so far, in seconds.
fn cpu_secs(pids: &[u32]) -> f64 {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks: u64 = pids
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map(|stat| {
            // Fields 14 and 15 (utime, stime), counted after the parenthesised command name.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        })
        .sum();
    ticks as f64 / tick
}

/// Links to Jaquez as the peer Probe over TLS and returns the link's reader after WELCOME.
fn probe_link(
    certs: &std::path::Path,
    jaquez: &str,
) -> BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(certs.join("ca.pem")).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(certs.join("Probe.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(certs.join("Probe.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("Jaquez").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(jaquez).unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"HERD HELLO Probe Jaquez 00112233445566778899aabbccddeeff\n")
        .unwrap();
    tls.flush().unwrap();
    let mut r = BufReader::new(tls);
    let mut welcome = String::new();
    r.read_line(&mut welcome).unwrap();
    assert_eq!(welcome, "HERD WELCOME\n", "Jaquez let the probe in");
    r
}
