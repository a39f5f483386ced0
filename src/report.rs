//! A location report: what an IAMAT said, stamped by the server that received it.
//!
//! A report is exactly the content of its AT line
//! (`AT <server> <time-diff> <client> <location> <timestamp>`), so the line can always be
//! rebuilt byte for byte from it, and a report flooded between servers is just that line.

use std::cmp::Ordering;

use bytes::Bytes;

use crate::protocol::location::Location;
use crate::protocol::number::{TimeDiff, Timestamp};
use crate::protocol::request::IAmAt;

/// One client's report, as the receiving server first stamped it.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The server that received the IAMAT.
    pub server: String,
    /// That server's receive time minus the client's timestamp.
    pub time_diff: TimeDiff,
    /// The client ID, byte for byte.
    pub client: Bytes,
    /// The location as the client wrote it (ASCII, validated).
    pub location_text: Bytes,
    pub location: Location,
    /// The timestamp as the client wrote it (ASCII, validated).
    pub timestamp_text: Bytes,
    pub timestamp: Timestamp,
    /// The AT line, without newline: rendered once, when the report is made, and shared by the
    /// answer, the stored record and every flood.
    line: Bytes,
}

impl Report {
    /// Stamps a client's IAMAT with this server's name and receive time.
    pub fn stamp(request: IAmAt, server: &str, received: Timestamp) -> Report {
        Report::new(
            server.to_owned(),
            TimeDiff::between(received, request.timestamp),
            request.client,
            request.location_text,
            request.location,
            request.timestamp_text,
            request.timestamp,
        )
    }

    /// A report from its parts, which the caller has validated; renders its AT line.
    pub fn new(
        server: String,
        time_diff: TimeDiff,
        client: Bytes,
        location_text: Bytes,
        location: Location,
        timestamp_text: Bytes,
        timestamp: Timestamp,
    ) -> Report {
        let line = render(&server, time_diff, &client, &location_text, &timestamp_text);
        Report::from_stored(
            server,
            time_diff,
            client,
            location_text,
            location,
            timestamp_text,
            timestamp,
            line,
        )
    }

    /// A report read back from the store, whose AT line was rendered when it was first made.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_stored(
        server: String,
        time_diff: TimeDiff,
        client: Bytes,
        location_text: Bytes,
        location: Location,
        timestamp_text: Bytes,
        timestamp: Timestamp,
        line: Bytes,
    ) -> Report {
        Report {
            server,
            time_diff,
            client,
            location_text,
            location,
            timestamp_text,
            timestamp,
            line,
        }
    }

    /// Rebuilds a report from the five operands of an AT line, or `None` if any is malformed.
    /// The time difference must be in the canonical form this server would print, so that the
    /// line is reproduced byte for byte.
    pub fn from_at_fields(f: &[Bytes]) -> Option<Report> {
        let [server, diff, client, location, timestamp] = f else {
            return None;
        };
        let server = std::str::from_utf8(server).ok()?;
        let time_diff = TimeDiff::parse(diff)?;
        if time_diff.to_string().as_bytes() != &diff[..] {
            return None;
        }
        Some(Report::new(
            server.to_owned(),
            time_diff,
            client.clone(),
            location.clone(),
            Location::parse(location)?,
            timestamp.clone(),
            Timestamp::parse(timestamp)?,
        ))
    }

    /// The report of an AT line, for tests.
    #[cfg(test)]
    pub(crate) fn from_line(line: &str) -> Report {
        match crate::protocol::request::parse(&Bytes::copy_from_slice(line.as_bytes())) {
            crate::protocol::request::Request::At(r) => r,
            other => panic!("not an AT line: {line:?} ({other:?})"),
        }
    }

    /// The AT line, without a newline.
    pub fn at_line(&self) -> &Bytes {
        &self.line
    }

    /// The receiving server's clock when the report arrived (client timestamp + difference),
    /// if that is a representable time.
    pub fn received(&self) -> Option<Timestamp> {
        Timestamp::from_nanos(self.timestamp.as_nanos() + self.time_diff.0)
    }

    /// The herd's total order on reports of one client: the newest client timestamp wins.
    /// Among equal timestamps the report *received* first wins (the smaller time difference, so
    /// a client re-sending the same IAMAT changes nothing and floods nothing), then the greater
    /// server name, then the greater AT line, so every server picks the same winner whatever
    /// order reports arrive in.
    pub fn precedence(&self, other: &Report) -> Ordering {
        self.timestamp
            .cmp(&other.timestamp)
            .then_with(|| other.time_diff.cmp(&self.time_diff))
            .then_with(|| self.server.cmp(&other.server))
            .then_with(|| self.line.cmp(&other.line))
    }
}

fn render(
    server: &str,
    time_diff: TimeDiff,
    client: &[u8],
    location_text: &[u8],
    timestamp_text: &[u8],
) -> Bytes {
    use std::io::Write;
    let mut line = Vec::with_capacity(
        24 + server.len() + client.len() + location_text.len() + timestamp_text.len(),
    );
    line.extend_from_slice(b"AT ");
    line.extend_from_slice(server.as_bytes());
    line.push(b' ');
    let _ = write!(line, "{time_diff}");
    line.push(b' ');
    line.extend_from_slice(client);
    line.push(b' ');
    line.extend_from_slice(location_text);
    line.push(b' ');
    line.extend_from_slice(timestamp_text);
    Bytes::from(line)
}
