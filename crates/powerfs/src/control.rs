//! The control socket of the `powerfs` binary: a Unix stream socket taking one command per
//! line and answering each with one line.
//!
//! | command | effect | answer |
//! |---|---|---|
//! | `cut` | power cut: drop everything not durable | `ok files=F ops=O torn=-` |
//! | `cut tear=N` | power cut, keeping the first `N` bytes of the last unsynced write | `ok files=F ops=O torn=K` |
//! | `sync` | make everything durable (`syncfs`) | `ok` |
//! | `unmount` | answer, then unmount and exit | `ok` |
//!
//! Anything else is answered `error <why>`; a cut that could not roll something back answers
//! `error <what failed>` after doing all it could.

use crate::{Cut, Mount};

/// What a control line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Cut { tear: Option<usize> },
    Sync,
    Unmount,
}

/// Parses one control line.
pub fn parse(line: &str) -> Result<Command, String> {
    let mut words = line.split_whitespace();
    let command = match words.next() {
        Some("cut") => {
            let tear = match words.next() {
                None => None,
                Some(arg) => {
                    let n = arg
                        .strip_prefix("tear=")
                        .ok_or_else(|| format!("cut takes tear=N, not {arg:?}"))?;
                    Some(
                        n.parse()
                            .map_err(|_| format!("tear={n:?} is not a byte count"))?,
                    )
                }
            };
            Command::Cut { tear }
        }
        Some("sync") => Command::Sync,
        Some("unmount") => Command::Unmount,
        Some(other) => return Err(format!("unknown command {other:?} (cut, sync, unmount)")),
        None => return Err("empty command".into()),
    };
    if let Some(extra) = words.next() {
        return Err(format!("unexpected {extra:?}"));
    }
    Ok(command)
}

/// The answer line for a power cut.
pub fn describe(cut: &Cut) -> String {
    if !cut.errors.is_empty() {
        return format!("error {}", cut.errors.join("; "));
    }
    let torn = cut
        .torn_bytes
        .map_or_else(|| "-".to_owned(), |n| n.to_string());
    format!(
        "ok files={} ops={} torn={torn}",
        cut.files_rolled_back, cut.ops_undone
    )
}

/// Carries out one command; returns the answer and whether to exit afterwards.
pub fn execute(mount: &Mount, line: &str) -> (String, bool) {
    match parse(line) {
        Ok(Command::Cut { tear }) => (describe(&mount.power_cut(tear)), false),
        Ok(Command::Sync) => {
            mount.sync_all();
            ("ok".into(), false)
        }
        Ok(Command::Unmount) => ("ok".into(), true),
        Err(why) => (format!("error {why}"), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_bad_ones_say_why() {
        assert_eq!(parse("cut"), Ok(Command::Cut { tear: None }));
        assert_eq!(parse("cut tear=17\n"), Ok(Command::Cut { tear: Some(17) }));
        assert_eq!(parse("sync"), Ok(Command::Sync));
        assert_eq!(parse("unmount"), Ok(Command::Unmount));
        assert!(parse("cut tear=x").unwrap_err().contains("byte count"));
        assert!(parse("cut 5").unwrap_err().contains("tear=N"));
        assert!(parse("boom").unwrap_err().contains("unknown command"));
        assert!(parse("sync now").unwrap_err().contains("unexpected"));
        assert!(parse("").is_err());
    }
}
