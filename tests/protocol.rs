//! Every rule of PROTOCOL.md as byte-exact request/answer pairs against one real node.
//!
//! Each test starts its own node ("Solo", no links) on fresh ports, so tests run in parallel
//! and never see each other's clients.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::*;

const LOC: &str = "+34.068930-118.445127";

fn solo() -> Herd {
    let mut herd = Herd::new(&["Solo"], &[], "");
    herd.start("Solo");
    herd
}

/// A lone node that accepts timestamps up to the largest `max_future_secs` a config can hold
/// (TOML integers are 64-bit signed), for checks of exact arithmetic on far-future timestamps.
fn solo_without_future_bound() -> Herd {
    let mut herd = Herd::new(
        &["Solo"],
        &[],
        "[limits]\nmax_future_secs = 9223372036854775807\n",
    );
    herd.start("Solo");
    herd
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

/// Asserts that `answer` is `AT Solo <diff> <operands>\n` and returns the difference in ns.
fn assert_at(answer: &[u8], operands: &[u8]) -> i128 {
    assert!(answer.ends_with(b"\n"), "{}", show(answer));
    assert_eq!(
        answer.iter().filter(|&&b| b == b'\n').count(),
        1,
        "one line: {}",
        show(answer)
    );
    let at = parse_at(answer);
    assert_eq!(at.server, b"Solo", "{}", show(answer));
    assert_eq!(at.operands, operands, "{}", show(answer));
    time_diff_nanos(&at.diff)
}

/// Sends one IAMAT for `timestamp` and checks the difference is exactly the node's receive
/// time minus the timestamp: within the window of the test's own clock around the request.
fn assert_diff_window(herd: &Herd, timestamp: &str) -> i128 {
    let ts = ts_nanos(timestamp);
    let operands = format!("kiwi {LOC} {timestamp}");
    let before = now_nanos();
    let answer = herd.ask("Solo", format!("IAMAT {operands}\n").as_bytes());
    let after = now_nanos();
    let diff = assert_at(&answer, operands.as_bytes());
    assert!(
        before - ts <= diff && diff <= after - ts,
        "time difference {diff} ns for timestamp {timestamp} is outside [{}, {}]: {}",
        before - ts,
        after - ts,
        show(&answer)
    );
    diff
}

#[test]
fn iamat_answer_is_at_server_signed_exact_difference_and_operands() {
    // Far-future timestamps below are beyond the default bound of an hour ahead.
    let herd = solo_without_future_bound();
    // A client 1.5 s behind the server: a positive difference.
    let past = ts_of_nanos(now_nanos() - 1_500_000_000);
    let diff = assert_diff_window(&herd, &past);
    assert!(diff > 0);

    // The classic example, years in the past, and every number of fractional digits.
    for ts in [
        "1621464827.959498503",
        "1621464827",
        "1621464827.9",
        "1621464827.95",
        "1621464827.959498",
        "0",
        "0.000000001",
    ] {
        assert_diff_window(&herd, ts);
    }

    // A timestamp in the future: a negative difference, written with '-'.
    let future = ts_of_nanos(now_nanos() + 100_250_000_000);
    let answer = herd.ask("Solo", format!("IAMAT kiwi {LOC} {future}\n").as_bytes());
    assert!(
        answer.starts_with(b"AT Solo -100.") || answer.starts_with(b"AT Solo -99."),
        "{}",
        show(&answer)
    );
    assert!(assert_diff_window(&herd, &future) < 0);

    // Less than a second ahead: the sign is still there ("-0.", not "0.-" or "+-0.").
    let soon = ts_of_nanos(now_nanos() + 900_000_000);
    let answer = herd.ask("Solo", format!("IAMAT kiwi {LOC} {soon}\n").as_bytes());
    assert!(answer.starts_with(b"AT Solo -0."), "{}", show(&answer));

    // Far in the future, with nineteen significant digits: computed exactly.
    let far = "99999999999.999999999";
    let diff = assert_diff_window(&herd, far);
    assert!(diff < -90_000_000_000_000_000_000);
}

#[test]
fn operands_are_echoed_byte_for_byte() {
    let herd = solo();
    let mut client = Client::connect(&herd.addr("Solo"));
    let ids: [&[u8]; 9] = [
        b"kiwi.cs.ucla.edu",
        b"\xff\xfe\x80\x81not-utf8",
        b"ki\xa0wi",
        "ki\u{a0}wi".as_bytes(),
        "\u{1f95d}\u{2003}kiwi".as_bytes(),
        b"a\x1cb\x1dc\x1ed\x1fe\x85f",
        b"\x01\x7f\x00nul",
        b"\"quoted'\\back",
        b"?",
    ];
    let operand_pairs = [
        (LOC, "1621464827.959498503"),
        ("+034.0689300-118.4451270", "0001621464827.100"),
        ("+34-118", "1621464827"),
        ("-00.0+000.000", "1.5"),
    ];
    for (i, id) in ids.iter().enumerate() {
        let (loc, ts) = operand_pairs[i % operand_pairs.len()];
        let operands = cat(&[id, b" ", loc.as_bytes(), b" ", ts.as_bytes()]);
        let answer = client.request(&cat(&[b"IAMAT ", &operands]));
        assert_at(&answer, &operands);
        // WHATSAT for the same bytes returns that very line.
        client.send(&cat(&[b"WHATSAT ", id, b" 10 3\n"]));
        let whatsat = client.whatsat_answer();
        assert_eq!(
            check_whatsat_answer(&whatsat, 3),
            answer.strip_suffix(b"\n").unwrap(),
            "{}",
            show(&whatsat)
        );
    }
    // IDs differing only in a byte are different clients.
    client.send(b"WHATSAT \xff\xfe\x80\x82not-utf8 10 3\n");
    assert_eq!(
        client.line(),
        b"? WHATSAT \xff\xfe\x80\x82not-utf8 10 3\n".to_vec()
    );
}

#[test]
fn the_six_white_space_bytes_separate_fields_and_pad_lines() {
    let herd = solo();
    let mut client = Client::connect(&herd.addr("Solo"));
    // Every white-space byte between fields, before the command and after the last operand.
    let lines: [&[u8]; 5] = [
        b"IAMAT kiwi +1+2 3",
        b"\tIAMAT\t\tkiwi\t+1+2\t3\t",
        b" \t\x0b\x0c\rIAMAT\x0b\x0c\r kiwi \r\x0b+1+2\x0c\t \x0b3 \x0c\r\x0b",
        b"\x0cIAMAT\x0ckiwi\x0c+1+2\x0c3\x0c",
        b"\x0bIAMAT\x0bkiwi\x0b+1+2\x0b3\x0b",
    ];
    for line in lines {
        let answer = client.request(line);
        assert_at(&answer, b"kiwi +1+2 3");
    }
    let answer = client.request(b"IAMAT\rkiwi\r+1+2\r4");
    assert_at(&answer, b"kiwi +1+2 4");
    let stored = answer;
    for line in [
        &b"WHATSAT\tkiwi\x0b10\x0c1"[..],
        b"  \r\x0b WHATSAT   kiwi\t\t10 \r 1 \x0c\x0b\r",
    ] {
        client.send(&cat(&[line, b"\n"]));
        let whatsat = client.whatsat_answer();
        assert_eq!(
            check_whatsat_answer(&whatsat, 1),
            stored.strip_suffix(b"\n").unwrap()
        );
    }
}

#[test]
fn lf_and_crlf_both_end_a_line_and_are_not_echoed() {
    let herd = solo();
    let answer = herd.ask(
        "Solo",
        b"IAMAT kiwi +1+2 3\r\nIAMAT kiwi +1+2 4\nbad line\r\nbad line two\nWHATSAT kiwi 10 1\r\n",
    );
    let mut lines = answer.split_inclusive(|&b| b == b'\n');
    assert_at(lines.next().unwrap(), b"kiwi +1+2 3");
    let newest = lines.next().unwrap();
    assert_at(newest, b"kiwi +1+2 4");
    assert_eq!(lines.next().unwrap(), b"? bad line\n");
    assert_eq!(lines.next().unwrap(), b"? bad line two\n");
    let rest: Vec<u8> = lines.flatten().copied().collect();
    assert_eq!(check_whatsat_answer(&rest, 1), &newest[..newest.len() - 1]);

    // Only one CR belongs to the terminator; an earlier one is part of the line.
    assert_eq!(herd.ask("Solo", b"bad\r\r\n"), b"? bad\r\n".to_vec());
    // A lone CR does not end a line.
    assert_eq!(herd.ask("Solo", b"bad\rline\n"), b"? bad\rline\n".to_vec());
}

#[test]
fn empty_and_white_space_lines_get_no_answer() {
    let herd = solo();
    assert_eq!(herd.ask("Solo", b"\n\r\n \n\t\x0b\x0c\r\n   \r\n"), b"");
    assert_eq!(herd.ask("Solo", b"  \t "), b"", "unterminated blank line");
    let answer = herd.ask(
        "Solo",
        b"\n\n \t\nIAMAT kiwi +1+2 3\n\r\n\x0c\x0b\nnope\n\n",
    );
    let mut lines = answer.split_inclusive(|&b| b == b'\n');
    assert_at(lines.next().unwrap(), b"kiwi +1+2 3");
    assert_eq!(lines.next().unwrap(), b"? nope\n");
    assert_eq!(lines.next(), None);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let herd = solo();
    // One write: per round an IAMAT with a newer timestamp, a WHATSAT that must see it, an
    // invalid line and a blank line; plus requests for other clients in between.
    let rounds = 60;
    let mut req = Vec::new();
    for i in 1..=rounds {
        req.extend_from_slice(format!("IAMAT pipe +{i}-{i} {i}\n").as_bytes());
        req.extend_from_slice(format!("WHATSAT pipe 10 {}\n", 1 + i % 20).as_bytes());
        req.extend_from_slice(format!("nope {i}\n").as_bytes());
        req.extend_from_slice(b" \t\n");
        req.extend_from_slice(format!("IAMAT other{i} +0+0 {i}.5\n").as_bytes());
    }
    let answer = herd.ask("Solo", &req);
    let mut rest = &answer[..];
    let next_line = |rest: &mut &[u8]| -> Vec<u8> {
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or_else(|| panic!("answers end early: {}", show(rest)));
        let line = rest[..=nl].to_vec();
        *rest = &rest[nl + 1..];
        line
    };
    for i in 1..=rounds {
        let at = next_line(&mut rest);
        assert_at(&at, format!("pipe +{i}-{i} {i}").as_bytes());
        let end = rest
            .windows(2)
            .position(|w| w == b"\n\n")
            .expect("a WHATSAT answer");
        let whatsat = &rest[..end + 2];
        rest = &rest[end + 2..];
        assert_eq!(
            check_whatsat_answer(whatsat, 1 + i % 20),
            &at[..at.len() - 1],
            "round {i}: WHATSAT must see the IAMAT just before it"
        );
        assert_eq!(next_line(&mut rest), format!("? nope {i}\n").into_bytes());
        let other = next_line(&mut rest);
        assert_at(&other, format!("other{i} +0+0 {i}.5").as_bytes());
    }
    assert!(rest.is_empty(), "extra bytes: {}", show(rest));
}

#[test]
fn an_unterminated_last_line_at_eof_is_answered() {
    let herd = solo();
    let answer = herd.ask("Solo", b"IAMAT kiwi +1+2 3");
    assert_at(&answer, b"kiwi +1+2 3");
    assert_eq!(herd.ask("Solo", b"nonsense"), b"? nonsense\n".to_vec());
    let answer = herd.ask("Solo", b"nope\nWHATSAT kiwi 10 2");
    let rest = answer
        .strip_prefix(b"? nope\n")
        .expect("first answer first");
    check_whatsat_answer(rest, 2);
}

/// One request, a half-close, and a single `read`, as many existing clients do.
fn single_read(addr: &str, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(request).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let n = s.read(&mut buf).unwrap();
    buf.truncate(n);
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "the answer came in more than one piece: {} then {}",
        show(&buf),
        show(&rest)
    );
    buf
}

#[test]
fn each_answer_arrives_whole_to_a_single_read() {
    let herd = solo();
    let addr = herd.addr("Solo");
    let at = single_read(
        &addr,
        b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503\n",
    );
    assert_at(
        &at,
        b"kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503",
    );
    for bound in [1, 5, 20] {
        let answer = single_read(
            &addr,
            format!("WHATSAT kiwi.cs.ucla.edu 50 {bound}\n").as_bytes(),
        );
        assert_eq!(check_whatsat_answer(&answer, bound), &at[..at.len() - 1]);
    }
    assert_eq!(
        single_read(&addr, b"WHATSAT nobody 10 5\n"),
        b"? WHATSAT nobody 10 5\n".to_vec()
    );
    // The longest client ID the default `max_client_id_bytes` takes, and a longer one: both
    // long answers, each in one piece.
    let long = format!("IAMAT {} +1+2 3", "x".repeat(1024));
    let answer = single_read(&addr, long.as_bytes());
    assert_at(&answer, format!("{} +1+2 3", "x".repeat(1024)).as_bytes());
    let longer = format!("IAMAT {} +1+2 3", "x".repeat(4000));
    assert_eq!(
        single_read(&addr, longer.as_bytes()),
        format!("? {longer}\n").into_bytes()
    );
}

/// Lines every one of which must be answered `? <line>`, each on the same connection.
fn invalid_lines() -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut add = |l: &[u8]| lines.push(l.to_vec());
    // Command names are case-sensitive and exact.
    for cmd in [
        "iamat", "Iamat", "IAmAt", "IAMAt", "IAMATX", "XIAMAT", "I AMAT", "whatsat", "WhatsAt",
        "WHATSAt", "WHATS", "at",
    ] {
        add(format!("{cmd} kiwi {LOC} 1621464827.5").as_bytes());
    }
    add(b"whatsat known 10 5");
    // Wrong numbers of operands.
    for line in [
        "IAMAT",
        "IAMAT kiwi",
        "IAMAT kiwi +1+2",
        "IAMAT kiwi +1+2 3 4",
        "IAMAT kiwi +1+2 3 known",
        "IAMAT +1+2 3",
        "WHATSAT",
        "WHATSAT known",
        "WHATSAT known 10",
        "WHATSAT known 10 5 5",
        "WHATSAT 10 5",
        "IAMAT kiwi +34.068930 -118.445127 3",
    ] {
        add(line.as_bytes());
    }
    // Malformed locations.
    for loc in [
        "34.068930-118.445127",
        "+34.068930118.445127",
        "+34.068930",
        "+",
        "-",
        "+-",
        "+34.-118",
        "+34-118.",
        "+.5-118",
        "+34-.5",
        "+34--118",
        "+34+-118",
        "++34-118",
        "+34-118-1",
        "+34-118+1",
        "+34.0.1-118",
        "+1e1+0",
        "+1E1+0",
        "+nan+0",
        "+inf-inf",
        "+34,5-118",
        "+34-118x",
        "x+34-118",
        "+0x10+0",
        "+34\u{2212}118",
        "\u{ff0b}34-118",
        "+\u{663}\u{664}-118",
        "+34.068930-118.445127/",
    ] {
        add(format!("IAMAT kiwi {loc} 1621464827.5").as_bytes());
    }
    add(b"IAMAT kiwi +34\xa0-118 1621464827.5");
    // Out-of-range locations.
    for loc in [
        "+90.0000001+0",
        "-90.0000001+0",
        "+90.0000000000000000001+0",
        "+91+0",
        "+100+0",
        "-0090.1+0",
        "+0-180.5",
        "+0+180.0000001",
        "+0-181",
        "+0+1000",
        "+0-180.0000000000000000001",
    ] {
        add(format!("IAMAT kiwi {loc} 1621464827.5").as_bytes());
    }
    // Malformed timestamps.
    for ts in [
        "-1",
        "+1",
        "-0",
        ".5",
        "5.",
        "1621464827.",
        "1621464827.1234567890",
        "1e9",
        "1E9",
        "1.5e3",
        "nan",
        "NaN",
        "inf",
        "Infinity",
        "0x10",
        "1..2",
        "1.2.3",
        "1,5",
        "1_000",
        "1621464827.959498503Z",
        "\u{661}\u{662}",
        "\u{ff11}",
    ] {
        add(format!("IAMAT kiwi {LOC} {ts}").as_bytes());
    }
    // Malformed and out-of-range radii, for a client the node knows.
    for radius in [
        "0",
        "0.0",
        "000",
        "0.000000000",
        "50.1",
        "50.0000001",
        "50.0000000000000000001",
        "51",
        "100",
        "-1",
        "-0",
        "+5",
        "1e1",
        ".5",
        "5.",
        "abc",
        "10km",
        "1,5",
        "nan",
        "inf",
        "5..0",
        "99999999999999999999999999",
    ] {
        add(format!("WHATSAT known {radius} 5").as_bytes());
    }
    // Malformed and out-of-range bounds.
    for bound in [
        "0",
        "00",
        "21",
        "021",
        "100",
        "-1",
        "+1",
        "1.0",
        "1.",
        "1e1",
        "abc",
        "five",
        "99999999999999999999999",
    ] {
        add(format!("WHATSAT known 10 {bound}").as_bytes());
    }
    // WHATSAT for a client of which the node holds no report.
    add(b"WHATSAT unknown 10 5");
    add(b"WHATSAT KNOWN 10 5");
    add(b"WHATSAT \xff\xfe 10 5");
    // Garbage, NULs and control bytes.
    add(b"\x00");
    add(b"\x00\x00\x00");
    add(b"IAMAT\x00kiwi +1+2 3");
    add(b"IAMAT kiwi +1+2 3\x00");
    add(b"\x01\x02\x03\xff\xfe\xfd");
    add(b"\x1b[31mred\x1b[0m");
    add(b"GET / HTTP/1.1");
    add(b"?");
    add(b"? IAMAT kiwi +1+2 3");
    // Only the six ASCII bytes are white space: U+00A0, the raw byte 0xA0, other Unicode
    // spaces and the ASCII separators 0x1C-0x1F are parts of fields.
    add("IAMAT\u{a0}kiwi +1+2 3".as_bytes());
    add("IAMAT kiwi\u{a0}+1+2 3".as_bytes());
    add("IAMAT kiwi +1+2\u{a0}3".as_bytes());
    add("IAMAT kiwi +1+2 3\u{a0}".as_bytes());
    add("\u{a0}IAMAT kiwi +1+2 3".as_bytes());
    add(b"IAMAT\xa0kiwi +1+2 3");
    add("WHATSAT\u{a0}known 10 5".as_bytes());
    add("WHATSAT known 10\u{a0}5".as_bytes());
    for space in [
        "\u{2003}", "\u{3000}", "\u{1680}", "\u{2028}", "\u{85}", "\u{feff}", "\u{200b}",
    ] {
        add(format!("IAMAT{space}kiwi +1+2 3").as_bytes());
    }
    for sep in [b'\x1c', b'\x1d', b'\x1e', b'\x1f', b'\x85', b'\x00'] {
        add(&[&b"IAMAT kiwi +1+2"[..], &[sep], b"3"].concat());
    }
    // Leading and trailing white space is echoed as received.
    add(b"  \tnope \x0b\x0c");
    add(b"\rIAMAT kiwi +1+2");
    // A long invalid line is echoed whole.
    add(format!("IAMAT {} +1+2", "y".repeat(10_000)).as_bytes());
    lines
}

#[test]
fn invalid_requests_are_answered_with_the_line_and_the_connection_stays_open() {
    let herd = solo();
    let mut client = Client::connect(&herd.addr("Solo"));
    let known = client.request(b"IAMAT known +1+2 3");
    assert_at(&known, b"known +1+2 3");
    let lines = invalid_lines();
    for (i, line) in lines.iter().enumerate() {
        assert!(!line.contains(&b'\n'));
        let answer = client.request(line);
        assert_eq!(
            show(&answer),
            show(&cat(&[b"? ", line, b"\n"])),
            "invalid line {i}"
        );
        // The connection still serves valid requests.
        if i % 10 == 0 {
            client.send(b"WHATSAT known 10 1\n");
            let whatsat = client.whatsat_answer();
            assert_eq!(check_whatsat_answer(&whatsat, 1), &known[..known.len() - 1]);
        }
    }
    // Nothing invalid was stored or changed a record.
    client.send(b"WHATSAT known 10 20\n");
    let whatsat = client.whatsat_answer();
    assert_eq!(
        check_whatsat_answer(&whatsat, 20),
        &known[..known.len() - 1]
    );
    assert_eq!(
        client.request(b"WHATSAT kiwi 10 1"),
        b"? WHATSAT kiwi 10 1\n".to_vec()
    );
    let after = client.request(b"IAMAT after +1+2 3");
    assert_at(&after, b"after +1+2 3");

    // The same lines pipelined in one write get the same answers, in order.
    let mut req = Vec::new();
    let mut expected = Vec::new();
    for line in &lines {
        req.extend_from_slice(&cat(&[line, b"\r\n"]));
        expected.extend_from_slice(&cat(&[b"? ", line, b"\n"]));
    }
    assert!(
        herd.ask("Solo", &req) == expected,
        "pipelined invalid lines"
    );
}

#[test]
fn edge_values_in_range_are_accepted() {
    let herd = solo_without_future_bound();
    let mut client = Client::connect(&herd.addr("Solo"));
    for (loc, ts) in [
        ("+90+180", "0"),
        ("-90-180", "1"),
        ("+90.000000000-180.000", "1.000000000"),
        ("-00090.0000+00180", "9223372036854775807"),
        ("+0+0", "1621464827.959498503"),
        ("-0.0000001+179.9999999", "007.5"),
    ] {
        let operands = format!("edge {loc} {ts}");
        let answer = client.request(format!("IAMAT {operands}").as_bytes());
        assert_at(&answer, operands.as_bytes());
    }
    // The largest timestamp the grammar takes is further ahead than any bound a config can set.
    let max = "IAMAT edge +0+0 18446744073709551615";
    assert_eq!(
        client.request(max.as_bytes()),
        format!("? {max}\n").into_bytes()
    );
    for (radius, bound) in [
        ("50", "20"),
        ("50.000", "1"),
        ("0050", "020"),
        ("0.001", "01"),
        ("0.0000001", "7"),
        ("49.999999999999", "19"),
        ("10", "5"),
    ] {
        client.send(format!("WHATSAT edge {radius} {bound}\n").as_bytes());
        let answer = client.whatsat_answer();
        check_whatsat_answer(&answer, bound.parse().unwrap());
    }
}

#[test]
fn whatsat_answer_is_the_at_line_then_a_places_document_then_a_blank_line() {
    let herd = solo();
    let mut client = Client::connect(&herd.addr("Solo"));
    let at = client.request(b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503");
    let answer = herd.whatsat("Solo", b"kiwi.cs.ucla.edu", 5);
    assert_eq!(check_whatsat_answer(&answer, 5), &at[..at.len() - 1]);
    assert!(
        answer.starts_with(&cat(&[&at, b"{"])),
        "AT line, one newline, then the document: {}",
        show(&answer)
    );
    assert!(!answer.ends_with(b"\n\n\n"), "{}", show(&answer));
    let doc: serde_json::Value =
        serde_json::from_slice(&answer[at.len()..answer.len() - 2]).unwrap();
    for key in ["html_attributions", "results", "status"] {
        assert!(doc.get(key).is_some(), "{key} missing: {doc}");
    }
}

#[test]
fn the_newest_timestamp_wins_on_one_node() {
    let herd = solo();
    let mut c = Client::connect(&herd.addr("Solo"));
    let stored = |c: &mut Client| {
        c.send(b"WHATSAT kiwi 10 1\n");
        let answer = c.whatsat_answer();
        check_whatsat_answer(&answer, 1).to_vec()
    };

    let newer = c.request(b"IAMAT kiwi +1+1 1621464827.959498504");
    assert_at(&newer, b"kiwi +1+1 1621464827.959498504");
    // One nanosecond older (the same number as an f64): answered with its own AT line,
    // but the stored report does not change.
    let older = c.request(b"IAMAT kiwi +2+2 1621464827.959498503");
    assert_at(&older, b"kiwi +2+2 1621464827.959498503");
    assert_eq!(stored(&mut c), &newer[..newer.len() - 1]);

    // Exact comparison, not by text length or as strings: 10 > 9.999999999, 5.1 > 5.09.
    let c2 = |c: &mut Client, line: &[u8]| {
        let a = c.request(line);
        a[..a.len() - 1].to_vec()
    };
    let nine = c2(&mut c, b"IAMAT num +1+1 9.999999999");
    let ten = c2(&mut c, b"IAMAT num +2+2 10");
    assert_ne!(nine, ten);
    c2(&mut c, b"IAMAT num +3+3 9.99");
    c.send(b"WHATSAT num 10 1\n");
    assert_eq!(check_whatsat_answer(&c.whatsat_answer(), 1), &ten[..]);
    let a = c2(&mut c, b"IAMAT dec +1+1 5.1");
    c2(&mut c, b"IAMAT dec +2+2 5.09");
    c2(&mut c, b"IAMAT dec +2+2 5.099999999");
    c.send(b"WHATSAT dec 10 1\n");
    assert_eq!(check_whatsat_answer(&c.whatsat_answer(), 1), &a[..]);

    // 5.1 and 5.100000000 are the same time: whichever record the node keeps, it is one of
    // the two, and it compares as exactly 5.1 against a nanosecond either side.
    let b = c2(&mut c, b"IAMAT dec +3+3 5.100000000");
    c.send(b"WHATSAT dec 10 1\n");
    let tie = check_whatsat_answer(&c.whatsat_answer(), 1).to_vec();
    assert!(tie == a || tie == b, "{}", show(&tie));
    c2(&mut c, b"IAMAT dec +4+4 5.099999999");
    c.send(b"WHATSAT dec 10 1\n");
    assert_eq!(check_whatsat_answer(&c.whatsat_answer(), 1), &tie[..]);
    let later = c2(&mut c, b"IAMAT dec +5+5 5.100000001");
    c.send(b"WHATSAT dec 10 1\n");
    assert_eq!(check_whatsat_answer(&c.whatsat_answer(), 1), &later[..]);

    // Newer replaces, on a fresh connection too.
    let newest = c.request(b"IAMAT kiwi +3+3 1621464828");
    assert_eq!(
        herd.at_line_of("Solo", b"kiwi").unwrap(),
        &newest[..newest.len() - 1]
    );
}

#[test]
fn a_bad_request_does_not_disturb_other_connections() {
    let herd = solo();
    let addr = herd.addr("Solo");
    let mut good = Client::connect(&addr);
    let mut bad = Client::connect(&addr);
    // A connection sending garbage and half a line...
    bad.send(b"\x00\xff garbage\nIAMAT kiwi +1+2");
    // ...does not stall a well-behaved client.
    let answer = good.request(b"IAMAT kiwi +1+2 3");
    assert_at(&answer, b"kiwi +1+2 3");
    assert_eq!(bad.line(), b"? \x00\xff garbage\n".to_vec());
    bad.send(b" 4\n");
    assert_at(&bad.line(), b"kiwi +1+2 4");
}

#[test]
fn an_over_long_line_is_refused_without_closing_the_connection() {
    let mut herd = Herd::new(&["Solo"], &[], "[limits]\nmax_line_bytes = 100\n");
    herd.start("Solo");
    let mut c = Client::connect(&herd.addr("Solo"));
    // Exactly at the limit: an ordinary request.
    let id = "i".repeat(100 - "IAMAT  +1+2 3".len());
    let line = format!("IAMAT {id} +1+2 3");
    assert_eq!(line.len(), 100);
    let answer = c.request(line.as_bytes());
    assert_at(&answer, format!("{id} +1+2 3").as_bytes());
    // Past it: `? ` and the line's first bytes (at most 256), as the config documents.
    let long = format!("IAMAT {}x +1+2 3", id);
    assert_eq!(
        show(&c.request(long.as_bytes())),
        show(format!("? {long}\n").as_bytes())
    );
    let huge = "z".repeat(100_000);
    assert_eq!(
        show(&c.request(huge.as_bytes())),
        show(format!("? {}\n", &huge[..256]).as_bytes())
    );
    // The connection still works.
    let answer = c.request(b"IAMAT after +1+2 3");
    assert_at(&answer, b"after +1+2 3");
}

#[test]
fn a_client_that_never_reads_does_not_stall_others() {
    let herd = solo();
    let addr = herd.addr("Solo");
    let hog = TcpStream::connect(&addr).unwrap();
    let hog_writer = hog.try_clone().unwrap();
    // Pipelines far more than the node will buffer, and never reads an answer.
    let writer = std::thread::spawn(move || {
        let mut w = hog_writer;
        let chunk = "WHATSAT nobody 10 5\n".repeat(5_000);
        for _ in 0..200 {
            if w.write_all(chunk.as_bytes()).is_err() {
                break;
            }
        }
    });
    let mut c = Client::connect(&addr);
    for i in 0..50 {
        let started = std::time::Instant::now();
        let answer = c.request(format!("IAMAT polite +1+2 {i}").as_bytes());
        assert_at(&answer, format!("polite +1+2 {i}").as_bytes());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "answer {i} took {:?}",
            started.elapsed()
        );
    }
    hog.shutdown(Shutdown::Both).unwrap();
    writer.join().unwrap();
    // And the node is still fine afterwards.
    assert!(herd.at_line_of("Solo", b"polite").is_some());
}
