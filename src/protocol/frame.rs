//! Bytes → lines: the protocol's framing, with a bound on line length.
//!
//! A line ends at `\n`; a `\r` before it is part of the terminator. At EOF an unterminated last
//! line is still a line. A line longer than the limit is never buffered whole: the decoder
//! keeps its first bytes (for the `? ` answer), discards the rest as it arrives and reports
//! [`Frame::TooLong`] once the line ends, so memory stays bounded whatever a client sends.
//! "Not enough bytes yet" is the normal `Ok(None)`, not an error.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// How many bytes of an over-long line are echoed in its `? ` answer.
pub const TOO_LONG_ECHO: usize = 256;

/// One framed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, without its terminator.
    Line(Bytes),
    /// A line past the limit: its first [`TOO_LONG_ECHO`] bytes and its full length.
    TooLong { start: Bytes, length: u64 },
}

/// The line decoder. `max_line` counts the bytes of a line without its terminator.
#[derive(Debug)]
pub struct LineCodec {
    max_line: usize,
    /// Where to resume searching for `\n` in the buffer.
    scanned: usize,
    /// Set while discarding an over-long line.
    discarding: Option<Discarding>,
}

/// An over-long line being discarded. Its start is kept until it holds [`TOO_LONG_ECHO`]
/// bytes, however the line was cut into reads, so the answer does not depend on them.
#[derive(Debug)]
struct Discarding {
    start: BytesMut,
    length: u64,
    /// Whether the last byte seen was `\r` (part of the terminator if `\n` follows).
    cr: bool,
}

impl Discarding {
    fn new(part: &[u8]) -> Discarding {
        let mut d = Discarding {
            start: BytesMut::new(),
            length: 0,
            cr: false,
        };
        d.see(part);
        d
    }

    fn see(&mut self, part: &[u8]) {
        let room = TOO_LONG_ECHO - self.start.len();
        self.start.extend_from_slice(&part[..room.min(part.len())]);
        self.length += part.len() as u64;
        if let Some(&last) = part.last() {
            self.cr = last == b'\r';
        }
    }

    fn frame(self, terminated: bool) -> Frame {
        Frame::TooLong {
            start: self.start.freeze(),
            length: self.length - u64::from(terminated && self.cr),
        }
    }
}

impl LineCodec {
    pub fn new(max_line: usize) -> LineCodec {
        LineCodec {
            max_line,
            scanned: 0,
            discarding: None,
        }
    }
}

fn strip_cr(mut line: BytesMut) -> Bytes {
    if line.last() == Some(&b'\r') {
        line.truncate(line.len() - 1);
    }
    line.freeze()
}

impl Decoder for LineCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        if let Some(discarding) = self.discarding.as_mut() {
            let nl = buf.iter().position(|&b| b == b'\n');
            discarding.see(&buf[..nl.unwrap_or(buf.len())]);
            return match nl {
                Some(nl) => {
                    buf.advance(nl + 1);
                    let discarding = self.discarding.take().expect("discarding");
                    Ok(Some(discarding.frame(true)))
                }
                None => {
                    buf.clear();
                    Ok(None)
                }
            };
        }
        let from = self.scanned.min(buf.len());
        match buf[from..].iter().position(|&b| b == b'\n') {
            Some(offset) => {
                let nl = from + offset;
                self.scanned = 0;
                let mut line = buf.split_to(nl + 1);
                line.truncate(nl);
                let length = line.len() - usize::from(line.last() == Some(&b'\r'));
                if length > self.max_line {
                    let start = Bytes::copy_from_slice(&line[..TOO_LONG_ECHO.min(line.len())]);
                    return Ok(Some(Frame::TooLong {
                        start,
                        length: length as u64,
                    }));
                }
                Ok(Some(Frame::Line(strip_cr(line))))
            }
            // One byte of slack for a `\r` that may still be followed by `\n`.
            None if buf.len() > self.max_line + 1 => {
                self.discarding = Some(Discarding::new(buf));
                self.scanned = 0;
                buf.clear();
                Ok(None)
            }
            None => {
                self.scanned = buf.len();
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        if let Some(discarding) = self.discarding.take() {
            // Unterminated: a trailing `\r` counts as part of the line.
            return Ok(Some(discarding.frame(false)));
        }
        if buf.is_empty() {
            return Ok(None);
        }
        self.scanned = 0;
        let line = buf.split_to(buf.len());
        // Unterminated: a trailing `\r` is part of the line, not half a terminator, so it
        // counts against the limit too (`decode` held back one byte of slack for it).
        if line.len() > self.max_line {
            return Ok(Some(Discarding::new(&line).frame(false)));
        }
        Ok(Some(Frame::Line(line.freeze())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(codec: &mut LineCodec, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            out.push(f);
        }
        out
    }

    fn line(s: &[u8]) -> Frame {
        Frame::Line(Bytes::copy_from_slice(s))
    }

    #[test]
    fn splits_on_lf_and_crlf() {
        let mut c = LineCodec::new(100);
        assert_eq!(
            frames(&mut c, &[b"a\nb\r\nc"]),
            vec![line(b"a"), line(b"b"), line(b"c")]
        );
    }

    #[test]
    fn lines_may_arrive_a_byte_at_a_time() {
        let mut c = LineCodec::new(100);
        let input: Vec<&[u8]> = b"IAMAT x\r\nWHATSAT\n".chunks(1).collect();
        assert_eq!(
            frames(&mut c, &input),
            vec![line(b"IAMAT x"), line(b"WHATSAT")]
        );
    }

    #[test]
    fn a_lone_cr_inside_a_line_is_kept() {
        let mut c = LineCodec::new(100);
        assert_eq!(frames(&mut c, &[b"a\rb\n"]), vec![line(b"a\rb")]);
    }

    #[test]
    fn unterminated_last_line_is_a_line() {
        let mut c = LineCodec::new(100);
        assert_eq!(frames(&mut c, &[b"x\ny"]), vec![line(b"x"), line(b"y")]);
        let mut c = LineCodec::new(100);
        assert_eq!(frames(&mut c, &[b"x\n"]), vec![line(b"x")]);
        let mut c = LineCodec::new(100);
        assert_eq!(frames(&mut c, &[b"x\r"]), vec![line(b"x\r")]);
    }

    #[test]
    fn over_long_lines_are_discarded_with_their_start() {
        let mut c = LineCodec::new(8);
        let long = [b'x'; 1000];
        let got = frames(&mut c, &[&long[..300], &long[300..], b"\nok\n"]);
        assert_eq!(got.len(), 2);
        match &got[0] {
            Frame::TooLong { start, length } => {
                assert_eq!(start.len(), TOO_LONG_ECHO);
                assert_eq!(*length, 1000);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(got[1], line(b"ok"));
    }

    #[test]
    fn a_line_exactly_at_the_limit_passes_even_with_crlf() {
        let mut c = LineCodec::new(4);
        assert_eq!(frames(&mut c, &[b"abcd\r", b"\nabcde\n"])[0], line(b"abcd"));
    }

    #[test]
    fn the_echoed_start_does_not_depend_on_how_the_line_was_read() {
        let long = [b'x'; 300];
        let whole = frames(&mut LineCodec::new(8), &[&long[..], b"\r\n"]);
        let cut = frames(
            &mut LineCodec::new(8),
            &[&long[..255], &long[255..], b"\r", b"\n"],
        );
        assert_eq!(whole, cut);
        assert!(
            matches!(&whole[..], [Frame::TooLong { start, length: 300 }] if start.len() == TOO_LONG_ECHO),
            "{whole:?}"
        );
    }

    #[test]
    fn an_unterminated_line_one_byte_over_the_limit_is_too_long() {
        let got = frames(&mut LineCodec::new(4), &[b"abcde"]);
        assert!(
            matches!(got[..], [Frame::TooLong { length: 5, .. }]),
            "{got:?}"
        );
        let got = frames(&mut LineCodec::new(4), &[b"abcd\r"]);
        assert!(
            matches!(got[..], [Frame::TooLong { length: 5, .. }]),
            "{got:?}"
        );
    }

    #[test]
    fn an_over_long_unterminated_line_at_eof_is_reported() {
        let mut c = LineCodec::new(4);
        let got = frames(&mut c, &[b"abcdefghij"]);
        assert!(
            matches!(got[..], [Frame::TooLong { length: 10, .. }]),
            "{got:?}"
        );
    }
}
