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
//! - **Where to look.** It prints each server's address, log file and, when `[admin]` gives it
//!   one, its status page; then the page for the whole herd (`/herd` of the first server with
//!   an admin address).
//! - **Readable output.** Every line a child prints on stdout or stderr is forwarded whole,
//!   prefixed with its server's name, so the lines of different servers never interleave.
//! - **A dead server is started again.** When a child exits on its own, a line says so (its
//!   name and exit status) and it is restarted after a delay that starts at
//!   [`RESTART_FIRST`] and doubles with every quick death up to [`RESTART_MAX`]. A server that
//!   keeps dying quickly (its port taken, its store locked, a bad config) is not hidden in a
//!   restart loop: after [`GIVE_UP_AFTER`] deaths in a row, each within [`QUICK_DEATH`] of its
//!   start, it is given up on with a message saying why, and the others keep running. Its state
//!   is on disk; `herd serve NAME` brings it back. With `--no-restart`, a dead server is only
//!   reported. `herd up` gives up when no child is left.
//! - **An honest exit code.** [`run`] returns `Ok` only when every child stopped cleanly on the
//!   signal and none died before. A child that exited on its own (even if restarted), stopped
//!   with a failure, or had to be killed makes it an error (exit code 1).
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

/// The first delay before a dead server is started again.
pub const RESTART_FIRST: Duration = Duration::from_millis(100);
/// The longest delay before a restart.
pub const RESTART_MAX: Duration = Duration::from_secs(10);
/// A server that dies within this long of its start died quickly.
pub const QUICK_DEATH: Duration = Duration::from_secs(5);
/// Quick deaths in a row after which a server is given up on.
pub const GIVE_UP_AFTER: u32 = 5;

/// How dead servers are restarted.
#[derive(Debug, Clone, Copy)]
struct Restart {
    first: Duration,
    max: Duration,
    quick: Duration,
    give_up_after: u32,
}

const RESTART: Restart = Restart {
    first: RESTART_FIRST,
    max: RESTART_MAX,
    quick: QUICK_DEATH,
    give_up_after: GIVE_UP_AFTER,
};

/// Makes the command that starts one server, once per start.
type Launcher = Box<dyn FnMut() -> Command + Send>;

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

    /// Leave a server that dies dead (only report it) instead of starting it again.
    #[arg(long)]
    pub no_restart: bool,
}

/// Runs the herd until SIGINT or SIGTERM, then stops it (see the module docs for what counts
/// as an error).
pub async fn run(args: UpArgs) -> Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let exe = std::env::current_exe().map_err(|e| Error::io("finding the herd binary", e))?;
    // Listen before the first child starts, so a signal that comes early is not lost.
    let shutdown = shutdown_signal()?;

    let members = config.servers.keys().map(|name| {
        let (exe, argv) = (exe.clone(), child_args(name, &args));
        let launch: Launcher = Box::new(move || {
            let mut command = Command::new(&exe);
            command.args(&argv);
            command
        });
        (name.clone(), launch)
    });
    let restart = (!args.no_restart).then_some(RESTART);
    let herd = Herd::start(members, restart)?;

    let name_width = config.servers.keys().map(String::len).max().unwrap_or(0);
    let addr_width = config.servers.values().map(String::len).max().unwrap_or(0);
    for (name, addr) in &config.servers {
        let log = args.log_dir.join(format!("{name}.log"));
        let log = log.display().to_string();
        match config.admin.get(name) {
            Some(admin) => {
                let log_width = args.log_dir.as_os_str().len() + name_width + 5;
                println!(
                    "{name:<name_width$}  {addr:<addr_width$}  {log:<log_width$}  http://{admin}/status"
                )
            }
            None => println!("{name:<name_width$}  {addr:<addr_width$}  {log}"),
        }
    }
    if let Some(page) = herd_page(&config) {
        println!("the whole herd: {page}");
    }
    herd.supervise(shutdown, Duration::from_secs(args.stop_timeout))
        .await
}

/// The address of the page for the whole herd: `/herd` of the first server (by name) that has
/// an admin address.
pub fn herd_page(config: &Config) -> Option<String> {
    let admin = config
        .servers
        .keys()
        .find_map(|name| config.admin.get(name))?;
    Some(format!("http://{admin}/herd"))
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
    /// How its last run ended (a success if it was waiting to be restarted when stopped).
    status: io::Result<ExitStatus>,
    /// How many times it exited on its own.
    deaths: u32,
    /// Whether it was given up on for dying quickly again and again.
    gave_up: bool,
}

/// Running children, each watched by one task.
struct Herd {
    watchers: JoinSet<Exit>,
    running: BTreeSet<String>,
    orders: watch::Sender<Order>,
}

impl Herd {
    /// Spawns every member, each watched (and with `restart`, restarted) by its own task. If
    /// one cannot be spawned, the ones already started are killed (dropping the watchers drops
    /// their `Child`, which kills it).
    fn start(
        members: impl IntoIterator<Item = (String, Launcher)>,
        restart: Option<Restart>,
    ) -> Result<Herd> {
        let (orders, _) = watch::channel(Order::Run);
        let mut herd = Herd {
            watchers: JoinSet::new(),
            running: BTreeSet::new(),
            orders,
        };
        let members: Vec<_> = members.into_iter().collect();
        let width = members.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (name, mut launch) in members {
            let prefix = format!("{name:<width$} | ");
            let first = launch_child(&name, &mut launch, &prefix)?;
            herd.running.insert(name.clone());
            let orders = herd.orders.subscribe();
            herd.watchers
                .spawn(watch_child(name, launch, prefix, first, orders, restart));
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
                    let Exit { name, status, gave_up, .. } = exit.map_err(join_error)?;
                    self.running.remove(&name);
                    if gave_up {
                        troubles.push(format!(
                            "{name} kept dying quickly and was given up on (last: {})",
                            describe(&status)
                        ));
                        eprintln!("herd up: the others keep running");
                    } else {
                        let what = format!("{name} exited unexpectedly ({})", describe(&status));
                        eprintln!("herd up: {what}; the others keep running");
                        troubles.push(what);
                    }
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
                    let Exit { name, status, deaths, .. } = exit.map_err(join_error)?;
                    self.running.remove(&name);
                    if deaths > 0 {
                        troubles.push(format!(
                            "{name} exited unexpectedly {deaths} time(s) and was restarted"
                        ));
                    }
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

/// A started child and the tasks forwarding its output.
type Started = (tokio::process::Child, Vec<JoinHandle<()>>);

/// Starts one run of a server, its output forwarded line by line under `prefix`.
fn launch_child(name: &str, launch: &mut Launcher, prefix: &str) -> Result<Started> {
    let mut command = launch();
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
    let output = vec![
        forward(prefix.to_owned(), child.stdout.take(), Stream::Stdout),
        forward(prefix.to_owned(), child.stderr.take(), Stream::Stderr),
    ];
    Ok((child, output))
}

/// Owns one server: carries out orders, restarts it (with `restart`) when it dies on its own,
/// and reports its end once it is stopped, given up on, or (without `restart`) dead.
async fn watch_child(
    name: String,
    mut launch: Launcher,
    prefix: String,
    first: Started,
    mut orders: watch::Receiver<Order>,
    restart: Option<Restart>,
) -> Exit {
    let mut started = Some(first);
    let mut deaths = 0u32;
    let mut quick_deaths = 0u32;
    let mut delay = restart.map_or(Duration::ZERO, |r| r.first);
    loop {
        let began = tokio::time::Instant::now();
        let (status, ordered) = match started.take() {
            Some((child, output)) => run_child(child, &mut orders, output).await,
            None => match launch_child(&name, &mut launch, &prefix) {
                Ok((child, output)) => run_child(child, &mut orders, output).await,
                Err(Error::Io { source, .. }) => (Err(source), false),
                Err(other) => (Err(io::Error::other(other.to_string())), false),
            },
        };
        if ordered {
            return Exit {
                name,
                status,
                deaths,
                gave_up: false,
            };
        }
        deaths += 1;
        let Some(policy) = restart else {
            return Exit {
                name,
                status,
                deaths,
                gave_up: false,
            };
        };
        if began.elapsed() < policy.quick {
            quick_deaths += 1;
        } else {
            // It ran a good while: this death starts a fresh count.
            quick_deaths = 1;
            delay = policy.first;
        }
        if quick_deaths >= policy.give_up_after {
            eprintln!(
                "herd up: {name} exited ({}), its {quick_deaths}th death in a row within {:?} \
                 of starting; giving up on it (its log says why; `herd serve {name}` starts it by hand)",
                describe(&status),
                policy.quick
            );
            return Exit {
                name,
                status,
                deaths,
                gave_up: true,
            };
        }
        eprintln!(
            "herd up: {name} exited unexpectedly ({}); restarting it in {} ms",
            describe(&status),
            delay.as_millis()
        );
        let wait = delay;
        delay = (delay * 2).min(policy.max);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop_ordered(&mut orders) => {
                // Down when the stop came: nothing to stop.
                return Exit {
                    name,
                    status: Ok(std::os::unix::process::ExitStatusExt::from_raw(0)),
                    deaths,
                    gave_up: false,
                };
            }
        }
        eprintln!("herd up: restarting {name} (restart {deaths})");
    }
}

/// Resolves once the order is no longer to run (or `herd up` is going away).
async fn stop_ordered(orders: &mut watch::Receiver<Order>) {
    loop {
        if *orders.borrow_and_update() != Order::Run {
            return;
        }
        if orders.changed().await.is_err() {
            return;
        }
    }
}

/// Runs one child to its end, carrying out orders; returns how it ended and whether it was
/// ordered to (a stop or kill was given before it exited).
async fn run_child(
    mut child: tokio::process::Child,
    orders: &mut watch::Receiver<Order>,
    output: Vec<JoinHandle<()>>,
) -> (io::Result<ExitStatus>, bool) {
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
    let ordered = *orders.borrow() != Order::Run || orders.has_changed().is_err();
    for task in output {
        let _ = tokio::time::timeout(OUTPUT_DRAIN, task).await;
    }
    (status, ordered)
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
            no_restart: false,
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
    fn member(dir: &Path, name: &str, on_term: &str) -> (String, Launcher) {
        shell(
            name,
            format!(
                "{on_term}; touch '{}'; while :; do sleep 0.02; done",
                dir.join(name).display()
            ),
        )
    }

    /// A member that runs `script` in a shell, each time it is started.
    fn shell(name: &str, script: String) -> (String, Launcher) {
        let launch: Launcher = Box::new(move || {
            let mut command = Command::new("sh");
            command.arg("-c").arg(&script);
            command
        });
        (name.to_owned(), launch)
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
        let herd = Herd::start(
            [
                member(dir.path(), "A", CLEAN),
                member(dir.path(), "B", CLEAN),
            ],
            Some(RESTART),
        )
        .unwrap();
        let result = herd
            .supervise(all_ready(dir.path(), &["A", "B"]), Duration::from_secs(10))
            .await;
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn a_child_that_dies_is_reported_and_the_others_keep_running() {
        let dir = tempfile::tempdir().unwrap();
        // It ignores SIGTERM, so the stop that may follow its marker cannot kill it first.
        let dead = shell(
            "Dead",
            format!(
                "trap '' TERM; touch '{}'; exit 3",
                dir.path().join("Dead").display()
            ),
        );
        let herd = Herd::start([dead, member(dir.path(), "B", CLEAN)], None).unwrap();
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
        let herd = Herd::start(
            [
                member(dir.path(), "Stubborn", "trap '' TERM"),
                member(dir.path(), "B", CLEAN),
            ],
            Some(RESTART),
        )
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
        let herd = Herd::start([shell("Dead", "exit 2".into())], None).unwrap();
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

    const FAST: Restart = Restart {
        first: Duration::from_millis(10),
        max: Duration::from_millis(40),
        quick: Duration::from_secs(5),
        give_up_after: 4,
    };

    #[tokio::test]
    async fn a_child_that_dies_is_restarted_and_the_stop_still_reports_it() {
        let dir = tempfile::tempdir().unwrap();
        // The first run dies; the second stays up and stops cleanly.
        let once = dir.path().join("died-once");
        let flaky = shell(
            "Flaky",
            format!(
                "trap 'exit 0' TERM; if [ ! -e '{0}' ]; then touch '{0}'; exit 7; fi; \
                 touch '{1}'; while :; do sleep 0.02; done",
                once.display(),
                dir.path().join("Flaky").display()
            ),
        );
        let herd = Herd::start([flaky, member(dir.path(), "B", CLEAN)], Some(FAST)).unwrap();
        let e = herd
            .supervise(
                all_ready(dir.path(), &["Flaky", "B"]),
                Duration::from_secs(10),
            )
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "herd up: Flaky exited unexpectedly 1 time(s) and was restarted"
        );
    }

    #[tokio::test]
    async fn a_child_that_keeps_dying_quickly_is_given_up_on() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("starts");
        let dying = shell("Dying", format!("echo x >> '{}'; exit 4", count.display()));
        let herd = Herd::start([dying], Some(FAST)).unwrap();
        let e = herd
            .supervise(std::future::pending(), Duration::from_secs(1))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Dying kept dying quickly and was given up on")
                && e.contains("exit status: 4")
                && e.contains("no server is left"),
            "{e}"
        );
        let starts = std::fs::read_to_string(&count).unwrap().lines().count();
        assert_eq!(
            starts, 4,
            "started once and restarted until the fourth quick death"
        );
    }
}
