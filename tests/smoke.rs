//! The smallest end-to-end check: one real node answers an IAMAT and a WHATSAT.

mod common;

use common::*;

#[test]
fn one_node_answers_iamat_and_whatsat() {
    let mut herd = Herd::new(&["Solo"], &[], "");
    herd.start("Solo");
    let answer = herd.ask(
        "Solo",
        b"IAMAT kiwi +34.068930-118.445127 1621464827.959498503\n",
    );
    let text = String::from_utf8(answer).unwrap();
    assert!(text.starts_with("AT Solo +"), "{text}");
    assert!(
        text.ends_with(" kiwi +34.068930-118.445127 1621464827.959498503\n"),
        "{text}"
    );
    assert_eq!(
        herd.at_line("Solo", "kiwi").as_deref(),
        Some(text.trim_end())
    );
    assert_eq!(herd.stop("Solo").code(), Some(0));
}
