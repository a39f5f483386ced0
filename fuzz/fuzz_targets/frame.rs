//! Bytes in arbitrary chunks → `LineCodec`. The first input byte picks a small line limit;
//! the rest is the stream, cut into chunks at every 0xFF byte (which is dropped). Whatever the
//! chunking, the frames must be exactly those of a plain model of the framing rules: split at
//! `\n`, a `\r` before it belongs to the terminator, an unterminated last line is still a
//! line, and any line over the limit is `TooLong` with its true length and first bytes.
#![no_main]

use bytes::{Bytes, BytesMut};
use herd::protocol::frame::{Frame, LineCodec, TOO_LONG_ECHO};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fn run(max: usize, chunks: &[&[u8]]) -> Vec<Frame> {
    let mut codec = LineCodec::new(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(frame) = codec.decode(&mut buf).expect("decode never fails") {
            out.push(frame);
        }
    }
    while let Some(frame) = codec.decode_eof(&mut buf).expect("decode_eof never fails") {
        out.push(frame);
    }
    assert!(buf.is_empty(), "bytes left after EOF");
    out
}

fn model(max: usize, stream: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let (raw, line) = match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => {
                let raw = &rest[..nl];
                rest = &rest[nl + 1..];
                (raw, raw.strip_suffix(b"\r").unwrap_or(raw))
            }
            None => {
                let raw = rest;
                rest = &[];
                (raw, raw)
            }
        };
        out.push(if line.len() > max {
            Frame::TooLong {
                start: Bytes::copy_from_slice(&raw[..TOO_LONG_ECHO.min(raw.len())]),
                length: line.len() as u64,
            }
        } else {
            Frame::Line(Bytes::copy_from_slice(line))
        });
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(limit % 64);
    let chunks: Vec<&[u8]> = rest.split(|&b| b == 0xFF).collect();
    let stream: Vec<u8> = chunks.concat();

    let frames = run(max, &chunks);
    for frame in &frames {
        match frame {
            Frame::Line(line) => {
                assert!(!line.contains(&b'\n'), "a line holds a newline");
                assert!(
                    line.len() <= max,
                    "a line of {} bytes passed a limit of {max}",
                    line.len()
                );
            }
            Frame::TooLong { start, length } => {
                assert!(
                    *length > max as u64,
                    "TooLong of {length} bytes under a limit of {max}"
                );
                assert!(start.len() <= TOO_LONG_ECHO);
            }
        }
    }
    assert_eq!(frames, model(max, &stream), "frames differ from the model");
});
