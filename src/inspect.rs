//! `herd inspect`: print a stopped node's stored records, offline.
//!
//! The store is opened only to read: nothing is written, upgraded or counted, and a store held
//! by a running node is refused with a message saying so (the lock is the node's).

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::logging::Escaped;
use crate::store::{open_for_inspection, Stored};

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Json,
    /// An aligned table for people.
    Table,
}

/// One record as `--format json` prints it.
#[derive(Serialize)]
struct Row<'a> {
    /// The client ID; bytes that are not printable UTF-8 are escaped (`\xff`, `\\`).
    client: String,
    /// The client ID's exact bytes, hex-encoded.
    client_hex: String,
    server: &'a str,
    time_diff: String,
    location: String,
    latitude: f64,
    longitude: f64,
    timestamp: String,
    /// The receiving server's clock when the report arrived.
    received: String,
    at: String,
    learned_from: Option<&'a str>,
    /// With `--retain-secs`: whether its timestamp is older than the window (a node with that
    /// retention would expire it, and refuse it if reported again).
    #[serde(skip_serializing_if = "Option::is_none")]
    expired: Option<bool>,
}

impl<'a> Row<'a> {
    fn new(s: &'a Stored) -> Row<'a> {
        let r = &s.report;
        Row {
            client: Escaped(&r.client).to_string(),
            client_hex: hex::encode(&r.client),
            server: &r.server,
            time_diff: r.time_diff.to_string(),
            location: String::from_utf8_lossy(&r.location_text).into_owned(),
            latitude: r.location.latitude,
            longitude: r.location.longitude,
            timestamp: String::from_utf8_lossy(&r.timestamp_text).into_owned(),
            received: s.received.to_string(),
            at: Escaped(r.at_line()).to_string(),
            learned_from: s.learned_from.as_deref(),
            expired: None,
        }
    }
}

/// One record as the JSON object `--format json` prints (and `/clients/ID` answers).
pub fn record_json(stored: &Stored) -> serde_json::Value {
    serde_json::to_value(Row::new(stored)).expect("a row always serializes")
}

/// Writes one record as the JSON object `--format json` prints, without a newline (the lines
/// of a backup or export).
pub fn write_json(stored: &Stored, out: impl Write) -> serde_json::Result<()> {
    serde_json::to_writer(out, &Row::new(stored))
}

/// Prints every record of the store under `state_dir` (or only `client`'s) to `out`. With
/// `retain_secs`, each says whether it is past that retention window now.
/// Returns the number printed; undecodable records are reported on stderr and skipped.
pub fn run(
    state_dir: &Path,
    client: Option<&[u8]>,
    format: Format,
    retain_secs: Option<u64>,
    out: &mut dyn Write,
) -> Result<usize> {
    let cutoff = retain_secs.map(|r| {
        crate::protocol::number::Timestamp::now()
            .secs
            .saturating_sub(r)
    });
    let row = |s| {
        let mut row = Row::new(s);
        row.expired = cutoff.map(|c| s.report.timestamp.secs < c);
        row
    };
    let records = open_for_inspection(state_dir)?;
    let io = |e| Error::io("write output", e);
    let mut rows = Vec::new();
    for (id, decoded) in &records {
        if client.is_some_and(|c| c != &id[..]) {
            continue;
        }
        match decoded {
            Ok(stored) => rows.push(stored),
            Err(why) => eprintln!(
                "herd inspect: record of client {} is corrupt: {why}",
                Escaped(id)
            ),
        }
    }
    match format {
        Format::Json => {
            for stored in &rows {
                serde_json::to_writer(&mut *out, &row(stored)).map_err(|e| io(e.into()))?;
                writeln!(out).map_err(io)?;
            }
        }
        Format::Table => {
            let last = if cutoff.is_some() { "RETENTION" } else { "" };
            let header = [
                "CLIENT",
                "SERVER",
                "TIME_DIFF",
                "LOCATION",
                "TIMESTAMP",
                last,
            ];
            let mut table = vec![header.map(String::from).to_vec()];
            table.extend(rows.iter().map(|s| {
                let row = row(s);
                let expired = match row.expired {
                    Some(true) => "expired",
                    _ => "",
                };
                vec![
                    row.client,
                    row.server.to_owned(),
                    row.time_diff,
                    row.location,
                    row.timestamp,
                    expired.to_owned(),
                ]
            }));
            write_table(&table, out).map_err(io)?;
        }
    }
    if let (Some(c), true) = (client, rows.is_empty()) {
        return Err(Error::store(
            state_dir,
            format!("no record of client {}", Escaped(c)),
        ));
    }
    Ok(rows.len())
}

/// Writes `rows` (the first is the header) as columns aligned on their widest cell.
pub fn write_table(rows: &[Vec<String>], out: &mut dyn Write) -> std::io::Result<()> {
    let mut widths = vec![0; rows.first().map_or(0, Vec::len)];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}
