use super::*;

fn stored(line: &str, from: Option<&str>) -> Stored {
    let report = Report::from_line(line);
    Stored {
        received: report.received().unwrap(),
        report,
        learned_from: from.map(str::to_owned),
        item: 0,
    }
}

fn odd() -> Stored {
    let line = b"AT Clark +0.500000000 \xff\\odd +1+2 1700000000.5";
    let request = crate::protocol::request::parse(&Bytes::from_static(line));
    let crate::protocol::request::Request::At(report) = request else {
        panic!("not an AT line")
    };
    Stored {
        received: report.received().unwrap(),
        report,
        learned_from: None,
        item: 0,
    }
}

fn file(records: &[Stored]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = Encoder::new(&Header::new("backup", "Clark"), &mut out);
    for r in records {
        encoder.record(r, &mut out);
    }
    encoder.finish(&mut out);
    out
}

fn read_all(bytes: &[u8]) -> Result<Vec<Line>, FileError> {
    let mut reader = Reader::new(bytes)?;
    let mut lines = Vec::new();
    while let Some(line) = reader.next_line()? {
        lines.push(line);
    }
    Ok(lines)
}

fn two() -> Vec<Stored> {
    vec![
        stored(
            "AT Clark +0.100000000 kiwi +34.1-118.4 1621464827.959498503",
            None,
        ),
        stored(
            "AT Bona -2.000000000 lime -33.8+151.2 1621464800.5",
            Some("Bona"),
        ),
    ]
}

#[test]
fn records_come_back_exactly_with_their_line_numbers() {
    let mut records = two();
    records.push(odd());
    let bytes = file(&records);
    let mut reader = Reader::new(&bytes[..]).unwrap();
    assert_eq!(reader.header().unwrap().server, "Clark");
    assert_eq!(reader.header().unwrap().version, VERSION);
    for (i, want) in records.iter().enumerate() {
        let (line, got) = reader.next_line().unwrap().unwrap();
        let got = got.unwrap();
        assert_eq!(line, i + 2);
        assert_eq!(got.report, want.report);
        assert_eq!(got.report.at_line(), want.report.at_line());
        assert_eq!(got.learned_from, want.learned_from);
    }
    assert!(reader.next_line().unwrap().is_none());
    assert_eq!(reader.records(), 3);
}

#[test]
fn a_file_cut_anywhere_is_refused() {
    let bytes = file(&two());
    let header_end = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    for cut in header_end..bytes.len() - 1 {
        let result = read_all(&bytes[..cut]);
        let complete = result
            .as_ref()
            .is_ok_and(|lines| lines.iter().all(|l| l.1.is_ok()));
        assert!(!complete, "cut at {cut} of {} was accepted", bytes.len());
    }
    // Cut right after the last record: no trailer.
    let trailer = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    let err = read_all(&bytes[..trailer]).unwrap_err();
    assert!(matches!(err, FileError::Truncated { records: 2 }), "{err}");
    assert!(err.to_string().contains("cut short"), "{err}");
}

#[test]
fn an_altered_byte_fails_the_checksum() {
    let bytes = file(&two());
    let text = String::from_utf8(bytes).unwrap();
    let altered = text.replace("kiwi", "kiwj");
    let err = read_all(altered.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    // A record dropped (count and checksum both change).
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(1);
    let err = read_all((lines.join("\n") + "\n").as_bytes()).unwrap_err();
    assert!(
        err.to_string()
            .contains("counts 2 records but the file holds 1"),
        "{err}"
    );
    // More after the trailer.
    let err = read_all(format!("{text}{}\n", lines[1]).as_bytes()).unwrap_err();
    assert!(matches!(err, FileError::AfterTrailer { line: 5 }), "{err}");
}

#[test]
fn bare_lines_are_read_without_header_or_trailer() {
    let bytes = file(&two());
    let text = String::from_utf8(bytes).unwrap();
    let bare: Vec<&str> = text.lines().skip(1).take(2).collect();
    let bare = bare.join("\n") + "\n\n";
    let mut reader = Reader::new(bare.as_bytes()).unwrap();
    assert!(reader.header().is_none());
    let (line, record) = reader.next_line().unwrap().unwrap();
    assert_eq!(
        (line, record.unwrap().report.at_line().clone()),
        (1, two()[0].report.at_line().clone())
    );
    assert_eq!(reader.next_line().unwrap().unwrap().0, 2);
    assert!(reader.next_line().unwrap().is_none());
}

#[test]
fn bad_lines_say_what_is_wrong_with_them() {
    let cases = [
        ("not json", "not a JSON object"),
        ("[1,2]", "not a JSON object"),
        (r#"{"client":"kiwi"}"#, "no \"at\" field"),
        (r#"{"at":"IAMAT kiwi +1+2 5"}"#, "is not an AT line"),
        (
            r#"{"at":"AT Clark +0.1 kiwi +1+2 5"}"#,
            "not a valid AT line",
        ),
        (
            r#"{"at":"AT Clark +0.100000000 kiwi +91+2 5"}"#,
            "not a valid AT line",
        ),
        (
            r#"{"at":"AT Clark +0.100000000 \\xff +1+2 5"}"#,
            "client_hex is needed",
        ),
        (
            r#"{"at":"AT Clark +0.100000000 kiwi +1+2 5","client_hex":"6c"}"#,
            "client_hex is not the client ID",
        ),
        (
            r#"{"at":"AT Clark +0.100000000 kiwi +1+2 5","client_hex":"zz"}"#,
            "not hex",
        ),
        (
            r#"{"at":"AT Clark +0.100000000 kiwi +1+2 5","learned_from":3}"#,
            "not a string",
        ),
        (
            r#"{"end":"herd-records","records":0,"sha256":""}"#,
            "without a header",
        ),
        // White space the protocol would split on, hidden behind an escape.
        (
            r#"{"at":"AT Clark +0.100000000 k\\tw +1+2 5","client_hex":"6b0977"}"#,
            "not a valid AT line",
        ),
    ];
    for (line, want) in cases {
        let text = format!(
            "{}\n{line}\n",
            r#"{"at":"AT Clark +0.100000000 ok +1+2 5"}"#
        );
        let lines = read_all(text.as_bytes()).unwrap();
        assert!(lines[0].1.is_ok());
        assert_eq!(lines[1].0, 2);
        let why = lines[1].1.as_ref().unwrap_err();
        assert!(why.contains(want), "{line}: {why}");
    }
}

#[test]
fn a_newer_format_or_another_format_is_refused_by_its_header() {
    let newer = r#"{"format":"herd-records","version":2,"kind":"backup","server":"A","taken_at":"1.0","herd_version":"9.0.0"}"#;
    let err = Reader::new(format!("{newer}\n").as_bytes()).err().unwrap();
    assert!(
        err.to_string().contains("newer than this herd reads"),
        "{err}"
    );
    let other = r#"{"format":"csv","version":1,"kind":"backup","server":"A","taken_at":"1.0","herd_version":"0.1.0"}"#;
    let err = Reader::new(format!("{other}\n").as_bytes()).err().unwrap();
    assert!(err.to_string().contains("not a herd records file"), "{err}");
}

#[test]
fn a_line_longer_than_the_limit_is_refused() {
    let long = vec![b'x'; MAX_LINE + 10];
    let err = read_all(&long).unwrap_err();
    assert!(matches!(err, FileError::LineTooLong { line: 1 }), "{err}");
}
