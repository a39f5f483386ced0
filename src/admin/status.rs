//! `/status`: one plain HTML page for a person at a browser. It refreshes itself with
//! `<meta http-equiv="refresh">`, needs no JavaScript, no stylesheet from elsewhere and no
//! image, and every value it shows is escaped.
//!
//! Elements a script (or a test) may read carry stable hooks: `#node`, `#health`, `#records`,
//! `#connections`, `#refused` (reports refused before the store, per reason and source), one
//! `tr.link` per link with `data-peer` and `data-state="up|down"`, `#cache-rate`, and one
//! `tr.report` per recent report.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::node::Node;
use crate::telemetry::{Health, RequestKind, Snapshot};

/// Seconds between refreshes.
pub const REFRESH_SECS: u64 = 5;

/// The page for `snap`; `node` (once the store is open) adds the places provider's nature.
pub fn render(snap: &Snapshot, node: Option<&Node>) -> String {
    let now = SystemTime::now();
    let mut p = String::with_capacity(8 * 1024);
    let name = escape(&snap.node);
    let health = match snap.health {
        Health::Starting => "starting",
        Health::Ready => "ready",
        Health::Stopping => "stopping",
    };
    let _ = write!(
        p,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>herd: {name}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>herd node <span id=\"node\">{name}</span></h1>\n\
         <p class=\"meta\">state <b id=\"health\" class=\"{health}\">{health}</b> · started {} ({}) · \
         this page refreshes every {REFRESH_SECS} s</p>\n",
        utc(snap.started),
        ago(now, snap.started),
    );

    // The numbers first.
    let records = snap
        .records
        .map_or_else(|| "unknown".to_owned(), |n| n.to_string());
    let count = |kind| {
        snap.requests
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    };
    let _ = write!(
        p,
        "<h2>Store and clients</h2>\n<table class=\"numbers\">\n\
         <tr><th>clients stored</th><td id=\"records\">{records}</td></tr>\n\
         <tr><th>client connections open</th><td id=\"connections\">{}</td></tr>\n\
         <tr><th>requests answered</th><td>{} IAMAT · {} WHATSAT · {} invalid</td></tr>\n\
         <tr><th>reports refused</th><td id=\"refused\">{}</td></tr>\n\
         </table>\n",
        snap.connections,
        count(RequestKind::IAmAt),
        count(RequestKind::WhatsAt),
        count(RequestKind::Invalid),
        refused(snap),
    );
    if let Some(store) = &snap.store {
        use crate::store::Writable;
        let mib = |b: Option<u64>| {
            b.map_or_else(
                || "unknown".to_owned(),
                |b| format!("{:.1} MiB", b as f64 / 1048576.0),
            )
        };
        let (class, state) = match store.writable {
            Writable::Yes => ("up", "takes every report".to_owned()),
            Writable::KnownClientsOnly => (
                "warn",
                format!("warning: refuses new clients ({})", escape(&store.reason)),
            ),
            Writable::No => ("down", format!("cannot write ({})", escape(&store.reason))),
        };
        let _ = writeln!(
            p,
            "<p id=\"store-state\" class=\"{class}\">store {state} · {} free on its disk · its files take {}</p>",
            mib(store.free_bytes),
            mib(store.store_bytes),
        );
    }
    if !snap.store_refused.is_empty() {
        p.push_str("<p id=\"store-refused\">reports refused by the store: ");
        let parts: Vec<String> = snap
            .store_refused
            .iter()
            .map(|(reason, source, n)| format!("{} from {}: {n}", escape(reason), escape(source)))
            .collect();
        p.push_str(&parts.join(" · "));
        p.push_str("</p>\n");
    }

    // Links.
    p.push_str("<h2>Links</h2>\n");
    if snap.links.is_empty() {
        p.push_str("<p>This server is linked to no other.</p>\n");
    } else {
        p.push_str(
            "<table class=\"links\">\n<tr><th>peer</th><th>state</th><th>since</th>\
             <th>last sync</th><th>sync bytes sent</th><th>sync bytes received</th>\
             <th>sync rounds</th></tr>\n",
        );
        for (peer, link) in &snap.links {
            let state = if link.up { "up" } else { "down" };
            let since = match link.since {
                Some(t) => format!("{} ({})", utc(t), ago(now, t)),
                None if link.up => "—".to_owned(),
                None => "never up".to_owned(),
            };
            let (last, sent, received) = match link.last_sync {
                Some(round) => (
                    format!("{} ({})", utc(round.at), ago(now, round.at)),
                    round.sent.to_string(),
                    round.received.to_string(),
                ),
                None => ("never".to_owned(), "—".to_owned(), "—".to_owned()),
            };
            let peer = escape(peer);
            let _ = writeln!(
                p,
                "<tr class=\"link\" data-peer=\"{peer}\" data-state=\"{state}\"><td>{peer}</td>\
                 <td class=\"{state}\">{state}</td><td>{since}</td><td>{last}</td>\
                 <td class=\"n\">{sent}</td><td class=\"n\">{received}</td><td class=\"n\">{}</td></tr>",
                link.rounds
            );
        }
        p.push_str("</table>\n");
    }

    // Places cache.
    p.push_str("<h2>Places cache</h2>\n");
    let has_cache = node.is_some_and(|n| n.places().cache_stats().is_some());
    let lookups = snap.cache_hits + snap.cache_misses;
    if node.is_some() && !has_cache {
        p.push_str(
            "<p>The offline provider answers from memory and has no cache \
             (<span id=\"cache-rate\">n/a</span>).</p>\n",
        );
    } else if lookups == 0 {
        p.push_str("<p>No lookups yet (<span id=\"cache-rate\">n/a</span>).</p>\n");
    } else {
        let _ = writeln!(
            p,
            "<p>hit rate <b id=\"cache-rate\">{:.1}%</b> · {} hits · {} misses</p>",
            snap.cache_hits as f64 * 100.0 / lookups as f64,
            snap.cache_hits,
            snap.cache_misses
        );
    }

    // Latest reports.
    p.push_str("<h2>Latest reports stored</h2>\n");
    if snap.recent.is_empty() {
        p.push_str("<p>None since the node started.</p>\n");
    } else {
        p.push_str(
            "<table class=\"reports\">\n<tr><th>stored</th><th>from</th><th>report</th></tr>\n",
        );
        for r in &snap.recent {
            let from = match &r.from {
                Some(peer) => format!("peer {}", escape(peer)),
                None => "client".to_owned(),
            };
            let _ = writeln!(
                p,
                "<tr class=\"report\"><td>{}</td><td>{from}</td><td><code>{}</code></td></tr>",
                utc(r.at),
                escape(&r.text())
            );
        }
        p.push_str("</table>\n");
    }
    p.push_str(
        "<p class=\"meta\">Also here: <a href=\"/metrics\">/metrics</a> · \
         <a href=\"/healthz\">/healthz</a> · /clients/ID</p>\n</body>\n</html>\n",
    );
    p
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin-bottom:1em}\
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
td.n{text-align:right}.up,.ready{color:#176f2c;font-weight:bold}\
.down,.stopping,.starting{color:#b3261e;font-weight:bold}\
.meta{color:#666}code{font-size:.9em}";

/// Escapes text for HTML content and attribute values.
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
                    peer => format!("{} {n}", escape(peer)),
                })
                .collect();
            format!("{}: {}", reason.describe(), sources.join(", "))
        })
        .collect();
    parts.join("; ")
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `t` as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(t: SystemTime) -> String {
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
fn ago(now: SystemTime, then: SystemTime) -> String {
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
