//! Tracing set-up: a node's log file `LOGDIR/NAME.log` (every input and output line, every
//! peer connect, drop and sync, with timestamps) and readable stderr. `RUST_LOG` filters both;
//! by default the file gets `info` and stderr gets `warn` plus the readiness line.
//!
//! Nothing here ever writes to a client socket.

use std::fmt;
use std::io::IsTerminal;
use std::path::Path;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt as tfmt, EnvFilter, Layer};

use crate::error::{Error, Result};

/// Bytes shown as text with everything that is not printable ASCII escaped (`\xff`, `\n`),
/// so a log line is one line and a non-UTF-8 client ID is never mangled silently.
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    c if c.is_control() => write!(f, "{}", c.escape_default())?,
                    c => write!(f, "{c}")?,
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// The directive that keeps the readiness line on whatever the filter.
const READY: &str = "herd::ready=info";

/// Keeps the file writer's background thread alive; drop it last to flush the log.
pub struct LogGuard(#[allow(dead_code)] Option<tracing_appender::non_blocking::WorkerGuard>);

/// Logs to `log_dir/NAME.log` and stderr.
pub fn init_node(log_dir: &Path, name: &str) -> Result<LogGuard> {
    std::fs::create_dir_all(log_dir)
        .map_err(|e| Error::io(format!("create log dir {}", log_dir.display()), e))?;
    let path = log_dir.join(format!("{name}.log"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(format!("open log file {}", path.display()), e))?;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(1 << 16)
        .finish(file);
    // The readiness line is part of the interface: whatever RUST_LOG says, it is logged.
    let filter = |default: &str| {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(default))
            .add_directive(READY.parse().expect("a valid directive"))
    };
    let file_filter = filter("info");
    let stderr_filter = filter("warn");
    tracing_subscriber::registry()
        .with(
            tfmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .with_filter(file_filter),
        )
        .with(
            tfmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false)
                .with_filter(stderr_filter),
        )
        .try_init()
        .map_err(|e| Error::io("start logging", std::io::Error::other(e.to_string())))?;
    Ok(LogGuard(Some(guard)))
}

/// Logs to stderr only (commands other than `serve`).
pub fn init_stderr() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_and_invalid_bytes() {
        assert_eq!(Escaped(b"kiwi").to_string(), "kiwi");
        assert_eq!(Escaped(b"a\nb\\").to_string(), "a\\nb\\\\");
        assert_eq!(Escaped(b"\xff\x00z").to_string(), "\\xff\\u{0}z");
        assert_eq!(Escaped("caf\u{e9}".as_bytes()).to_string(), "caf\u{e9}");
    }
}
