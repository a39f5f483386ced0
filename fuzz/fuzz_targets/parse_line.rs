//! One line of client input → `parse`. Checks more than "no panic": the empty rule, that an
//! IAMAT's operands are the received bytes themselves and re-parse to the same request, that
//! an AT report round-trips through its own line, and the exact `? ` answer.
#![no_main]

use bytes::Bytes;
use herd::protocol::request::{invalid_answer, is_space, parse, Request};
use libfuzzer_sys::fuzz_target;

fn is_within(part: &Bytes, whole: &Bytes) -> bool {
    let (start, end) = (
        whole.as_ptr() as usize,
        whole.as_ptr() as usize + whole.len(),
    );
    let p = part.as_ptr() as usize;
    part.is_empty() || (p >= start && p + part.len() <= end)
}

fn join(parts: &[&[u8]]) -> Bytes {
    Bytes::from(parts.join(&b' '))
}

fuzz_target!(|data: &[u8]| {
    let line = Bytes::copy_from_slice(data);
    let request = parse(&line);

    let blank = data.iter().all(|&b| is_space(b));
    assert_eq!(
        blank,
        request == Request::Empty,
        "Empty iff all white space"
    );

    match &request {
        Request::IAmAt(r) => {
            for operand in [&r.client, &r.location_text, &r.timestamp_text] {
                assert!(
                    is_within(operand, &line),
                    "operand is not a slice of the line"
                );
                assert!(!operand.is_empty() && !operand.iter().any(|&b| is_space(b)));
            }
            let again = join(&[b"IAMAT", &r.client, &r.location_text, &r.timestamp_text]);
            assert_eq!(parse(&again), request, "IAMAT does not re-parse");
            assert!((-90.0..=90.0).contains(&r.location.latitude));
            assert!((-180.0..=180.0).contains(&r.location.longitude));
            assert!(r.timestamp.nanos < 1_000_000_000);
        }
        Request::WhatsAt(w) => {
            assert!(is_within(&w.client, &line));
            assert!((1..=20).contains(&w.bound));
            assert!((1..=50_000_000).contains(&w.radius.millimetres));
            let bound = w.bound.to_string();
            let again = join(&[b"WHATSAT", &w.client, b"1", bound.as_bytes()]);
            let Request::WhatsAt(w2) = parse(&again) else {
                panic!("WHATSAT does not re-parse");
            };
            assert_eq!((&w2.client, w2.bound), (&w.client, w.bound));
        }
        Request::At(report) => {
            let at = report.at_line().clone();
            assert_eq!(parse(&at), request, "AT line does not round-trip");
            assert!(is_within(&report.client, &line));
        }
        _ => {}
    }

    let mut expected = b"? ".to_vec();
    expected.extend_from_slice(data);
    expected.push(b'\n');
    assert_eq!(invalid_answer(data), expected);
});
