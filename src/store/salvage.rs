//! Salvage: the reports that can still be read from a store sled cannot open.
//!
//! A record holds its report's AT line whole, as a length-prefixed byte string (bincode's
//! variable-length integer, then the bytes; `herd-migrations`). So every file of a store kept
//! aside is searched for `AT ` preceded by a length that makes it a line, and every such line
//! that parses as a report, byte for byte, is one. Older copies of a record that sled had not
//! yet cleaned away are found too: the caller merges them all through newest-wins, so the
//! newest readable one of each client is what survives.
//!
//! What this cannot recover: a record whose AT line's bytes were damaged (a torn or
//! overwritten page), and what a record holds beyond its line (when this node received it and
//! from which peer: a salvaged record was received now, from nobody).

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use bytes::Bytes;

use crate::protocol::request::{parse, Request};
use crate::report::Report;

/// How much of a file is searched at once; lines straddling two chunks are found through the
/// overlap.
const CHUNK: usize = 8 << 20;
/// The longest line looked for: longer ones are not reports any node accepts.
const MAX_LINE: usize = 256 * 1024;

/// Every distinct report whose AT line can be read from the files under `dir`.
pub fn reports_in(dir: &Path) -> std::io::Result<Vec<Report>> {
    let mut lines = HashSet::new();
    let mut out = Vec::new();
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    for file in files {
        search_file(&file, &mut lines, &mut out)?;
    }
    Ok(out)
}

/// The newest readable report of each client under `dir` (by the reports' own precedence, as
/// newest-wins decides between two reports).
pub fn newest_per_client(dir: &Path) -> std::io::Result<Vec<Report>> {
    let mut newest: std::collections::HashMap<Bytes, Report> = std::collections::HashMap::new();
    for report in reports_in(dir)? {
        match newest.get(&report.client) {
            Some(kept) if kept.precedence(&report) != std::cmp::Ordering::Less => {}
            _ => {
                newest.insert(report.client.clone(), report);
            }
        }
    }
    Ok(newest.into_values().collect())
}

fn collect_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_files(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

fn search_file(
    path: &Path,
    lines: &mut HashSet<Bytes>,
    out: &mut Vec<Report>,
) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + MAX_LINE);
    loop {
        let before = buf.len();
        let read = (&mut file).take(CHUNK as u64).read_to_end(&mut buf)?;
        let last = read == 0 || buf.len() - before < CHUNK;
        // Search every `AT ` that starts before the overlap kept for the next chunk.
        let searched = if last {
            buf.len()
        } else {
            buf.len().saturating_sub(MAX_LINE + 8)
        };
        search(&buf, searched, lines, out);
        if last {
            return Ok(());
        }
        buf.drain(..searched);
    }
}

/// Searches `buf` for lines starting before `end`.
fn search(buf: &[u8], end: usize, lines: &mut HashSet<Bytes>, out: &mut Vec<Report>) {
    let mut at = 0;
    while let Some(found) = find(&buf[at..end.min(buf.len())], b"AT ") {
        let start = at + found;
        at = start + 1;
        for len in lengths_before(buf, start) {
            let Some(line) = buf.get(start..start + len) else {
                continue;
            };
            if line.contains(&b'\n') {
                continue;
            }
            let line = Bytes::copy_from_slice(line);
            if lines.contains(&line) {
                break;
            }
            if let Request::At(report) = parse(&line) {
                if report.at_line() == &line {
                    lines.insert(line);
                    out.push(report);
                    break;
                }
            }
        }
    }
}

/// The lengths a bincode variable-length integer just before `start` could say.
fn lengths_before(buf: &[u8], start: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(3);
    if start >= 1 && buf[start - 1] < 251 {
        out.push(buf[start - 1] as usize);
    }
    if start >= 3 && buf[start - 3] == 251 {
        out.push(u16::from_le_bytes([buf[start - 2], buf[start - 1]]) as usize);
    }
    if start >= 5 && buf[start - 5] == 252 {
        let n = u32::from_le_bytes(buf[start - 4..start].try_into().unwrap_or_default());
        out.push(n as usize);
    }
    out.retain(|&n| (4..=MAX_LINE).contains(&n));
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_length_prefixed_lines_and_skips_damaged_ones() {
        let good =
            b"AT Bailey +0.500000000 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";
        let other = b"AT Bona -0.250000000 phone +10.0-20.0 1700000000.5";
        let mut buf = b"junk AT nope".to_vec();
        buf.push(good.len() as u8);
        buf.extend_from_slice(good);
        buf.extend_from_slice(b"\x00\x01");
        // A damaged copy: one byte of the location flipped.
        let mut bad = other.to_vec();
        bad[20] = b'x';
        buf.push(bad.len() as u8);
        buf.extend_from_slice(&bad);
        buf.push(other.len() as u8);
        buf.extend_from_slice(other);
        // The same line again (an older page of the same record): found once.
        buf.push(good.len() as u8);
        buf.extend_from_slice(good);
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        search(&buf, buf.len(), &mut seen, &mut out);
        let got: Vec<&[u8]> = out.iter().map(|r| &r.at_line()[..]).collect();
        assert_eq!(got, vec![&good[..], &other[..]]);
    }

    #[test]
    fn the_newest_report_of_each_client_is_kept() {
        let older = b"AT Bailey +0.500000000 kiwi +1.0-2.0 100.0";
        let newer = b"AT Bona +0.500000000 kiwi +3.0-4.0 200.0";
        let other = b"AT Bona +0.500000000 pear +3.0-4.0 50.0";
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        for line in [&newer[..], &older[..], &other[..]] {
            bytes.push(line.len() as u8);
            bytes.extend_from_slice(line);
        }
        std::fs::write(dir.path().join("db"), &bytes).unwrap();
        let mut kept: Vec<Vec<u8>> = newest_per_client(dir.path())
            .unwrap()
            .iter()
            .map(|r| r.at_line().to_vec())
            .collect();
        kept.sort();
        assert_eq!(kept, vec![newer.to_vec(), other.to_vec()]);
    }

    #[test]
    fn a_line_across_two_chunks_is_found() {
        let line = b"AT Bailey +0.500000000 kiwi +34.068930-118.445127 1621464827.959498503";
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = vec![0u8; CHUNK - 20];
        bytes.push(line.len() as u8);
        bytes.extend_from_slice(line);
        bytes.extend_from_slice(&[0u8; 100]);
        std::fs::write(dir.path().join("db"), &bytes).unwrap();
        let found = reports_in(dir.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(&found[0].at_line()[..], &line[..]);
    }
}
