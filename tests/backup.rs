//! Backups, exports and imports with real nodes: a backup taken under load and restored into a
//! wiped node, truncated and malformed files refused, imports through newest wins and the
//! store's limits, and `herd inspect --compare` to check what came back.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

fn herd_cmd(args: &[&str], paths: &[&Path]) -> Output {
    Command::new(HERD)
        .args(args)
        .args(paths)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// `herd restore` of `file` into `state_dir` with the herd's config.
fn restore(herd: &Herd, state_dir: &Path, file: &Path) -> Output {
    let config = herd.config.to_str().unwrap();
    herd_cmd(
        &["restore", "--config", config, "--state-dir"],
        &[state_dir, file],
    )
}

/// Asserts that `out` is a load that stored all of `n` records.
fn assert_stored_all(out: &Output, n: usize) {
    assert!(out.status.success(), "{}", stderr(out));
    let summary = format!("{n} records: {n} stored");
    assert!(stderr(out).contains(&summary), "{}", stderr(out));
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The AT lines of a stopped store, by client (hex).
fn at_lines(state_dir: &Path) -> BTreeMap<String, String> {
    inspect(state_dir)
        .into_iter()
        .map(|r| {
            (
                r["client_hex"].as_str().unwrap().to_owned(),
                r["at"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Sends `count` IAMATs for clients `prefix{i}` at `ts`, pipelined, and reads the answers.
fn seed(addr: &str, prefix: &str, count: usize, ts: &str) {
    let stream = TcpStream::connect(addr).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut text = String::new();
    for i in 0..count {
        text.push_str(&format!("IAMAT {prefix}{i} +34.068930-118.445127 {ts}\n"));
    }
    writer.write_all(text.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    for _ in 0..count {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("AT "), "{line}");
    }
}

/// The timestamp `secs` seconds after the seed's.
fn ts(base: u64, secs: u64) -> String {
    format!("{}.000000000", base + secs)
}

#[test]
fn a_backup_under_load_restores_every_report_acknowledged_before_it_began() {
    let (table, admin) = admin_table(&["Clark"]);
    let mut herd = Herd::new(&["Clark"], &[], &table);
    herd.start("Clark");
    let addr = herd.addr("Clark");
    let base = now_ts().split('.').next().unwrap().parse::<u64>().unwrap() - 100_000;
    // Enough clients for the backup to read many pages while the writer below runs.
    seed(&addr, "seed-", 3000, &ts(base, 0));

    // One client connection reporting continuously: each acknowledged report, in order.
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, addr) = (Arc::clone(&acked), Arc::clone(&stop), addr.clone());
        std::thread::spawn(move || {
            let mut c = Client::connect(&addr);
            let mut round = 1;
            while !stop.load(Ordering::Relaxed) {
                for i in 0..50 {
                    let client = format!("seed-{}", (round * 37 + i * 61) % 3000);
                    let at = c.iamat(&client, "-33.8688+151.2093", &ts(base, round));
                    assert!(at.starts_with("AT Clark "), "{at}");
                    acked.lock().unwrap().push((client, round));
                }
                round += 1;
            }
            round
        })
    };
    eventually(Duration::from_secs(10), "the writer to get going", || {
        acked.lock().unwrap().len() >= 200
    });
    // Every report acknowledged up to here was acknowledged before the backup began.
    let before: Vec<(String, u64)> = acked.lock().unwrap().clone();
    let file = herd.dir.path().join("clark.backup");
    let out = herd_cmd(
        &[
            "backup",
            "Clark",
            "--config",
            herd.config.to_str().unwrap(),
            "--out",
        ],
        &[&file],
    );
    let during = acked.lock().unwrap().len() - before.len();
    stop.store(true, Ordering::Relaxed);
    let rounds = writer.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("records, verified"),
        "{}",
        stderr(&out)
    );
    assert!(during > 0 && rounds > 2, "the backup ran under load");

    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let header: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(header["format"], "herd-records");
    assert_eq!(header["kind"], "backup");
    assert_eq!(header["server"], "Clark");
    let trailer: serde_json::Value = serde_json::from_str(lines[lines.len() - 1]).unwrap();
    assert_eq!(trailer["records"], 3000);
    assert_eq!(lines.len(), 3002);

    // Stop the node and lose its state.
    assert_eq!(herd.stop("Clark").code(), Some(0));
    let state = herd.state_dir("Clark");
    std::fs::remove_dir_all(&state).unwrap();

    // A backup cut short is refused, and nothing is created.
    let cut = herd.dir.path().join("cut.backup");
    let at = text.len() - lines[lines.len() - 1].len() - 1 - 40;
    std::fs::write(&cut, &text[..at]).unwrap();
    let refused = restore(&herd, &state, &cut);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("cut short"),
        "{}",
        stderr(&refused)
    );
    assert!(!state.exists(), "a refused restore created the store");

    assert_stored_all(&restore(&herd, &state, &file), 3000);

    herd.start("Clark");
    let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
    for (client, round) in &before {
        let n = newest.entry(client).or_default();
        *n = (*n).max(*round);
    }
    for i in 0..3000 {
        let client = format!("seed-{i}");
        let record = get(&admin["Clark"], &format!("/clients/{client}"));
        assert_eq!(record.status, 200, "{client} is missing after the restore");
        let record: serde_json::Value = serde_json::from_slice(&record.body).unwrap();
        let stored: u64 = record["timestamp"].as_str().unwrap()[..10].parse().unwrap();
        let want = base + newest.get(client.as_str()).copied().unwrap_or(0);
        assert!(
            stored >= want,
            "{client}: restored {stored}, acknowledged {want} before the backup"
        );
    }
}

#[test]
fn a_backup_cut_short_in_transit_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let full = {
        let mut herd = Herd::new(&["Clark"], &[], "");
        herd.start("Clark");
        seed(&herd.addr("Clark"), "c", 5, "1700000000.5");
        assert_eq!(herd.stop("Clark").code(), Some(0));
        let out = herd_cmd(&["export", "--state-dir"], &[&herd.state_dir("Clark")]);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    // An endpoint that sends all but the trailer, then closes.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let body = full[..full.rfind("{\"end\"").unwrap()].to_owned();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut head = [0; 1024];
        let _ = std::io::Read::read(&mut s, &mut head);
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n{body}"
        );
    });
    let file = dir.path().join("b.backup");
    let out = herd_cmd(&["backup", &addr, "--out"], &[&file]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cut short"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "left a file behind"
    );
}

#[test]
fn export_import_and_compare_through_newest_wins() {
    let mut herd = Herd::new(
        &["Bona", "Clark"],
        &[],
        "[store]\nmax_client_id_bytes = 16\n",
    );
    let (clark, bona) = (herd.state_dir("Clark"), herd.state_dir("Bona"));
    let config = herd.config.to_str().unwrap().to_owned();
    let import = |dir: &Path, file: &Path| {
        herd_cmd(
            &["import", "--config", &config, "--state-dir"],
            &[dir, file],
        )
    };
    let compare = |dirs: &[&Path], format: &str| {
        let mut cmd = Command::new(HERD);
        cmd.args(["inspect", "--format", format, "--compare"])
            .args(dirs);
        cmd.output().unwrap()
    };

    herd.start("Clark");
    let mut c = Client::connect(&herd.addr("Clark"));
    let kiwi_old = c.iamat("kiwi", "+1+2", "1700000001.5");
    c.iamat("lime", "+1+2", "1700000001.5");
    c.send(b"IAMAT \xff\\odd +1+2 1700000001.5\n");
    assert!(c.line().starts_with(b"AT Clark "));
    drop(c);
    assert_eq!(herd.stop("Clark").code(), Some(0));

    // Export, import into an empty store: the same records.
    let e1 = herd.dir.path().join("e1.jsonl");
    let out = herd_cmd(
        &["export", "--out", e1.to_str().unwrap(), "--state-dir"],
        &[&clark],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let copy = herd.dir.path().join("copy");
    let out = import(&copy, &e1);
    assert!(out.status.success(), "{}", stderr(&out));
    let same = compare(&[&clark, &copy], "json");
    assert_eq!(same.status.code(), Some(0), "{}", stderr(&same));
    assert!(same.stdout.is_empty());
    assert!(
        stderr(&same).contains("0 clients differ among 2 stores"),
        "{}",
        stderr(&same)
    );
    assert_eq!(at_lines(&clark), at_lines(&copy));

    // Bona starts from that export, then learns a newer kiwi and a client of its own.
    assert!(import(&bona, &e1).status.success());
    herd.start("Bona");
    let mut b = Client::connect(&herd.addr("Bona"));
    let kiwi_new = b.iamat("kiwi", "+3+4", "1700000009.5");
    b.iamat("onlyb", "+3+4", "1700000009.5");
    drop(b);
    assert_eq!(herd.stop("Bona").code(), Some(0));
    // Clark learns a client Bona never hears of; meanwhile its store is in use.
    herd.start("Clark");
    Client::connect(&herd.addr("Clark")).iamat("onlya", "+1+2", "1700000002.5");
    let busy = compare(&[&clark, &bona], "json");
    assert_eq!(busy.status.code(), Some(1));
    assert!(
        stderr(&busy).contains("in use by a running node"),
        "{}",
        stderr(&busy)
    );
    // So is importing into it, or exporting it.
    for out in [
        import(&clark, &e1),
        herd_cmd(&["export", "--state-dir"], &[&clark]),
    ] {
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("in use by a running node"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(herd.stop("Clark").code(), Some(0));

    // Exactly three clients differ: newer on Bona, only on Clark, only on Bona.
    let differ = compare(&[&clark, &bona], "json");
    assert_eq!(differ.status.code(), Some(1), "{}", stderr(&differ));
    let rows: Vec<serde_json::Value> = String::from_utf8(differ.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: BTreeSet<&str> = rows.iter().map(|r| r["client"].as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["kiwi", "onlya", "onlyb"]));
    let kiwi = rows.iter().find(|r| r["client"] == "kiwi").unwrap();
    assert_eq!(kiwi["stores"][0]["record"]["at"], kiwi_old);
    assert_eq!(kiwi["stores"][0]["newest"], false);
    assert_eq!(kiwi["stores"][1]["record"]["at"], kiwi_new);
    assert_eq!(kiwi["stores"][1]["newest"], true);
    let onlya = rows.iter().find(|r| r["client"] == "onlya").unwrap();
    assert!(onlya["stores"][1]["record"].is_null());
    let table = compare(&[&clark, &bona], "table");
    assert_eq!(table.status.code(), Some(1));
    let text = String::from_utf8(table.stdout).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("onlyb") && l.contains(" - ")),
        "{text}"
    );

    // An older export changes nothing newer, and adds what was missing.
    let e2 = herd.dir.path().join("e2.jsonl");
    assert!(herd_cmd(
        &["export", "--out", e2.to_str().unwrap(), "--state-dir"],
        &[&clark]
    )
    .status
    .success());
    let out = import(&bona, &e2);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("4 records: 1 stored, 3 kept"),
        "{}",
        stderr(&out)
    );
    let lines = at_lines(&bona);
    assert_eq!(lines[&hex::encode("kiwi")], kiwi_new);
    assert!(lines.contains_key(&hex::encode("onlya")));
    let after = compare(&[&clark, &bona], "json");
    assert_eq!(String::from_utf8(after.stdout).unwrap().lines().count(), 2);

    // Bare lines (inspect's output) import too, and the store's limits apply to them.
    let bare = herd.dir.path().join("bare.jsonl");
    std::fs::write(
        &bare,
        "{\"at\":\"AT Clark +0.100000000 fig +1+2 1700000003.5\"}\n\
         {\"at\":\"AT Clark +0.100000000 a-client-id-too-long +1+2 1700000003.5\"}\n",
    )
    .unwrap();
    let out = import(&bona, &bare);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let msg = stderr(&out);
    assert!(
        msg.contains("bare.jsonl:2: client a-client-id-too-long refused"),
        "{msg}"
    );
    assert!(msg.contains("max_client_id_bytes"), "{msg}");
    assert!(
        at_lines(&bona).contains_key(&hex::encode("fig")),
        "the good line was merged"
    );
    // restore takes only a whole backup or export.
    let out = restore(&herd, &bona, &bare);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no header line"), "{}", stderr(&out));

    // Usage: compare needs two stores.
    assert_eq!(compare(&[&clark], "json").status.code(), Some(2));
}

#[test]
fn malformed_lines_are_named_by_number_and_nothing_is_merged() {
    let mut herd = Herd::new(&["Clark"], &[], "");
    herd.start("Clark");
    seed(&herd.addr("Clark"), "c", 3, "1700000000.5");
    assert_eq!(herd.stop("Clark").code(), Some(0));
    let state = herd.state_dir("Clark");
    let before = at_lines(&state);

    let file = herd.dir.path().join("bad.jsonl");
    std::fs::write(
        &file,
        "{\"at\":\"AT Clark +0.100000000 new1 +1+2 1800000000.5\"}\n\
         {\"at\":\"AT Clark +0.100000000 c0 +1+2 1800000000.5\"}\n\
         {\"at\":\"AT Clark +0.1 new2 +1+2 1800000000.5\"}\n\
         this is not json\n\
         {\"at\":\"AT Clark +0.100000000 new3 +1+2 1800000000.5\"}\n",
    )
    .unwrap();
    let config = herd.config.to_str().unwrap();
    let out = herd_cmd(
        &["import", "--config", config, "--state-dir"],
        &[&state, &file],
    );
    assert_eq!(out.status.code(), Some(1));
    let msg = stderr(&out);
    assert!(msg.contains("2 malformed line(s)"), "{msg}");
    assert!(
        msg.contains("line 3: \"at\" is not a valid AT line"),
        "{msg}"
    );
    assert!(msg.contains("line 4: not a JSON object"), "{msg}");
    assert_eq!(
        at_lines(&state),
        before,
        "a rejected file changed the store"
    );
}

#[test]
fn one_backup_at_a_time_and_it_outlives_the_connection_limit() {
    let (table, admin) = admin_table(&["Clark"]);
    let mut herd = Herd::new(&["Clark"], &[], &table);
    herd.start("Clark");
    let a = &admin["Clark"];
    // About 20 MB of backup: more than the socket buffers hold while nobody reads.
    let long = "x".repeat(1000);
    seed(
        &herd.addr("Clark"),
        &format!("{long}-"),
        5000,
        "1700000000.5",
    );

    let head = http(a, "HEAD", "/backup").unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-type").as_deref(),
        Some("application/x-ndjson")
    );

    // A reader that takes only the head, then nothing for longer than any admin connection
    // may otherwise last.
    let mut slow = TcpStream::connect(a).unwrap();
    slow.write_all(b"GET /backup HTTP/1.0\r\n\r\n").unwrap();
    let mut first = [0u8; 12];
    std::io::Read::read_exact(&mut slow, &mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.0 200");
    let busy = get(a, "/backup");
    assert_eq!(busy.status, 503);
    assert!(busy.text().contains("already running"), "{}", busy.text());
    std::thread::sleep(herd::admin::CONNECTION_TIMEOUT + Duration::from_secs(1));

    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut slow, &mut rest).unwrap();
    let split = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let file = herd.dir.path().join("slow.backup");
    std::fs::write(&file, &rest[split + 4..]).unwrap();
    let fresh = herd.dir.path().join("fresh");
    assert_stored_all(&restore(&herd, &fresh, &file), 5000);
    // Done: the next backup may start.
    assert_eq!(get(a, "/backup").status, 200);
}
