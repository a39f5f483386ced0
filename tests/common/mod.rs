//! The integration-test harness: real `herd` processes on loopback ports, each with its own
//! state and log directory under one temporary directory, killed when the harness drops.
//!
//! Tests wait for conditions with deadlines ([`eventually`]), never for fixed sleeps.

#![allow(dead_code)]

pub mod proxy;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const HERD: &str = env!("CARGO_BIN_EXE_herd");

/// The classic five-server topology.
pub const FIVE: [&str; 5] = ["Bailey", "Bona", "Campbell", "Clark", "Jaquez"];
pub const FIVE_LINKS: [(&str, &str); 6] = [
    ("Clark", "Jaquez"),
    ("Clark", "Bona"),
    ("Campbell", "Bailey"),
    ("Campbell", "Bona"),
    ("Campbell", "Jaquez"),
    ("Bona", "Bailey"),
];

/// A free loopback port (bound, then released), never one this test process was given
/// before: the kernel may hand a released port out again at once, and two servers of one
/// herd must not share one.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Polls `cond` until it holds or `within` passes; panics with `what` on timeout.
pub fn eventually(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running node process.
pub struct Node {
    pub child: Child,
    /// Everything the node printed on stderr so far.
    pub stderr: Arc<Mutex<String>>,
}

/// A herd of node processes described by one config file.
pub struct Herd {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// Listed address of every server.
    pub addrs: BTreeMap<String, String>,
    /// Where each node actually listens, if not its listed address (`--listen`).
    pub listen: BTreeMap<String, String>,
    pub env: Vec<(String, String)>,
    pub nodes: BTreeMap<String, Node>,
}

impl Herd {
    /// A herd of `names` linked by `links`, with `extra` TOML appended to the config.
    pub fn new(names: &[&str], links: &[(&str, &str)], extra: &str) -> Herd {
        let dir = tempfile::tempdir().unwrap();
        let addrs: BTreeMap<String, String> = names
            .iter()
            .map(|n| (n.to_string(), format!("127.0.0.1:{}", free_port())))
            .collect();
        let herd = Herd {
            config: dir.path().join("herd.toml"),
            dir,
            addrs,
            listen: BTreeMap::new(),
            env: Vec::new(),
            nodes: BTreeMap::new(),
        };
        herd.write_config(links, extra);
        herd
    }

    /// The default five-server herd on fresh ports.
    pub fn five(extra: &str) -> Herd {
        Herd::new(&FIVE, &FIVE_LINKS, extra)
    }

    pub fn write_config(&self, links: &[(&str, &str)], extra: &str) {
        let mut text = String::from("links = [");
        for (a, b) in links {
            text.push_str(&format!("[{a:?}, {b:?}], "));
        }
        text.push_str("]\n");
        text.push_str(extra);
        text.push_str("\n[servers]\n");
        for (name, addr) in &self.addrs {
            text.push_str(&format!("{name} = {addr:?}\n"));
        }
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn state_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join("state").join(name)
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_dir().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Where clients reach `name` (its `--listen` address if it has one).
    pub fn addr(&self, name: &str) -> String {
        self.listen.get(name).unwrap_or(&self.addrs[name]).clone()
    }

    /// The command that starts `name`.
    pub fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(HERD);
        cmd.arg("serve")
            .arg(name)
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(self.state_dir(name))
            .arg("--log-dir")
            .arg(self.log_dir())
            .current_dir(self.dir.path())
            .env_remove("HERD_SECRET")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(listen) = self.listen.get(name) {
            cmd.arg("--listen").arg(listen);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts `name` and waits for its readiness line.
    pub fn start(&mut self, name: &str) {
        let node = spawn(self.command(name));
        wait_ready(&node, name);
        self.nodes.insert(name.to_owned(), node);
    }

    /// Starts every server, then waits until each is ready.
    pub fn start_all(&mut self) {
        let names: Vec<String> = self.addrs.keys().cloned().collect();
        for name in &names {
            let node = spawn(self.command(name));
            self.nodes.insert(name.clone(), node);
        }
        for name in &names {
            wait_ready(&self.nodes[name], name);
        }
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self, name: &str) {
        if let Some(mut node) = self.nodes.remove(name) {
            node.child.kill().unwrap();
            node.child.wait().unwrap();
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub fn stop(&mut self, name: &str) -> ExitStatus {
        let mut node = self.nodes.remove(name).expect("running");
        signal(&node.child, libc::SIGTERM);
        wait_with_deadline(&mut node.child, Duration::from_secs(20))
            .expect("node did not stop on SIGTERM")
    }

    pub fn stderr(&self, name: &str) -> String {
        self.nodes[name].stderr.lock().unwrap().clone()
    }

    /// Sends `bytes`, half-closes, and reads the whole answer.
    pub fn ask(&self, name: &str, bytes: &[u8]) -> Vec<u8> {
        ask(&self.addr(name), bytes)
    }

    /// The answer to a WHATSAT for `client` at `name`: its AT line, or `None` for `? `.
    pub fn at_line(&self, name: &str, client: &str) -> Option<String> {
        let answer = self.ask(name, format!("WHATSAT {client} 10 1\n").as_bytes());
        let text = String::from_utf8_lossy(&answer).into_owned();
        if text.starts_with("AT ") {
            Some(text.lines().next().unwrap().to_owned())
        } else {
            None
        }
    }
}

impl Drop for Herd {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
}

pub fn spawn(mut cmd: Command) -> Node {
    let mut child = cmd.spawn().expect("start herd");
    let stderr = Arc::new(Mutex::new(String::new()));
    let pipe = child.stderr.take().unwrap();
    let sink = Arc::clone(&stderr);
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    Node { child, stderr }
}

fn wait_ready(node: &Node, name: &str) {
    eventually(
        Duration::from_secs(20),
        &format!("{name} to announce readiness"),
        || node.stderr.lock().unwrap().contains(" ready "),
    );
}

pub fn signal(child: &Child, sig: i32) {
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

pub fn wait_with_deadline(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Connects to `addr`, sends `bytes`, half-closes and reads until the server closes.
pub fn ask(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(bytes).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("read from {addr}: {e}"));
    out
}

/// A persistent client connection that reads one answer at a time.
pub struct Client {
    pub stream: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: &str) -> Client {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        Client {
            stream: BufReader::new(s),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).unwrap();
    }

    /// Reads one line, with its newline.
    pub fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.stream.read_until(b'\n', &mut line).unwrap();
        line
    }

    /// Sends an IAMAT and returns its answer line (without newline).
    pub fn iamat(&mut self, client: &str, location: &str, timestamp: &str) -> String {
        self.send(format!("IAMAT {client} {location} {timestamp}\n").as_bytes());
        String::from_utf8(self.line())
            .unwrap()
            .trim_end_matches('\n')
            .to_owned()
    }
}

/// The current time as the protocol writes it.
pub fn now_ts() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Runs `herd inspect --format json` on a state dir and returns one JSON value per record.
pub fn inspect(state_dir: &Path) -> Vec<serde_json::Value> {
    inspect_with(state_dir, &[])
}

/// [`inspect`] with more arguments (say `--retain-secs 60`).
pub fn inspect_with(state_dir: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(HERD)
        .args(["inspect", "--format", "json"])
        .args(args)
        .arg("--state-dir")
        .arg(state_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[allow(unused_imports)]
pub use herd::bench::rss_kib;

// ---------------------------------------------------------------------------------------------
// Helpers for byte-exact protocol checks, peer links and restarts.

impl Herd {
    /// Runs `herd certs --out OUT NAMES...` (with `--force` if asked) for this herd's config.
    pub fn certs(&self, out: &Path, names: &[&str], force: bool) -> std::process::Output {
        let mut cmd = Command::new(HERD);
        cmd.arg("certs")
            .arg("--out")
            .arg(out)
            .arg("--config")
            .arg(&self.config)
            .args(names)
            .env_remove("HERD_SECRET")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    }

    /// Starts `name` with extra environment variables (say, its own `HERD_SECRET`).
    pub fn start_with_env(&mut self, name: &str, env: &[(&str, &str)]) {
        let mut cmd = self.command(name);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let node = spawn(cmd);
        wait_ready(&node, name);
        self.nodes.insert(name.to_owned(), node);
    }

    /// How many bytes `name`'s log holds now; pass it to [`Herd::log_since`] to see only
    /// what was logged afterwards (logs are appended to across restarts).
    pub fn log_len(&self, name: &str) -> usize {
        self.log(name).len()
    }

    /// What `name` logged after the first `from` bytes.
    pub fn log_since(&self, name: &str, from: usize) -> String {
        let log = self.log(name);
        log.get(from..).unwrap_or_default().to_owned()
    }

    /// Waits until `name`'s log (after byte `from`) shows a live link to each of `peers`.
    pub fn wait_links_up(&self, name: &str, peers: &[&str], from: usize, within: Duration) {
        for peer in peers {
            let needle = format!("link up peer={peer} ");
            eventually(within, &format!("{name}: link to {peer} up"), || {
                self.log_since(name, from).contains(&needle)
            });
        }
    }

    /// The whole answer to `WHATSAT <client> 10 <bound>` at `name`, as raw bytes.
    pub fn whatsat(&self, name: &str, client: &[u8], bound: u32) -> Vec<u8> {
        let mut req = b"WHATSAT ".to_vec();
        req.extend_from_slice(client);
        req.extend_from_slice(format!(" 10 {bound}\n").as_bytes());
        self.ask(name, &req)
    }

    /// The AT line (without newline) a WHATSAT for `client` returns at `name`, after checking
    /// the answer's framing; `None` if the answer is `? `.
    pub fn at_line_of(&self, name: &str, client: &[u8]) -> Option<Vec<u8>> {
        let answer = self.whatsat(name, client, 1);
        if answer.starts_with(b"? ") {
            return None;
        }
        Some(check_whatsat_answer(&answer, 1).to_vec())
    }
}

impl Client {
    /// Sends `line` and a newline, and reads one answer line (with its newline).
    pub fn request(&mut self, line: &[u8]) -> Vec<u8> {
        let mut bytes = line.to_vec();
        bytes.push(b'\n');
        self.send(&bytes);
        self.line()
    }

    /// Reads one whole WHATSAT answer: the AT line, then the document up to its blank line.
    /// A `? ` answer is returned as its one line.
    pub fn whatsat_answer(&mut self) -> Vec<u8> {
        let mut answer = self.line();
        if answer.starts_with(b"? ") {
            return answer;
        }
        loop {
            let line = self.line();
            assert!(
                !line.is_empty(),
                "connection closed inside a WHATSAT answer: {:?}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&line);
            if line == b"\n" {
                return answer;
            }
        }
    }
}

/// The current time in nanoseconds since the epoch.
pub fn now_nanos() -> i128 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    d.as_nanos() as i128
}

/// Writes nanoseconds since the epoch as a protocol timestamp with nine fractional digits.
pub fn ts_of_nanos(nanos: i128) -> String {
    assert!(nanos >= 0);
    format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000)
}

/// A protocol timestamp (`digits[.1-9 digits]`) as nanoseconds, computed exactly.
pub fn ts_nanos(ts: &str) -> i128 {
    let (whole, frac) = ts.split_once('.').unwrap_or((ts, ""));
    assert!(frac.len() <= 9, "{ts}");
    let frac = format!("{frac:0<9}");
    whole.parse::<i128>().unwrap() * 1_000_000_000 + frac.parse::<i128>().unwrap()
}

/// Parses a time difference in the protocol's exact form (an explicit sign, digits, a dot,
/// exactly nine digits) into nanoseconds; panics on any other form.
pub fn time_diff_nanos(diff: &[u8]) -> i128 {
    let text = std::str::from_utf8(diff).expect("ASCII time difference");
    let (sign, rest) = text.split_at(1);
    assert!(
        sign == "+" || sign == "-",
        "time difference without a sign: {text}"
    );
    let (whole, frac) = rest
        .split_once('.')
        .unwrap_or_else(|| panic!("time difference without a dot: {text}"));
    assert!(
        !whole.is_empty() && whole.bytes().all(|b| b.is_ascii_digit()),
        "time difference {text}"
    );
    assert!(
        frac.len() == 9 && frac.bytes().all(|b| b.is_ascii_digit()),
        "time difference needs exactly 9 fractional digits: {text}"
    );
    let magnitude = whole.parse::<i128>().unwrap() * 1_000_000_000 + frac.parse::<i128>().unwrap();
    if sign == "-" {
        assert!(
            magnitude != 0,
            "a zero difference is written +0.000000000: {text}"
        );
        -magnitude
    } else {
        magnitude
    }
}

/// An AT line split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtLine {
    pub server: Vec<u8>,
    pub diff: Vec<u8>,
    /// The client's three operands, exactly as they follow the time difference.
    pub operands: Vec<u8>,
}

/// Splits an AT line (with or without its newline): `AT <server> <diff> <operands>`, fields
/// separated by exactly one space.
pub fn parse_at(line: &[u8]) -> AtLine {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let show = || String::from_utf8_lossy(line).into_owned();
    let rest = line
        .strip_prefix(b"AT ")
        .unwrap_or_else(|| panic!("not an AT line: {:?}", show()));
    let mut parts = rest.splitn(3, |&b| b == b' ');
    let server = parts.next().unwrap().to_vec();
    let diff = parts
        .next()
        .unwrap_or_else(|| panic!("AT line without a time difference: {:?}", show()))
        .to_vec();
    let operands = parts
        .next()
        .unwrap_or_else(|| panic!("AT line without operands: {:?}", show()))
        .to_vec();
    AtLine {
        server,
        diff,
        operands,
    }
}

/// Checks that `answer` is a whole WHATSAT answer (its AT line, a newline, a places document
/// with at most `bound` results and no blank line, two newlines) and returns the AT line.
pub fn check_whatsat_answer(answer: &[u8], bound: usize) -> &[u8] {
    let show = || String::from_utf8_lossy(answer).into_owned();
    assert!(
        answer.ends_with(b"}\n\n"),
        "a WHATSAT answer ends in }}\\n\\n: {:?}",
        show()
    );
    let nl = answer.iter().position(|&b| b == b'\n').expect("an AT line");
    let at = &answer[..nl];
    time_diff_nanos(&parse_at(at).diff);
    let doc = &answer[nl + 1..answer.len() - 2];
    assert!(
        doc.starts_with(b"{"),
        "the document follows the AT line at once: {:?}",
        show()
    );
    assert!(
        !doc.windows(2).any(|w| w == b"\n\n"),
        "blank line inside the places document: {:?}",
        show()
    );
    let json: serde_json::Value = serde_json::from_slice(doc)
        .unwrap_or_else(|e| panic!("places document is not JSON ({e}): {:?}", show()));
    let obj = json.as_object().expect("the document is a JSON object");
    assert!(
        obj["html_attributions"].is_array(),
        "html_attributions: {:?}",
        show()
    );
    let results = obj["results"].as_array().expect("results is an array");
    assert!(results.len() <= bound, "more than {bound} results");
    assert!(obj["status"].is_string(), "status: {:?}", show());
    at
}

impl Herd {
    /// Links to node `to` as its linked peer `as_peer`, the way a server without a secret does
    /// from loopback, and returns the connection after `HERD WELCOME`.
    pub fn link_as(&self, to: &str, as_peer: &str) -> BufReader<TcpStream> {
        let mut s = TcpStream::connect(self.addr(to)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("HERD HELLO {as_peer} {to} 00ff\n").as_bytes())
            .unwrap();
        let mut r = BufReader::new(s);
        let mut welcome = String::new();
        r.read_line(&mut welcome).unwrap();
        assert_eq!(
            welcome, "HERD WELCOME\n",
            "{as_peer} was not let in by {to}"
        );
        r
    }
}

// ---------------------------------------------------------------------------------------------
// The admin HTTP endpoint.

/// An `[admin]` table giving each of `names` a fresh loopback port, and those addresses.
pub fn admin_table(names: &[&str]) -> (String, BTreeMap<String, String>) {
    let addrs: BTreeMap<String, String> = names
        .iter()
        .map(|n| (n.to_string(), format!("127.0.0.1:{}", free_port())))
        .collect();
    let mut toml = String::from("[admin]\n");
    for (name, addr) in &addrs {
        toml.push_str(&format!("{name} = {addr:?}\n"));
    }
    (toml, addrs)
}

/// An HTTP answer: status code, header block (lower-cased names), body.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            (n.trim().eq_ignore_ascii_case(&name)).then(|| v.trim().to_owned())
        })
    }
}

/// Sends `request` (raw bytes) to `addr` and reads the answer until the server closes; `None`
/// when the connection is refused or closed without an answer.
pub fn http_raw(addr: &str, request: &[u8]) -> Option<HttpAnswer> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(request).ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let headers = head
        .split_once("\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_owned();
    Some(HttpAnswer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// `METHOD path` over HTTP/1.1.
pub fn http(addr: &str, method: &str, path: &str) -> Option<HttpAnswer> {
    http_raw(
        addr,
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// `GET path`, which must be answered.
pub fn get(addr: &str, path: &str) -> HttpAnswer {
    http(addr, "GET", path).unwrap_or_else(|| panic!("GET {path} at {addr}: no answer"))
}

/// The value of one sample (`name{labels}` exactly as exported) in Prometheus text.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// One sample of a node's `/metrics`, 0 when absent.
pub fn metric(admin: &str, series: &str) -> f64 {
    sample(&get(admin, "/metrics").text(), series).unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// A terminal for interactive tests.

/// Whether tmux can be run here.
pub fn tmux_installed() -> bool {
    Command::new("tmux").arg("-V").output().is_ok()
}

/// tmux on a private socket, killed on drop.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// A tmux server of its own for this test process.
    pub fn new(what: &str) -> Tmux {
        Tmux {
            socket: format!("herd-{what}-test-{}", std::process::id()),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "herd"]).stdout)
            .into_owned()
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "herd"];
        args.extend_from_slice(keys);
        assert!(self.cmd(&args).status.success());
    }

    pub fn alive(&self) -> bool {
        self.cmd(&["has-session", "-t", "herd"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}
