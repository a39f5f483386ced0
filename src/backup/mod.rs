//! Backups, exports and imports: a node's records as JSON lines, and the way back in.
//!
//! # The records file
//!
//! One format serves `herd backup` (online, from a running node's admin endpoint), `herd
//! export` (offline, from a stopped node's store) and `herd import` / `herd restore`. It is
//! UTF-8 text, one JSON object per line:
//!
//! ```text
//! {"format":"herd-records","version":1,"kind":"backup","server":"Clark","taken_at":"1700000000.123456789","herd_version":"0.1.0"}
//! {"client":"kiwi.cs.ucla.edu","client_hex":"6b697769...","server":"Clark",...,"at":"AT Clark ...","learned_from":null}
//! ...
//! {"end":"herd-records","records":2,"sha256":"9f86d0..."}
//! ```
//!
//! - The **header** (first line) names the format and its version, what wrote it (`backup` or
//!   `export`), the node, when it was taken and by which herd.
//! - Each **record** is exactly the object `herd inspect --format json` prints (and
//!   `/clients/ID` answers); its `at` field holds the full AT line, which is all a record is
//!   rebuilt from (with `client_hex` for a client ID that `at` shows escaped, and
//!   `learned_from`). Other fields are for people and are not read back.
//! - The **trailer** (last line) counts the records and gives the SHA-256 of every byte before
//!   it (header included), so a file cut short or altered is refused, never half-trusted.
//!
//! A file without a header (the output of `herd inspect --format json`, or lines written by
//! hand) is read as bare records: [`Reader`] accepts it, but nothing then proves it complete,
//! and `herd restore` insists on a header and trailer.
//!
//! Reading is sans-IO at heart: [`Encoder`] turns records into bytes and [`Reader`] turns
//! lines into reports; the commands around them ([`fetch`], [`load`], [`export`]) do the I/O.

pub mod export;
pub mod fetch;
pub mod load;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::logging::Escaped;
use crate::protocol::number::Timestamp;
use crate::protocol::request::{self, Request};
use crate::report::Report;
use crate::store::Stored;

/// The `format` a header names.
pub const FORMAT: &str = "herd-records";
/// The version of the records file this build writes and reads.
pub const VERSION: u32 = 1;

/// The first line of a records file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    pub version: u32,
    /// `backup` (taken from a running node) or `export` (read from a stopped store).
    pub kind: String,
    /// The node whose records these are (for an export: the state directory's name).
    pub server: String,
    /// When the backup began, or the export read the store (seconds.nanoseconds).
    pub taken_at: String,
    /// The herd that wrote it.
    pub herd_version: String,
}

impl Header {
    /// A header for records of `server` taken now.
    pub fn new(kind: &str, server: &str) -> Header {
        Header {
            format: FORMAT.to_owned(),
            version: VERSION,
            kind: kind.to_owned(),
            server: server.to_owned(),
            taken_at: Timestamp::now().to_string(),
            herd_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// The last line of a records file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Trailer {
    /// Always [`FORMAT`].
    end: String,
    records: u64,
    /// SHA-256, hex, of every byte before the trailer.
    sha256: String,
}

/// Writes a records file: its header, then each record, then the trailer. It only produces
/// bytes; where they go (a file, an HTTP body) is the caller's business.
pub struct Encoder {
    hasher: Sha256,
    records: u64,
}

impl Encoder {
    /// Starts a file; `out` receives the header line.
    pub fn new(header: &Header, out: &mut Vec<u8>) -> Encoder {
        let mut encoder = Encoder {
            hasher: Sha256::new(),
            records: 0,
        };
        let start = out.len();
        serde_json::to_writer(&mut *out, header).expect("a header always serializes");
        out.push(b'\n');
        encoder.hasher.update(&out[start..]);
        encoder
    }

    /// Appends one record's line to `out`.
    pub fn record(&mut self, stored: &Stored, out: &mut Vec<u8>) {
        let start = out.len();
        crate::inspect::write_json(stored, &mut *out).expect("writing to memory cannot fail");
        out.push(b'\n');
        self.hasher.update(&out[start..]);
        self.records += 1;
    }

    /// How many records so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Ends the file; `out` receives the trailer line.
    pub fn finish(self, out: &mut Vec<u8>) {
        let trailer = Trailer {
            end: FORMAT.to_owned(),
            records: self.records,
            sha256: hex::encode(self.hasher.finalize()),
        };
        serde_json::to_writer(&mut *out, &trailer).expect("a trailer always serializes");
        out.push(b'\n');
    }
}

/// A record read back: the report to merge and the peer it had been learned from.
#[derive(Debug, Clone)]
pub struct Record {
    pub report: Report,
    pub learned_from: Option<String>,
}

/// The longest line read, in bytes: far more than any record (a client ID is at most 64 KiB,
/// four times that escaped, twice over with `client_hex`).
pub const MAX_LINE: usize = 1 << 20;

/// What is wrong with a records file as a whole (as opposed to one of its lines).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    #[error("line 1: {0}")]
    Header(String),
    #[error(
        "it is cut short: {records} records and no trailer line (a complete file ends with \
         {{\"end\":\"herd-records\",...}}); it was truncated, or its writer failed"
    )]
    Truncated { records: u64 },
    #[error("line {line}: {message}")]
    Trailer { line: usize, message: String },
    #[error("line {line}: there is more after the trailer line")]
    AfterTrailer { line: usize },
    #[error("line {line}: longer than {MAX_LINE} bytes")]
    LineTooLong { line: usize },
}

/// A record line, or what is wrong with it.
pub type Line = (usize, Result<Record, String>);

/// Reads a records file line by line, checking its header and trailer as it goes. A record
/// line that cannot be read is handed back as a per-line error with its line number, so a
/// caller can list every bad line; what is wrong with the file as a whole is a [`FileError`].
pub struct Reader<R> {
    input: R,
    /// The number of the line in `buf` (1-based).
    line: usize,
    header: Option<Header>,
    hasher: Sha256,
    records: u64,
    ended: bool,
    /// The first line, when it is not a header.
    pending: Option<Vec<u8>>,
    buf: Vec<u8>,
}

impl<R: BufRead> Reader<R> {
    /// Starts reading `input`, and reads its header if it has one.
    pub fn new(input: R) -> Result<Reader<R>, FileError> {
        let mut reader = Reader {
            input,
            line: 0,
            header: None,
            hasher: Sha256::new(),
            records: 0,
            ended: false,
            pending: None,
            buf: Vec::new(),
        };
        if reader.read_line()? {
            let first = std::mem::take(&mut reader.buf);
            match parse_header(&first).map_err(FileError::Header)? {
                Some(header) => {
                    reader.hasher.update(&first);
                    reader.header = Some(header);
                }
                None => reader.pending = Some(first),
            }
        }
        Ok(reader)
    }

    /// The file's header, if it has one.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// How many record lines have been read (bad ones included).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The next record line with its number, or `None` at the end of the file; a file with a
    /// header must end with a trailer that matches what came before it.
    pub fn next_line(&mut self) -> Result<Option<Line>, FileError> {
        loop {
            let bytes = match self.pending.take() {
                Some(first) => first,
                None if self.read_line()? => std::mem::take(&mut self.buf),
                None if self.header.is_some() && !self.ended => {
                    return Err(FileError::Truncated {
                        records: self.records,
                    })
                }
                None => return Ok(None),
            };
            if bytes.trim_ascii().is_empty() {
                self.hasher.update(&bytes);
                continue;
            }
            if self.ended {
                return Err(FileError::AfterTrailer { line: self.line });
            }
            let value = serde_json::from_slice::<serde_json::Value>(&bytes);
            if let (Some(_), Ok(value)) = (&self.header, &value) {
                if value.get("end").is_some() {
                    self.check_trailer(value)?;
                    self.ended = true;
                    continue;
                }
            }
            self.hasher.update(&bytes);
            self.records += 1;
            let record = value
                .map_err(|e| format!("not a JSON object: {e}"))
                .and_then(|v| parse_record(&v));
            return Ok(Some((self.line, record)));
        }
    }

    /// Reads one line into `buf`; `false` at the end of the input.
    fn read_line(&mut self) -> Result<bool, FileError> {
        self.buf.clear();
        let mut input = <&mut R as std::io::Read>::take(&mut self.input, MAX_LINE as u64 + 1);
        let n = input.read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(false);
        }
        self.line += 1;
        if self.buf.len() > MAX_LINE {
            return Err(FileError::LineTooLong { line: self.line });
        }
        Ok(true)
    }

    fn check_trailer(&self, value: &serde_json::Value) -> Result<(), FileError> {
        let bad = |message: String| FileError::Trailer {
            line: self.line,
            message,
        };
        let trailer: Trailer = serde_json::from_value(value.clone())
            .map_err(|e| bad(format!("not a trailer line: {e}")))?;
        if trailer.end != FORMAT {
            return Err(bad(format!(
                "not a herd-records trailer ({:?})",
                trailer.end
            )));
        }
        if trailer.records != self.records {
            return Err(bad(format!(
                "the trailer counts {} records but the file holds {}: it was altered or damaged",
                trailer.records, self.records
            )));
        }
        let sum = hex::encode(self.hasher.clone().finalize());
        if trailer.sha256 != sum {
            return Err(bad(format!(
                "checksum mismatch (the trailer says sha256 {}, the file's is {sum}): it was \
                 altered or damaged",
                trailer.sha256
            )));
        }
        Ok(())
    }
}

/// The header on a first line, `None` if the line is not one, or what is wrong with it.
fn parse_header(line: &[u8]) -> Result<Option<Header>, String> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else {
        return Ok(None);
    };
    if value.get("format").is_none() {
        return Ok(None);
    }
    let header: Header =
        serde_json::from_value(value).map_err(|e| format!("not a records file header: {e}"))?;
    if header.format != FORMAT {
        return Err(format!(
            "not a herd records file (format {:?}, expected {FORMAT:?})",
            header.format
        ));
    }
    if header.version > VERSION {
        return Err(format!(
            "written in records format version {}, newer than this herd reads ({VERSION}); use \
             the herd that wrote it (herd {})",
            header.version, header.herd_version
        ));
    }
    Ok(Some(header))
}

/// Rebuilds a record from its JSON object: the report from `at` (with the exact client ID from
/// `client_hex` when there is one), checked to render back to the same line.
fn parse_record(value: &serde_json::Value) -> Result<Record, String> {
    let field = |name: &str| match value.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(format!("{name} is not a string: {other}")),
    };
    if !value.is_object() {
        return Err(format!("not a JSON object: {value}"));
    }
    if value.get("format").is_some() {
        return Err("a header line, but not the first line".into());
    }
    if value.get("end").is_some() {
        return Err("a trailer line in a file without a header line".into());
    }
    let at = field("at")?.ok_or("no \"at\" field (the record's AT line)")?;
    let client = field("client_hex")?
        .map(|h| hex::decode(h).map_err(|e| format!("client_hex is not hex: {e}")))
        .transpose()?;
    let learned_from = field("learned_from")?.map(str::to_owned);
    let mut fields: Vec<&[u8]> = at.split(' ').map(str::as_bytes).collect();
    if fields.len() != 6 || fields[0] != b"AT" {
        return Err(format!(
            "\"at\" is not an AT line (AT server time-diff client location timestamp): {at:?}"
        ));
    }
    if let Some(client) = &client {
        fields[3] = client;
    }
    // Through the parser a peer's AT line goes through: a client ID the protocol cannot carry
    // (white space in `client_hex`, say) is refused as a peer would refuse it.
    let report = match request::parse(&Bytes::from(fields.join(&b' '))) {
        Request::At(report) => report,
        _ => return Err(format!("\"at\" is not a valid AT line: {at:?}")),
    };
    if Escaped(report.at_line()).to_string() != at {
        return Err(if value.get("client_hex").is_none() {
            format!("\"at\" shows an escaped client ID; client_hex is needed to rebuild it: {at:?}")
        } else {
            format!("client_hex is not the client ID of \"at\": {at:?}")
        });
    }
    Ok(Record {
        report,
        learned_from,
    })
}

#[cfg(test)]
mod tests;

/// A file written beside its final path (`PATH.partial`) and renamed there only once it is
/// complete and on disk, so a run that fails never leaves a file that looks whole.
pub struct Output {
    file: std::io::BufWriter<std::fs::File>,
    partial: PathBuf,
    path: PathBuf,
}

impl Output {
    /// Creates `PATH.partial` (mode 0600: a backup holds every client's location).
    pub fn create(path: &Path) -> Result<Output> {
        let mut name = path.as_os_str().to_owned();
        name.push(".partial");
        let partial = PathBuf::from(name);
        let file = crate::private_files::open_private(&partial, false)
            .and_then(|f| f.set_len(0).map(|()| f))
            .map_err(|e| Error::io(format!("create {}", partial.display()), e))?;
        Ok(Output {
            file: std::io::BufWriter::new(file),
            partial,
            path: path.to_owned(),
        })
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|e| Error::io(format!("write {}", self.partial.display()), e))
    }

    /// Writes everything out and syncs it; returns the partial file's path, to be read back.
    pub fn sync(&mut self) -> Result<&Path> {
        let io = |e| Error::io(format!("write {}", self.partial.display()), e);
        self.file.flush().map_err(io)?;
        self.file.get_ref().sync_all().map_err(io)?;
        Ok(&self.partial)
    }

    /// Syncs the file and renames it into place.
    pub fn commit(mut self) -> Result<()> {
        self.sync()?;
        std::fs::rename(&self.partial, &self.path).map_err(|e| {
            Error::io(
                format!(
                    "rename {} to {}",
                    self.partial.display(),
                    self.path.display()
                ),
                e,
            )
        })?;
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // The rename is durable once the directory is.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("sync {}", dir.display()), e))?;
        // Nothing left to remove on drop.
        self.partial = PathBuf::new();
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if !self.partial.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// How many bad lines a check lists before it only counts them.
const LISTED: usize = 20;

/// Reads the whole records file at `path` and checks it: its header and trailer if it has
/// them, and every record line. Every bad line is reported (the first twenty by number);
/// any makes it an error. Returns the header and the number of records.
pub fn check(path: &Path) -> Result<(Option<Header>, u64)> {
    let data = |message: String| Error::Data {
        path: path.to_owned(),
        message,
    };
    let file =
        std::fs::File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut reader = Reader::new(std::io::BufReader::new(file)).map_err(|e| data(e.to_string()))?;
    let mut bad = Vec::new();
    let mut bad_count = 0;
    while let Some((line, record)) = reader.next_line().map_err(|e| data(e.to_string()))? {
        if let Err(why) = record {
            bad_count += 1;
            if bad.len() < LISTED {
                bad.push(format!("line {line}: {why}"));
            }
        }
    }
    if bad_count > 0 {
        let more = bad_count - bad.len();
        let mut message = format!("{bad_count} malformed line(s):\n  {}", bad.join("\n  "));
        if more > 0 {
            message.push_str(&format!("\n  ... and {more} more"));
        }
        return Err(data(message));
    }
    Ok((reader.header().cloned(), reader.records()))
}
