//! `powerfs BACKING MOUNTPOINT CONTROL_SOCKET`: mounts a view of BACKING at MOUNTPOINT that
//! forgets unsynced writes on command, and takes commands on CONTROL_SOCKET (see
//! `src/control.rs`). Prints `ready` on stdout once mounted; exits on `unmount` (or any
//! signal, after which `fusermount3` unmounts).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [backing, mountpoint, socket] = args.as_slice() else {
        eprintln!("usage: powerfs BACKING MOUNTPOINT CONTROL_SOCKET");
        return ExitCode::from(2);
    };
    let listener = match UnixListener::bind(socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("powerfs: bind control socket {}: {e}", socket.display());
            return ExitCode::from(2);
        }
    };
    let mount = match powerfs::Mount::new(backing, mountpoint) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("powerfs: {e}");
            let _ = std::fs::remove_file(socket);
            return ExitCode::from(1);
        }
    };
    println!("ready");
    let _ = std::io::stdout().flush();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let Ok(mut out) = stream.try_clone() else {
            continue;
        };
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let (answer, exit) = powerfs::control::execute(&mount, &line);
            let _ = writeln!(out, "{answer}");
            if exit {
                let _ = std::fs::remove_file(socket);
                return match mount.unmount() {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("powerfs: {e}");
                        ExitCode::from(1)
                    }
                };
            }
        }
    }
    ExitCode::SUCCESS
}
