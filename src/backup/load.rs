//! `herd import` and `herd restore`: merge a records file into a stopped node's store.
//!
//! The file is read twice. The first pass checks all of it (header, trailer, every line) and
//! nothing is written unless all of it is sound, so a malformed line or a file cut short
//! changes nothing. The second pass opens the store as a node does ([`Store::open`]: its
//! lock, its limits from `[store]`) and submits each record as a peer's report is submitted,
//! so the store's own admission rules and newest-wins merge decide: a record older than what
//! the store holds changes nothing, and one its limits refuse is listed by line.
//!
//! Nothing is flooded: the store is opened without a node around it. Once started, the node
//! spreads what it holds to its peers through anti-entropy, as after any restart.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use super::{check, Reader};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::logging::Escaped;
use crate::store::{Merged, Pending, Refusal, Store};

/// `herd import` / `herd restore`: what to merge, and where.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The stopped node's state directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// The herd's config, whose `[store]` limits apply (default: data/herd.toml if it exists,
    /// else the built-in herd).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The records file: a backup, an export, or (import only) bare record lines.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// What a load did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loaded {
    pub records: u64,
    /// Written: newer than what the store held, or a client it did not hold.
    pub stored: u64,
    /// The store already held this report or a newer one.
    pub kept: u64,
    /// Refused by the store's limits.
    pub refused: u64,
}

/// Submissions in flight at once: enough for the writer to commit them in large groups.
const WINDOW: usize = 1024;

/// Merges `args.file` into the store under `args.state_dir`. `whole` (restore) insists on a
/// file with a header and trailer. Refused records are listed on stderr with their line and
/// make the result an error, after everything else is merged.
pub async fn run(args: &LoadArgs, whole: bool) -> Result<Loaded> {
    let path = &args.file;
    let config = Config::load(args.config.as_deref())?;
    let (header, _) = check(path)?;
    if whole && header.is_none() {
        return Err(Error::Data {
            path: path.clone(),
            message: "no header line: herd restore takes a backup or an export (herd import \
                      also takes bare record lines)"
                .into(),
        });
    }
    let dir = args.state_dir.clone();
    let store_config = config.store.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, &store_config))
        .await
        .map_err(|e| Error::io("open the store", std::io::Error::other(e)))??;
    let merged = merge_all(&store, path).await;
    store.close().await;
    let loaded = merged?;
    eprintln!(
        "{}: {} records: {} stored, {} kept (the store held them or newer), {} refused",
        path.display(),
        loaded.records,
        loaded.stored,
        loaded.kept,
        loaded.refused
    );
    if loaded.refused > 0 {
        return Err(Error::Data {
            path: path.clone(),
            message: format!(
                "{} records were refused by the store's limits (listed above); the rest were merged",
                loaded.refused
            ),
        });
    }
    Ok(loaded)
}

/// The second pass: submits every record, a window at a time.
async fn merge_all(store: &Store, path: &Path) -> Result<Loaded> {
    let changed = |message: String| Error::Data {
        path: path.to_owned(),
        message: format!("changed while being merged: {message}"),
    };
    let file =
        std::fs::File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut reader =
        Reader::new(std::io::BufReader::new(file)).map_err(|e| changed(e.to_string()))?;
    let mut loaded = Loaded::default();
    let mut in_flight: VecDeque<(usize, bytes::Bytes, Pending)> = VecDeque::new();
    loop {
        // Read errors wait until what was submitted is accounted for.
        let next = reader.next_line();
        let record = match next {
            Ok(Some((line, Ok(record)))) => Some((line, record)),
            Ok(None) => None,
            Ok(Some((line, Err(why)))) => {
                settle(&mut in_flight, 0, &mut loaded, path).await?;
                return Err(changed(format!("line {line}: {why}")));
            }
            Err(e) => {
                settle(&mut in_flight, 0, &mut loaded, path).await?;
                return Err(changed(e.to_string()));
            }
        };
        let Some((line, record)) = record else { break };
        loaded.records += 1;
        let client = record.report.client.clone();
        let pending = store
            .submit(record.report, record.learned_from.as_deref())
            .await?;
        in_flight.push_back((line, client, pending));
        settle(&mut in_flight, WINDOW, &mut loaded, path).await?;
    }
    settle(&mut in_flight, 0, &mut loaded, path).await?;
    Ok(loaded)
}

/// Waits for outcomes until at most `keep` submissions are in flight.
async fn settle(
    in_flight: &mut VecDeque<(usize, bytes::Bytes, Pending)>,
    keep: usize,
    loaded: &mut Loaded,
    path: &Path,
) -> Result<()> {
    while in_flight.len() > keep {
        let (line, client, pending) = in_flight.pop_front().expect("not empty");
        match pending.outcome().await? {
            Merged::Stored => loaded.stored += 1,
            Merged::Stale => loaded.kept += 1,
            Merged::Refused(why) => {
                loaded.refused += 1;
                eprintln!(
                    "{}:{line}: client {} refused: {}",
                    path.display(),
                    Escaped(&client),
                    explain(why)
                );
            }
        }
    }
    Ok(())
}

fn explain(why: Refusal) -> &'static str {
    match why {
        Refusal::ClientIdTooLong => "its client ID is longer than [store] max_client_id_bytes",
        Refusal::Expired => "its timestamp is older than [store] retain_secs",
        Refusal::NewClient => {
            "a new client, and the store is at a limit (max_records, max_store_mib or min_free_mib)"
        }
        Refusal::NoSpace => "the disk is below its floor; nothing can be written",
    }
}
