//! `/status`: one plain HTML page for a person at a browser. It refreshes itself with
//! `<meta http-equiv="refresh">`, needs no JavaScript, no stylesheet from elsewhere and no
//! image, and every value it shows is escaped (the page is a maud template: escaping is
//! the template's default, and nothing here opts out of it but the constant style sheet).
//!
//! Elements a script (or a test) may read carry stable hooks: `#node`, `#health`, `#records`,
//! `#connections`, `#refused` (reports refused before the store, per reason and source), one
//! `tr.link` per link with `data-peer` and `data-state="up|down"`, `#cache-rate`, and one
//! `tr.report` per recent report.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::node::Node;
use crate::telemetry::{Health, RequestKind, Snapshot};

/// Seconds between refreshes.
pub const REFRESH_SECS: u64 = 5;

/// The page for `snap`; `node` (once the store is open) adds the places provider's nature.
pub fn render(snap: &Snapshot, node: Option<&Node>) -> String {
    let now = SystemTime::now();
    let health = match snap.health {
        Health::Starting => "starting",
        Health::Ready => "ready",
        Health::Stopping => "stopping",
    };
    let count = |kind| {
        snap.requests
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(REFRESH_SECS);
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "herd: " (snap.node) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "herd node " span #node { (snap.node) } }
                p.meta {
                    "state " b #health .(health) { (health) }
                    " · started " (utc(snap.started)) " (" (ago(now, snap.started)) ")"
                    " · this page refreshes every " (REFRESH_SECS) " s"
                }
                h2 { "Store and clients" }
                table.numbers {
                    tr { th { "clients stored" } td #records { @match snap.records { Some(n) => (n), None => "unknown" } } }
                    tr { th { "client connections open" } td #connections { (snap.connections) } }
                    tr {
                        th { "requests answered" }
                        td {
                            (count(RequestKind::IAmAt)) " IAMAT · " (count(RequestKind::WhatsAt))
                            " WHATSAT · " (count(RequestKind::Invalid)) " invalid"
                        }
                    }
                    tr { th { "reports refused" } td #refused { (refused(snap)) } }
                }
                (store_state(snap))
                (links(snap, now))
                (places_cache(snap, node))
                (recent_reports(snap))
                p.meta {
                    "Also here: " a href="/herd" { "/herd" } " (the whole herd) · "
                    a href="/metrics" { "/metrics" } " · " a href="/healthz" { "/healthz" }
                    " · /clients/ID"
                }
            }
        }
    }
    .into_string()
}

fn store_state(snap: &Snapshot) -> Markup {
    use crate::store::Writable;
    let mib = |b: Option<u64>| {
        b.map_or_else(
            || "unknown".to_owned(),
            |b| format!("{:.1} MiB", b as f64 / 1048576.0),
        )
    };
    html! {
        @if let Some(store) = &snap.store {
            @let (class, state) = match store.writable {
                Writable::Yes => ("up", "takes every report".to_owned()),
                Writable::KnownClientsOnly => (
                    "warn",
                    format!("warning: refuses new clients ({})", store.reason),
                ),
                Writable::No => ("down", format!("cannot write ({})", store.reason)),
            };
            p #store-state .(class) {
                "store " (state) " · " (mib(store.free_bytes)) " free on its disk · its files take "
                (mib(store.store_bytes))
            }
        }
        @if !snap.store_refused.is_empty() {
            @let parts: Vec<String> = snap
                .store_refused
                .iter()
                .map(|(reason, source, n)| format!("{reason} from {source}: {n}"))
                .collect();
            p #store-refused { "reports refused by the store: " (parts.join(" · ")) }
        }
    }
}

fn links(snap: &Snapshot, now: SystemTime) -> Markup {
    html! {
        h2 { "Links" }
        @if snap.links.is_empty() {
            p { "This server is linked to no other." }
        } @else {
            table.links {
                tr {
                    th { "peer" } th { "state" } th { "since" } th { "last sync" }
                    th { "sync bytes sent" } th { "sync bytes received" } th { "sync rounds" }
                }
                @for (peer, link) in &snap.links {
                    @let state = if link.up { "up" } else { "down" };
                    tr.link data-peer=(peer) data-state=(state) {
                        td { (peer) }
                        td.(state) { (state) }
                        td {
                            @match link.since {
                                Some(t) => { (utc(t)) " (" (ago(now, t)) ")" }
                                None if link.up => "—",
                                None => "never up",
                            }
                        }
                        @match link.last_sync {
                            Some(round) => {
                                td { (utc(round.at)) " (" (ago(now, round.at)) ")" }
                                td.n { (round.sent) }
                                td.n { (round.received) }
                            }
                            None => { td { "never" } td.n { "—" } td.n { "—" } }
                        }
                        td.n { (link.rounds) }
                    }
                }
            }
        }
    }
}

fn places_cache(snap: &Snapshot, node: Option<&Node>) -> Markup {
    let has_cache = node.is_some_and(|n| n.places().cache_stats().is_some());
    let lookups = snap.cache_hits + snap.cache_misses;
    html! {
        h2 { "Places cache" }
        @if node.is_some() && !has_cache {
            p {
                "The offline provider answers from memory and has no cache ("
                span #cache-rate { "n/a" } ")."
            }
        } @else if lookups == 0 {
            p { "No lookups yet (" span #cache-rate { "n/a" } ")." }
        } @else {
            p {
                "hit rate " b #cache-rate { (format!("{:.1}%", snap.cache_hits as f64 * 100.0 / lookups as f64)) }
                " · " (snap.cache_hits) " hits · " (snap.cache_misses) " misses"
            }
        }
    }
}

fn recent_reports(snap: &Snapshot) -> Markup {
    html! {
        h2 { "Latest reports stored" }
        @if snap.recent.is_empty() {
            p { "None since the node started." }
        } @else {
            table.reports {
                tr { th { "stored" } th { "from" } th { "report" } }
                @for r in &snap.recent {
                    tr.report {
                        td { (utc(r.at)) }
                        td { @match &r.from { Some(peer) => { "peer " (peer) }, None => "client" } }
                        td { code { (r.text()) } }
                    }
                }
            }
        }
    }
}

/// The style sheet of the admin pages.
pub(super) const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin-bottom:1em}\
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
td.n{text-align:right}.up,.ready{color:#176f2c;font-weight:bold}\
.down,.stopping,.starting{color:#b3261e;font-weight:bold}\
.meta{color:#666}code{font-size:.9em}";

/// "refused as from the future: Bona 120, clients 3", one such part per reason, or "none".
fn refused(snap: &Snapshot) -> String {
    if snap.refused.is_empty() {
        return "none".to_owned();
    }
    let parts: Vec<String> = snap
        .refused
        .iter()
        .map(|(reason, by)| {
            let sources: Vec<String> = by
                .iter()
                .map(|(source, n)| match source.as_str() {
                    crate::telemetry::CLIENT_SOURCE => format!("clients {n}"),
                    peer => format!("{peer} {n}"),
                })
                .collect();
            format!("{}: {}", reason.describe(), sources.join(", "))
        })
        .collect();
    parts.join("; ")
}

/// `t` as `YYYY-MM-DD HH:MM:SS UTC`.
pub(super) fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// How long before `now` the moment `then` was, in words.
pub(super) fn ago(now: SystemTime, then: SystemTime) -> String {
    let d = now.duration_since(then).unwrap_or(Duration::ZERO).as_secs();
    match d {
        0..=59 => format!("{d} s ago"),
        60..=3599 => format!("{} min {} s ago", d / 60, d % 60),
        3600..=86_399 => format!("{} h {} min ago", d / 3600, d / 60 % 60),
        _ => format!("{} d {} h ago", d / 86_400, d / 3600 % 24),
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Telemetry;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_621_464_827);
        assert_eq!(utc(t), "2021-05-19 22:53:47 UTC");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc(leap), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn the_page_escapes_what_it_shows_and_marks_each_link() {
        let peers = ["Bona".to_string(), "<Clark>".to_string()];
        let t = Telemetry::new("Bailey", &peers);
        t.peer_up("Bona", true);
        t.recent_report(
            bytes::Bytes::from_static(b"AT Bailey +0.1 <script> +1+2 3\n"),
            None,
        );
        let page = render(&t.snapshot(), None);
        assert!(page.contains("<span id=\"node\">Bailey</span>"), "{page}");
        assert!(
            page.contains("data-peer=\"Bona\" data-state=\"up\""),
            "{page}"
        );
        assert!(page.contains("data-peer=\"&lt;Clark&gt;\" data-state=\"down\""));
        assert!(page.contains("&lt;script&gt;") && !page.contains("<script"));
        assert!(page.contains("http-equiv=\"refresh\""));
        assert!(page.contains("<td id=\"refused\">none</td>"), "{page}");
        for _ in 0..3 {
            let _ = t.refused(crate::telemetry::Refusal::Future, None);
        }
        let _ = t.refused(crate::telemetry::Refusal::Future, Some("<Clark>"));
        let page = render(&t.snapshot(), None);
        assert!(
            page.contains(
                "<td id=\"refused\">refused as from the future: &lt;Clark&gt; 1, clients 3</td>"
            ),
            "{page}"
        );
    }
}
