//! `herd client`: a line client for a running node, what redis-cli is to Redis.
//!
//! It sends request lines (from its arguments, from stdin, or typed at a prompt with line
//! editing and history when stdin is a terminal) over one TCP connection and prints each answer
//! whole, in order. It knows just enough of the protocol to tell where an answer ends: one line,
//! except a WHATSAT answered with an AT line, which runs to its blank line. A line that is all
//! white space gets no answer from a node, so it is not sent.
//!
//! What it promises: exit 0 when every line sent was answered (a `? ` answer included); exit 1
//! when the node cannot be reached, closes the connection before an answer is complete, or
//! leaves an answer unfinished for [`ANSWER_TIMEOUT`]. Lines are bytes: nothing is re-encoded.
//!
//! Not a goal: pipelining. It waits for each answer before sending the next line, which is what
//! a person at a prompt does and keeps every error next to the line that caused it.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, IsTerminal, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::protocol::request::is_space;

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one answer may take to complete (a WHATSAT upstream times out well before).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Where the interactive history is kept, under `$HOME`.
pub const HISTORY_FILE: &str = ".herd_history";

/// `herd client`: talk to a running node.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The node: HOST:PORT, or the NAME of a server of the config.
    #[arg(value_name = "ADDR|NAME")]
    pub target: String,

    /// The herd's config, for NAME (default: data/herd.toml if it exists, else the built-in herd).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print WHATSAT's places document indented.
    #[arg(long)]
    pub pretty: bool,

    /// Request lines to send, one per argument (default: read lines from stdin).
    #[arg(value_name = "LINE")]
    pub lines: Vec<OsString>,
}

/// Runs `herd client`.
pub fn run(args: ClientArgs) -> Result<()> {
    let addr = resolve(&args.target, args.config.as_deref())?;
    let mut conn = Conn::open(&addr)?;
    let stdout = io::stdout();
    let pretty = args.pretty;
    if !args.lines.is_empty() {
        let mut out = stdout.lock();
        for line in &args.lines {
            conn.exchange(&os_bytes(line), pretty, &mut out)?;
        }
        return Ok(());
    }
    let stdin = io::stdin();
    if stdin.is_terminal() {
        return interactive(&mut conn, &addr, pretty);
    }
    let mut input = stdin.lock();
    let mut out = stdout.lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io("read stdin", e))?;
        if n == 0 {
            return Ok(());
        }
        conn.exchange(&line, pretty, &mut out)?;
    }
}

/// `target` as an address: a server NAME of the config when it names one (or has no port),
/// else `HOST:PORT` as given.
pub fn resolve(target: &str, config: Option<&std::path::Path>) -> Result<String> {
    resolve_in(target, config, "servers", |c| &c.servers)
}

/// [`resolve`] in another table of the config that maps server names to addresses (`admin`).
pub fn resolve_in(
    target: &str,
    config: Option<&std::path::Path>,
    key: &str,
    table: fn(&Config) -> &std::collections::BTreeMap<String, String>,
) -> Result<String> {
    let looks_like_addr = target.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
    });
    if looks_like_addr && config.is_none() {
        return Ok(target.to_owned());
    }
    let config = Config::load(config)?;
    match table(&config).get(target) {
        Some(addr) => Ok(addr.clone()),
        None if looks_like_addr => Ok(target.to_owned()),
        None => Err(Error::config(
            &config.source,
            format!(
                "{key}: no server named {target:?} (give HOST:PORT or one of: {})",
                table(&config)
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

fn os_bytes(s: &OsString) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        s.as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        s.to_string_lossy().into_owned().into_bytes()
    }
}

/// An error that ends the client with exit code 1, naming the node.
fn unreachable(addr: &str, what: &str, e: io::Error) -> Error {
    Error::io(format!("{addr}: {what}"), e)
}

/// One connection to a node.
struct Conn {
    addr: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: &str) -> Result<Conn> {
        let candidates: Vec<_> = addr
            .to_socket_addrs()
            .map_err(|e| Error::Address {
                addr: addr.to_owned(),
                message: format!("cannot resolve: {e}"),
            })?
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "resolves to no address");
        for candidate in candidates {
            match TcpStream::connect_timeout(&candidate, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    stream
                        .set_read_timeout(Some(ANSWER_TIMEOUT))
                        .map_err(|e| unreachable(addr, "set a timeout", e))?;
                    let writer = stream
                        .try_clone()
                        .map_err(|e| unreachable(addr, "use the connection", e))?;
                    return Ok(Conn {
                        addr: addr.to_owned(),
                        reader: BufReader::new(stream),
                        writer,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(unreachable(addr, "cannot connect", last))
    }

    /// Sends `line` (its terminator, if any, is replaced by `\n`) and copies its answer to `out`.
    /// An all-white-space line is not sent: a node answers nothing to it.
    fn exchange(&mut self, line: &[u8], pretty: bool, out: &mut dyn Write) -> Result<()> {
        let line = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        if line.iter().all(|&b| is_space(b)) {
            return Ok(());
        }
        let mut request = Vec::with_capacity(line.len() + 1);
        request.extend_from_slice(line);
        request.push(b'\n');
        self.writer
            .write_all(&request)
            .map_err(|e| unreachable(&self.addr, "send", e))?;
        let whatsat = line
            .split(|&b| is_space(b))
            .find(|f| !f.is_empty())
            .is_some_and(|cmd| cmd == b"WHATSAT");
        let answer = self.read_answer(whatsat)?;
        let written = if pretty && whatsat && answer.starts_with(b"AT ") {
            out.write_all(&prettify(&answer))
        } else {
            out.write_all(&answer)
        };
        written
            .and_then(|_| out.flush())
            .map_err(|e| Error::io("write stdout", e))
    }

    /// Reads one whole answer: one line, or for a WHATSAT's AT line, up to the blank line.
    fn read_answer(&mut self, whatsat: bool) -> Result<Vec<u8>> {
        let mut answer = Vec::new();
        self.read_line(&mut answer)?;
        if whatsat && answer.starts_with(b"AT ") {
            loop {
                let start = answer.len();
                self.read_line(&mut answer)?;
                if &answer[start..] == b"\n" {
                    break;
                }
            }
        }
        Ok(answer)
    }

    fn read_line(&mut self, into: &mut Vec<u8>) -> Result<()> {
        match self.reader.read_until(b'\n', into) {
            Ok(_) if into.last() == Some(&b'\n') => Ok(()),
            Ok(_) => Err(unreachable(
                &self.addr,
                "the node closed the connection before answering",
                io::Error::from(io::ErrorKind::UnexpectedEof),
            )),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(unreachable(
                    &self.addr,
                    &format!("no complete answer within {} s", ANSWER_TIMEOUT.as_secs()),
                    e,
                ))
            }
            Err(e) => Err(unreachable(&self.addr, "read", e)),
        }
    }

    /// Whether the node has closed the connection (checked before prompting again).
    fn closed(&mut self) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        let stream = self.reader.get_mut();
        if stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        let closed = matches!(stream.peek(&mut byte), Ok(0));
        let _ = stream.set_nonblocking(false);
        closed
    }
}

/// A WHATSAT answer with its places document indented: the AT line, the document, a blank line.
/// A document that is not JSON is left as it came.
pub fn prettify(answer: &[u8]) -> Vec<u8> {
    let Some(nl) = answer.iter().position(|&b| b == b'\n') else {
        return answer.to_vec();
    };
    let (at, doc) = answer.split_at(nl + 1);
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(doc) else {
        return answer.to_vec();
    };
    let mut out = at.to_vec();
    out.extend_from_slice(
        serde_json::to_string_pretty(&value)
            .expect("a parsed value serializes")
            .as_bytes(),
    );
    out.extend_from_slice(b"\n\n");
    out
}

/// A prompt with line editing and history (`~/.herd_history`).
fn interactive(conn: &mut Conn, addr: &str, pretty: bool) -> Result<()> {
    use rustyline::error::ReadlineError;
    let mut editor = rustyline::DefaultEditor::new()
        .map_err(|e| Error::io("start line editing", io::Error::other(e)))?;
    let history = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(HISTORY_FILE));
    if let Some(path) = &history {
        // A first run has no history yet.
        let _ = editor.load_history(path);
    }
    let prompt = format!("{addr}> ");
    let result = loop {
        if conn.closed() {
            break Err(unreachable(
                addr,
                "the node closed the connection",
                io::Error::from(io::ErrorKind::UnexpectedEof),
            ));
        }
        match editor.readline(&prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                let mut out = io::stdout().lock();
                if let Err(e) = conn.exchange(line.as_bytes(), pretty, &mut out) {
                    break Err(e);
                }
            }
            Err(ReadlineError::Eof | ReadlineError::Interrupted) => break Ok(()),
            Err(e) => break Err(Error::io("read a line", io::Error::other(e))),
        }
    };
    if let Some(path) = &history {
        if let Err(e) = editor.save_history(path) {
            eprintln!(
                "herd client: cannot save history to {}: {e}",
                path.display()
            );
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_pass_through_and_names_come_from_the_config() {
        assert_eq!(resolve("127.0.0.1:1234", None).unwrap(), "127.0.0.1:1234");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.toml");
        std::fs::write(&path, "[servers]\nA = \"127.0.0.1:7\"\n").unwrap();
        assert_eq!(resolve("A", Some(&path)).unwrap(), "127.0.0.1:7");
        let e = resolve("B", Some(&path)).unwrap_err().to_string();
        assert!(
            e.contains("no server named \"B\"") && e.contains("h.toml"),
            "{e}"
        );
    }

    #[test]
    fn pretty_indents_the_document_and_keeps_the_at_line() {
        let answer = b"AT A +0.1 c +1+2 3\n{\"results\":[],\"status\":\"ZERO_RESULTS\"}\n\n";
        let pretty = String::from_utf8(prettify(answer)).unwrap();
        assert!(pretty.starts_with("AT A +0.1 c +1+2 3\n{\n  \"results\": []"));
        assert!(pretty.ends_with("}\n\n"));
        assert_eq!(prettify(b"? WHATSAT x\n"), b"? WHATSAT x\n");
    }
}
