//! The admin HTTP endpoint of real nodes: metrics that move as the herd works, `/clients/ID`
//! against `herd inspect`, `/healthz` through a shutdown, and bad or hostile requests.

mod common;
#[path = "support/fake_google.rs"]
mod fake_google;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const IAMAT: &str = "herd_requests_total{command=\"IAMAT\"}";

fn peer_up(peer: &str) -> String {
    format!("herd_peer_up{{peer=\"{peer}\"}}")
}

#[test]
fn metrics_move_as_the_herd_works() {
    let names = ["Bailey", "Bona", "Campbell"];
    let (table, admin) = admin_table(&names);
    let mut herd = Herd::new(
        &names,
        &[("Bailey", "Bona"), ("Bona", "Campbell")],
        &format!("[peers]\nbackoff_max_ms = 200\n{table}"),
    );
    herd.start_all();
    let bailey = &admin["Bailey"];
    eventually(Duration::from_secs(10), "Bailey's link to Bona up", || {
        metric(bailey, &peer_up("Bona")) == 1.0
    });

    // The text format and every family of the interface.
    let m = get(bailey, "/metrics");
    assert_eq!(m.status, 200);
    let content_type = m.header("content-type").unwrap();
    assert!(content_type.contains("version=0.0.4"), "{content_type}");
    let text = m.text();
    for family in [
        "# TYPE herd_requests_total counter",
        "# TYPE herd_reports_total counter",
        "# TYPE herd_records gauge",
        "# TYPE herd_peer_up gauge",
        "# TYPE herd_sync_rounds_total counter",
        "# TYPE herd_sync_bytes_total counter",
        "# TYPE herd_places_cache_total counter",
        "# TYPE herd_places_upstream_seconds histogram",
        "# TYPE herd_flush_seconds histogram",
        "# TYPE herd_connections gauge",
    ] {
        assert!(
            text.lines().any(|l| l == family),
            "{family} missing:\n{text}"
        );
    }

    // N IAMATs: the counter grows by exactly N, each new client is a record.
    let before = metric(bailey, IAMAT);
    let stored_before = metric(bailey, "herd_reports_total{outcome=\"stored\"}");
    let records_before = metric(bailey, "herd_records");
    let flushes_before = metric(bailey, "herd_flush_seconds_count");
    let acks_before = metric(bailey, "herd_ack_seconds_count");
    let n = 25;
    let mut c = Client::connect(&herd.addr("Bailey"));
    for i in 0..n {
        let at = c.iamat(&format!("m{i}"), "+34.068930-118.445127", &now_ts());
        assert!(at.starts_with("AT Bailey "), "{at}");
    }
    c.send(b"NOPE\n");
    assert!(c.line().starts_with(b"? NOPE"));
    // A resent (older) report is stale.
    assert!(c.iamat("m0", "+1+1", "1").starts_with("AT Bailey "));
    let m = get(bailey, "/metrics").text();
    assert_eq!(sample(&m, IAMAT).unwrap() - before, f64::from(n + 1));
    assert_eq!(
        sample(&m, "herd_reports_total{outcome=\"stored\"}").unwrap() - stored_before,
        f64::from(n)
    );
    assert!(sample(&m, "herd_reports_total{outcome=\"stale\"}").unwrap() >= 1.0);
    assert!(sample(&m, "herd_requests_total{command=\"invalid\"}").unwrap() >= 1.0);
    assert_eq!(
        sample(&m, "herd_records").unwrap() - records_before,
        f64::from(n)
    );
    assert!(sample(&m, "herd_flush_seconds_count").unwrap() > flushes_before);
    // Every IAMAT answered with its AT line was timed, the stale one too.
    assert_eq!(
        sample(&m, "herd_ack_seconds_count").unwrap() - acks_before,
        f64::from(n + 1)
    );
    assert!(sample(&m, "herd_connections").unwrap() >= 1.0);
    // The flooded reports are records at the far end too.
    eventually(
        Duration::from_secs(10),
        "Campbell to hold every report",
        || metric(&admin["Campbell"], "herd_records") == f64::from(n),
    );
    // Their age on arrival was measured where they were flooded to, and is an age on this
    // machine: well under the time the test took.
    let bona = get(&admin["Bona"], "/metrics").text();
    let floods = sample(&bona, "herd_flood_seconds_count").unwrap();
    let age = sample(&bona, "herd_flood_seconds_sum").unwrap();
    assert!(floods >= 1.0, "{bona}");
    assert!(age / floods < 10.0, "mean flood age {} s", age / floods);
    drop(c);
    eventually(
        Duration::from_secs(5),
        "the connection gauge to drop",
        || metric(bailey, "herd_connections") == 0.0,
    );

    // A killed peer is down, and up again after its restart; the sync at link-up adds bytes.
    let rounds = "herd_sync_rounds_total{peer=\"Bona\"}";
    let sent = "herd_sync_bytes_total{direction=\"sent\",peer=\"Bona\"}";
    let received = "herd_sync_bytes_total{direction=\"received\",peer=\"Bona\"}";
    herd.kill("Bona");
    eventually(Duration::from_secs(10), "Bailey to see Bona down", || {
        metric(bailey, &peer_up("Bona")) == 0.0
    });
    let m = get(bailey, "/metrics").text();
    let (rounds0, sent0, received0) = (
        sample(&m, rounds).unwrap(),
        sample(&m, sent).unwrap(),
        sample(&m, received).unwrap(),
    );
    let status = get(bailey, "/status").text();
    assert!(
        status.contains("data-peer=\"Bona\" data-state=\"down\""),
        "{status}"
    );
    herd.start("Bona");
    eventually(
        Duration::from_secs(10),
        "Bailey to see Bona up again",
        || metric(bailey, &peer_up("Bona")) == 1.0,
    );
    eventually(Duration::from_secs(10), "a sync round with Bona", || {
        let m = get(bailey, "/metrics").text();
        sample(&m, rounds).unwrap() > rounds0
            && sample(&m, sent).unwrap() > sent0
            && sample(&m, received).unwrap() > received0
    });
    let status = get(bailey, "/status").text();
    assert!(
        status.contains("data-peer=\"Bona\" data-state=\"up\""),
        "{status}"
    );
}

#[test]
fn clients_id_is_the_record_inspect_prints_after_the_stop() {
    let (table, admin) = admin_table(&["Clark"]);
    let mut herd = Herd::new(&["Clark"], &[], &table);
    herd.start("Clark");
    let a = &admin["Clark"];
    let mut c = Client::connect(&herd.addr("Clark"));
    c.iamat(
        "kiwi.cs.ucla.edu",
        "+34.068930-118.445127",
        "1621464827.959498503",
    );
    c.send(b"IAMAT \xffodd/id% -33.8688+151.2093 1700000000\n");
    assert!(c.line().starts_with(b"AT Clark "));
    drop(c);

    let kiwi = get(a, "/clients/kiwi.cs.ucla.edu");
    assert_eq!(kiwi.status, 200);
    assert_eq!(
        kiwi.header("content-type").as_deref(),
        Some("application/json")
    );
    let kiwi: serde_json::Value = serde_json::from_slice(&kiwi.body).unwrap();
    // Any bytes, percent-encoded (a slash and a percent sign included).
    let odd = get(a, "/clients/%FFodd%2Fid%25");
    assert_eq!(odd.status, 200, "{}", odd.text());
    let odd: serde_json::Value = serde_json::from_slice(&odd.body).unwrap();
    let missing = get(a, "/clients/nobody");
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("nobody"));

    assert_eq!(herd.stop("Clark").code(), Some(0));
    let records = inspect(&herd.state_dir("Clark"));
    let offline = |client: &str| {
        records
            .iter()
            .find(|r| r["client"] == client)
            .unwrap_or_else(|| panic!("{client} in {records:?}"))
            .clone()
    };
    assert_eq!(kiwi, offline("kiwi.cs.ucla.edu"));
    assert_eq!(odd, offline("\\xffodd/id%"));
}

#[test]
fn healthz_is_503_while_stopping_and_200_when_ready() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let google = rt.block_on(fake_google::FakeGoogle::start());
    let (table, admin) = admin_table(&["Clark"]);
    let mut herd = Herd::new(
        &["Clark"],
        &[],
        &format!(
            "[places]\nprovider = \"google\"\ngoogle_url = {:?}\n{table}",
            google.legacy_url()
        ),
    );
    herd.env
        .push(("GOOGLE_PLACES_API_KEY".into(), "test-key".into()));
    // From the moment the process starts: refused, then (maybe) 503 "starting", then 200.
    let node = spawn(herd.command("Clark"));
    let a = admin["Clark"].clone();
    let mut seen = Vec::new();
    eventually(Duration::from_secs(20), "/healthz 200", || {
        let answer = http(&a, "GET", "/healthz");
        let code = answer.as_ref().map(|h| h.status);
        if seen.last() != Some(&code) {
            seen.push(code);
        }
        code == Some(200)
    });
    assert!(
        seen.iter()
            .all(|c| matches!(c, None | Some(503) | Some(200))),
        "{seen:?}"
    );
    assert_eq!(get(&a, "/healthz").text(), "ok");
    herd.nodes.insert("Clark".into(), node);

    // The places cache: a miss, then a hit, one upstream request timed.
    let mut c = Client::connect(&herd.addr("Clark"));
    c.iamat("kiwi", "+34.068930-118.445127", &now_ts());
    for _ in 0..2 {
        c.send(b"WHATSAT kiwi 10 2\n");
        check_whatsat_answer(&c.whatsat_answer(), 2);
    }
    let m = get(&a, "/metrics").text();
    assert_eq!(
        sample(&m, "herd_places_cache_total{result=\"miss\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "herd_places_cache_total{result=\"hit\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&m, "herd_places_upstream_seconds_count"), Some(1.0));
    assert!(get(&a, "/status")
        .text()
        .contains("id=\"cache-rate\">50.0%"));

    // A WHATSAT held up upstream keeps the node draining after SIGTERM: 503 meanwhile.
    google.reply_with(|r| fake_google::default_reply(r).after(Duration::from_secs(3)));
    c.send(b"WHATSAT kiwi 20 2\n");
    eventually(Duration::from_secs(5), "the slow request upstream", || {
        google.count() == 2
    });
    signal(&herd.nodes["Clark"].child, libc::SIGTERM);
    eventually(
        Duration::from_secs(3),
        "/healthz 503 while stopping",
        || http(&a, "GET", "/healthz").is_some_and(|h| h.status == 503 && h.text() == "stopping"),
    );
    check_whatsat_answer(&c.whatsat_answer(), 2);
    let mut node = herd.nodes.remove("Clark").unwrap();
    let status = wait_with_deadline(&mut node.child, Duration::from_secs(20)).unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        http(&a, "GET", "/healthz").is_none(),
        "stopped: nothing listens"
    );
}

/// The other end of the FIFO at `path`: a reader held open for as long as this lives (so a
/// write into the FIFO never fails), drained, and a writer opened and closed on each
/// [`FifoEnd::nudge`] (so an open waiting to read goes on, and reads an end of file).
struct FifoEnd {
    path: std::ffi::CString,
    reader: i32,
}

impl FifoEnd {
    fn open(path: &std::path::Path) -> FifoEnd {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        let reader = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
        assert!(reader >= 0, "open the FIFO for reading");
        FifoEnd { path, reader }
    }

    fn nudge(&self) {
        unsafe {
            let w = libc::open(self.path.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK);
            if w >= 0 {
                libc::close(w);
            }
            let mut buf = [0u8; 4096];
            while libc::read(self.reader, buf.as_mut_ptr().cast(), buf.len()) > 0 {}
        }
    }
}

impl Drop for FifoEnd {
    fn drop(&mut self) {
        unsafe {
            libc::close(self.reader);
        }
    }
}

#[test]
fn healthz_is_503_while_the_store_opens_then_200() {
    let (table, admin) = admin_table(&["Clark"]);
    let mut herd = Herd::new(&["Clark"], &[], &table);
    // Hold the node in its start: the store's config file (sled reads `conf` first when it opens
    // a store) is a FIFO, so opening the store waits until someone opens the other end.
    let store = herd.state_dir("Clark").join("store");
    std::fs::create_dir_all(&store).unwrap();
    let fifo = store.join("conf");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let node = spawn(herd.command("Clark"));
    herd.nodes.insert("Clark".into(), node);
    let a = &admin["Clark"];
    eventually(Duration::from_secs(20), "/healthz 503 starting", || {
        http(a, "GET", "/healthz").is_some_and(|h| h.status == 503 && h.text() == "starting")
    });
    assert!(!herd.stderr("Clark").contains(" ready "));
    assert_eq!(get(a, "/clients/x").status, 503, "no store yet");
    // Let the store open: ready, and 200.
    let other_end = FifoEnd::open(&fifo);
    eventually(Duration::from_secs(20), "/healthz 200 once ready", || {
        other_end.nudge();
        http(a, "GET", "/healthz").is_some_and(|h| h.status == 200 && h.text() == "ok")
    });
    eventually(Duration::from_secs(5), "the readiness line", || {
        herd.stderr("Clark").contains(" ready ")
    });
}

#[test]
fn bad_requests_get_exact_answers_and_never_block_the_client_port() {
    let (table, admin) = admin_table(&["Clark"]);
    let mut herd = Herd::new(&["Clark"], &[], &table);
    herd.start("Clark");
    let a = &admin["Clark"];

    assert_eq!(get(a, "/nope").status, 404);
    assert_eq!(get(a, "/metrics/x").status, 404);
    assert_eq!(get(a, "/clients/").status, 404);
    for method in ["POST", "PUT", "DELETE"] {
        let answer = http(a, method, "/metrics").unwrap();
        assert_eq!(answer.status, 405, "{method}");
        assert_eq!(answer.header("allow").as_deref(), Some("GET, HEAD"));
    }
    let head = http(a, "HEAD", "/healthz").unwrap();
    assert_eq!((head.status, head.body.len()), (200, 0));
    // An oversized request head is refused, not buffered.
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    match http_raw(a, huge.as_bytes()) {
        None => {}
        Some(answer) => assert_eq!(answer.status, 431),
    }

    // 64 requests that never finish: each is closed within the head timeout, or sooner to make
    // room for a newer connection.
    let slow: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut s = TcpStream::connect(a).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    // The client port does not notice.
    let began = Instant::now();
    let mut c = Client::connect(&herd.addr("Clark"));
    assert!(c
        .iamat("kiwi", "+34.068930-118.445127", &now_ts())
        .starts_with("AT Clark "));
    assert!(began.elapsed() < Duration::from_secs(2));
    // The slow requests are cut off within the head timeout, and the endpoint serves again.
    let began = Instant::now();
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    assert!(
        began.elapsed() < Duration::from_secs(12),
        "slow requests held on for {:?}",
        began.elapsed()
    );
    eventually(
        Duration::from_secs(5),
        "the admin endpoint to serve again",
        || http(a, "GET", "/healthz").is_some_and(|h| h.status == 200),
    );
}

#[test]
fn without_a_secret_the_admin_endpoint_must_be_loopback() {
    let mut herd = Herd::new(&["Clark"], &[], "");
    let port = free_port();
    let mut cmd = herd.command("Clark");
    cmd.arg("--admin").arg(format!("0.0.0.0:{port}"));
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--admin") && err.contains("loopback"), "{err}");

    // With a secret it may listen on every address.
    herd.env.push((
        "HERD_SECRET".into(),
        "9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a9c".into(),
    ));
    let mut cmd = herd.command("Clark");
    cmd.arg("--admin").arg(format!("0.0.0.0:{port}"));
    let node = spawn(cmd);
    herd.nodes.insert("Clark".into(), node);
    eventually(Duration::from_secs(20), "/healthz 200 on 0.0.0.0", || {
        http(&format!("127.0.0.1:{port}"), "GET", "/healthz").is_some_and(|h| h.status == 200)
    });
}

/// Sum of every `herd_admin_connections_dropped_total` series.
fn admin_dropped(metrics: &str) -> f64 {
    ["full", "per_source", "head_timeout"]
        .iter()
        .map(|r| {
            sample(
                metrics,
                &format!("herd_admin_connections_dropped_total{{reason=\"{r}\"}}"),
            )
            .unwrap_or(0.0)
        })
        .sum()
}

/// A connection to `addr` that has sent part of a request head and holds it.
fn slow_request(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    s
}

#[test]
fn healthz_answers_at_once_while_slow_connections_hold_the_admin_port() {
    let (table, admin) = admin_table(&["Clark"]);
    // A long summary interval: the only summary is the one written at the stop.
    let mut herd = Herd::new(
        &["Clark"],
        &[],
        &format!("[log]\ninterval_secs = 3600\n{table}"),
    );
    herd.start("Clark");
    let a = admin["Clark"].clone();
    assert_eq!(get(&a, "/healthz").status, 200);
    let lines_before = herd.log("Clark").lines().count();

    // 200 slow connections from this address, kept at 200 for the whole test: as the node
    // closes them, the oldest is dropped and a new one opened.
    let attacking = Arc::new(AtomicBool::new(true));
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let attacker = {
        let a = a.clone();
        let attacking = Arc::clone(&attacking);
        std::thread::spawn(move || {
            let mut held: VecDeque<TcpStream> = (0..200).map(|_| slow_request(&a)).collect();
            opened_tx.send(()).unwrap();
            let mut opened = 200u32;
            while attacking.load(Ordering::Relaxed) {
                held.pop_front();
                held.push_back(slow_request(&a));
                opened += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            opened
        })
    };
    opened_rx.recv().unwrap();

    let mut took = Vec::new();
    for i in 0..50 {
        let began = Instant::now();
        let answer = http(&a, "GET", "/healthz");
        let elapsed = began.elapsed();
        let answer = answer.unwrap_or_else(|| panic!("try {i}: /healthz not answered"));
        assert_eq!(
            (answer.status, answer.text().as_str()),
            (200, "ok"),
            "try {i}"
        );
        assert!(
            elapsed < Duration::from_millis(100),
            "try {i}: /healthz took {elapsed:?}"
        );
        took.push(elapsed);
        std::thread::sleep(Duration::from_millis(20));
    }
    let metrics = get(&a, "/metrics").text();
    attacking.store(false, Ordering::Relaxed);
    let opened = attacker.join().unwrap();
    took.sort();
    eprintln!(
        "{opened} slow connections opened; /healthz median {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );

    // Room was made by closing slow connections, and /metrics counts them: of the first 200
    // alone, all but the address's share.
    let per_source = sample(
        &metrics,
        "herd_admin_connections_dropped_total{reason=\"per_source\"}",
    )
    .unwrap();
    assert!(per_source >= 184.0, "{metrics}");
    let dropped = admin_dropped(&metrics);

    // The log tells of it once, not once per connection closed.
    let log = herd.log("Clark");
    let grown = log.lines().count() - lines_before;
    assert!(
        grown < 10,
        "{dropped} connections closed early grew the log by {grown} lines"
    );
    let at_once: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("admin connection closed before its request"))
        .collect();
    assert_eq!(at_once.len(), 1, "{log}");
    assert!(
        at_once[0].contains("reason=\"per_source\""),
        "{}",
        at_once[0]
    );

    // The stop writes the interval's summary: every connection closed early, by reason and
    // source.
    let after = get(&a, "/metrics").text();
    let total = admin_dropped(&after);
    assert_eq!(herd.stop("Clark").code(), Some(0));
    let log = herd.log("Clark");
    let summary = log
        .lines()
        .find(|l| l.contains("admin connections closed before their request in the last interval"))
        .unwrap_or_else(|| panic!("no summary in\n{log}"));
    let closed: f64 = field(summary, "closed").parse().unwrap();
    assert!(closed >= total, "{summary} (metrics: {total})");
    assert!(summary.contains("top=127.0.0.1="), "{summary}");
    assert!(summary.contains("per_source="), "{summary}");
}

/// The value of `key=value` in a log record.
fn field<'a>(record: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    record
        .split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key} in {record}"))
}
