//! `herd backup`: fetch a running node's backup from its admin endpoint into a file.
//!
//! The node streams `GET /backup` (see `admin::backup`); this writes it to `FILE.partial`,
//! syncs it, reads it back through the same [`check`] that `herd restore` runs (header,
//! every record line, the trailer's count and checksum), and only then renames it to `FILE`.
//! A connection that drops, a node that stops, or a body that stalls leaves no `FILE`.

use std::path::PathBuf;
use std::time::Duration;

use super::{check, Header, Output};
use crate::error::{Error, Result};

/// `herd backup`: what to back up, and where.
#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    /// The node: the NAME of a server of the config (its `[admin]` address is used), or its
    /// admin endpoint's HOST:PORT.
    #[arg(value_name = "NAME|ADDR")]
    pub target: String,
    /// The herd's config, for NAME (default: data/herd.toml if it exists, else the built-in herd).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where to write the backup (whole and verified, then renamed into place).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// The longest the node may take to connect, or to send the next part of the backup.
const STALL: Duration = Duration::from_secs(30);

/// Runs `herd backup`; returns the backup's header and record count.
pub async fn run(args: &BackupArgs) -> Result<(Header, u64)> {
    let addr =
        crate::client::resolve_in(&args.target, args.config.as_deref(), "admin", |c| &c.admin)?;
    let url = format!("http://{addr}/backup");
    let failed = |e: &dyn std::fmt::Display| {
        Error::io(format!("fetch {url}"), std::io::Error::other(e.to_string()))
    };
    // Straight to the node: an HTTP proxy from the environment has no business in between.
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(STALL)
        .build()
        .map_err(|e| failed(&e))?;
    let mut response = tokio::time::timeout(STALL, client.get(&url).send())
        .await
        .map_err(|e| failed(&e))?
        .map_err(|e| failed(&e))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(failed(&format_args!("{status}: {}", body.trim())));
    }
    let mut out = Output::create(&args.out)?;
    while let Some(chunk) = tokio::time::timeout(STALL, response.chunk())
        .await
        .map_err(|_| failed(&format_args!("no data for {}s", STALL.as_secs())))?
        .map_err(|e| failed(&e))?
    {
        out.write_all(&chunk)?;
    }
    let (header, records) = check(out.sync()?).map_err(|e| match e {
        Error::Data { message, .. } => Error::Data {
            path: args.out.clone(),
            message: format!("not written: the backup from {url} is not whole: {message}"),
        },
        other => other,
    })?;
    let header = header.ok_or_else(|| failed(&"the answer is not a backup: it has no header"))?;
    out.commit()?;
    Ok((header, records))
}
