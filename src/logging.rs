//! Tracing set-up: a node's log file `LOGDIR/NAME.log` (every input and output line, every
//! peer connect, drop and sync, with timestamps) and readable stderr. `RUST_LOG` filters both;
//! by default the file gets `info` and stderr gets `warn` plus the readiness line.
//!
//! What a client sends cannot make the log misleading or unbounded: a client's or peer's line
//! is logged as its escaped start and its length ([`Clipped`], `[log] line_bytes`); every
//! record written to the file or to stderr is one line, with control, Unicode format (bidi
//! overrides such as U+202E, zero-width characters) and line or paragraph separator
//! characters escaped, and capped in length; the file is rotated by size (`[log] max_bytes`,
//! `keep`). The log directory is created 0700 and the file 0600, never through a symbolic
//! link.
//!
//! Nothing here ever writes to a client socket.

use std::fmt;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt as tfmt, EnvFilter, Layer};

use crate::config::LogConfig;
use crate::error::{Error, Result};

/// Whether `c` must never reach a log raw: a control character, a Unicode format character
/// (general category Cf: bidi embeddings, overrides and isolates, zero-width joiners, the BOM,
/// soft hyphen, tag characters...), or a line or paragraph separator (Zl, Zp). Each can make a
/// log line display as something other than what it holds.
pub fn must_escape(c: char) -> bool {
    c.is_control() || is_format_or_separator(c)
}

/// General categories Cf, Zl and Zp (Unicode 15.1).
fn is_format_or_separator(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x2028..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Writes `c` as it should appear in a log: escaped if [`must_escape`], else itself.
fn write_char(out: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\\' => out.write_str("\\\\"),
        c if c.is_control() => write!(out, "{}", c.escape_default()),
        c if is_format_or_separator(c) => write!(out, "{}", c.escape_unicode()),
        c => out.write_char(c),
    }
}

/// Bytes shown as text with everything that is not safe to print escaped (`\xff`, `\n`,
/// `\u{202e}`), so a log line is one line, displays as what it holds, and a non-UTF-8 client
/// ID is never mangled silently. Shows everything: for a line a client or peer sent, use
/// [`Clipped`].
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape_into(f, self.0, usize::MAX)
    }
}

/// How many bytes of escaped text [`Clipped`] shows; set from `[log] line_bytes`.
static LINE_BYTES: AtomicUsize = AtomicUsize::new(1024);

/// A line a client or peer sent, for the log: escaped like [`Escaped`], but at most
/// `[log] line_bytes` bytes of it, then `…(N bytes)` with the line's full length. A 64 KiB
/// line of NULs (384 KiB escaped) costs the log about a kilobyte.
pub struct Clipped<'a>(pub &'a [u8]);

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape_into(f, self.0, LINE_BYTES.load(Ordering::Relaxed))
    }
}

/// Writes `bytes` escaped, stopping before the output would pass `limit` bytes; a line cut
/// short ends with `…(N bytes)`, N being the whole input's length.
fn escape_into(f: &mut impl fmt::Write, bytes: &[u8], limit: usize) -> fmt::Result {
    let mut written = 0usize;
    let mut piece = String::new();
    for chunk in bytes.utf8_chunks() {
        let invalid = chunk.invalid().iter().map(|&b| Err::<char, u8>(b));
        for item in chunk.valid().chars().map(Ok).chain(invalid) {
            piece.clear();
            match item {
                Ok(c) => write_char(&mut piece, c)?,
                Err(b) => write!(piece, "\\x{b:02x}")?,
            }
            if written + piece.len() > limit {
                return write!(f, "…({} bytes)", bytes.len());
            }
            written += piece.len();
            f.write_str(&piece)?;
        }
    }
    Ok(())
}

/// The directive that keeps the readiness line on whatever the filter.
const READY: &str = "herd::ready=info";

/// Keeps the file writer's background thread alive; drop it last to flush the log.
pub struct LogGuard(#[allow(dead_code)] Option<tracing_appender::non_blocking::WorkerGuard>);

/// Logs to `log_dir/NAME.log` and stderr, as `[log]` says.
pub fn init_node(log_dir: &Path, name: &str, settings: &LogConfig) -> Result<LogGuard> {
    crate::private_files::create_private_dir(log_dir)
        .map_err(|e| Error::io(format!("create log dir {}", log_dir.display()), e))?;
    let path = log_dir.join(format!("{name}.log"));
    LINE_BYTES.store(settings.line_bytes, Ordering::Relaxed);
    let file = LogFile::open(path, settings)?;
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
    let ansi = std::io::stderr().is_terminal();
    let max_record = 2 * settings.line_bytes + 1024;
    tracing_subscriber::registry()
        .with(
            tfmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .with_filter(file_filter),
        )
        .with(
            tfmt::layer()
                .with_writer(move || SafeStderr { ansi, max_record })
                .with_ansi(ansi)
                .with_target(false)
                .with_filter(stderr_filter),
        )
        .try_init()
        .map_err(|e| Error::io("start logging", std::io::Error::other(e.to_string())))?;
    Ok(LogGuard(Some(guard)))
}

/// The node's log file: each record (one formatted event, handed over whole by the logging
/// thread) is made one safe line of bounded length, and the file is rotated by size.
struct LogFile {
    path: PathBuf,
    file: File,
    /// Bytes in the current file.
    size: u64,
    max_bytes: u64,
    keep: u32,
    /// The longest record written, in bytes; room for a clipped line and the event around it.
    max_record: usize,
}

impl LogFile {
    fn open(path: PathBuf, settings: &LogConfig) -> Result<LogFile> {
        let file = crate::private_files::open_private(&path, true)
            .map_err(|e| Error::io(format!("open log file {}", path.display()), e))?;
        let size = file
            .metadata()
            .map_err(|e| Error::io(format!("read log file {}", path.display()), e))?
            .len();
        Ok(LogFile {
            path,
            file,
            size,
            max_bytes: settings.max_bytes,
            keep: settings.keep,
            max_record: 2 * settings.line_bytes + 1024,
        })
    }

    /// `NAME.log.N` for N >= 1.
    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Shifts `NAME.log` to `NAME.log.1` (and each older file one further, the oldest past
    /// `keep` deleted) and starts a new `NAME.log`, whose first line says so.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            // The oldest kept file is overwritten by the rename into its place.
            for n in (1..self.keep).rev() {
                match std::fs::rename(self.rotated(n), self.rotated(n + 1)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        self.file = crate::private_files::open_private(&self.path, true)?;
        let note = format!(
            "{}  INFO herd::logging: log rotated max_bytes={} keep={}\n",
            utc_now(),
            self.max_bytes,
            self.keep
        );
        self.file.write_all(note.as_bytes())?;
        self.size = note.len() as u64;
        Ok(())
    }
}

impl Write for LogFile {
    fn write(&mut self, record: &[u8]) -> std::io::Result<usize> {
        let line = safe_record(record, self.max_record);
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            if let Err(e) = self.rotate() {
                // Keep logging to the file we have; try again after another max_bytes.
                eprintln!("herd: cannot rotate log file {}: {e}", self.path.display());
                self.size = 0;
            }
        }
        self.file.write_all(line.as_bytes())?;
        self.size += line.len() as u64;
        Ok(record.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// stderr, one formatted event at a time, made safe like the file's records. With colours on
/// (stderr is a terminal), the escape character the formatter colours with is kept.
struct SafeStderr {
    ansi: bool,
    max_record: usize,
}

impl Write for SafeStderr {
    fn write(&mut self, record: &[u8]) -> std::io::Result<usize> {
        let line = safe_record_keeping(record, self.max_record, self.ansi);
        std::io::stderr().write_all(line.as_bytes())?;
        Ok(record.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// One formatted event made one safe log line: every character [`must_escape`] escaped (the
/// final newline excepted), cut to at most about `max` bytes with `…(N bytes)` saying how long
/// it was, and ended with a newline.
fn safe_record(record: &[u8], max: usize) -> String {
    safe_record_keeping(record, max, false)
}

/// [`safe_record`], keeping the escape character (U+001B) raw if `keep_esc`.
fn safe_record_keeping(record: &[u8], max: usize, keep_esc: bool) -> String {
    let body = record.strip_suffix(b"\n").unwrap_or(record);
    let mut line = String::with_capacity(body.len().min(max) + 32);
    let _ = escape_record(&mut line, body, max, keep_esc);
    line.push('\n');
    line
}

/// Like [`escape_into`], but a tab (which the event formatter itself never writes inside a
/// field, and is harmless) and a backslash (already escaped by [`Escaped`] where it came
/// from a client) are kept as they are, so a record made of escaped fields is not escaped twice.
fn escape_record(out: &mut String, bytes: &[u8], limit: usize, keep_esc: bool) -> fmt::Result {
    let mut written = 0usize;
    for chunk in bytes.utf8_chunks() {
        let invalid = chunk.invalid().iter().map(|&b| Err::<char, u8>(b));
        for item in chunk.valid().chars().map(Ok).chain(invalid) {
            let before = out.len();
            match item {
                Ok(c @ ('\t' | '\\')) => out.push(c),
                Ok('\u{1b}') if keep_esc => out.push('\u{1b}'),
                Ok(c) => write_char(out, c)?,
                Err(b) => write!(out, "\\x{b:02x}")?,
            }
            written += out.len() - before;
            if written > limit {
                out.truncate(before);
                return write!(out, "…({} bytes)", bytes.len());
            }
        }
    }
    Ok(())
}

/// The current UTC time as RFC 3339 with microseconds, as the event formatter writes it.
fn utc_now() -> String {
    utc(crate::protocol::number::Timestamp::now())
}

/// `now` as RFC 3339 UTC with microseconds.
fn utc(now: crate::protocol::number::Timestamp) -> String {
    let days = (now.secs / 86_400) as i64;
    let rem = now.secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        now.nanos / 1_000
    )
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

    #[test]
    fn format_and_separator_characters_are_escaped() {
        let spoof = "a\u{202e}b\u{2028}c\u{2029}d\u{200b}e\u{feff}f\u{e0041}g\u{ad}h";
        assert_eq!(
            Escaped(spoof.as_bytes()).to_string(),
            r"a\u{202e}b\u{2028}c\u{2029}d\u{200b}e\u{feff}f\u{e0041}g\u{ad}h"
        );
        // Ordinary non-ASCII text, spaces included, is left alone.
        for ok in ["\u{e9}", "\u{4e2d}", "\u{1f600}", "\u{a0}", "\u{3000}"] {
            assert_eq!(Escaped(ok.as_bytes()).to_string(), ok);
        }
    }

    #[test]
    fn a_clipped_line_shows_its_start_and_its_length() {
        assert_eq!(Clipped(b"short").to_string(), "short");
        let nuls = vec![0u8; 65_000];
        let shown = Clipped(&nuls).to_string();
        assert!(shown.ends_with(r"\u{0}…(65000 bytes)"), "{shown:.80}");
        assert!(shown.len() <= 1024 + 20, "{}", shown.len());
        // An escape is never cut in half.
        let mut limited = String::new();
        escape_into(&mut limited, b"ab\x00cd", 5).unwrap();
        assert_eq!(limited, "ab…(5 bytes)");
    }

    #[test]
    fn a_record_is_one_escaped_line_of_bounded_length() {
        let record = "INFO x: line=\u{202e}evil\u{2028}more\ttab\\\\n\n";
        assert_eq!(
            safe_record(record.as_bytes(), 1000),
            "INFO x: line=\\u{202e}evil\\u{2028}more\ttab\\\\n\n"
        );
        let long = format!("{}\n", "y".repeat(10_000));
        let line = safe_record(long.as_bytes(), 100);
        assert_eq!(line, format!("{}…(10000 bytes)\n", "y".repeat(100)));
        assert_eq!(
            safe_record(b"bad \xff\x1b[31m\n", 100),
            "bad \\xff\\u{1b}[31m\n"
        );
        // On a terminal, the colour codes of the formatter itself stay.
        assert_eq!(
            safe_record_keeping(b"\x1b[33mWARN\x1b[0m \xe2\x80\xae\n", 100, true),
            "\u{1b}[33mWARN\u{1b}[0m \\u{202e}\n"
        );
    }

    #[test]
    fn the_file_is_rotated_by_size_keeping_keep_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("N.log");
        let settings = LogConfig {
            max_bytes: 4096,
            keep: 2,
            line_bytes: 64,
        };
        let mut log = LogFile::open(path.clone(), &settings).unwrap();
        for i in 0..100 {
            log.write_all(format!("{i:03} {}\n", "z".repeat(96)).as_bytes())
                .unwrap();
        }
        log.flush().unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        for name in ["N.log", "N.log.1", "N.log.2"] {
            let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
            assert!(len <= 4096, "{name}: {len}");
        }
        assert!(!dir.path().join("N.log.3").exists());
        assert!(read(&path).starts_with(&utc_now()[..10]));
        assert!(read(&path).lines().next().unwrap().contains("log rotated"));
        assert!(read(&path).ends_with(&format!("099 {}\n", "z".repeat(96))));
        // Reopening continues the current file, counting what it already holds.
        drop(log);
        let log = LogFile::open(path.clone(), &settings).unwrap();
        assert_eq!(log.size, std::fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn utc_times_are_written_as_rfc_3339() {
        use crate::protocol::number::Timestamp;
        let at = |secs, nanos| utc(Timestamp { secs, nanos });
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            at(1_621_464_827, 959_498_503),
            "2021-05-19T22:53:47.959498Z"
        );
        assert_eq!(at(951_782_400, 0), "2000-02-29T00:00:00.000000Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000000Z");
    }
}
