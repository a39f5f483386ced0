//! `herd export`: a stopped node's records as a records file, offline.
//!
//! The store is read as `herd inspect` reads it (a scratch copy, the node's lock taken so a
//! running node's store is refused), and written in the format of a backup with `kind`
//! `export`, to standard output or to a file renamed into place once whole.

use std::io::Write;
use std::path::PathBuf;

use super::{Encoder, Header, Output};
use crate::error::{Error, Result};
use crate::logging::Escaped;
use crate::store::open_for_inspection;

/// `herd export`: write a stopped node's records.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// The stopped node's state directory.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Write to FILE (whole and synced, then renamed into place) instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Flush the encoded bytes to the output past this many.
const CHUNK: usize = 64 * 1024;

/// Runs `herd export`; returns the number of records written. Undecodable records are
/// reported on stderr and left out.
pub fn run(args: &ExportArgs) -> Result<u64> {
    let records = open_for_inspection(&args.state_dir)?;
    let server = args
        .state_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut sink = match &args.out {
        Some(path) => Sink::File(Output::create(path)?),
        None => Sink::Stdout(std::io::stdout().lock()),
    };
    let mut buf = Vec::with_capacity(CHUNK * 2);
    let mut encoder = Encoder::new(&Header::new("export", &server), &mut buf);
    for (id, decoded) in &records {
        match decoded {
            Ok(stored) => encoder.record(stored, &mut buf),
            Err(why) => eprintln!(
                "herd export: record of client {} is corrupt, left out: {why}",
                Escaped(id)
            ),
        }
        if buf.len() >= CHUNK {
            sink.write_all(&buf)?;
            buf.clear();
        }
    }
    let count = encoder.records();
    encoder.finish(&mut buf);
    sink.write_all(&buf)?;
    sink.finish()?;
    Ok(count)
}

enum Sink<'a> {
    File(Output),
    Stdout(std::io::StdoutLock<'a>),
}

impl Sink<'_> {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            Sink::File(out) => out.write_all(bytes),
            Sink::Stdout(out) => out
                .write_all(bytes)
                .map_err(|e| Error::io("write standard output", e)),
        }
    }

    fn finish(self) -> Result<()> {
        match self {
            Sink::File(out) => out.commit(),
            Sink::Stdout(mut out) => out
                .flush()
                .map_err(|e| Error::io("write standard output", e)),
        }
    }
}
