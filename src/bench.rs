//! `herd bench`: a closed-loop load generator for running herd nodes.
//!
//! It owns only the client side. It opens `--connections` TCP connections, spread round-robin
//! over the `--addr` targets, and on each keeps up to `--pipeline` requests in flight: with the
//! default depth of 1 a connection sends a request, reads its whole answer, then sends the next.
//! Every request is timed from just before it is written until the last byte of its answer has
//! been read, and the times go into an HDR histogram (one per connection, merged at the end, so
//! the hot loop shares nothing between tasks).
//!
//! What it promises:
//!
//! - **It stops by itself.** A run is bounded by `--requests` (counted after warm-up) or by
//!   `--duration`, and a node that leaves an answer unfinished for `--timeout` fails the run.
//! - **Errors are never averaged away.** A `? ` answer is counted and the first one is kept for
//!   the report; [`run`] fails when there was any. An answer that is neither `AT ...` nor `? ...`,
//!   a WHATSAT answer that does not end in `}\n\n`, or a dropped connection fails the run at once.
//! - **Loopback only.** Targets must resolve to loopback addresses: this is a tool for measuring
//!   a herd on the machine it runs on, and a typo must not turn it against someone else's server.
//! - **It is not the bottleneck.** Requests are formatted into one reused buffer and a window of
//!   them goes out in one write; answers are read through a `BufReader` into one reused line
//!   buffer. Nothing is allocated per request once the buffers have grown.
//!
//! Client IDs are `bench-<connection>-<k>`, `k` cycling through `--clients` values, so a run
//! exercises many records without growing the store without bound. For WHATSAT, each
//! connection first seeds `bench-<connection>-0` with one IAMAT (untimed), then asks about it.
//!
//! Not a goal: open-loop load. Like most closed-loop generators it measures the latency a
//! client sees while waiting for each answer, so a stalled node slows the offered load rather
//! than piling up requests (the "coordinated omission" caveat).

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::protocol::number::{parse_bound, Radius, Timestamp};

/// The request count used when neither `--requests` nor `--duration` is given.
const DEFAULT_REQUESTS: u64 = 100_000;

/// The most connections one run may open.
const MAX_CONNECTIONS: usize = 10_000;

/// `herd bench`: measure a running herd's throughput and latency.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// A node to load, as HOST:PORT. Repeat the flag or separate with commas to spread the
    /// connections round-robin over several nodes. Only loopback addresses are accepted.
    #[arg(
        long = "addr",
        value_name = "HOST:PORT",
        value_delimiter = ',',
        default_value = "127.0.0.1:10000"
    )]
    pub addrs: Vec<String>,

    /// How many connections to open.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub connections: usize,

    /// Stop after this many timed requests, over all connections (default 100000 unless
    /// --duration is given).
    #[arg(long, value_name = "TOTAL", conflicts_with = "duration")]
    pub requests: Option<u64>,

    /// Stop sending after this many seconds of timed load instead of a request count.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,

    /// What to send: IAMAT reports, WHATSAT queries, or the two alternating.
    #[arg(long, value_enum, default_value_t = Mode::Iamat)]
    pub mode: Mode,

    /// The most requests in flight on one connection (1: send, wait for the answer, send again).
    #[arg(long, value_name = "DEPTH", default_value_t = 1)]
    pub pipeline: usize,

    /// WHATSAT radius in kilometres (above 0, at most 50).
    #[arg(long, value_name = "KM", default_value = "10")]
    pub radius: String,

    /// WHATSAT bound: the most places wanted (1 to 20).
    #[arg(long, value_name = "N", default_value = "5")]
    pub bound: String,

    /// Send for this many seconds before timing starts (warm-up answers are checked, not timed).
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "0")]
    pub warmup: Duration,

    /// How many distinct client IDs each connection's IAMATs cycle through.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub clients: u64,

    /// Fail the run when an answer takes longer than this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "10")]
    pub timeout: Duration,

    /// Print the report as one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Open a new connection for every request, as the classic herd clients do (connect, send
    /// one line, read the answer, close); the time of each includes its connect.
    #[arg(long, conflicts_with = "pipeline")]
    pub connect_each: bool,
}

/// What a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only IAMAT reports.
    Iamat,
    /// Only WHATSAT queries (each connection seeds its client with one IAMAT first).
    Whatsat,
    /// IAMAT and WHATSAT alternating on every connection.
    Mixed,
    /// `GEOADD` in Redis's protocol (RESP), one member per request: the same load against a
    /// `redis-server`, as a baseline measured with this very generator.
    Geoadd,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Iamat => "iamat",
            Mode::Whatsat => "whatsat",
            Mode::Mixed => "mixed",
            Mode::Geoadd => "geoadd",
        })
    }
}

/// The outcome of a run: counts, throughput and latency percentiles.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The targets, as given.
    pub addrs: Vec<String>,
    pub mode: Mode,
    pub connections: usize,
    pub pipeline: usize,
    /// Timed requests answered (warm-up excluded), of which IAMAT and WHATSAT.
    pub requests: u64,
    pub iamat: u64,
    pub whatsat: u64,
    /// Answers that were `? ` lines, warm-up included.
    pub errors: u64,
    /// The first `? ` answer, without its newline.
    pub first_error: Option<String>,
    /// From the end of warm-up to the last timed answer.
    pub elapsed_secs: f64,
    pub requests_per_sec: f64,
    pub latency_us: Latency,
}

/// Request latencies in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    #[serde(rename = "p99.9")]
    pub p99_9: u64,
    pub max: u64,
    pub mean: f64,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "herd bench: {} to {}, {} connections, pipeline {}",
            self.mode,
            self.addrs.join(","),
            self.connections,
            self.pipeline
        )?;
        let l = &self.latency_us;
        writeln!(
            f,
            "{:>10} {:>8} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "requests",
            "errors",
            "secs",
            "req/s",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs"
        )?;
        writeln!(
            f,
            "{:>10} {:>8} {:>9.3} {:>10.0} {:>8} {:>8} {:>8} {:>8} {:>8}",
            self.requests,
            self.errors,
            self.elapsed_secs,
            self.requests_per_sec,
            l.p50,
            l.p90,
            l.p99,
            l.p99_9,
            l.max
        )?;
        if let Some(first) = &self.first_error {
            writeln!(
                f,
                "ERROR: {} answers were errors; the first: {first}",
                self.errors
            )?;
        }
        Ok(())
    }
}

/// Runs the benchmark, prints the report (a table, or a JSON line with `--json`) and returns
/// it. Fails when any request was answered with `? `, after printing the report.
pub async fn run(args: BenchArgs) -> Result<BenchReport> {
    let report = measure(&args).await?;
    if args.json {
        let line = serde_json::to_string(&report).expect("a report always serializes");
        println!("{line}");
    } else {
        print!("{report}");
    }
    if let Some(first) = &report.first_error {
        return Err(Error::io(
            "herd bench",
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} requests were answered with an error, the first: {first}",
                    report.errors
                ),
            ),
        ));
    }
    Ok(report)
}

/// Runs the benchmark and returns its report without printing it. `? ` answers are counted in
/// the report, not returned as an error; anything worse (no connection, a malformed answer, a
/// timeout) is an error.
pub async fn measure(args: &BenchArgs) -> Result<BenchReport> {
    let plan = Plan::new(args).await?;

    // Connect (and seed) everything before the clock starts, so connection setup is not
    // measured and every connection starts loading at the same moment.
    let mut connecting = JoinSet::new();
    for conn in 0..plan.connections {
        let addr = plan.addrs[conn % plan.addrs.len()];
        let seed = matches!(plan.mode, Mode::Whatsat | Mode::Mixed);
        let timeout = plan.timeout;
        connecting.spawn(async move { Worker::connect(conn, addr, seed, timeout).await });
    }
    let mut workers = Vec::with_capacity(plan.connections);
    while let Some(joined) = connecting.join_next().await {
        workers.push(joined.map_err(join_error)??);
    }

    let start = Instant::now();
    let clock = Clock {
        measure_from: start + plan.warmup,
        end: plan.duration.map(|d| start + plan.warmup + d),
    };
    let plan = std::sync::Arc::new(plan);
    let mut running = JoinSet::new();
    for worker in workers {
        let plan = plan.clone();
        running.spawn(async move { worker.drive(&plan, clock).await });
    }
    let mut total = Tally::new();
    while let Some(joined) = running.join_next().await {
        total.merge(joined.map_err(join_error)??);
    }
    Ok(total.report(&plan, clock))
}

/// The validated arguments.
struct Plan {
    names: Vec<String>,
    addrs: Vec<SocketAddr>,
    connections: usize,
    /// Timed requests per connection, when the run is bounded by count.
    budgets: Option<Vec<u64>>,
    duration: Option<Duration>,
    warmup: Duration,
    mode: Mode,
    pipeline: usize,
    radius: String,
    bound: String,
    clients: u64,
    timeout: Duration,
    connect_each: bool,
}

impl Plan {
    async fn new(args: &BenchArgs) -> Result<Plan> {
        let usage = |message: String| Error::config("herd bench", message);
        if args.addrs.is_empty() {
            return Err(usage("--addr: no target given".into()));
        }
        if args.connections == 0 || args.connections > MAX_CONNECTIONS {
            return Err(usage(format!(
                "--connections must be from 1 to {MAX_CONNECTIONS}"
            )));
        }
        if args.pipeline == 0 {
            return Err(usage("--pipeline must be at least 1".into()));
        }
        if args.clients == 0 {
            return Err(usage("--clients must be at least 1".into()));
        }
        if Radius::parse(args.radius.as_bytes()).is_none() {
            return Err(usage(format!(
                "--radius {:?} is not a radius above 0 and at most 50 km",
                args.radius
            )));
        }
        if parse_bound(args.bound.as_bytes()).is_none() {
            return Err(usage(format!(
                "--bound {:?} is not a count from 1 to 20",
                args.bound
            )));
        }
        let mut addrs = Vec::with_capacity(args.addrs.len());
        for name in &args.addrs {
            addrs.push(resolve_loopback(name).await?);
        }
        let budgets = match (args.requests, args.duration) {
            (_, Some(_)) => None,
            (requests, None) => {
                let total = requests.unwrap_or(DEFAULT_REQUESTS);
                let n = args.connections as u64;
                Some(
                    (0..n)
                        .map(|i| total / n + u64::from(i < total % n))
                        .collect(),
                )
            }
        };
        Ok(Plan {
            names: args.addrs.clone(),
            addrs,
            connections: args.connections,
            budgets,
            duration: args.duration,
            warmup: args.warmup,
            mode: args.mode,
            pipeline: args.pipeline,
            radius: args.radius.clone(),
            bound: args.bound.clone(),
            clients: args.clients,
            timeout: args.timeout,
            connect_each: args.connect_each,
        })
    }
}

/// Resolves `HOST:PORT` and insists on a loopback address.
async fn resolve_loopback(name: &str) -> Result<SocketAddr> {
    let address = |message: String| Error::Address {
        addr: name.to_owned(),
        message,
    };
    let found: Vec<SocketAddr> = tokio::net::lookup_host(name)
        .await
        .map_err(|e| address(format!("cannot resolve: {e}")))?
        .collect();
    match found.first() {
        None => Err(address("resolves to no address".into())),
        Some(_) if found.iter().any(|a| !a.ip().is_loopback()) => Err(address(
            "is not a loopback address (herd bench only loads nodes on this machine)".into(),
        )),
        Some(first) => Ok(*first),
    }
}

/// When timing starts and, for a timed run, when sending stops.
#[derive(Clone, Copy)]
struct Clock {
    measure_from: Instant,
    end: Option<Instant>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Iamat,
    Whatsat,
    Geoadd,
}

/// A request written and not yet answered.
struct Pending {
    sent: Instant,
    kind: Kind,
    timed: bool,
}

/// How a complete answer read.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// `AT ...` (and for WHATSAT, the places document after it).
    Ok,
    /// A `? ` line: the node refused the request.
    Refused,
}

/// One connection: its socket halves and reused buffers.
struct Worker {
    conn: usize,
    addr: SocketAddr,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Requests formatted for the next write.
    out: Vec<u8>,
    /// The answer line being read.
    line: Vec<u8>,
    /// This connection's location, formatted once.
    location: String,
    /// Requests sent so far (picks the kind and client ID of the next one).
    sent: u64,
    window: VecDeque<Pending>,
}

impl Worker {
    async fn connect(conn: usize, addr: SocketAddr, seed: bool, timeout: Duration) -> Result<Self> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
            .and_then(|r| r)
            .map_err(|e| Error::io(format!("connecting to {addr}"), e))?;
        // Small requests must leave at once, not wait for Nagle to batch them.
        stream
            .set_nodelay(true)
            .map_err(|e| Error::io(format!("connecting to {addr}"), e))?;
        let (read, writer) = stream.into_split();
        // Spread the clients over a few kilometres so their places differ a little.
        let step = (conn % 100) as f64 * 0.001;
        let mut worker = Worker {
            conn,
            addr,
            reader: BufReader::with_capacity(64 * 1024, read),
            writer,
            out: Vec::with_capacity(4096),
            line: Vec::with_capacity(4096),
            location: format!("{:+.6}{:+.6}", 34.068930 + step, -118.445127 - step),
            sent: 0,
            window: VecDeque::new(),
        };
        if seed {
            worker.seed(timeout).await?;
        }
        Ok(worker)
    }

    /// Closes this connection and opens another (for `--connect-each`).
    async fn reconnect(&mut self, timeout: Duration) -> Result<()> {
        let _ = self.writer.shutdown().await;
        let stream = tokio::time::timeout(timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
            .and_then(|r| r)
            .map_err(|e| self.error(e))?;
        stream.set_nodelay(true).map_err(|e| self.error(e))?;
        let (read, writer) = stream.into_split();
        self.reader = BufReader::with_capacity(64 * 1024, read);
        self.writer = writer;
        Ok(())
    }

    /// Reports this connection's WHATSAT client once, so the node has a location to ask about.
    async fn seed(&mut self, timeout: Duration) -> Result<()> {
        self.out.clear();
        self.write_iamat(0);
        let answer = async {
            self.writer.write_all(&self.out).await?;
            tokio::time::timeout(
                timeout,
                read_answer(&mut self.reader, &mut self.line, Kind::Iamat),
            )
            .await
            .map_err(|_| timed_out(timeout))?
        }
        .await
        .map_err(|e| self.error(e))?;
        if answer == Answer::Refused {
            return Err(self.error(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the seeding IAMAT was refused: {}", lossy_line(&self.line)),
            )));
        }
        Ok(())
    }

    /// Sends and reads until the plan's bound, keeping up to `pipeline` requests in flight.
    async fn drive(mut self, plan: &Plan, clock: Clock) -> Result<Tally> {
        let mut budget = plan.budgets.as_ref().map(|b| b[self.conn]);
        let mut tally = Tally::new();
        self.window.reserve(plan.pipeline);
        loop {
            if plan.connect_each && self.sent > 0 {
                self.reconnect(plan.timeout).await?;
            }
            // Top up the window, formatting the whole batch into one buffer for one write.
            let now = Instant::now();
            let before = self.window.len();
            self.out.clear();
            while self.window.len() < plan.pipeline {
                let timed = now >= clock.measure_from;
                let may_send = match (budget, clock.end) {
                    _ if !timed => true,
                    (Some(left), _) => left > 0,
                    (None, Some(end)) => now < end,
                    (None, None) => false,
                };
                if !may_send {
                    break;
                }
                if timed {
                    budget = budget.map(|left| left - 1);
                }
                let kind = self.write_next(plan);
                self.window.push_back(Pending {
                    sent: now,
                    kind,
                    timed,
                });
            }
            if self.window.len() > before {
                let sent = Instant::now();
                for pending in self.window.iter_mut().skip(before) {
                    pending.sent = sent;
                }
                self.writer
                    .write_all(&self.out)
                    .await
                    .map_err(|e| self.error(e))?;
            }

            let Some(pending) = self.window.pop_front() else {
                break;
            };
            let answer = tokio::time::timeout(
                plan.timeout,
                read_answer(&mut self.reader, &mut self.line, pending.kind),
            )
            .await
            .map_err(|_| timed_out(plan.timeout))
            .and_then(|r| r)
            .map_err(|e| self.error(e))?;
            let done = Instant::now();
            if answer == Answer::Refused {
                tally.refused(&self.line);
            }
            if pending.timed {
                tally.record(pending.kind, done - pending.sent, done);
            }
        }
        Ok(tally)
    }

    /// Formats the next request into `out` and says what it is.
    fn write_next(&mut self, plan: &Plan) -> Kind {
        let n = self.sent;
        self.sent += 1;
        let kind = match plan.mode {
            Mode::Iamat => Kind::Iamat,
            Mode::Whatsat => Kind::Whatsat,
            Mode::Mixed if n.is_multiple_of(2) => Kind::Iamat,
            Mode::Mixed => Kind::Whatsat,
            Mode::Geoadd => Kind::Geoadd,
        };
        match kind {
            Kind::Iamat => self.write_iamat(n % plan.clients),
            Kind::Geoadd => {
                let member = format!("bench-{}-{}", self.conn, n % plan.clients);
                let (lat, lng) = self
                    .location
                    .split_at(self.location[1..].find(['+', '-']).map_or(0, |i| i + 1));
                let args = ["GEOADD", "herd", lng, lat, member.as_str()];
                let _ = write!(self.out, "*{}\r\n", args.len());
                for a in args {
                    let _ = write!(self.out, "${}\r\n{a}\r\n", a.len());
                }
            }
            Kind::Whatsat => {
                // Writing into a Vec cannot fail.
                let _ = writeln!(
                    self.out,
                    "WHATSAT bench-{}-0 {} {}",
                    self.conn, plan.radius, plan.bound
                );
            }
        }
        kind
    }

    fn write_iamat(&mut self, client: u64) {
        let _ = writeln!(
            self.out,
            "IAMAT bench-{}-{client} {} {}",
            self.conn,
            self.location,
            Timestamp::now()
        );
    }

    fn error(&self, e: io::Error) -> Error {
        Error::io(format!("connection {} to {}", self.conn, self.addr), e)
    }
}

/// Reads one whole answer into `line` (the last line read stays there): an `AT` line, plus for
/// WHATSAT the places document through its closing blank line; or one `? ` line.
async fn read_answer(
    reader: &mut BufReader<OwnedReadHalf>,
    line: &mut Vec<u8>,
    kind: Kind,
) -> io::Result<Answer> {
    read_line(reader, line).await?;
    if kind == Kind::Geoadd {
        // An integer reply (members added) is success; anything else is Redis refusing.
        return Ok(if line.starts_with(b":") {
            Answer::Ok
        } else {
            Answer::Refused
        });
    }
    if line.starts_with(b"? ") {
        return Ok(Answer::Refused);
    }
    if !line.starts_with(b"AT ") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected answer: {}", lossy_line(line)),
        ));
    }
    if kind == Kind::Whatsat {
        // The places document has no blank line inside (runs of newlines are collapsed), so
        // the first blank line ends the answer; the line before it must close the JSON object.
        let mut closed = false;
        loop {
            read_line(reader, line).await?;
            if line == b"\n" || line == b"\r\n" {
                break;
            }
            closed = line.trim_ascii_end().ends_with(b"}");
        }
        if !closed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a WHATSAT answer did not end in `}` and a blank line",
            ));
        }
    }
    Ok(Answer::Ok)
}

async fn read_line(reader: &mut BufReader<OwnedReadHalf>, line: &mut Vec<u8>) -> io::Result<()> {
    line.clear();
    if reader.read_until(b'\n', line).await? == 0 || line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the node closed the connection before answering",
        ));
    }
    Ok(())
}

fn lossy_line(line: &[u8]) -> String {
    String::from_utf8_lossy(line.trim_ascii_end()).into_owned()
}

fn timed_out(after: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no complete answer within {after:?}"),
    )
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::io("herd bench connection task", io::Error::other(e))
}

fn parse_secs(text: &str) -> std::result::Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is not a duration"))
}

/// What one connection measured.
struct Tally {
    /// Latencies in microseconds.
    latency: Histogram<u64>,
    iamat: u64,
    whatsat: u64,
    errors: u64,
    first_error: Option<String>,
    last_answer: Option<Instant>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            // Auto-resizing, so an idle connection's histogram stays small.
            latency: Histogram::new(3).expect("3 significant figures is valid"),
            iamat: 0,
            whatsat: 0,
            errors: 0,
            first_error: None,
            last_answer: None,
        }
    }

    fn record(&mut self, kind: Kind, took: Duration, at: Instant) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        // `record` grows an auto-resizing histogram; `saturating_record` would clamp to its
        // current top instead.
        if self.latency.record(micros).is_err() {
            self.latency.saturating_record(micros);
        }
        match kind {
            Kind::Iamat | Kind::Geoadd => self.iamat += 1,
            Kind::Whatsat => self.whatsat += 1,
        }
        self.last_answer = Some(self.last_answer.map_or(at, |last| last.max(at)));
    }

    fn refused(&mut self, line: &[u8]) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(lossy_line(line));
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latency
            .add(&other.latency)
            .expect("auto-resizing histograms always merge");
        self.iamat += other.iamat;
        self.whatsat += other.whatsat;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.last_answer = match (self.last_answer, other.last_answer) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    fn report(self, plan: &Plan, clock: Clock) -> BenchReport {
        let requests = self.iamat + self.whatsat;
        let elapsed = self
            .last_answer
            .map_or(0.0, |last| (last - clock.measure_from).as_secs_f64());
        let h = &self.latency;
        let latency = if requests == 0 {
            Latency::default()
        } else {
            Latency {
                p50: h.value_at_quantile(0.50),
                p90: h.value_at_quantile(0.90),
                p99: h.value_at_quantile(0.99),
                p99_9: h.value_at_quantile(0.999),
                max: h.max(),
                mean: (h.mean() * 10.0).round() / 10.0,
            }
        };
        BenchReport {
            addrs: plan.names.clone(),
            mode: plan.mode,
            connections: plan.connections,
            pipeline: plan.pipeline,
            requests,
            iamat: self.iamat,
            whatsat: self.whatsat,
            errors: self.errors,
            first_error: self.first_error,
            elapsed_secs: elapsed,
            requests_per_sec: if elapsed > 0.0 {
                requests as f64 / elapsed
            } else {
                0.0
            },
            latency_us: latency,
        }
    }
}

/// The resident memory of process `pid` in KiB, from `/proc` (0 where that is not available).
/// The benchmarks and tests use it to report and bound a node's memory.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn args(line: &str) -> BenchArgs {
        Cli::try_parse_from(std::iter::once("bench").chain(line.split_whitespace()))
            .unwrap()
            .bench
    }

    /// A stand-in node on a real loopback socket: answers `IAMAT` with an `AT` line, `WHATSAT`
    /// with an `AT` line and a small places document, and a WHATSAT with bound 7 with `? `.
    /// Reads in arbitrary chunks, so pipelined requests arrive split and merged.
    async fn fake_node() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                // Answers go out in two writes: without this, Nagle holds the second back.
                socket.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    let mut chunk = [0u8; 37];
                    loop {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        pending.extend_from_slice(&chunk[..n]);
                        let mut answers = Vec::new();
                        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                            let line: Vec<u8> = pending.drain(..=end).collect();
                            let text = std::str::from_utf8(&line).unwrap().trim_end();
                            let ops: Vec<&str> = text.split(' ').collect();
                            if ops[0] == "WHATSAT" && ops[3] == "7" {
                                answers.extend_from_slice(format!("? {text}\n").as_bytes());
                            } else if ops[0] == "IAMAT" {
                                let at = format!(
                                    "AT Fake +0.000000001 {} {} {}\n",
                                    ops[1], ops[2], ops[3]
                                );
                                answers.extend_from_slice(at.as_bytes());
                            } else {
                                answers.extend_from_slice(
                                    b"AT Fake +0.1 x +1+1 1.0\n{\n  \"results\": [],\n  \"status\": \"ZERO_RESULTS\"\n}\n\n",
                                );
                            }
                        }
                        // Answer in two writes, splitting a line, to exercise the reader.
                        let half = answers.len() / 2;
                        if socket.write_all(&answers[..half]).await.is_err()
                            || socket.write_all(&answers[half..]).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn counts_every_request_and_answer() {
        let addr = fake_node().await;
        for mode in ["iamat", "whatsat", "mixed"] {
            for depth in [1, 8] {
                let a = args(&format!(
                    "--addr {addr} --connections 3 --requests 100 --mode {mode} --pipeline {depth}"
                ));
                let report = measure(&a).await.unwrap();
                assert_eq!(report.requests, 100, "{mode} {depth}");
                assert_eq!(report.errors, 0);
                assert!(report.first_error.is_none());
                assert!(report.latency_us.max >= report.latency_us.p50);
                match mode {
                    "iamat" => assert_eq!(report.iamat, 100),
                    "whatsat" => assert_eq!(report.whatsat, 100),
                    // Each of the 3 connections alternates, starting with IAMAT: 34+33+33.
                    _ => assert_eq!((report.iamat, report.whatsat), (51, 49)),
                }
            }
        }
    }

    #[tokio::test]
    async fn error_answers_are_counted_and_fail_the_run() {
        let addr = fake_node().await;
        // The fake refuses WHATSAT with bound 7: in mixed mode every WHATSAT is refused
        // (each connection alternates, starting with IAMAT: 3 + 2 per connection).
        let a = args(&format!(
            "--addr {addr} --connections 2 --requests 10 --mode mixed --bound 7"
        ));
        let report = measure(&a).await.unwrap();
        assert_eq!(report.requests, 10);
        assert_eq!((report.iamat, report.whatsat, report.errors), (6, 4, 4));
        let first = report.first_error.as_deref().unwrap();
        assert!(first.starts_with("? WHATSAT bench-"), "{first}");
        assert!(report.to_string().contains("ERROR: 4 answers were errors"));
        let e = run(a).await.unwrap_err().to_string();
        assert!(e.contains("4 requests were answered with an error"), "{e}");
    }

    #[test]
    fn latencies_are_kept_whatever_their_size() {
        let mut one = Tally::new();
        let mut other = Tally::new();
        let now = Instant::now();
        one.record(Kind::Iamat, Duration::from_micros(20), now);
        other.record(Kind::Whatsat, Duration::from_millis(41), now);
        other.record(Kind::Whatsat, Duration::from_nanos(10), now);
        one.merge(other);
        assert_eq!((one.iamat, one.whatsat), (1, 2));
        assert_eq!(one.latency.min(), 1);
        // Three significant figures: 41 ms is kept to within 0.1%.
        assert!(
            one.latency.max().abs_diff(41_000) <= 41,
            "{}",
            one.latency.max()
        );
    }

    #[tokio::test]
    async fn a_malformed_answer_fails_the_run() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(b"HELLO\n").await;
        });
        let a = args(&format!("--addr {addr} --connections 1 --requests 5"));
        let e = measure(&a).await.unwrap_err().to_string();
        assert!(e.contains("unexpected answer: HELLO"), "{e}");
    }

    #[tokio::test]
    async fn a_duration_bounds_the_run() {
        let addr = fake_node().await;
        let a = args(&format!(
            "--addr {addr} --connections 2 --duration 0.2 --pipeline 4"
        ));
        let report = measure(&a).await.unwrap();
        assert!(report.requests > 0);
        assert!(report.elapsed_secs < 5.0, "{}", report.elapsed_secs);
    }

    #[tokio::test]
    async fn bad_arguments_are_usage_errors() {
        for (flags, says) in [
            ("--addr 127.0.0.1:1 --radius 0", "--radius"),
            ("--addr 127.0.0.1:1 --bound 21", "--bound"),
            ("--addr 127.0.0.1:1 --pipeline 0", "--pipeline"),
            ("--addr 127.0.0.1:1 --connections 0", "--connections"),
            ("--addr 192.0.2.1:10000", "loopback"),
        ] {
            let e = measure(&args(flags)).await.unwrap_err();
            assert_eq!(e.exit_code(), 2, "{flags}");
            assert!(e.to_string().contains(says), "{flags}: {e}");
        }
        assert!(Cli::try_parse_from(["bench", "--requests", "1", "--duration", "1"]).is_err());
    }
}
