//! The `herd` binary: parse the command line, load the config, start logging, and hand off
//! to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use herd::config::Config;
use herd::error::Error;

/// An application server herd for mobile clients: location reports (IAMAT), places near a
/// client (WHATSAT), flooded between servers and kept durably.
#[derive(Parser)]
#[command(name = "herd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run server NAME of the herd until SIGINT or SIGTERM.
    Serve {
        /// The server's name in the config.
        name: String,
        /// The herd's config (default: data/herd.toml here if it exists, else the built-in herd).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where this node's store lives (default: state/NAME).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Where this node's log file NAME.log goes.
        #[arg(long, default_value = "logs")]
        log_dir: PathBuf,
        /// Bind this address instead of the one the config lists (peers still dial the listed one).
        #[arg(long)]
        listen: Option<String>,
        /// Serve the admin HTTP endpoint (/healthz, /metrics, /status, /clients/ID) at this
        /// address, instead of the one [admin] lists for NAME.
        #[arg(long, value_name = "ADDR")]
        admin: Option<String>,
    },
    /// Run every server of the config as its own process until Ctrl-C.
    Up(herd::up::UpArgs),
    /// Send request lines to a running node and print the answers (interactive on a terminal).
    Client(herd::client::ClientArgs),
    /// Drive a running herd with concurrent client connections and print throughput and latency.
    Bench(herd::bench::BenchArgs),
    /// Ask every server, over its admin endpoint, whether their stores agree (exit 0 if so).
    Check(herd::check::CheckArgs),
    /// Write a development CA and a certificate per named server for peer-link TLS.
    Certs(herd::peer::tls::CertsArgs),
    /// Print a stopped node's stored records, or compare stopped stores.
    Inspect {
        /// The node's state directory.
        #[arg(long, required_unless_present = "compare", conflicts_with = "compare")]
        state_dir: Option<PathBuf>,
        /// Print the clients whose records differ between these state directories (exit 1
        /// when there are any).
        #[arg(long, num_args = 2.., value_name = "DIR", conflicts_with_all = ["client", "retain_secs"])]
        compare: Vec<PathBuf>,
        /// Only this client's record.
        #[arg(long)]
        client: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: herd::inspect::Format,
        /// Mark each record expired or not under this retention window (`[store] retain_secs`).
        #[arg(long, value_name = "SECS")]
        retain_secs: Option<u64>,
    },
    /// Back up a running node, through its admin endpoint, to a file.
    Backup(herd::backup::fetch::BackupArgs),
    /// Fill a stopped node's store from a backup or an export (newest wins).
    Restore(herd::backup::load::LoadArgs),
    /// Write a stopped node's records as JSON lines.
    Export(herd::backup::export::ExportArgs),
    /// Merge JSON record lines into a stopped node's store (newest wins).
    Import(herd::backup::load::LoadArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("herd: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Runs a command; `Ok` carries the exit code of a command that finished as it should (0, or
/// 1 for a check that found the herd not converged).
fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Inspect {
            compare, format, ..
        } if !compare.is_empty() => {
            herd::logging::init_stderr();
            herd::private_files::restrict_umask();
            let differ = herd::compare::run(&compare, format, &mut std::io::stdout().lock())?;
            Ok(if differ == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        command => run_command(command),
    }
}

fn run_command(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Serve {
            name,
            config,
            state_dir,
            log_dir,
            listen,
            admin,
        } => {
            let config = Config::load(config.as_deref())?;
            config.addr(&name)?;
            // Everything the node creates from here on (logs, lock, the store's files) is
            // private to its user: the state and the log hold every client's location.
            herd::private_files::restrict_umask();
            let state_dir = state_dir.unwrap_or_else(|| PathBuf::from("state").join(&name));
            herd::private_files::check_node_paths(
                &state_dir,
                &log_dir,
                &name,
                config.store.allow_shared_dir,
            )?;
            let _log = herd::logging::init_node(&log_dir, &name, &config.log)?;
            let opts = herd::server::ServeOptions {
                name,
                config,
                state_dir,
                listen,
                admin,
            };
            let runtime = runtime()?;
            let result = runtime.block_on(herd::server::run(opts, herd::server::shutdown_signal()));
            // The node has answered, flushed and closed everything; background work still
            // running (loading the places dataset, say) must not hold the exit up.
            runtime.shutdown_timeout(std::time::Duration::from_millis(100));
            if let Err(e) = &result {
                tracing::error!(error = %e, "node failed");
            }
            result.map(|()| ExitCode::SUCCESS)
        }
        Command::Up(args) => {
            herd::logging::init_stderr();
            runtime()?
                .block_on(herd::up::run(args))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Client(args) => {
            herd::logging::init_stderr();
            herd::client::run(args).map(|()| ExitCode::SUCCESS)
        }
        Command::Bench(args) => {
            herd::logging::init_stderr();
            runtime()?
                .block_on(herd::bench::run(args))
                .map(|_| ExitCode::SUCCESS)
        }
        Command::Check(args) => {
            herd::logging::init_stderr();
            let converged =
                runtime()?.block_on(herd::check::run(&args, &mut std::io::stdout().lock()))?;
            Ok(if converged {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Certs(args) => {
            herd::logging::init_stderr();
            for path in herd::peer::tls::certs(&args)? {
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect {
            state_dir,
            client,
            format,
            retain_secs,
            compare: _,
        } => {
            herd::logging::init_stderr();
            // inspect reads a scratch copy of the store: keep the copy private too.
            herd::private_files::restrict_umask();
            let mut out = std::io::stdout().lock();
            let state_dir = state_dir.expect("clap requires --state-dir without --compare");
            herd::inspect::run(
                &state_dir,
                client.as_deref().map(str::as_bytes),
                format,
                retain_secs,
                &mut out,
            )
            .map(|_| ExitCode::SUCCESS)
        }
        Command::Backup(args) => {
            herd::logging::init_stderr();
            herd::private_files::restrict_umask();
            let (header, records) = runtime()?.block_on(herd::backup::fetch::run(&args))?;
            eprintln!(
                "backup of {} taken at {}: {records} records, verified, in {}",
                header.server,
                header.taken_at,
                args.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore(args) => load(&args, true).map(|()| ExitCode::SUCCESS),
        Command::Import(args) => load(&args, false).map(|()| ExitCode::SUCCESS),
        Command::Export(args) => {
            herd::logging::init_stderr();
            herd::private_files::restrict_umask();
            let records = herd::backup::export::run(&args)?;
            eprintln!("exported {records} records");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `herd restore` (`whole`: a backup or export only) and `herd import`.
fn load(args: &herd::backup::load::LoadArgs, whole: bool) -> Result<(), Error> {
    herd::logging::init_stderr();
    // The store's files, as a node would create them.
    herd::private_files::restrict_umask();
    runtime()?
        .block_on(herd::backup::load::run(args, whole))
        .map(|_| ())
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Runtime::new().map_err(|e| Error::io("start the runtime", e))
}
