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
//! link. Nor can one client push everyone else's history out of the rotation: a run of blank
//! lines is one record with its count, and a client connection writes at most
//! `[log] connection_records` records per `interval_secs`, then one record of how many of its
//! lines and answers were not logged ([`ConnLog`]).
//!
//! Nothing here ever writes to a client socket.

use std::fmt;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use tracing::Level;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;
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
    escape_with(f, bytes, limit, |b| (0x20..0x7f).contains(&b) && b != b'\\')
}

/// The escaping loop of the log: runs of ASCII bytes that `raw` accepts are copied whole,
/// every other character goes through [`write_char`] and every byte that is not UTF-8 becomes
/// `\xNN`. Output stops before it would pass `limit` bytes (an escape is never cut in half),
/// and then says `…(N bytes)`. `raw` must accept ASCII bytes only.
fn escape_with(
    out: &mut impl fmt::Write,
    bytes: &[u8],
    limit: usize,
    raw: impl Fn(u8) -> bool,
) -> fmt::Result {
    let mut room = limit;
    let mut piece = String::new();
    for chunk in bytes.utf8_chunks() {
        let mut valid = chunk.valid();
        while !valid.is_empty() {
            let run = valid.bytes().position(|b| !raw(b)).unwrap_or(valid.len());
            if run > 0 {
                // Plain text, one byte a character: as much of it as fits.
                let fits = run.min(room);
                out.write_str(&valid[..fits])?;
                room -= fits;
                if fits < run {
                    return write!(out, "…({} bytes)", bytes.len());
                }
                valid = &valid[run..];
                continue;
            }
            let c = valid.chars().next().expect("not empty");
            piece.clear();
            write_char(&mut piece, c)?;
            if piece.len() > room {
                return write!(out, "…({} bytes)", bytes.len());
            }
            out.write_str(&piece)?;
            room -= piece.len();
            valid = &valid[c.len_utf8()..];
        }
        for &b in chunk.invalid() {
            piece.clear();
            write!(piece, "\\x{b:02x}")?;
            if piece.len() > room {
                return write!(out, "…({} bytes)", bytes.len());
            }
            out.write_str(&piece)?;
            room -= piece.len();
        }
    }
    Ok(())
}

/// Bytes of log records gathered before a write to the file.
const LOG_BUFFER: usize = 64 * 1024;

/// The readiness line's target, logged whatever the filter.
const READY_TARGET: &str = "herd::ready";

/// Keeps the file writer's thread alive; drop it last: it writes out what is left and stops
/// the thread.
pub struct LogGuard(Option<(Arc<Batch>, std::thread::JoinHandle<()>)>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some((batch, thread)) = self.0.take() {
            batch.stop();
            let _ = thread.join();
        }
    }
}

/// Logs to `log_dir/NAME.log` and stderr, as `[log]` says.
pub fn init_node(log_dir: &Path, name: &str, settings: &LogConfig) -> Result<LogGuard> {
    crate::private_files::create_private_dir(log_dir)
        .map_err(|e| Error::io(format!("create log dir {}", log_dir.display()), e))?;
    let path = log_dir.join(format!("{name}.log"));
    LINE_BYTES.store(settings.line_bytes, Ordering::Relaxed);
    let file = LogFile::open(path, settings)?;
    let max_record = 2 * settings.line_bytes + 1024;
    let batch = Arc::new(Batch::new(max_record));
    let thread = {
        let batch = Arc::clone(&batch);
        std::thread::Builder::new()
            .name("herd-log".into())
            .spawn(move || batch.write_out(file))
            .map_err(|e| Error::io("start the logging thread", e))?
    };
    let writer = Arc::clone(&batch);
    // The readiness line is part of the interface: whatever RUST_LOG says, it is logged.
    let from_env = EnvFilter::try_from_default_env().ok().map(|f| {
        f.add_directive(
            format!("{READY_TARGET}=info")
                .parse()
                .expect("a valid directive"),
        )
    });
    let _ = LINES.set(LineSink {
        batch: Arc::clone(&batch),
        // Without RUST_LOG, stderr takes warnings only; with it, both take the same records.
        stderr: from_env.is_some(),
    });
    let ansi = std::io::stderr().is_terminal();
    let file = move || Record(Arc::clone(&writer));
    let stderr = move || SafeStderr { ansi, max_record };
    let started = match from_env {
        // One filter for both: the same records go to the file and to stderr.
        Some(filter) => tracing_subscriber::registry()
            .with(filter)
            .with(file_layer(file))
            .with(stderr_layer(stderr, ansi))
            .try_init(),
        // By default, one filter by level for everything, and stderr picks its records by
        // level and target when it writes them. Neither takes a lock or looks a span up each
        // time a task enters or leaves its span (every poll of every connection), as an
        // `EnvFilter` or a per-layer filter would.
        None => tracing_subscriber::registry()
            .with(LevelFilter::INFO)
            .with(file_layer(file))
            .with(stderr_layer(
                stderr.with_filter(|meta: &tracing::Metadata<'_>| {
                    *meta.level() <= Level::WARN || meta.target() == READY_TARGET
                }),
                ansi,
            ))
            .try_init(),
    };
    started.map_err(|e| Error::io("start logging", std::io::Error::other(e.to_string())))?;
    Ok(LogGuard(Some((batch, thread))))
}

/// The log file's event formatter, over whatever subscriber it is layered on.
fn file_layer<S, W>(writer: W) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tfmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tfmt::layer().with_writer(writer).with_ansi(false)
}

/// stderr's event formatter: no target, colours on a terminal.
fn stderr_layer<S, W>(writer: W, ansi: bool) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tfmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tfmt::layer()
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(false)
}

/// Where [`client_line`] writes: the node's log file, and stderr when `RUST_LOG` asks for
/// the same records there.
struct LineSink {
    batch: Arc<Batch>,
    stderr: bool,
}

static LINES: OnceLock<LineSink> = OnceLock::new();

/// Which way a client's line went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// A line the client sent.
    In,
    /// An answer the node wrote.
    Out,
}

/// A connection's part of its log records: `conn{id=7 remote=127.0.0.1:40540}: `, made once
/// when the connection opens.
pub struct ConnTag(String);

impl ConnTag {
    pub fn new(id: u64, remote: std::net::SocketAddr) -> ConnTag {
        ConnTag(format!("conn{{id={id} remote={remote}}}: "))
    }
}

/// Logs one line a client sent or one answer, exactly as `tracing::info!(dir, line =
/// %Clipped(line))` in the connection's span would, but formatted straight into the log's
/// batch: these two records are written for every request, and going through the general
/// event formatter cost more than the request itself. The caller asks `tracing::enabled!`
/// whether `info` records are kept where it is (a connection asks once, inside its span), so
/// `RUST_LOG` filters these records as it filters every other. Outside a node (no log file set
/// up), it logs through `tracing`.
pub fn client_line(tag: &ConnTag, dir: Direction, line: &[u8]) {
    let dir_text = match dir {
        Direction::In => "in",
        Direction::Out => "out",
    };
    let Some(sink) = LINES.get() else {
        tracing::info!(target: "herd::connection", dir = dir_text, line = %Clipped(line));
        return;
    };
    thread_local! {
        static RECORD: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    RECORD.with_borrow_mut(|record| {
        record.clear();
        push_utc_now(record);
        record.push_str("  INFO ");
        record.push_str(&tag.0);
        let target_at = record.len();
        record.push_str("herd::connection: dir=\"");
        record.push_str(dir_text);
        record.push_str("\" line=");
        // Escaped and clipped as [`Clipped`] does: the record is one safe line by
        // construction, so it skips the batch's second escaping pass.
        let _ = escape_into(record, line, LINE_BYTES.load(Ordering::Relaxed));
        record.push('\n');
        sink.batch.append_safe(record.as_bytes());
        if sink.stderr {
            // The stderr formatter leaves the target out.
            let mut shown = String::with_capacity(record.len());
            shown.push_str(&record[..target_at]);
            shown.push_str(&record[target_at + "herd::connection: ".len()..]);
            let _ = std::io::stderr().write_all(shown.as_bytes());
        }
    });
}

/// What one client connection writes to the log: every line it sends and every answer, as
/// [`client_line`] records, except that
///
/// - a run of blank lines (empty, or a lone `\r`) is one record with its count
///   (`blank_lines=N`), written when the run ends or the connection closes;
/// - past `[log] connection_records` records in an interval (`[log] interval_secs`), its lines
///   and answers are only counted until the interval is over; then one record
///   (`lines not logged`) says how many of each were not, and logging resumes. The connection
///   is answered all the same.
///
/// So every line is accounted for: the lines logged, the blank lines counted and the lines not
/// logged add up to every line read.
pub struct ConnLog {
    tag: ConnTag,
    /// Whether `RUST_LOG` keeps this connection's `info` records.
    on: bool,
    /// Blank lines read since the last other line, not logged yet.
    blanks: u64,
    budget: u64,
    interval: Duration,
    /// Records written since `since`.
    used: u64,
    since: std::time::Instant,
    held_lines: u64,
    held_answers: u64,
}

impl ConnLog {
    /// The log of connection `id` from `remote`; `on` says whether `info` records are kept
    /// where the connection runs (asked once: the filter does not change while a node runs).
    pub fn new(id: u64, remote: std::net::SocketAddr, on: bool, settings: &LogConfig) -> ConnLog {
        ConnLog {
            tag: ConnTag::new(id, remote),
            on,
            blanks: 0,
            budget: settings.connection_records,
            interval: settings.interval(),
            used: 0,
            since: std::time::Instant::now(),
            held_lines: 0,
            held_answers: 0,
        }
    }

    /// Logs a line read or an answer written.
    pub fn line(&mut self, dir: Direction, line: &[u8]) {
        if !self.on {
            return;
        }
        if dir == Direction::In && line.is_empty() {
            self.blanks += 1;
            return;
        }
        self.end_blank_run();
        if self.admit() {
            client_line(&self.tag, dir, line);
        } else if dir == Direction::In {
            self.held_lines += 1;
        } else {
            self.held_answers += 1;
        }
    }

    /// Writes the run of blank lines that just ended, if any.
    fn end_blank_run(&mut self) {
        if self.blanks == 0 {
            return;
        }
        let n = std::mem::take(&mut self.blanks);
        if self.admit() {
            tracing::info!(target: "herd::connection", blank_lines = n, "blank lines");
        } else {
            self.held_lines += n;
        }
    }

    /// Whether the budget has room for one more record; a spent budget is renewed once an
    /// interval has passed since it was last renewed, after the record of what it held back.
    fn admit(&mut self) -> bool {
        if self.used < self.budget {
            self.used += 1;
            return true;
        }
        let now = std::time::Instant::now();
        if now.duration_since(self.since) < self.interval {
            return false;
        }
        self.report_held();
        self.since = now;
        self.used = 1;
        true
    }

    /// Writes how many lines and answers the budget held back, if any.
    fn report_held(&mut self) {
        if self.held_lines == 0 && self.held_answers == 0 {
            return;
        }
        tracing::warn!(
            target: "herd::connection",
            lines = self.held_lines,
            answers = self.held_answers,
            budget = self.budget,
            interval_secs = self.interval.as_secs(),
            "lines not logged: the connection passed its log budget"
        );
        self.held_lines = 0;
        self.held_answers = 0;
    }
}

impl Drop for ConnLog {
    fn drop(&mut self) {
        if self.on {
            self.end_blank_run();
            self.report_held();
        }
    }
}

/// Appends the current UTC time as the event formatter writes it (RFC 3339, microseconds),
/// formatting the date and time of day once a second per thread.
fn push_utc_now(out: &mut String) {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let now = crate::protocol::number::Timestamp::now();
    SECOND.with_borrow_mut(|(secs, text)| {
        if *secs != now.secs {
            *secs = now.secs;
            *text = utc(crate::protocol::number::Timestamp {
                secs: now.secs,
                nanos: 0,
            });
            // "…SS.000000Z": keep up to the seconds and the dot.
            text.truncate(text.len() - "000000Z".len());
        }
        out.push_str(text);
    });
    let _ = write!(out, "{:06}Z", now.nanos / 1_000);
}

/// How long the logging thread lets records gather after the first one arrives: a log line
/// reaches the file at most about this late, and a burst of lines costs one wake-up and one
/// write instead of one of each per line.
const LINGER: Duration = Duration::from_millis(2);
/// Bytes of safe lines waiting, at most; past it a logging caller waits for the file.
const WAITING_MAX: usize = 8 << 20;

/// Log records on their way to the file. Each caller makes its record a safe line itself
/// ([`safe_record`]) and appends it; one thread ([`Batch::write_out`]) takes everything
/// waiting, every [`LINGER`] while there is any, and writes it.
struct Batch {
    state: Mutex<Waiting>,
    /// Wakes the logging thread (records arrived, or stop).
    arrived: Condvar,
    /// Wakes callers held back by [`WAITING_MAX`].
    taken: Condvar,
    max_record: usize,
}

#[derive(Default)]
struct Waiting {
    lines: Vec<u8>,
    /// The logging thread is asleep until records arrive.
    asleep: bool,
    stop: bool,
}

impl Batch {
    fn new(max_record: usize) -> Batch {
        Batch {
            state: Mutex::new(Waiting::default()),
            arrived: Condvar::new(),
            taken: Condvar::new(),
            max_record,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn append(&self, record: &[u8]) {
        self.append_safe(safe_record(record, self.max_record).as_bytes());
    }

    /// Appends records that are already safe lines, each ended by its newline.
    fn append_safe(&self, line: &[u8]) {
        let mut state = self.lock();
        while state.lines.len() > WAITING_MAX && !state.stop {
            state = self.taken.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.lines.extend_from_slice(line);
        if state.asleep {
            state.asleep = false;
            self.arrived.notify_one();
        }
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.arrived.notify_one();
    }

    /// The logging thread: sleeps until records arrive, lets more gather for [`LINGER`],
    /// writes them all, flushes; after [`Batch::stop`], writes what is left and returns.
    fn write_out(&self, mut file: LogFile) {
        let mut lines = Vec::new();
        loop {
            let stopping = {
                let mut state = self.lock();
                while state.lines.is_empty() && !state.stop {
                    state.asleep = true;
                    state = self.arrived.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                state.stop
            };
            if !stopping {
                std::thread::sleep(LINGER);
            }
            std::mem::swap(&mut lines, &mut self.lock().lines);
            self.taken.notify_all();
            let written = file.write_lines(&lines).and_then(|()| file.flush());
            if let Err(e) = written {
                eprintln!("herd: cannot write log file {}: {e}", file.path.display());
            }
            lines.clear();
            if stopping && self.lock().lines.is_empty() {
                return;
            }
        }
    }
}

/// What the event formatter writes one record (one event) to.
struct Record(Arc<Batch>);

impl Write for Record {
    fn write(&mut self, record: &[u8]) -> std::io::Result<usize> {
        self.0.append(record);
        Ok(record.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The node's log file, written by the logging thread: safe lines of bounded length (see
/// [`Batch`]), rotated by size, buffered and flushed after each batch.
struct LogFile {
    path: PathBuf,
    file: BufWriter<File>,
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
            file: BufWriter::with_capacity(LOG_BUFFER, file),
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
        self.file = BufWriter::with_capacity(
            LOG_BUFFER,
            crate::private_files::open_private(&self.path, true)?,
        );
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

impl LogFile {
    /// Writes safe lines (each ended by its one newline), rotating the file where the next
    /// line would take it past `max_bytes`.
    fn write_lines(&mut self, lines: &[u8]) -> std::io::Result<()> {
        if self.size + lines.len() as u64 <= self.max_bytes {
            // The whole batch fits the current file: one copy, no line by line.
            self.file.write_all(lines)?;
            self.size += lines.len() as u64;
            return Ok(());
        }
        for line in lines.split_inclusive(|&b| b == b'\n') {
            if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
                if let Err(e) = self.rotate() {
                    // Keep logging to the file we have; try again after another max_bytes.
                    eprintln!("herd: cannot rotate log file {}: {e}", self.path.display());
                    self.size = 0;
                }
            }
            self.file.write_all(line)?;
            self.size += line.len() as u64;
        }
        Ok(())
    }
}

impl Write for LogFile {
    /// Writes one record (a formatted event) as one safe line.
    fn write(&mut self, record: &[u8]) -> std::io::Result<usize> {
        let line = safe_record(record, self.max_record);
        self.write_lines(line.as_bytes())?;
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
    escape_with(out, bytes, limit, |b| {
        (0x20..0x7f).contains(&b) || b == b'\t' || (keep_esc && b == 0x1b)
    })
}

/// The current UTC time as RFC 3339 with microseconds, as the event formatter writes it.
fn utc_now() -> String {
    utc(crate::protocol::number::Timestamp::now())
}

/// `now` as RFC 3339 UTC with microseconds.
fn utc(now: crate::protocol::number::Timestamp) -> String {
    let at = i64::try_from(now.secs)
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
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
            ..LogConfig::default()
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
    fn batched_records_all_reach_the_file_as_single_lines_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("N.log");
        let settings = LogConfig {
            max_bytes: u64::MAX,
            keep: 1,
            line_bytes: 64,
            ..LogConfig::default()
        };
        let file = LogFile::open(path.clone(), &settings).unwrap();
        let batch = Arc::new(Batch::new(1024));
        let thread = {
            let batch = Arc::clone(&batch);
            std::thread::spawn(move || batch.write_out(file))
        };
        let callers: Vec<_> = (0..4)
            .map(|t| {
                let batch = Arc::clone(&batch);
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        batch.append(format!("t{t} n{i}\nsecond half\n").as_bytes());
                    }
                })
            })
            .collect();
        for c in callers {
            c.join().unwrap();
        }
        drop(LogGuard(Some((batch, thread))));
        let log = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 20_000);
        for t in 0..4 {
            let mine: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            let expected: Vec<String> = (0..5_000)
                .map(|i| format!("t{t} n{i}\\nsecond half"))
                .collect();
            assert_eq!(mine, expected);
        }
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
