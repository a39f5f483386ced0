//! Stopping under load: SIGTERM while 48 connections send IAMATs as fast as they are answered.
//! The node must stop accepting and reading, answer every request it has read (after the flush
//! that makes it durable), close every connection, and exit 0 within a second; every report it
//! answered must be in its store when it comes back.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const CONNECTIONS: usize = 48;

#[test]
fn sigterm_under_load_answers_what_was_read_and_exits_0_within_a_second() {
    for attempt in 0..3 {
        let mut herd = Herd::new(&["Solo"], &[], "");
        herd.start("Solo");
        let addr = herd.addr("Solo");
        let answered = Arc::new(Mutex::new(Vec::<String>::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let clients: Vec<_> = (0..CONNECTIONS)
            .map(|c| {
                let (addr, answered, count) = (addr.clone(), answered.clone(), count.clone());
                std::thread::spawn(move || {
                    let stream = TcpStream::connect(&addr).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    for k in 0.. {
                        let line = format!("IAMAT a{attempt}-c{c}-{k} +1+2 {k}\n");
                        if writer.write_all(line.as_bytes()).is_err() {
                            return "closed while sending";
                        }
                        let mut answer = String::new();
                        match reader.read_line(&mut answer) {
                            Ok(0) => return "closed",
                            Ok(_) => {
                                assert!(answer.starts_with("AT Solo "), "{answer:?}");
                                answered.lock().unwrap().push(answer.trim_end().to_owned());
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                                return "reset"
                            }
                            Err(e) => panic!("connection {c} left waiting: {e}"),
                        }
                    }
                    unreachable!()
                })
            })
            .collect();
        eventually(Duration::from_secs(20), "load to build up", || {
            count.load(Ordering::Relaxed) >= 2_000
        });
        let mut node = herd.nodes.remove("Solo").unwrap();
        let signalled = Instant::now();
        signal(&node.child, libc::SIGTERM);
        let status = wait_with_deadline(&mut node.child, Duration::from_secs(10))
            .expect("the node did not stop");
        let took = signalled.elapsed();
        assert_eq!(status.code(), Some(0), "attempt {attempt}");
        assert!(
            took < Duration::from_secs(1),
            "attempt {attempt}: stopped after {took:?}"
        );
        for client in clients {
            // Every connection ends: none is left waiting for an answer.
            client.join().unwrap();
        }

        // Every request the node read was answered: per connection, as many lines out as in.
        let log = herd.log("Solo");
        let mut lines: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for l in log.lines() {
            let Some(conn) = l.split("conn{id=").nth(1).and_then(|r| r.split(' ').next()) else {
                continue;
            };
            let entry = lines.entry(conn.to_owned()).or_default();
            if l.contains("dir=\"in\"") {
                entry.0 += 1;
            } else if l.contains("dir=\"out\"") {
                entry.1 += 1;
            }
        }
        for (conn, (read, written)) in &lines {
            assert_eq!(
                read, written,
                "attempt {attempt}: connection {conn} read {read} lines and answered {written}"
            );
        }

        // Everything answered is in the store after a restart.
        herd.start("Solo");
        assert_eq!(herd.stop("Solo").code(), Some(0));
        let stored: BTreeSet<String> = inspect(&herd.state_dir("Solo"))
            .into_iter()
            .map(|r| r["at"].as_str().unwrap().to_owned())
            .collect();
        let answered = answered.lock().unwrap();
        let missing: Vec<_> = answered.iter().filter(|a| !stored.contains(*a)).collect();
        assert!(
            missing.is_empty(),
            "attempt {attempt}: {} of {} answered reports missing, e.g. {:?}",
            missing.len(),
            answered.len(),
            missing.first()
        );
    }
}
