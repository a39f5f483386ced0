//! An I/O error is not corruption: a store the operating system will not let the node read is
//! left exactly as it is, and the node stops with exit 1 naming the file and the errno. Only a
//! store whose contents cannot be made sense of is moved aside (tests/crash.rs covers that).
//!
//! Root ignores file modes, so the node runs as the unprivileged user `nobody` (via
//! `setpriv`); where that is impossible the test says so and is skipped.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

fn chown_nobody(path: &Path) -> bool {
    Command::new("chown")
        .args(["-R", "nobody"])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn an_unreadable_store_stops_the_node_and_is_left_untouched() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root to run the node as another user");
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIPPED: setpriv (util-linux) is not installed");
        return;
    }
    let mut herd = Herd::new(&["Solo"], &[], "");
    herd.start("Solo");
    herd.ask("Solo", b"IAMAT kiwi +1+2 1\n");
    assert_eq!(herd.stop("Solo").code(), Some(0));

    // Hand everything to nobody, then take the store's config file away from it.
    std::fs::set_permissions(herd.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(chown_nobody(&herd.dir.path().join("state")));
    assert!(chown_nobody(&herd.log_dir()));
    let store = herd.state_dir("Solo").join("store");
    let conf = store.join("conf");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o000)).unwrap();
    let before = listing(&herd.state_dir("Solo"));
    let store_before = listing(&store);

    let cmd = herd.command("Solo");
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(program)
        .args(args)
        .current_dir(herd.dir.path())
        .env_remove("HERD_SECRET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("os error 13"), "{stderr}");
    assert!(stderr.contains(&store.display().to_string()), "{stderr}");
    // Nothing moved aside, nothing created or removed.
    assert_eq!(listing(&herd.state_dir("Solo")), before);
    assert_eq!(listing(&store), store_before);

    // Given its permissions back, the node serves the report it had.
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    herd.start("Solo");
    assert!(herd.at_line("Solo", "kiwi").is_some());
}
