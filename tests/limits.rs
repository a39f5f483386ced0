//! Limits: what one client may cost a node. Each is exercised with real sockets, and memory is
//! checked where the promise is about memory.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::*;

fn node(extra: &str) -> Herd {
    let mut herd = Herd::new(&["N"], &[], extra);
    herd.start("N");
    herd
}

fn pid(herd: &Herd) -> u32 {
    herd.nodes["N"].child.id()
}

/// Resident memory once the node has finished loading (a WHATSAT waits for the places
/// dataset), so that later growth is what the test caused.
fn settled_rss(herd: &Herd) -> u64 {
    let answer = herd.ask(
        "N",
        b"IAMAT warm +34.068930-118.445127 3\nWHATSAT warm 1 1\n",
    );
    assert!(
        answer.ends_with(b"}\n\n"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    rss_kib(pid(herd))
}

#[test]
fn a_64_mib_line_is_refused_without_buffering_it() {
    let herd = node("");
    let before = settled_rss(&herd);
    let mut s = TcpStream::connect(herd.addr("N")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..64 {
        s.write_all(&chunk).unwrap();
    }
    let during = rss_kib(pid(&herd));
    s.write_all(b"\nIAMAT after +1+2 3\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8(answer).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!("? {}", "x".repeat(256)),
        "the start of the line is echoed"
    );
    assert!(
        lines.next().unwrap().starts_with("AT N "),
        "the connection goes on: {text:.400}"
    );
    assert!(
        during < before + 16 * 1024,
        "memory grew from {before} KiB to {during} KiB with one long line"
    );
    eventually(Duration::from_secs(5), "the limit to be logged", || {
        herd.log("N").contains("line too long")
    });
}

#[test]
fn two_thousand_idle_connections_do_not_stop_a_new_client() {
    let herd = node("");
    let before = settled_rss(&herd);
    let idle: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(herd.addr("N")).unwrap())
        .collect();
    // Each has sent a partial line, so each holds a buffer.
    for mut s in &idle {
        s.write_all(b"IAMAT idle").unwrap();
    }
    let answer = herd.ask("N", b"IAMAT fresh +1+2 3\n");
    assert!(
        answer.starts_with(b"AT N "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let with_idle = rss_kib(pid(&herd));
    eprintln!("resident memory: {before} KiB at rest, {with_idle} KiB with 2,000 idle connections");
    assert!(
        with_idle < before + 64 * 1024,
        "2,000 idle connections cost {} KiB",
        with_idle - before
    );
    drop(idle);
}

#[test]
fn connections_past_the_limit_are_refused_at_once_and_the_others_carry_on() {
    let herd = node("[limits]\nmax_connections = 3\n");
    let mut held: Vec<Client> = (0..3).map(|_| Client::connect(&herd.addr("N"))).collect();
    // Make sure all three are accepted before the fourth arrives.
    for (i, c) in held.iter_mut().enumerate() {
        assert!(c
            .iamat(&format!("held{i}"), "+1+2", "3")
            .starts_with("AT N "));
    }
    let mut extra = TcpStream::connect(herd.addr("N")).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = extra.write_all(b"IAMAT extra +1+2 3\n");
    let mut buf = Vec::new();
    let _ = extra.read_to_end(&mut buf);
    assert!(
        buf.is_empty(),
        "the excess connection must be closed unanswered"
    );
    assert!(
        held[0].iamat("held0", "+1+2", "4").starts_with("AT N "),
        "existing connections are unaffected"
    );
    eventually(Duration::from_secs(5), "the limit to be logged", || {
        herd.log("N").contains("connection limit reached")
    });
    drop(held);
    // Freed slots are reusable.
    eventually(Duration::from_secs(5), "a slot to free up", || {
        let mut s = TcpStream::connect(herd.addr("N")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"IAMAT again +1+2 3\n");
        let mut b = [0u8; 4];
        matches!(s.read(&mut b), Ok(4) if &b == b"AT N")
    });
}

#[test]
fn idle_connections_and_trickled_lines_are_closed() {
    let herd = node("[limits]\nidle_timeout_secs = 1\nline_timeout_secs = 30\n");
    let mut idle = TcpStream::connect(herd.addr("N")).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        idle.read(&mut buf).unwrap(),
        0,
        "an idle connection is closed"
    );
    eventually(
        Duration::from_secs(5),
        "the idle close to be logged",
        || herd.log("N").contains("closing an idle connection"),
    );
    drop(herd);

    let herd = node("[limits]\nidle_timeout_secs = 30\nline_timeout_secs = 1\n");

    // One byte every 200 ms never completes a line within the deadline.
    let mut slow = TcpStream::connect(herd.addr("N")).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let trickle = std::thread::spawn(move || {
        let mut w = slow.try_clone().unwrap();
        for b in b"IAMAT trickle +1+2 3".iter().cycle().take(100) {
            if w.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut rest = Vec::new();
        slow.read_to_end(&mut rest).map(|_| rest)
    });
    let rest = trickle.join().unwrap();
    assert!(
        matches!(rest, Ok(ref r) if r.is_empty()) || rest.is_err(),
        "{rest:?}"
    );
    eventually(
        Duration::from_secs(5),
        "the line deadline to be logged",
        || herd.log("N").contains("did not complete in time"),
    );
}

#[test]
fn a_client_that_never_reads_cannot_make_the_node_buffer_without_bound() {
    let herd = node("");
    let before = settled_rss(&herd);
    let s = TcpStream::connect(herd.addr("N")).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut w = s.try_clone().unwrap();
    let request = b"IAMAT hog +1+2 3\n".repeat(1000);
    let mut sent = 0usize;
    // Keep writing until the node stops reading (the write times out), or 1 GiB.
    while sent < (1 << 30) {
        match w.write_all(&request) {
            Ok(()) => sent += request.len(),
            Err(_) => break,
        }
    }
    assert!(
        sent < (1 << 30),
        "the node kept reading a client that never reads"
    );
    let during = rss_kib(pid(&herd));
    eprintln!(
        "non-reading client: node stopped reading after {} KiB; resident {before} -> {during} KiB",
        sent / 1024
    );
    assert!(
        during < before + 64 * 1024,
        "memory grew from {before} KiB to {during} KiB"
    );
    // Others are still served.
    assert!(herd.ask("N", b"IAMAT other +1+2 3\n").starts_with(b"AT N "));
    drop(s);
}

#[test]
fn garbage_bytes_and_nuls_are_answered_not_fatal() {
    let herd = node("");
    let answer = herd.ask(
        "N",
        b"\x00\x01\x02\xff\xfe\n\x00IAMAT a +1+2 3\nIAMAT ok +1+2 3\n",
    );
    let expected = b"? \x00\x01\x02\xff\xfe\n? \x00IAMAT a +1+2 3\n";
    assert!(
        answer.starts_with(expected),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(String::from_utf8_lossy(&answer)
        .lines()
        .nth(2)
        .unwrap()
        .starts_with("AT N "));
}

/// Sends `count` IAMATs for distinct clients (`make(i)` gives the client ID) over `conns`
/// pipelined connections; returns how many were acknowledged. Every line must be answered.
fn flood_new_clients(herd: &Herd, count: usize, conns: usize, make: fn(usize) -> String) -> usize {
    let addr = herd.addr("N");
    let per = count / conns;
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let stream = TcpStream::connect(&addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                let mut writer = std::io::BufWriter::new(stream.try_clone().unwrap());
                let sender = std::thread::spawn(move || {
                    for i in c * per..(c + 1) * per {
                        writeln!(writer, "IAMAT {} +1.0-2.0 {}", make(i), now_ts()).unwrap();
                    }
                    writer.flush().unwrap();
                    writer.get_ref().shutdown(Shutdown::Write).unwrap();
                });
                let mut acked = 0;
                let mut answers = 0;
                for line in std::io::BufRead::lines(std::io::BufReader::new(stream)) {
                    let line = line.unwrap();
                    answers += 1;
                    if line.starts_with("AT ") {
                        acked += 1;
                    } else {
                        assert!(line.starts_with("? IAMAT "), "{line}");
                    }
                }
                sender.join().unwrap();
                assert_eq!(answers, per, "every IAMAT is answered");
                acked
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

fn store_bytes(herd: &Herd) -> u64 {
    fn walk(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| {
                        let meta = e.metadata().unwrap();
                        if meta.is_dir() {
                            walk(&e.path())
                        } else {
                            std::os::unix::fs::MetadataExt::blocks(&meta) * 512
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&herd.state_dir("N").join("store"))
}

#[test]
fn a_million_new_client_ids_cannot_push_the_store_past_its_record_limit() {
    // The flood runs for many seconds on a slow machine; a line the node has not yet read (it
    // stops reading while 64 answers are pending) must not trip the line timeout meanwhile.
    let herd = node(
        "[store]\nmax_records = 20000\ncache_mib = 16\ndurability = \"os\"\n[limits]\nline_timeout_secs = 600\n",
    );
    let before = settled_rss(&herd);
    let acked = flood_new_clients(&herd, 1_000_000, 4, |i| {
        format!("flood-{i:07}-{}", "x".repeat(80))
    });
    // One client, "warm", was stored before the flood.
    assert_eq!(acked, 20_000 - 1, "exactly the record limit is taken");
    // A known client still updates.
    let mut c = Client::connect(&herd.addr("N"));
    assert!(c
        .iamat("flood-0000000-".to_owned().as_str(), "+1.0-2.0", &now_ts())
        .starts_with("? "));
    assert!(c.iamat("warm", "+5.0-6.0", &now_ts()).starts_with("AT "));
    let grown = rss_kib(pid(&herd)).saturating_sub(before);
    let disk = store_bytes(&herd);
    eprintln!("1,000,000 new client IDs: {acked} taken; RSS grew {grown} KiB; store {disk} bytes");
    // sled's cache (16 MiB), the writer's memory of heads (at most 8 MiB of keys) and the
    // memory of lines are the bounded parts; allow the allocator its slack.
    assert!(grown < 96 * 1024, "RSS grew {grown} KiB");
    assert!(
        disk < 48 << 20,
        "store takes {disk} bytes for 20,000 records"
    );
}

#[test]
fn new_clients_are_refused_once_the_store_reaches_its_size_limit() {
    let herd = node("[store]\nmax_store_mib = 8\nmax_client_id_bytes = 2048\n[limits]\nline_timeout_secs = 600\n");
    let acked = flood_new_clients(&herd, 40_000, 2, |i| {
        format!("big-{i:06}-{}", "y".repeat(1500))
    });
    let disk = store_bytes(&herd);
    eprintln!("40,000 new 1.5 KB client IDs: {acked} taken; store {disk} bytes");
    assert!(acked > 1000 && acked < 40_000, "{acked} taken");
    // The size is looked at every second, so a little more than the limit may be written.
    assert!(disk < 24 << 20, "store takes {disk} bytes, limit 8 MiB");
    // An ID past max_client_id_bytes is refused whatever the store's size.
    let long = "z".repeat(2049);
    let mut c = Client::connect(&herd.addr("N"));
    assert_eq!(
        c.iamat(&long, "+1.0-2.0", "1.0"),
        format!("? IAMAT {long} +1.0-2.0 1.0")
    );
}
