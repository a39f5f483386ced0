//! Where a node keeps its state and log: a directory others may write to is refused unless
//! the config allows it, and the store, lock and log are never reached through a symbolic link
//! (another user could plant one to make the node serve, lock or append to their file).
//! Root may write anywhere, so these tests use modes, not users.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;

/// Starts N, which must refuse to start with exit 2; returns its stderr.
fn refused(herd: &Herd) -> String {
    let mut node = spawn(herd.command("N"));
    let status =
        wait_with_deadline(&mut node.child, Duration::from_secs(20)).expect("the node must exit");
    eventually(Duration::from_secs(5), "stderr", || {
        node.stderr.lock().unwrap().contains("herd: ")
    });
    let stderr = node.stderr.lock().unwrap().clone();
    assert_eq!(status.code(), Some(2), "{status:?}: {stderr}");
    stderr
}

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_state_directory_others_may_write_is_refused_unless_allowed() {
    let mut herd = Herd::new(&["N"], &[], "");
    let state = herd.state_dir("N");
    std::fs::create_dir_all(&state).unwrap();
    chmod(&state, 0o777);
    let stderr = refused(&herd);
    assert!(
        stderr.contains(&state.display().to_string()) && stderr.contains("0777"),
        "{stderr}"
    );
    assert!(stderr.contains("allow_shared_dir"), "{stderr}");
    // Nothing was created in it.
    assert!(!state.join("store").exists());

    herd.write_config(&[], "[store]\nallow_shared_dir = true\n");
    herd.start("N");
    assert!(herd.ask("N", b"IAMAT c +1+2 1\n").starts_with(b"AT N "));
}

#[test]
fn a_log_directory_its_group_may_write_is_refused() {
    let herd = Herd::new(&["N"], &[], "");
    std::fs::create_dir_all(herd.log_dir()).unwrap();
    chmod(&herd.log_dir(), 0o770);
    let stderr = refused(&herd);
    assert!(
        stderr.contains(&herd.log_dir().display().to_string()) && stderr.contains("0770"),
        "{stderr}"
    );
}

#[test]
fn a_symlinked_store_is_refused_not_followed() {
    let mut herd = Herd::new(&["N"], &[], "");
    // Someone else's store, with a record of theirs in it.
    let mut theirs = Herd::new(&["N"], &[], "");
    theirs.start("N");
    assert!(theirs
        .ask("N", b"IAMAT planted +1+2 1\n")
        .starts_with(b"AT N "));
    theirs.stop("N");
    let state = herd.state_dir("N");
    std::fs::create_dir_all(&state).unwrap();
    chmod(&state, 0o700);
    let link = state.join("store");
    std::os::unix::fs::symlink(theirs.state_dir("N").join("store"), &link).unwrap();
    let stderr = refused(&herd);
    assert!(
        stderr.contains(&link.display().to_string()) && stderr.contains("symbolic link"),
        "{stderr}"
    );
    // With the link gone the node starts, and does not serve the planted record.
    std::fs::remove_file(&link).unwrap();
    herd.start("N");
    assert_eq!(herd.at_line("N", "planted"), None);
}

#[test]
fn a_symlinked_log_file_is_refused_with_exit_2() {
    let herd = Herd::new(&["N"], &[], "");
    let victim = herd.dir.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    std::fs::create_dir_all(herd.log_dir()).unwrap();
    chmod(&herd.log_dir(), 0o700);
    let link = herd.log_dir().join("N.log");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let stderr = refused(&herd);
    assert!(
        stderr.contains(&link.display().to_string()) && stderr.contains("symbolic link"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
}
