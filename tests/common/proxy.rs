//! A fault-injecting TCP proxy for crash tests.
//!
//! One proxy listens at each server's *listed* address and forwards to where the node really
//! listens (`--listen`). It reads the first line of every connection: a `HERD HELLO <dialer>
//! <listener>` marks the connection as the link between those two servers. [`Faults::cut`]
//! severs every connection of a link and refuses new ones until [`Faults::heal`]; connections
//! that are not links (clients) are never touched.

#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Pair = (String, String);

fn pair(a: &str, b: &str) -> Pair {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

/// The shared fault state of every proxy of a herd.
#[derive(Clone, Default)]
pub struct Faults {
    cut: Arc<Mutex<HashSet<Pair>>>,
    live: Arc<Mutex<Vec<(Pair, TcpStream)>>>,
    stopped: Arc<AtomicBool>,
}

impl Faults {
    /// Severs the link between `a` and `b` and keeps it down.
    pub fn cut(&self, a: &str, b: &str) {
        let p = pair(a, b);
        self.cut.lock().unwrap().insert(p.clone());
        let mut live = self.live.lock().unwrap();
        live.retain(|(q, s)| {
            if *q == p {
                let _ = s.shutdown(Shutdown::Both);
                false
            } else {
                true
            }
        });
    }

    /// Lets the link between `a` and `b` come back.
    pub fn heal(&self, a: &str, b: &str) {
        self.cut.lock().unwrap().remove(&pair(a, b));
    }

    pub fn heal_all(&self) {
        self.cut.lock().unwrap().clear();
    }

    fn is_cut(&self, p: &Pair) -> bool {
        self.cut.lock().unwrap().contains(p)
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Starts a proxy from `listen` to `upstream` for server `name`.
    pub fn proxy(&self, name: &str, listen: &str, upstream: &str) {
        let listener =
            TcpListener::bind(listen).unwrap_or_else(|e| panic!("proxy bind {listen}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let faults = self.clone();
        let (name, upstream) = (name.to_owned(), upstream.to_owned());
        std::thread::spawn(move || {
            while !faults.stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let faults = faults.clone();
                        let (name, upstream) = (name.clone(), upstream.clone());
                        std::thread::spawn(move || faults.relay(&name, client, &upstream));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
    }

    fn relay(&self, name: &str, mut client: TcpStream, upstream: &str) {
        // Read the first line to learn whether this is a link, and between whom.
        let mut first = Vec::new();
        let mut byte = [0u8; 1];
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        while first.len() < 4096 {
            match client.read(&mut byte) {
                Ok(1) => {
                    first.push(byte[0]);
                    if byte[0] == b'\n' {
                        break;
                    }
                }
                _ => break,
            }
        }
        client.set_read_timeout(None).unwrap();
        let text = String::from_utf8_lossy(&first).into_owned();
        let words: Vec<&str> = text.split_whitespace().collect();
        let link = match words.as_slice() {
            ["HERD", "HELLO", dialer, _, _] => Some(pair(dialer, name)),
            _ => None,
        };
        if let Some(p) = &link {
            if self.is_cut(p) {
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
        }
        let Ok(mut server) = TcpStream::connect(upstream) else {
            let _ = client.shutdown(Shutdown::Both);
            return;
        };
        if server.write_all(&first).is_err() {
            return;
        }
        if let Some(p) = link {
            let mut live = self.live.lock().unwrap();
            live.push((p.clone(), client.try_clone().unwrap()));
            live.push((p, server.try_clone().unwrap()));
        }
        let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let up = std::thread::spawn(move || {
            let _ = std::io::copy(&mut c2, &mut s2);
            let _ = s2.shutdown(Shutdown::Write);
        });
        let _ = std::io::copy(&mut server, &mut client);
        let _ = client.shutdown(Shutdown::Write);
        let _ = up.join();
    }
}
