//! One line of input → one [`Request`]: the whole grammar of PROTOCOL.md, and the herd's own
//! peer lines, as a pure function over bytes.
//!
//! A line is split on the protocol's six white-space bytes only. Client IDs are any run of
//! other bytes, UTF-8 or not, and are kept as the exact bytes received. Anything that does not
//! match a rule is [`Request::Invalid`]; whether a peer-only line is *allowed* on a connection
//! is the connection's business, not the parser's.

use bytes::Bytes;

use super::location::Location;
use super::number::{parse_bound, Radius, Timestamp};
use crate::report::Report;

/// The protocol's white space: space, tab, LF, CR, FF and VT. Nothing else.
pub fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c | 0x0b)
}

/// Splits a line into its fields, as sub-slices of the shared line buffer.
pub fn fields(line: &Bytes) -> Vec<Bytes> {
    line.split(|&b| is_space(b))
        .filter(|f| !f.is_empty())
        .map(|f| line.slice_ref(f))
        .collect()
}

/// A client's location report, as received (before the server stamps it).
#[derive(Clone, Debug, PartialEq)]
pub struct IAmAt {
    pub client: Bytes,
    pub location_text: Bytes,
    pub location: Location,
    pub timestamp_text: Bytes,
    pub timestamp: Timestamp,
}

/// A request for places near a client's last known location.
#[derive(Clone, Debug, PartialEq)]
pub struct WhatsAt {
    pub client: Bytes,
    pub radius: Radius,
    pub bound: usize,
}

/// The herd's peer handshake and synchronisation lines (see `peer::auth` and `peer::sync`).
#[derive(Clone, Debug, PartialEq)]
pub enum PeerLine {
    /// `HERD HELLO <dialer> <listener> <nonce>`: a server asks to become a peer link.
    Hello {
        dialer: String,
        listener: String,
        nonce: Bytes,
    },
    /// `HERD CHALLENGE <nonce> <mac>`: the listener's nonce and its proof of the secret.
    Challenge { nonce: Bytes, mac: Bytes },
    /// `HERD PROOF <mac>`: the dialer's proof of the secret.
    Proof { mac: Bytes },
    /// `HERD WELCOME`: the link is established.
    Welcome,
    /// `SYNC <Q|W|A> <round> <payload>`: an anti-entropy message of round `round` (decimal);
    /// the payload is base64 (URL-safe, unpadded) and its meaning is `peer::sync`'s.
    Sync {
        kind: SyncKind,
        round: u64,
        payload: Bytes,
    },
}

/// The three anti-entropy messages (see `peer::sync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// `Q`: the asker's fingerprints of some ranges.
    Query,
    /// `W`: the asker wants these records.
    Want,
    /// `A`: the answer to the asker's oldest open `Q` or `W` of that round.
    Answer,
}

/// What one line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// White space only: ignored, no answer.
    Empty,
    IAmAt(IAmAt),
    WhatsAt(WhatsAt),
    /// A flooded report (peer links only).
    At(Report),
    /// Peer handshake or sync (peer links only, except `HERD HELLO`/`HERD PROOF`).
    Peer(PeerLine),
    /// Anything else: answered with `? ` and the line.
    Invalid,
}

/// Parses one line (without its terminator).
pub fn parse(line: &Bytes) -> Request {
    let f = fields(line);
    let Some(command) = f.first() else {
        return Request::Empty;
    };
    let parsed = match (&command[..], f.len()) {
        (b"IAMAT", 4) => parse_iamat(&f[1], &f[2], &f[3]).map(Request::IAmAt),
        (b"WHATSAT", 4) => parse_whatsat(&f[1], &f[2], &f[3]).map(Request::WhatsAt),
        (b"AT", 6) => Report::from_at_fields(&f[1..]).map(Request::At),
        (b"HERD", _) | (b"SYNC", _) => parse_peer(&f).map(Request::Peer),
        _ => None,
    };
    parsed.unwrap_or(Request::Invalid)
}

fn parse_iamat(client: &Bytes, location: &Bytes, timestamp: &Bytes) -> Option<IAmAt> {
    Some(IAmAt {
        client: client.clone(),
        location: Location::parse(location)?,
        location_text: location.clone(),
        timestamp: Timestamp::parse(timestamp)?,
        timestamp_text: timestamp.clone(),
    })
}

fn parse_whatsat(client: &Bytes, radius: &Bytes, bound: &Bytes) -> Option<WhatsAt> {
    Some(WhatsAt {
        client: client.clone(),
        radius: Radius::parse(radius)?,
        bound: parse_bound(bound)?,
    })
}

fn parse_peer(f: &[Bytes]) -> Option<PeerLine> {
    let word = |b: &Bytes| std::str::from_utf8(b).ok().map(str::to_owned);
    let token = |b: &Bytes| is_hex_token(b).then(|| b.clone());
    // Digits only: Rust's integer parsers would also take a leading `+`.
    let number = |b: &Bytes| {
        let digits = b.iter().all(u8::is_ascii_digit);
        digits
            .then(|| std::str::from_utf8(b).ok()?.parse::<u64>().ok())
            .flatten()
    };
    let payload = |b: &Bytes| {
        let ok = b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'));
        ok.then(|| b.clone())
    };
    let line = match (&f[0][..], &f[1..]) {
        (b"HERD", [h, dialer, listener, nonce]) if &h[..] == b"HELLO" => PeerLine::Hello {
            dialer: word(dialer)?,
            listener: word(listener)?,
            nonce: token(nonce)?,
        },
        (b"HERD", [c, nonce, mac]) if &c[..] == b"CHALLENGE" => PeerLine::Challenge {
            nonce: token(nonce)?,
            mac: token(mac)?,
        },
        (b"HERD", [p, mac]) if &p[..] == b"PROOF" => PeerLine::Proof { mac: token(mac)? },
        (b"HERD", [w]) if &w[..] == b"WELCOME" => PeerLine::Welcome,
        (b"SYNC", [k, round, data]) => PeerLine::Sync {
            kind: match &k[..] {
                b"Q" => SyncKind::Query,
                b"W" => SyncKind::Want,
                b"A" => SyncKind::Answer,
                _ => return None,
            },
            round: number(round)?,
            payload: payload(data)?,
        },
        _ => return None,
    };
    Some(line)
}

fn is_hex_token(b: &[u8]) -> bool {
    !b.is_empty() && b.len() <= 128 && b.iter().all(u8::is_ascii_hexdigit)
}

/// The answer to an invalid line: `? `, the line as received, and a newline.
pub fn invalid_answer(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + 3);
    out.extend_from_slice(b"? ");
    out.extend_from_slice(line);
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::number::TimeDiff;

    fn p(s: &[u8]) -> Request {
        parse(&Bytes::copy_from_slice(s))
    }

    #[test]
    fn iamat_keeps_operands_byte_for_byte() {
        let Request::IAmAt(r) =
            p(b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503")
        else {
            panic!("not an IAMAT");
        };
        assert_eq!(&r.client[..], b"kiwi.cs.ucla.edu");
        assert_eq!(&r.location_text[..], b"+34.068930-118.445127");
        assert_eq!(&r.timestamp_text[..], b"1621464827.959498503");
        assert_eq!(
            r.timestamp,
            Timestamp {
                secs: 1621464827,
                nanos: 959498503
            }
        );
    }

    #[test]
    fn all_six_white_space_bytes_separate_fields() {
        let Request::IAmAt(r) = p(b" \t\x0bIAMAT\x0c\x0ckiwi\r \t+1+2\x0b\x0c 3 \r") else {
            panic!("not an IAMAT");
        };
        assert_eq!(&r.client[..], b"kiwi");
        assert_eq!(&r.timestamp_text[..], b"3");
    }

    #[test]
    fn other_spaces_are_not_white_space() {
        // U+00A0 (no-break space) is part of a field, so the command has too few operands.
        assert_eq!(p("IAMAT\u{a0}kiwi +1+2 3".as_bytes()), Request::Invalid);
        // ... and inside a client ID it is simply part of the ID.
        let Request::IAmAt(r) = p("IAMAT ki\u{a0}wi +1+2 3".as_bytes()) else {
            panic!()
        };
        assert_eq!(&r.client[..], "ki\u{a0}wi".as_bytes());
    }

    #[test]
    fn client_ids_need_not_be_utf8() {
        let Request::IAmAt(r) = p(b"IAMAT \xff\xfe\x00id +1+2 3") else {
            panic!()
        };
        assert_eq!(&r.client[..], b"\xff\xfe\x00id");
    }

    #[test]
    fn empty_lines_are_ignored() {
        assert_eq!(p(b""), Request::Empty);
        assert_eq!(p(b" \t\r\x0b\x0c "), Request::Empty);
    }

    #[test]
    fn whatsat_parses() {
        let Request::WhatsAt(w) = p(b"WHATSAT kiwi.cs.ucla.edu 10 5") else {
            panic!()
        };
        assert_eq!(&w.client[..], b"kiwi.cs.ucla.edu");
        assert_eq!(w.radius.millimetres, 10_000_000);
        assert_eq!(w.bound, 5);
    }

    #[test]
    fn every_malformed_request_is_invalid() {
        for bad in [
            &b"iamat kiwi +1+2 3"[..],
            b"Iamat kiwi +1+2 3",
            b"IAMAT kiwi +1+2",
            b"IAMAT kiwi +1+2 3 4",
            b"IAMAT kiwi 1+2 3",
            b"IAMAT kiwi +1+2 -3",
            b"IAMAT kiwi +1+2 3.",
            b"IAMAT kiwi +1+2 1e5",
            b"IAMAT kiwi +91+2 3",
            b"IAMAT kiwi +1+2 3.1234567891",
            b"IAMAT",
            b"WHATSAT kiwi 10",
            b"WHATSAT kiwi 10 5 5",
            b"WHATSAT kiwi 0 5",
            b"WHATSAT kiwi 51 5",
            b"WHATSAT kiwi 10 0",
            b"WHATSAT kiwi 10 21",
            b"WHATSAT kiwi -10 5",
            b"WHATSAT kiwi 10 5.0",
            b"whatsat kiwi 10 5",
            b"HELLO",
            b"\x00\x01\x02",
            b"AT Clark +0.1 kiwi +1+2",
            b"AT Clark 0.100000000 kiwi +1+2 3",
            b"AT Clark +0.100000000 kiwi +1+2 3x",
            b"HERD HELLO a b",
            b"HERD HELLO a b zz",
            b"SYNC Q x AAAA",
            b"SYNC Q -1 AAAA",
            b"SYNC Q 1",
            b"SYNC Q +1 AAAA",
            b"SYNC A 1 AA=A",
            b"SYNC Q 18446744073709551616 AAAA",
            b"SYNC NOPE 1 AAAA",
            b"SYNC PULL 0 0 1",
        ] {
            assert_eq!(
                p(bad),
                Request::Invalid,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn at_lines_parse_into_reports() {
        let Request::At(r) = p(
            b"AT Clark +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503",
        ) else {
            panic!()
        };
        assert_eq!(r.server, "Clark");
        assert_eq!(r.time_diff, TimeDiff(263_873_386));
        assert_eq!(
            r.at_line().to_vec(),
            b"AT Clark +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503"
                .to_vec()
        );
    }

    #[test]
    fn peer_lines_parse() {
        assert_eq!(
            p(b"HERD HELLO Bona Clark 0a1b"),
            Request::Peer(PeerLine::Hello {
                dialer: "Bona".into(),
                listener: "Clark".into(),
                nonce: Bytes::from_static(b"0a1b")
            })
        );
        assert_eq!(p(b"HERD WELCOME"), Request::Peer(PeerLine::Welcome));
        assert_eq!(
            p(b"SYNC Q 12 AAEC-_"),
            Request::Peer(PeerLine::Sync {
                kind: SyncKind::Query,
                round: 12,
                payload: Bytes::from_static(b"AAEC-_")
            })
        );
        assert_eq!(
            p(b"SYNC A 0 A"),
            Request::Peer(PeerLine::Sync {
                kind: SyncKind::Answer,
                round: 0,
                payload: Bytes::from_static(b"A")
            })
        );
    }

    #[test]
    fn invalid_answer_echoes_the_line() {
        assert_eq!(invalid_answer(b"IAMAT x"), b"? IAMAT x\n".to_vec());
    }
}
