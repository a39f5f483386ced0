//! `/herd`: one page for the whole herd as one node knows it from its config: the topology as
//! inline SVG, each server's state and counts, the convergence verdict
//! ([`super::verdict`]), and plots of each server's own history. Every server's part comes from
//! its own `/herd.json`, asked for as the page is made ([`super::summary::fetch_all`]).
//!
//! Like `/status` it is one self-contained HTML document: no script, no stylesheet or image
//! from elsewhere, a `<meta http-equiv="refresh">`, every value escaped (maud does it). The
//! plots are drawn here, as SVG, by plotters.
//!
//! Hooks for scripts and tests: `#verdict` with `data-verdict="converged|differ|unreachable"`;
//! `svg#topology` with one `g.server` per server (`data-server`, `data-state`: its state, or
//! `unreachable`) and one `line.link` per link (`data-a`, `data-b`, `data-state="up|down|unknown"`);
//! one `tr.server` per server (`data-server`, with `td.records` and one `span.link` per link,
//! `data-peer` and `data-state`); one `figure.plot` per plot (`data-plot`), in which each
//! server's line is an SVG `polyline` of `stroke-width="2"` in the server's colour (the
//! first server's is `#1F77B4`).

use std::f64::consts::PI;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use maud::{html, Markup, PreEscaped};
use plotters::prelude::*;

use super::history::Sample;
use super::html::{ago, document, REFRESH_SECS};
use super::summary::{Fetched, Summary};
use super::verdict::Verdict;
use crate::config::Config;

/// What the page is made of.
pub struct View<'a> {
    /// The server whose page this is.
    pub me: &'a str,
    pub config: &'a Config,
    /// Every server's answer, in the config's order.
    pub answers: &'a [(String, Fetched)],
    pub now: SystemTime,
}

/// A link's state as its two ends report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Every end that answered says it is up.
    Up,
    /// An end that answered says it is down.
    Down,
    /// Neither end answered.
    Unknown,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::Down => "down",
            LinkState::Unknown => "unknown",
        }
    }
}

/// The state of the link between `a` and `b`, from what each end that answered says of it.
pub fn link_state(a: &str, b: &str, answers: &[(String, Fetched)]) -> LinkState {
    let says = |me: &str, peer: &str| {
        let (_, answer) = answers.iter().find(|(name, _)| name == me)?;
        let summary = answer.as_ref().ok()?;
        summary.links.iter().find(|l| l.peer == peer).map(|l| l.up)
    };
    match (says(a, b), says(b, a)) {
        (None, None) => LinkState::Unknown,
        (Some(false), _) | (_, Some(false)) => LinkState::Down,
        _ => LinkState::Up,
    }
}

/// Every link of the config once, each pair in name order.
fn links(config: &Config) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    for (a, peers) in &config.links {
        for b in peers {
            if a < b {
                out.push((a.as_str(), b.as_str()));
            }
        }
    }
    out
}

pub fn render(view: &View<'_>) -> String {
    let verdict = Verdict::of(view.answers);
    let word = verdict.word().as_str();
    let lines = verdict.lines();
    let servers = view.config.servers.len();
    let title = format!("herd: {servers} servers, as {} sees them", view.me);
    let body = html! {
        h1 { "herd: " (servers) " servers, as " span #me { (view.me) } " sees them" }
        p.meta {
            "from " (view.me) "'s config; each server's part is its own "
            a href=(super::summary::PATH) { (super::summary::PATH) }
            ", asked for just now · this page refreshes every " (REFRESH_SECS) " s · "
            a href="/status" { "this node's status" }
        }
        div #verdict .(word) data-verdict=(word) {
            p.word { (lines[0]) }
            @if lines.len() > 1 {
                ul {
                    @for line in &lines[1..] { li { (line.trim_start()) } }
                }
            }
        }
        div.side {
            (topology(view))
            (servers_table(view))
        }
        h2 { "The last minutes, as each server saw them" }
        div.plots {
            @for (key, title, pick) in PLOTS {
                figure.plot data-plot=(key) {
                    (PreEscaped(plot_or_note(title, &series(view, *pick))))
                }
            }
        }
        p.meta {
            "acknowledgement: an IAMAT's arrival to its answer being ready (stored, durably as \
             configured); flood: a report's age when it arrives from a peer (the receiving \
             server's clock minus the first server's receipt); fsync: one flush of the \
             store to disk. Means over each " (super::history::SAMPLE_EVERY.as_secs())
            " s interval."
        }
    };
    document(&title, HERD_STYLE, body)
}

const HERD_STYLE: &str = "#verdict{padding:.4em 1em;margin-bottom:1em;border-left:.4em solid}\
#verdict.converged{border-color:#176f2c;background:#eef7ef}\
#verdict.differ,#verdict.unreachable{border-color:#b3261e;background:#fbeeed}\
#verdict .word{font-size:1.2em;font-weight:bold;margin:.3em 0}\
.side{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}\
.plots{display:flex;flex-wrap:wrap;gap:1em}figure.plot{margin:0}\
.unreachable,.unknown{color:#b3261e;font-weight:bold}";

/// Where server `i` of `n` sits on the topology's circle (the first at the top, clockwise).
fn position(i: usize, n: usize) -> (f64, f64) {
    let angle = -PI / 2.0 + 2.0 * PI * i as f64 / n.max(1) as f64;
    (
        TOPO_CX + TOPO_RADIUS * angle.cos(),
        TOPO_CY + TOPO_RADIUS * angle.sin(),
    )
}

const TOPO_CX: f64 = 200.0;
const TOPO_CY: f64 = 165.0;
const TOPO_RADIUS: f64 = 125.0;

fn colour(state: &str) -> &'static str {
    match state {
        "up" | "ready" => "#2e7d32",
        "down" | "unreachable" | "stopping" => "#c62828",
        "starting" => "#ef6c00",
        _ => "#9e9e9e",
    }
}

fn topology(view: &View<'_>) -> Markup {
    let names: Vec<&str> = view.config.servers.keys().map(String::as_str).collect();
    let at = |name: &str| {
        let i = names.iter().position(|n| *n == name).unwrap_or(0);
        position(i, names.len())
    };
    let state_of = |name: &str| match view.answers.iter().find(|(n, _)| n == name) {
        Some((_, Ok(summary))) => summary.state.clone(),
        _ => "unreachable".to_owned(),
    };
    html! {
        svg #topology xmlns="http://www.w3.org/2000/svg" viewBox="0 0 400 330" width="400" height="330"
            role="img" aria-label="the herd's servers and links" {
            @for (a, b) in links(view.config) {
                @let state = link_state(a, b, view.answers).as_str();
                @let ((x1, y1), (x2, y2)) = (at(a), at(b));
                line.link data-a=(a) data-b=(b) data-state=(state)
                    x1=(fmt1(x1)) y1=(fmt1(y1)) x2=(fmt1(x2)) y2=(fmt1(y2))
                    stroke=(colour(state)) stroke-width="3"
                    stroke-dasharray=[(state != "up").then_some("8 5")] {
                    title { (a) " – " (b) ": " (state) }
                }
            }
            @for name in &names {
                @let state = state_of(name);
                @let (x, y) = at(name);
                g.server data-server=(name) data-state=(state) {
                    circle cx=(fmt1(x)) cy=(fmt1(y)) r="34" fill="#fff"
                        stroke=(colour(&state)) stroke-width="3" {}
                    text x=(fmt1(x)) y=(fmt1(y + 4.0)) text-anchor="middle" font-size="11"
                        font-family="system-ui, sans-serif" { (name) }
                }
            }
        }
    }
}

fn fmt1(v: f64) -> String {
    format!("{v:.1}")
}

fn unix_time(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn servers_table(view: &View<'_>) -> Markup {
    html! {
        table.servers {
            tr { th { "server" } th { "state" } th { "records" } th { "requests/s" } th { "links (last sync)" } }
            @for (name, answer) in view.answers {
                @match answer {
                    Ok(s) => (server_row(view, s)),
                    Err(why) => tr.server data-server=(name) data-state="unreachable" {
                        td { (name) }
                        td.unreachable title=(why) { "unreachable" }
                        td.records.n { "—" } td.n { "—" }
                        td { (why) }
                    },
                }
            }
        }
    }
}

fn server_row(view: &View<'_>, s: &Summary) -> Markup {
    html! {
        tr.server data-server=(s.name) data-state=(s.state) {
            td { (s.name) }
            td.(s.state) { (s.state) }
            td.records.n { @match s.records { Some(n) => (n), None => "…" } }
            td.n { (format!("{:.1}", s.requests_per_sec)) }
            td {
                @if s.links.is_empty() { "none" }
                @for (i, link) in s.links.iter().enumerate() {
                    @let state = if link.up { "up" } else { "down" };
                    @if i > 0 { " · " }
                    span.link data-peer=(link.peer) data-state=(state) {
                        (link.peer) " " span.(state) { (state) }
                        " ("
                        @match link.last_sync {
                            Some(t) => { "synced " (ago(view.now, unix_time(t))) }
                            None => "never synced",
                        }
                        ")"
                    }
                }
            }
        }
    }
}

/// Picks one value of a sample.
type Pick = fn(&Sample) -> Option<f64>;

/// Each plot: its hook, its title, and what it shows.
const PLOTS: &[(&str, &str, Pick)] = &[
    ("requests", "requests/s", |s| Some(s.requests_per_sec)),
    ("ack", "acknowledgement, ms (mean)", |s| s.ack_ms),
    ("flood", "flood latency, ms (mean)", |s| s.flood_ms),
    ("fsync", "fsync (store flush), ms (mean)", |s| s.fsync_ms),
];

/// One server's line: runs of consecutive samples that have a value, as (minutes before
/// `now`, value).
type Series = (String, Vec<Vec<(f64, f64)>>);

fn series(view: &View<'_>, pick: Pick) -> Vec<Series> {
    let now = super::summary::unix(view.now) as f64;
    view.answers
        .iter()
        .filter_map(|(name, answer)| Some((name, answer.as_ref().ok()?)))
        .map(|(name, summary)| {
            let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            for sample in &summary.history {
                match pick(sample) {
                    Some(v) => runs
                        .last_mut()
                        .expect("never empty")
                        .push(((sample.at as f64 - now) / 60.0, v)),
                    None if runs.last().is_some_and(|r| !r.is_empty()) => runs.push(Vec::new()),
                    None => {}
                }
            }
            runs.retain(|r| !r.is_empty());
            (name.clone(), runs)
        })
        .collect()
}

const PLOT_SIZE: (u32, u32) = (380, 220);

/// Line colours, one per server in the config's order.
const LINE_COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// The plot as SVG, or a note saying why there is none.
fn plot_or_note(title: &str, series: &[Series]) -> String {
    match plot(title, series) {
        Ok(svg) => svg,
        Err(e) => html! { p.meta { (title) ": cannot draw the plot (" (e) ")" } }.into_string(),
    }
}

/// Draws one plot: a line per server, time on x (minutes before now), the value on y.
pub fn plot(title: &str, series: &[Series]) -> Result<String, String> {
    let points = || series.iter().flat_map(|(_, runs)| runs.iter().flatten());
    let earliest = points().map(|p| p.0).fold(-1.0_f64, f64::min);
    let highest = points().map(|p| p.1).fold(0.0_f64, f64::max);
    let top = if highest > 0.0 { highest * 1.15 } else { 1.0 };
    let mut svg = String::new();
    {
        let err = |e: DrawingAreaErrorKind<std::io::Error>| e.to_string();
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 14))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(46)
            .build_cartesian_2d(earliest..0.0, 0.0..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_labels(5)
            .y_labels(4)
            .x_desc("minutes ago")
            .x_label_formatter(&|x| minutes_ago(-x, -earliest))
            .label_style(("sans-serif", 11))
            .light_line_style(RGBColor(238, 238, 238))
            .draw()
            .map_err(err)?;
        let mut labelled = false;
        for (i, (name, runs)) in series.iter().enumerate() {
            let colour = LINE_COLOURS[i % LINE_COLOURS.len()];
            for (j, run) in runs.iter().enumerate() {
                // A lone value between gaps is a dot: a line needs two.
                let drawn = if run.len() == 1 {
                    chart
                        .draw_series(run.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                        .map_err(err)?
                } else {
                    chart
                        .draw_series(LineSeries::new(run.iter().copied(), colour.stroke_width(2)))
                        .map_err(err)?
                };
                if j == 0 {
                    labelled = true;
                    // The legend's swatch is thicker than the lines, so that every line of
                    // width 2 is a server's.
                    drawn.label(name.as_str()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 14, y)], colour.stroke_width(4))
                    });
                }
            }
        }
        if labelled {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font(("sans-serif", 10))
                .background_style(WHITE.mix(0.8))
                .border_style(RGBColor(204, 204, 204))
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// An x-axis label: `minutes` ago, in a plot spanning `span` minutes.
fn minutes_ago(minutes: f64, span: f64) -> String {
    if minutes < 0.01 {
        "now".to_owned()
    } else if span < 3.0 {
        format!("{minutes:.1}")
    } else {
        format!("{minutes:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::summary::{LinkSummary, Root};
    use super::*;

    fn summary(name: &str, links: &[(&str, bool)], history: Vec<Sample>) -> Summary {
        Summary {
            name: name.into(),
            state: "ready".into(),
            records: Some(1),
            root: Some(Root {
                count: 1,
                sum: "01".into(),
            }),
            requests_per_sec: 2.0,
            links: links
                .iter()
                .map(|(peer, up)| LinkSummary {
                    peer: (*peer).into(),
                    up: *up,
                    since: Some(1),
                    last_sync: None,
                })
                .collect(),
            history,
        }
    }

    fn sample(at: u64, rate: f64, ack: Option<f64>) -> Sample {
        Sample {
            at,
            requests_per_sec: rate,
            ack_ms: ack,
            flood_ms: None,
            fsync_ms: None,
        }
    }

    #[test]
    fn a_link_is_down_when_an_end_says_so_and_unknown_when_neither_answers() {
        let answers = vec![
            ("A".to_owned(), Ok(summary("A", &[("B", true)], vec![]))),
            (
                "B".to_owned(),
                Ok(summary("B", &[("A", true), ("C", false)], vec![])),
            ),
            ("C".to_owned(), Err("down".to_owned())),
            ("D".to_owned(), Err("down".to_owned())),
        ];
        assert_eq!(link_state("A", "B", &answers), LinkState::Up);
        assert_eq!(link_state("C", "B", &answers), LinkState::Down);
        assert_eq!(link_state("C", "D", &answers), LinkState::Unknown);
    }

    #[test]
    fn the_page_draws_every_server_and_link_and_plots_the_history() {
        let config = Config::parse(
            "links = [[\"A\", \"B\"], [\"B\", \"C\"]]\n[servers]\nA = \"127.0.0.1:1\"\n\
             B = \"127.0.0.1:2\"\nC = \"127.0.0.1:3\"\n",
            "test",
            None,
        )
        .unwrap();
        let now = unix_time(1_000);
        let history = vec![
            sample(900, 1.0, Some(0.5)),
            sample(905, 3.0, None),
            sample(910, 2.0, Some(0.7)),
        ];
        let answers = vec![
            ("A".to_owned(), Ok(summary("A", &[("B", true)], history))),
            (
                "B".to_owned(),
                Ok(summary("B", &[("A", true), ("C", false)], vec![])),
            ),
            ("C".to_owned(), Err("cannot connect to <C>".to_owned())),
        ];
        let page = render(&View {
            me: "A",
            config: &config,
            answers: &answers,
            now,
        });
        assert!(page.contains("data-verdict=\"unreachable\""), "{page}");
        assert_eq!(page.matches("<g class=\"server\"").count(), 3, "{page}");
        assert!(page.contains("data-a=\"A\" data-b=\"B\" data-state=\"up\""));
        assert!(page.contains("data-a=\"B\" data-b=\"C\" data-state=\"down\""));
        assert!(page.contains("cannot connect to &lt;C&gt;") && !page.contains("<C>"));
        assert!(page.contains("http-equiv=\"refresh\"") && !page.contains("<script"));
        // Requests: one run of three points; acknowledgements: two runs of one point (a gap
        // where nothing was acknowledged).
        let requests = series(
            &View {
                me: "A",
                config: &config,
                answers: &answers,
                now,
            },
            PLOTS[0].2,
        );
        assert_eq!(requests[0].1.len(), 1);
        assert_eq!(requests[0].1[0].len(), 3);
        assert!((requests[0].1[0][0].0 - (-100.0 / 60.0)).abs() < 1e-9);
        let acks = series(
            &View {
                me: "A",
                config: &config,
                answers: &answers,
                now,
            },
            PLOTS[1].2,
        );
        assert_eq!(acks[0].1.len(), 2);
        assert!(page.contains("<polyline"), "{page}");
        let ack_plot = &page[page.find("data-plot=\"ack\"").unwrap()..];
        let ack_plot = &ack_plot[..ack_plot.find("</figure>").unwrap()];
        assert_eq!(
            ack_plot.matches("<circle").count(),
            2,
            "lone values are dots"
        );
        assert_eq!(minutes_ago(0.0, 1.0), "now");
        assert_eq!(minutes_ago(0.5, 1.0), "0.5");
        assert_eq!(minutes_ago(12.0, 15.0), "12");
        assert_eq!(page.matches("<figure class=\"plot\"").count(), 4);
    }
}
