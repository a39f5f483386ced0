//! `/status`: one plain HTML page for a person at a browser. It refreshes itself with
//! `<meta http-equiv="refresh">`, needs no JavaScript, no stylesheet from elsewhere and no
//! image, and every value it shows is escaped (the page is a maud template: escaping is
//! the template's default, and nothing here opts out of it but the constant style sheet).
//!
//! Elements a script (or a test) may read carry stable hooks: `#node`, `#health`, `#records`,
//! `#connections`, `#refused` (reports refused before the store, per reason and source), one
//! `tr.link` per link with `data-peer` and `data-state="up|down"`, `#cache-rate`, and one
//! `tr.report` per recent report.

use std::time::SystemTime;

use maud::{html, Markup};

use super::html::{ago, document, utc, REFRESH_SECS};

use crate::node::Node;
use crate::telemetry::{Health, RequestKind, Snapshot};

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
    let title = format!("herd: {}", snap.node);
    let body = html! {
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
    };
    document(&title, "", body)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Telemetry;

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
