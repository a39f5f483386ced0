//! `herd up`: every server of the config on this machine, each as its own child process.
//!
//! It owns the children and nothing of what they do: each one is this same binary running
//! `herd serve NAME`, with its store in `<state-root>/NAME` and its log in `<log-dir>/NAME.log`.
//! The config is loaded first, so a bad config is reported (exit code 2) before anything starts.
//!
//! What it promises:
//!
//! - **One clean stop.** Each child runs in its own process group, so a Ctrl-C at the terminal
//!   reaches only `herd up`; on SIGINT or SIGTERM it sends every child exactly one SIGTERM (a
//!   node's signal for "drain and make the store durable"), waits up to `--stop-timeout`, and
//!   only then kills the ones still running.
//! - **Readable output.** Every line a child prints on stdout or stderr is forwarded whole,
//!   prefixed with its server's name, so the lines of different servers never interleave.
//! - **A dead server is reported, not hidden and not restarted.** When a child exits on its
//!   own, its name and exit status are printed and the others keep running: a herd with one
//!   node down is exactly what the herd is built to survive, and a node that died at once (its
//!   port taken, its store locked) would only die again in a restart loop that hides the cause.
//!   Its state is on disk; `herd serve NAME` brings it back. `herd up` gives up when no child
//!   is left.
//! - **An honest exit code.** [`run`] returns `Ok` only when every child stopped cleanly on the
//!   signal. A child that exited on its own, stopped with a failure, or had to be killed makes
//!   it an error (exit code 1).
//!
//! Not a goal: surviving `herd up` being killed with SIGKILL. The children, in their own process
//! groups, then keep running as ordinary nodes; stop them with `kill`.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::future::Future;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::Config;
use crate::error::{Error, Result};

/// How long a child's output may keep flowing after it exited (a grandchild could hold the
/// pipe open forever; nothing of ours does, but the wait must be bounded).
const OUTPUT_DRAIN: Duration = Duration::from_secs(1);

/// How long killed children may take to be reaped before `herd up` gives up on them.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// `herd up`: run every server of the config as a child process until Ctrl-C.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// The herd's config file (default: data/herd.toml if it exists, else the built-in herd).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Each server keeps its store in DIR/NAME.
    #[arg(long, value_name = "DIR", default_value = "state")]
    pub state_root: PathBuf,

    /// Each server writes its log to DIR/NAME.log.
    #[arg(long, value_name = "DIR", default_value = "logs")]
    pub log_dir: PathBuf,

    /// Seconds each server gets to stop after SIGTERM before it is killed.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub stop_timeout: u64,
}

/// Runs the herd until SIGINT or SIGTERM, then stops it (see the module docs for what counts
/// as an error).
pub async fn run(args: UpArgs) -> Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let exe = std::env::current_exe().map_err(|e| Error::io("finding the herd binary", e))?;
    // Listen before the first child starts, so a signal that comes early is not lost.
    let shutdown = shutdown_signal()?;

    let members = config.servers.keys().map(|name| {
        let mut command = Command::new(&exe);
        command.args(child_args(name, &args));
        (name.clone(), command)
    });
    let herd = Herd::start(members)?;

    let name_width = config.servers.keys().map(String::len).max().unwrap_or(0);
    let addr_width = config.servers.values().map(String::len).max().unwrap_or(0);
    for (name, addr) in &config.servers {
        let log = args.log_dir.join(format!("{name}.log"));
        println!(
            "{name:<name_width$}  {addr:<addr_width$}  {}",
            log.display()
        );
    }
    herd.supervise(shutdown, Duration::from_secs(args.stop_timeout))
        .await
}

/// The arguments that run server `name` (after the binary's own path).
pub fn child_args(name: &str, args: &UpArgs) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec!["serve".into(), name.into()];
    if let Some(config) = &args.config {
        argv.push("--config".into());
        argv.push(config.into());
    }
    argv.push("--state-dir".into());
    argv.push(args.state_root.join(name).into());
    argv.push("--log-dir".into());
    argv.push(args.log_dir.clone().into());
    argv
}

/// Resolves on the first SIGINT or SIGTERM.
fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    let listen = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| Error::io(format!("listening for {name}"), e))
    };
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT")?;
    let mut terminate = listen(SignalKind::terminate(), "SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// What the children are told to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    Run,
    Stop,
    Kill,
}

/// A child's end, as its watcher reports it.
struct Exit {
    name: String,
    status: io::Result<ExitStatus>,
}

/// Running children, each watched by one task.
struct Herd {
    watchers: JoinSet<Exit>,
    running: BTreeSet<String>,
    orders: watch::Sender<Order>,
}

impl Herd {
    /// Spawns every member. If one cannot be spawned, the ones already started are killed
    /// (dropping the watchers drops their `Child`, which kills it).
    fn start(members: impl IntoIterator<Item = (String, Command)>) -> Result<Herd> {
        let (orders, _) = watch::channel(Order::Run);
        let mut herd = Herd {
            watchers: JoinSet::new(),
            running: BTreeSet::new(),
            orders,
        };
        let members: Vec<_> = members.into_iter().collect();
        let width = members.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (name, mut command) in members {
            command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                // Its own process group: a terminal's Ctrl-C must reach `herd up` alone, which
                // then stops each child with one SIGTERM, instead of each child getting SIGINT
                // and SIGTERM both.
                .process_group(0)
                .kill_on_drop(true);
            let mut child = command
                .spawn()
                .map_err(|e| Error::io(format!("starting server {name}"), e))?;
            let prefix = format!("{name:<width$} | ");
            let output = vec![
                forward(prefix.clone(), child.stdout.take(), Stream::Stdout),
                forward(prefix, child.stderr.take(), Stream::Stderr),
            ];
            herd.running.insert(name.clone());
            let orders = herd.orders.subscribe();
            herd.watchers
                .spawn(watch_child(name, child, orders, output));
        }
        Ok(herd)
    }

    /// Waits for `shutdown`, reporting children that exit meanwhile, then stops them all
    /// within `grace` (then kills).
    async fn supervise(
        mut self,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) -> Result<()> {
        let mut troubles = Vec::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                exit = self.watchers.join_next() => {
                    let Some(exit) = exit else {
                        troubles.push("no server is left running".to_owned());
                        return Err(trouble(troubles));
                    };
                    let Exit { name, status } = exit.map_err(join_error)?;
                    self.running.remove(&name);
                    let what = format!("{name} exited unexpectedly ({})", describe(&status));
                    eprintln!("herd up: {what}; the others keep running");
                    troubles.push(what);
                }
            }
        }

        eprintln!("herd up: stopping {} servers", self.running.len());
        self.orders.send_replace(Order::Stop);
        let stop_by = tokio::time::Instant::now() + grace;
        let mut killed = false;
        loop {
            let deadline = if killed { stop_by + KILL_WAIT } else { stop_by };
            tokio::select! {
                exit = self.watchers.join_next() => {
                    let Some(exit) = exit else { break };
                    let Exit { name, status } = exit.map_err(join_error)?;
                    self.running.remove(&name);
                    match &status {
                        Ok(s) if s.success() => {}
                        _ if killed => troubles.push(format!(
                            "{name} did not stop within {grace:?} and was killed"
                        )),
                        _ => troubles.push(format!("{name} stopped with {}", describe(&status))),
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if killed {
                        troubles.push(format!(
                            "{} could not be reaped after being killed",
                            self.running.iter().cloned().collect::<Vec<_>>().join(", ")
                        ));
                        break;
                    }
                    eprintln!(
                        "herd up: {} did not stop within {grace:?}; killing",
                        self.running.iter().cloned().collect::<Vec<_>>().join(", ")
                    );
                    self.orders.send_replace(Order::Kill);
                    killed = true;
                }
            }
        }
        if troubles.is_empty() {
            eprintln!("herd up: every server stopped");
            Ok(())
        } else {
            Err(trouble(troubles))
        }
    }
}

/// Owns one child: carries out orders and reports its exit once its output is drained.
async fn watch_child(
    name: String,
    mut child: tokio::process::Child,
    mut orders: watch::Receiver<Order>,
    output: Vec<JoinHandle<()>>,
) -> Exit {
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            changed = orders.changed() => {
                // A closed channel means `herd up` itself is going away: kill, don't linger.
                let order = if changed.is_ok() { *orders.borrow_and_update() } else { Order::Kill };
                match order {
                    Order::Run => {}
                    // `id()` is `None` once the child is reaped, so this never signals a
                    // process id that has been reused.
                    Order::Stop => if let Some(pid) = child.id() {
                        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
                    },
                    Order::Kill => {
                        let _ = child.start_kill();
                        break child.wait().await;
                    }
                }
            }
        }
    };
    for task in output {
        let _ = tokio::time::timeout(OUTPUT_DRAIN, task).await;
    }
    Exit { name, status }
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Copies a child's output line by line to ours, each line prefixed with the server's name.
fn forward(
    prefix: String,
    from: Option<impl AsyncRead + Unpin + Send + 'static>,
    to: Stream,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Some(from) = from else { return };
        let mut reader = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            line.extend_from_slice(prefix.as_bytes());
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line.last() != Some(&b'\n') {
                line.push(b'\n');
            }
            // One write of the whole line under the std lock, so lines never interleave. A
            // blocking write is fine here: these are a few log lines, not a data path.
            let _ = match to {
                Stream::Stdout => io::stdout().lock().write_all(&line),
                Stream::Stderr => io::stderr().lock().write_all(&line),
            };
        }
    })
}

fn describe(status: &io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("its status is unknown: {e}"),
    }
}

fn trouble(troubles: Vec<String>) -> Error {
    Error::io("herd up", io::Error::other(troubles.join("; ")))
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::io("herd up: watching a server", io::Error::other(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_child_runs_serve_with_its_own_state_dir() {
        let mut args = UpArgs {
            config: None,
            state_root: "state".into(),
            log_dir: "logs".into(),
            stop_timeout: 10,
        };
        let argv = |args: &UpArgs| -> Vec<String> {
            child_args("Bailey", args)
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect()
        };
        assert_eq!(
            argv(&args),
            [
                "serve",
                "Bailey",
                "--state-dir",
                "state/Bailey",
                "--log-dir",
                "logs"
            ]
        );
        args.config = Some("my herd.toml".into());
        args.state_root = "/var/lib/herd".into();
        assert_eq!(
            argv(&args),
            [
                "serve",
                "Bailey",
                "--config",
                "my herd.toml",
                "--state-dir",
                "/var/lib/herd/Bailey",
                "--log-dir",
                "logs"
            ]
        );
    }

    /// A stand-in server: a shell that marks itself ready once its TERM handling is set up.
    fn member(dir: &Path, name: &str, on_term: &str) -> (String, Command) {
        let mut command = Command::new("sh");
        let ready = dir.join(name);
        command.arg("-c").arg(format!(
            "{on_term}; touch '{}'; while :; do sleep 0.02; done",
            ready.display()
        ));
        (name.to_owned(), command)
    }

    /// Resolves once every named member has marked itself ready, failing after a deadline.
    async fn all_ready(dir: &Path, names: &[&str]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !names.iter().all(|n| dir.join(n).exists()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "members never got ready"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    const CLEAN: &str = "trap 'exit 0' TERM";

    #[tokio::test]
    async fn every_child_gets_a_clean_stop() {
        let dir = tempfile::tempdir().unwrap();
        let herd = Herd::start([
            member(dir.path(), "A", CLEAN),
            member(dir.path(), "B", CLEAN),
        ])
        .unwrap();
        let result = herd
            .supervise(all_ready(dir.path(), &["A", "B"]), Duration::from_secs(10))
            .await;
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn a_child_that_dies_is_reported_and_the_others_keep_running() {
        let dir = tempfile::tempdir().unwrap();
        let mut dead = Command::new("sh");
        dead.arg("-c").arg(format!(
            "touch '{}'; exit 3",
            dir.path().join("Dead").display()
        ));
        let herd =
            Herd::start([("Dead".to_owned(), dead), member(dir.path(), "B", CLEAN)]).unwrap();
        let e = herd
            .supervise(
                all_ready(dir.path(), &["Dead", "B"]),
                Duration::from_secs(10),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("Dead") && e.contains("exit status: 3"), "{e}");
        assert!(!e.contains("B "), "B stopped cleanly: {e}");
    }

    #[tokio::test]
    async fn a_child_that_ignores_sigterm_is_killed_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let herd = Herd::start([
            member(dir.path(), "Stubborn", "trap '' TERM"),
            member(dir.path(), "B", CLEAN),
        ])
        .unwrap();
        let e = herd
            .supervise(
                all_ready(dir.path(), &["Stubborn", "B"]),
                Duration::from_millis(300),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("Stubborn did not stop within"), "{e}");
        assert!(!e.contains("B "), "B stopped cleanly: {e}");
    }

    #[tokio::test]
    async fn when_every_child_is_gone_up_gives_up() {
        let mut dead = Command::new("sh");
        dead.arg("-c").arg("exit 2");
        let herd = Herd::start([("Dead".to_owned(), dead)]).unwrap();
        let e = herd
            .supervise(std::future::pending(), Duration::from_secs(1))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Dead exited unexpectedly") && e.contains("no server is left"),
            "{e}"
        );
    }
}
