//! The open-file limit: a node started with a soft limit of 256 raises it and holds 900 idle
//! connections; one whose hard limit is 256 lowers `max_connections` and says so.

mod common;

use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::*;

fn limit() -> libc::rlimit {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim
}

/// Starts `name` with the open-file limit set to (`soft`, `hard`) before it runs.
fn start_limited(herd: &mut Herd, name: &str, soft: u64, hard: u64) {
    let mut cmd = herd.command(name);
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: soft as libc::rlim_t,
                rlim_max: hard as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let node = spawn(cmd);
    eventually(Duration::from_secs(20), "readiness", || {
        node.stderr.lock().unwrap().contains(" ready ")
    });
    herd.nodes.insert(name.to_owned(), node);
}

#[test]
fn a_node_raises_a_soft_limit_of_256_and_holds_900_idle_connections() {
    // This test's own side of 900 connections needs room too.
    let mut own = limit();
    if own.rlim_max < 2048 {
        eprintln!(
            "SKIPPED: the hard open-file limit here is {}, too low for 900 connections",
            own.rlim_max
        );
        return;
    }
    own.rlim_cur = own.rlim_max;
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &own) }, 0);

    let mut herd = Herd::new(&["Clark"], &[], "[limits]\nmax_connections = 1000\n");
    start_limited(&mut herd, "Clark", 256, own.rlim_max);
    let expected = format!(
        "open-file limit soft={0} hard={0} max_connections=1000",
        own.rlim_max
    );
    // The log file is written by the node's log thread, a few milliseconds behind stderr.
    eventually(Duration::from_secs(5), &expected, || {
        herd.log("Clark").contains(&expected)
    });

    let addr = herd.addr("Clark");
    let mut clients: Vec<Client> = (0..900).map(|_| Client::connect(&addr)).collect();
    // Every one of them is being served at once: each gets its answer while all stay open.
    for (i, c) in clients.iter_mut().enumerate() {
        let at = c.iamat(&format!("fd{i}"), "+1+2", "1700000000");
        assert!(at.starts_with("AT Clark "), "connection {i}: {at:?}");
    }
    assert!(!herd.log("Clark").contains("accept failed"));
}

#[test]
fn a_hard_limit_too_low_lowers_max_connections_with_a_warning() {
    let mut herd = Herd::new(&["Clark"], &[], "[limits]\nmax_connections = 1000\n");
    start_limited(&mut herd, "Clark", 256, 256);
    let stderr = herd.stderr("Clark");
    assert!(
        stderr.contains("cannot hold limits.max_connections")
            && stderr.contains("configured=1000")
            && stderr.contains("lowered_to="),
        "{stderr}"
    );
    // It keeps serving within its limit.
    let mut c = Client::connect(&herd.addr("Clark"));
    assert!(c.iamat("x", "+1+2", "1700000000").starts_with("AT Clark "));
}
