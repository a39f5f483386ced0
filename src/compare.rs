//! `herd inspect --compare`: which clients stopped stores disagree on, offline.
//!
//! Each store is read as `herd inspect` reads it (a scratch copy, under the node's lock, so a
//! running node's store is refused with the same message). Two stores agree on a client when
//! both hold the same report for it: the same AT line. What a record says only of the node
//! that holds it (when it arrived there, the peer it came from) is not compared, so the
//! stores of a converged herd agree, and so do an export and the store it is imported into.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use bytes::Bytes;
use serde_json::json;

use crate::error::{Error, Result};
use crate::inspect::{record_json, Format};
use crate::logging::Escaped;
use crate::store::{open_for_inspection, Stored};

/// What one store holds for a client.
type Holding = Option<std::result::Result<Stored, String>>;

/// A client the stores disagree on, with what each holds (in the order the stores were given).
pub struct Difference {
    pub client: Bytes,
    pub holdings: Vec<Holding>,
}

impl Difference {
    /// Which holdings carry the newest report among them.
    fn newest(&self) -> Vec<bool> {
        let reports = self.holdings.iter().map(|h| match h {
            Some(Ok(s)) => Some(&s.report),
            _ => None,
        });
        let best = reports.clone().flatten().max_by(|a, b| a.precedence(b));
        reports
            .map(|r| r.is_some() && r.map(|r| r.at_line()) == best.map(|b| b.at_line()))
            .collect()
    }
}

/// Reads every store under `dirs` and returns the clients they disagree on, in client order,
/// with how many records each store holds.
pub fn differences(dirs: &[PathBuf]) -> Result<(Vec<Difference>, Vec<usize>)> {
    let mut clients: BTreeMap<Bytes, Vec<Holding>> = BTreeMap::new();
    let mut counts = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let records = open_for_inspection(dir)?;
        counts.push(records.len());
        for (client, decoded) in records {
            let holdings = clients
                .entry(client)
                .or_insert_with(|| vec![None; dirs.len()]);
            holdings[i] = Some(decoded);
        }
    }
    let differences = clients
        .into_iter()
        .filter(|(_, holdings)| !agree(holdings))
        .map(|(client, holdings)| Difference { client, holdings })
        .collect();
    Ok((differences, counts))
}

/// Whether every store holds the same, readable report.
fn agree(holdings: &[Holding]) -> bool {
    let line = |h: &Holding| match h {
        Some(Ok(s)) => Some(s.report.at_line().clone()),
        _ => None,
    };
    let first = line(&holdings[0]);
    first.is_some() && holdings.iter().all(|h| line(h) == first)
}

/// Runs `herd inspect --compare`: prints the clients the stores under `dirs` disagree on, and
/// a summary on stderr. Returns how many there are.
pub fn run(dirs: &[PathBuf], format: Format, out: &mut dyn Write) -> Result<usize> {
    if dirs.len() < 2 {
        return Err(Error::config(
            "--compare",
            "give at least two state directories to compare",
        ));
    }
    let (differences, counts) = differences(dirs)?;
    let io = |e| Error::io("write output", e);
    match format {
        Format::Json => {
            for d in &differences {
                serde_json::to_writer(&mut *out, &difference_json(d, dirs))
                    .map_err(|e| io(e.into()))?;
                writeln!(out).map_err(io)?;
            }
        }
        Format::Table => table(&differences, dirs, out).map_err(io)?,
    }
    let stores: Vec<String> = dirs
        .iter()
        .zip(&counts)
        .map(|(d, n)| format!("{}: {n} records", d.display()))
        .collect();
    eprintln!(
        "{} clients differ among {} stores ({})",
        differences.len(),
        dirs.len(),
        stores.join(", ")
    );
    Ok(differences.len())
}

/// `{"client", "client_hex", "stores": [{"state_dir", "record" (as inspect prints it, or
/// null), "newest", and "corrupt" when it cannot be read}]}`.
fn difference_json(d: &Difference, dirs: &[PathBuf]) -> serde_json::Value {
    let stores: Vec<_> = d
        .holdings
        .iter()
        .zip(dirs)
        .zip(d.newest())
        .map(|((h, dir), newest)| {
            let mut store = json!({
                "state_dir": dir.display().to_string(),
                "record": h.as_ref().and_then(|h| h.as_ref().ok()).map(record_json),
                "newest": newest,
            });
            if let Some(Err(why)) = h {
                store["corrupt"] = json!(why);
            }
            store
        })
        .collect();
    json!({
        "client": Escaped(&d.client).to_string(),
        "client_hex": hex::encode(&d.client),
        "stores": stores,
    })
}

/// One row per client, one column per store: the report's timestamp and server (`*` on the
/// newest), `-` when absent.
fn table(differences: &[Difference], dirs: &[PathBuf], out: &mut dyn Write) -> std::io::Result<()> {
    let mut rows = vec![std::iter::once("CLIENT".to_owned())
        .chain(dirs.iter().map(|d| d.display().to_string()))
        .collect::<Vec<_>>()];
    for d in differences {
        let cells = d
            .holdings
            .iter()
            .zip(d.newest())
            .map(|(h, newest)| match h {
                None => "-".to_owned(),
                Some(Err(_)) => "corrupt".to_owned(),
                Some(Ok(s)) => format!(
                    "{}{} {}",
                    if newest { "*" } else { "" },
                    String::from_utf8_lossy(&s.report.timestamp_text),
                    s.report.server
                ),
            });
        rows.push(
            std::iter::once(Escaped(&d.client).to_string())
                .chain(cells)
                .collect(),
        );
    }
    crate::inspect::write_table(&rows, out)
}
