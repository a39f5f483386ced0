//! `herd check`: has the herd converged? Every server of the config is asked, over its admin
//! endpoint (`/herd.json`), for the fingerprint of its whole store and its record count; the
//! answers are judged by the same [`Verdict`] that `/herd` shows.
//!
//! One round asks every server at once. With `--wait SECS`, rounds are repeated every
//! [`ROUND_EVERY`] until one round agrees or the time is up; the last round is the one printed.
//! A server without an admin address cannot be asked: that is a config error (exit 2), named,
//! before anything is asked.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::admin::summary::{fetch_all, http_client};
use crate::admin::verdict::Verdict;
use crate::config::Config;
use crate::error::{Error, Result};

/// The pause between two rounds of `--wait`.
pub const ROUND_EVERY: Duration = Duration::from_millis(200);

/// `herd check`: ask every server whether their stores agree.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The herd's config file (default: data/herd.toml if it exists, else the built-in herd).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Keep asking, up to this many seconds, until the servers agree.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    pub wait: f64,
}

/// Asks until converged or out of time, prints the verdict on `out`, and returns whether the
/// herd converged.
pub async fn run(args: &CheckArgs, out: &mut impl Write) -> Result<bool> {
    let config = Config::load(args.config.as_deref())?;
    if let Some(name) = config
        .servers
        .keys()
        .find(|name| !config.admin.contains_key(*name))
    {
        return Err(Error::config(
            &config.source,
            format!(
                "admin.{name}: server {name} has no admin address, so it cannot be asked; \
                 give every server one in [admin]"
            ),
        ));
    }
    let wait = Duration::try_from_secs_f64(args.wait).map_err(|_| {
        Error::config(
            "--wait",
            format!("{} is not a number of seconds (0 or more)", args.wait),
        )
    })?;
    let deadline = tokio::time::Instant::now() + wait;
    let client = http_client();
    let verdict = loop {
        let answers = fetch_all(&config, &client, None).await;
        let verdict = Verdict::of(&answers);
        if verdict.converged() || tokio::time::Instant::now() + ROUND_EVERY > deadline {
            break verdict;
        }
        tokio::time::sleep(ROUND_EVERY).await;
    };
    for line in verdict.lines() {
        writeln!(out, "{line}").map_err(|e| Error::io("printing the verdict", e))?;
    }
    Ok(verdict.converged())
}
