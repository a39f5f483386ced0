//! What a running node knows about itself: every counter, gauge and histogram of `/metrics`, and
//! the state the `/status` page shows (links up or down and since when, the last sync round of
//! each link, the latest stored reports, whether the node is ready).
//!
//! [`Telemetry`] is one cheap handle (an `Arc` inside) that the node's core calls through small
//! methods, each a few atomic operations: counting must never slow down the request path. The
//! status state sits behind a std `Mutex` held only for a few field writes, never across an
//! `.await`.
//!
//! What it promises: the metric families and labels listed in the interface
//! (`herd_requests_total{command}`, `herd_reports_total{outcome}`, `herd_records`,
//! `herd_peer_up{peer}`, `herd_sync_rounds_total{peer}`, `herd_sync_bytes_total{peer,direction}`,
//! `herd_places_cache_total{result}`, `herd_places_upstream_seconds`, `herd_flush_seconds`,
//! `herd_connections`), and beside them `herd_ack_seconds` (an IAMAT's arrival to its
//! acknowledgement), `herd_flood_seconds` (a flooded report's age on arrival here), `herd_connections_refused_total{reason}`,
//! `herd_admin_connections_dropped_total{reason}`, `herd_sync_violations_total{peer,kind}`
//! (links dropped for breaking the sync protocol), `herd_reports_refused_total{reason,source}`
//! (reports refused as from the future or as expired: [`Refusal`], from a peer by name or from
//! `client`), `herd_store_refused_total{reason,source}` (reports the store's limits refused),
//! and the store's state `herd_store_writable`, `herd_store_free_bytes`, `herd_store_bytes`;
//! rendered in Prometheus text format 0.0.4 by the `prometheus` crate. Every configured link has
//! its `herd_peer_up` series from the start (0 until it comes up).
//!
//! What it does not do: serve anything (that is [`crate::admin`]) or decide anything.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use bytes::Bytes;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::store::Store;

/// How many stored reports the status page lists.
pub const RECENT_REPORTS: usize = 10;

/// What kind of client request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    IAmAt,
    WhatsAt,
    /// Anything answered with `? `.
    Invalid,
}

/// Why an admin connection was closed before it was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminDrop {
    /// Every slot was taken: the oldest connection still sending its head made room.
    Full,
    /// Its address held its share of the slots: its oldest such connection made room.
    PerSource,
    /// Its request head did not arrive in time.
    HeadTimeout,
}

impl AdminDrop {
    pub const ALL: [AdminDrop; 3] = [
        AdminDrop::Full,
        AdminDrop::PerSource,
        AdminDrop::HeadTimeout,
    ];

    /// Its `reason` label (and its name in the log).
    pub fn label(self) -> &'static str {
        match self {
            AdminDrop::Full => "full",
            AdminDrop::PerSource => "per_source",
            AdminDrop::HeadTimeout => "head_timeout",
        }
    }
}

/// Why a report was refused before it reached the store (the `reason` label of
/// `herd_reports_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// Timestamped further ahead of this server's clock than `[limits] max_future_secs`.
    Future,
    /// Older than the store's retention window.
    Expired,
}

impl Refusal {
    pub const ALL: [Refusal; 2] = [Refusal::Future, Refusal::Expired];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Future => "future",
            Refusal::Expired => "expired",
        }
    }

    /// How the status page says it.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::Future => "refused as from the future",
            Refusal::Expired => "refused as expired",
        }
    }
}

/// The `source` label of a report refused from a client (any client: addresses are not
/// labels, there is no bound to them).
pub const CLIENT_SOURCE: &str = "client";

/// A refusal of one reason and source is logged at most once per this long (with the number
/// refused since the previous line), so a flood of refused reports costs a bounded log.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Whether the node is serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Listening, but the store is not open yet.
    Starting,
    /// Ready: listening and the store is open.
    Ready,
    /// Shutting down: no longer accepting clients.
    Stopping,
}

/// One link as the status page shows it.
#[derive(Debug, Clone, Default)]
pub struct LinkStatus {
    pub up: bool,
    /// When the link last changed state; `None` if it has never been up.
    pub since: Option<SystemTime>,
    /// Sync rounds completed with this peer.
    pub rounds: u64,
    /// The last completed sync round.
    pub last_sync: Option<SyncRound>,
    /// Sync bytes counted since the last completed round.
    pending_sent: u64,
    pending_received: u64,
}

/// A completed sync round with a peer, and the sync bytes exchanged with it since the round
/// before.
#[derive(Debug, Clone, Copy)]
pub struct SyncRound {
    pub at: SystemTime,
    pub sent: u64,
    pub received: u64,
}

/// A report this node stored, as the status page lists it.
#[derive(Debug, Clone)]
pub struct RecentReport {
    pub at: SystemTime,
    /// The report's AT line as stored (shared with the links' queues, not copied).
    pub line: Bytes,
    /// The peer it came from, or `None` for a client of this node.
    pub from: Option<Arc<str>>,
    /// Its place in the order of stored reports.
    seq: u64,
}

impl RecentReport {
    /// The AT line without its newline, escaped for display.
    pub fn text(&self) -> String {
        let line = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
        crate::logging::Escaped(line).to_string()
    }
}

/// How many of something were timed, and their total time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timing {
    pub count: u64,
    pub seconds: f64,
}

/// Running totals since the node started, for its history (see [`crate::admin`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Client requests answered, of every kind.
    pub requests: u64,
    /// IAMAT acknowledgements (`herd_ack_seconds`).
    pub ack: Timing,
    /// Flooded reports' ages on arrival (`herd_flood_seconds`).
    pub flood: Timing,
    /// Store flushes to disk, fsync included (`herd_flush_seconds`).
    pub flush: Timing,
}

/// A copy of the status state, taken for rendering.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub node: String,
    pub started: SystemTime,
    pub health: Health,
    pub links: BTreeMap<String, LinkStatus>,
    pub recent: Vec<RecentReport>,
    pub records: Option<u64>,
    pub connections: i64,
    /// Whether the store can write, once it is open.
    pub store: Option<crate::store::Health>,
    /// Reports the store refused: (reason, source, count).
    pub store_refused: Vec<(String, String, u64)>,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub requests: [(RequestKind, u64); 3],
    /// Reports refused, per reason, per source (a peer's name, or [`CLIENT_SOURCE`]); only
    /// the sources that had any.
    pub refused: Vec<(Refusal, Vec<(String, u64)>)>,
}

/// The telemetry of one node. Cloning is an `Arc` bump.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    started: SystemTime,
    health: AtomicU8,
    registry: Registry,
    iamat: IntCounter,
    whatsat: IntCounter,
    invalid: IntCounter,
    stored: IntCounter,
    stale: IntCounter,
    records: IntGauge,
    peer_up: IntGaugeVec,
    sync_rounds: IntCounterVec,
    sync_bytes: IntCounterVec,
    sync_violations: IntCounterVec,
    refused: IntCounterVec,
    /// Per reason and source: when a refusal was last logged, and how many since.
    refusal_log: Mutex<BTreeMap<(Refusal, String), (std::time::Instant, u64)>>,
    cache_hit: IntCounter,
    cache_miss: IntCounter,
    places_upstream: Histogram,
    flush: Histogram,
    ack: Histogram,
    flood: Histogram,
    connections: IntGauge,
    store_refused: IntCounterVec,
    store_writable: IntGauge,
    store_free: IntGauge,
    store_bytes: IntGauge,
    refused_total: IntCounter,
    refused_per_source: IntCounter,
    admin_dropped: IntCounterVec,
    /// The latest stored reports: a ring of slots, each with its own lock, so concurrent
    /// writers rarely meet.
    recent: Box<[Mutex<Option<RecentReport>>]>,
    recent_next: AtomicU64,
    /// Every linked peer's name, shared by the recent reports that came from it.
    peer_names: BTreeMap<String, Arc<str>>,
    /// The store, once open, for the record count.
    store: OnceLock<Store>,
    status: Mutex<Status>,
}

#[derive(Default)]
struct Status {
    links: BTreeMap<String, LinkStatus>,
}

/// Upper bounds (seconds) of the places upstream histogram: a Google request takes tens to
/// hundreds of milliseconds and times out after seconds.
const UPSTREAM_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds (seconds) of the acknowledgement and flood histograms: from a memory-speed
/// answer to a flood held up by a slow link.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// Upper bounds (seconds) of the flush histogram: an fsync takes from tens of microseconds
/// (a cache-backed disk) to hundreds of milliseconds (a busy spinning disk).
const FLUSH_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

impl Telemetry {
    /// Telemetry for node `node` with links to `peers` (each starts down).
    pub fn new<'a>(node: &str, peers: impl IntoIterator<Item = &'a String>) -> Telemetry {
        let registry = Registry::new();
        // The names and help texts are constants: registering them cannot fail.
        fn add<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: M) -> M {
            registry
                .register(Box::new(m.clone()))
                .expect("metric names are unique and valid");
            m
        }
        let requests = add(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "herd_requests_total",
                    "Client requests answered, by command.",
                ),
                &["command"],
            )
            .expect("valid metric"),
        );
        let reports = add(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "herd_reports_total",
                    "Reports offered to the store (from clients and peers): stored when newer, stale otherwise.",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
        );
        let records = add(
            &registry,
            IntGauge::new("herd_records", "Clients stored.").expect("valid metric"),
        );
        let peer_up = add(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "herd_peer_up",
                    "1 when the link to this peer is up, 0 when it is down.",
                ),
                &["peer"],
            )
            .expect("valid metric"),
        );
        let sync_rounds = add(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "herd_sync_rounds_total",
                    "Sync rounds completed with this peer.",
                ),
                &["peer"],
            )
            .expect("valid metric"),
        );
        let sync_bytes = add(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "herd_sync_bytes_total",
                    "Bytes of sync traffic with this peer, by direction.",
                ),
                &["peer", "direction"],
            )
            .expect("valid metric"),
        );
        let sync_violations = add(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "herd_sync_violations_total",
                    "Links to this peer dropped because it broke the sync protocol, by kind (repeated: a range asked twice in a round; malformed: a range or count that cannot exist).",
                ),
                &["peer", "kind"],
            )
            .expect("valid metric"),
        );
        let refused = add(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "herd_reports_refused_total",
                    "Reports refused before the store, by reason (future: timestamped beyond max_future_secs; expired: older than the retention window) and source (the peer's name, or client).",
                ),
                &["reason", "source"],
            )
            .expect("valid metric"),
        );
        let cache = add(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "herd_places_cache_total",
                    "Places lookups answered by the cache (hit) or by a fetch upstream (miss).",
                ),
                &["result"],
            )
            .expect("valid metric"),
        );
        let places_upstream = add(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "herd_places_upstream_seconds",
                    "Time of one places request upstream, failures included.",
                )
                .buckets(UPSTREAM_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
        );
        let flush = add(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "herd_flush_seconds",
                    "Time of one flush of the store to disk.",
                )
                .buckets(FLUSH_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
        );
        let ack = add(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "herd_ack_seconds",
                    "Time from an IAMAT's arrival to its acknowledgement being ready: stored \
                     (durably, as configured) and queued for the linked servers.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
        );
        let flood = add(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "herd_flood_seconds",
                    "Age of a flooded report when it arrives from a peer: this server's clock \
                     minus the moment the report's first server received it (its client \
                     timestamp plus its time difference). Reports sent during a sync round are \
                     not counted.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
        );
        let connections = add(
            &registry,
            IntGauge::new("herd_connections", "Client connections open.").expect("valid metric"),
        );
        let store_refused = add(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "herd_store_refused_total",
                    "Reports the store's admission rules refused, by reason (client_id_too_long, expired, new_client, no_space) and source (client, or the peer it came from).",
                ),
                &["reason", "source"],
            )
            .expect("valid metric"),
        );
        let store_writable = add(
            &registry,
            IntGauge::new(
                "herd_store_writable",
                "2: the store takes every report; 1: known clients only (a limit is reached); 0: it cannot write.",
            )
            .expect("valid metric"),
        );
        let store_free = add(
            &registry,
            IntGauge::new(
                "herd_store_free_bytes",
                "Bytes free on the store's disk, when the store last looked.",
            )
            .expect("valid metric"),
        );
        let store_bytes = add(
            &registry,
            IntGauge::new(
                "herd_store_bytes",
                "Bytes the store's files take on disk, when the store last looked.",
            )
            .expect("valid metric"),
        );
        let connections_refused = add(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "herd_connections_refused_total",
                    "Client connections closed at once: past max_connections, or past \
                     max_connections_per_source from their address.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
        );
        let admin_dropped = add(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "herd_admin_connections_dropped_total",
                    "Admin connections closed before they were answered: to make room for a \
                     newer one when every slot was taken (full) or their address held its \
                     share (per_source), or because their request head did not arrive in time \
                     (head_timeout).",
                ),
                &["reason"],
            )
            .expect("valid metric"),
        );
        for reason in AdminDrop::ALL {
            admin_dropped.with_label_values(&[reason.label()]);
        }
        let peers: Vec<&String> = peers.into_iter().collect();
        for reason in Refusal::ALL {
            refused.with_label_values(&[reason.label(), CLIENT_SOURCE]);
        }
        let telemetry = Telemetry {
            inner: Arc::new(Inner {
                node: node.to_owned(),
                started: SystemTime::now(),
                health: AtomicU8::new(Health::Starting as u8),
                iamat: requests.with_label_values(&["IAMAT"]),
                whatsat: requests.with_label_values(&["WHATSAT"]),
                invalid: requests.with_label_values(&["invalid"]),
                stored: reports.with_label_values(&["stored"]),
                stale: reports.with_label_values(&["stale"]),
                cache_hit: cache.with_label_values(&["hit"]),
                cache_miss: cache.with_label_values(&["miss"]),
                registry,
                records,
                peer_up,
                sync_rounds,
                sync_bytes,
                sync_violations,
                refused,
                refusal_log: Mutex::new(BTreeMap::new()),
                places_upstream,
                flush,
                ack,
                flood,
                connections,
                store_refused,
                store_writable,
                store_free,
                store_bytes,
                refused_total: connections_refused.with_label_values(&["max_connections"]),
                refused_per_source: connections_refused.with_label_values(&["per_source"]),
                admin_dropped,
                store: OnceLock::new(),
                recent: (0..RECENT_REPORTS).map(|_| Mutex::new(None)).collect(),
                recent_next: AtomicU64::new(0),
                peer_names: peers
                    .iter()
                    .map(|p| (p.to_string(), Arc::from(p.as_str())))
                    .collect(),
                status: Mutex::new(Status::default()),
            }),
        };
        for peer in peers {
            telemetry.add_peer(peer);
        }
        telemetry
    }

    /// A link to `peer` (new at start-up, or added by a config reload): its series start at
    /// zero and it is down.
    pub fn add_peer(&self, peer: &str) {
        let inner = &self.inner;
        for reason in Refusal::ALL {
            inner.refused.with_label_values(&[reason.label(), peer]);
        }
        inner.peer_up.with_label_values(&[peer]).set(0);
        inner.sync_rounds.with_label_values(&[peer]);
        for direction in ["sent", "received"] {
            inner.sync_bytes.with_label_values(&[peer, direction]);
        }
        self.status().links.entry(peer.to_owned()).or_default();
    }

    /// The link to `peer` was removed by a config reload: its series and status go.
    pub fn forget_peer(&self, peer: &str) {
        let inner = &self.inner;
        for reason in Refusal::ALL {
            let _ = inner.refused.remove_label_values(&[reason.label(), peer]);
        }
        let _ = inner.peer_up.remove_label_values(&[peer]);
        let _ = inner.sync_rounds.remove_label_values(&[peer]);
        for direction in ["sent", "received"] {
            let _ = inner.sync_bytes.remove_label_values(&[peer, direction]);
        }
        self.status().links.remove(peer);
    }

    fn status(&self) -> MutexGuard<'_, Status> {
        // A panic while holding this lock leaves only display state behind: keep going.
        self.inner.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    // ----- health -------------------------------------------------------------------------

    /// Whether the node is starting, ready or stopping.
    pub fn health(&self) -> Health {
        match self.inner.health.load(Ordering::Acquire) {
            x if x == Health::Ready as u8 => Health::Ready,
            x if x == Health::Stopping as u8 => Health::Stopping,
            _ => Health::Starting,
        }
    }

    /// The node is listening and its store is open.
    pub fn set_ready(&self) {
        self.inner
            .health
            .store(Health::Ready as u8, Ordering::Release);
    }

    /// The node has begun to shut down.
    pub fn set_stopping(&self) {
        self.inner
            .health
            .store(Health::Stopping as u8, Ordering::Release);
    }

    // ----- the hooks the core calls ---------------------------------------------------------

    /// A client request was answered (or will be: counted when it is run).
    pub fn request(&self, kind: RequestKind) {
        match kind {
            RequestKind::IAmAt => self.inner.iamat.inc(),
            RequestKind::WhatsAt => self.inner.whatsat.inc(),
            RequestKind::Invalid => self.inner.invalid.inc(),
        }
    }

    /// A report was offered to the store: `stored` when it won, stale otherwise.
    pub fn report(&self, stored: bool) {
        if stored {
            self.inner.stored.inc();
        } else {
            self.inner.stale.inc();
        }
    }

    /// A stored report (its AT line, shared), for the status page's list of the latest ones.
    pub fn recent_report(&self, at_line: Bytes, from: Option<&str>) {
        let seq = self.inner.recent_next.fetch_add(1, Ordering::Relaxed);
        let entry = RecentReport {
            at: SystemTime::now(),
            line: at_line,
            from: from.map(|p| match self.inner.peer_names.get(p) {
                Some(name) => Arc::clone(name),
                None => Arc::from(p),
            }),
            seq,
        };
        let slot = &self.inner.recent[(seq % RECENT_REPORTS as u64) as usize];
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        // A slower writer of an older report must not overwrite a newer one.
        if slot.as_ref().is_none_or(|old| old.seq < seq) {
            *slot = Some(entry);
        }
    }

    /// A client connection was accepted. Returns a guard that counts it closed when dropped,
    /// so no exit path of a connection can leave the gauge high.
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.inner.connections.inc();
        ConnectionGuard {
            telemetry: self.clone(),
        }
    }

    /// A client connection was refused: past `max_connections` (`per_source` false) or past
    /// `max_connections_per_source`.
    pub fn connection_refused(&self, per_source: bool) {
        if per_source {
            self.inner.refused_per_source.inc();
        } else {
            self.inner.refused_total.inc();
        }
    }

    /// An admin connection was closed before it was answered.
    pub fn admin_dropped(&self, why: AdminDrop) {
        self.inner
            .admin_dropped
            .with_label_values(&[why.label()])
            .inc();
    }

    /// A client connection closed (what [`ConnectionGuard`] calls on drop).
    pub fn connection_closed(&self) {
        self.inner.connections.dec();
    }

    /// The link to `peer` came up (`true`) or went down (`false`).
    pub fn peer_up(&self, peer: &str, up: bool) {
        self.inner
            .peer_up
            .with_label_values(&[peer])
            .set(i64::from(up));
        let mut status = self.status();
        let link = status.links.entry(peer.to_owned()).or_default();
        if link.up != up || link.since.is_none() {
            link.up = up;
            link.since = Some(SystemTime::now());
        }
    }

    /// A sync round with `peer` completed.
    pub fn sync_round(&self, peer: &str) {
        self.inner.sync_rounds.with_label_values(&[peer]).inc();
        let mut status = self.status();
        let link = status.links.entry(peer.to_owned()).or_default();
        link.rounds += 1;
        link.last_sync = Some(SyncRound {
            at: SystemTime::now(),
            sent: std::mem::take(&mut link.pending_sent),
            received: std::mem::take(&mut link.pending_received),
        });
    }

    /// Sync traffic with `peer`: `sent` bytes written to it, `received` bytes read from it.
    pub fn sync_bytes(&self, peer: &str, sent: u64, received: u64) {
        if sent > 0 {
            self.inner
                .sync_bytes
                .with_label_values(&[peer, "sent"])
                .inc_by(sent);
        }
        if received > 0 {
            self.inner
                .sync_bytes
                .with_label_values(&[peer, "received"])
                .inc_by(received);
        }
        let mut status = self.status();
        let link = status.links.entry(peer.to_owned()).or_default();
        link.pending_sent += sent;
        link.pending_received += received;
    }

    /// The link to `peer` was dropped because it broke the sync protocol (`kind`, from
    /// [`crate::peer::sync::Violation::kind`]).
    pub fn sync_violation(&self, peer: &str, kind: &str) {
        self.inner
            .sync_violations
            .with_label_values(&[peer, kind])
            .inc();
    }

    /// A report from `from` (a peer's name, or `None` for a client) was refused for `reason`.
    /// Returns how many of that reason and source were refused since the last time it
    /// returned a number, at most once per [`REFUSAL_LOG_EVERY`] (and for the first one): the
    /// caller logs one line then, so refusals cost a bounded log, not a line each.
    #[must_use = "log the refusal when a count is returned"]
    pub fn refused(&self, reason: Refusal, from: Option<&str>) -> Option<u64> {
        let source = from.unwrap_or(CLIENT_SOURCE);
        self.inner
            .refused
            .with_label_values(&[reason.label(), source])
            .inc();
        let now = std::time::Instant::now();
        let mut log = self
            .inner
            .refusal_log
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match log.get_mut(&(reason, source.to_owned())) {
            None => {
                log.insert((reason, source.to_owned()), (now, 0));
                Some(1)
            }
            Some((last, pending)) => {
                *pending += 1;
                if now.duration_since(*last) < REFUSAL_LOG_EVERY {
                    return None;
                }
                *last = now;
                Some(std::mem::take(pending))
            }
        }
    }

    /// Reports refused for `reason`, per source, the sources that had any (every source
    /// refused has an entry in the refusal log).
    fn refusals(&self, reason: Refusal) -> Vec<(String, u64)> {
        let log = self
            .inner
            .refusal_log
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        log.keys()
            .filter(|(r, _)| *r == reason)
            .map(|(_, source)| {
                let n = self
                    .inner
                    .refused
                    .with_label_values(&[reason.label(), source.as_str()])
                    .get();
                (source.clone(), n)
            })
            .collect()
    }

    /// The store was flushed to disk, taking `took`.
    pub fn flush(&self, took: Duration) {
        self.inner.flush.observe(took.as_secs_f64());
    }

    /// An IAMAT's acknowledgement was ready `took` after the request arrived.
    pub fn acknowledged(&self, took: Duration) {
        self.inner.ack.observe(took.as_secs_f64());
    }

    /// A report flooded from a peer arrived `age` after its first server received it.
    pub fn flooded(&self, age: Duration) {
        self.inner.flood.observe(age.as_secs_f64());
    }

    /// A places lookup was answered from the cache (`true`) or needed a fetch (`false`).
    pub fn places_cache(&self, hit: bool) {
        if hit {
            self.inner.cache_hit.inc();
        } else {
            self.inner.cache_miss.inc();
        }
    }

    /// One places request upstream took `took`.
    pub fn places_upstream(&self, took: Duration) {
        self.inner.places_upstream.observe(took.as_secs_f64());
    }

    // ----- the record count ----------------------------------------------------------------

    /// The store is open: the record count comes from it from now on.
    pub fn store_opened(&self, store: Store) {
        let _ = self.inner.store.set(store);
    }

    /// How many clients the store holds: O(1), and `None` until the store has built its
    /// fingerprints at start (a walk of the store, done while the node already serves).
    pub fn records(&self) -> Option<u64> {
        self.inner.store.get()?.count()
    }

    /// The store refused a report (`from`: the peer it came from; a client's otherwise).
    pub fn store_refused(&self, why: crate::store::Refusal, from: Option<&str>) {
        self.inner
            .store_refused
            .with_label_values(&[why.as_str(), from.unwrap_or("client")])
            .inc();
    }

    /// Whether the store can write, once it is open.
    pub fn store_health(&self) -> Option<crate::store::Health> {
        Some(self.inner.store.get()?.health())
    }

    /// Reports the store refused so far: (reason, source, count), for the status page.
    fn store_refusals(&self) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        for family in prometheus::core::Collector::collect(&self.inner.store_refused) {
            for metric in family.get_metric() {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_owned())
                        .unwrap_or_default()
                };
                let count = metric.get_counter().get_value() as u64;
                if count > 0 {
                    out.push((label("reason"), label("source"), count));
                }
            }
        }
        out
    }

    // ----- reading ---------------------------------------------------------------------------

    /// Every metric in Prometheus text format 0.0.4, and its content type.
    pub fn metrics_text(&self) -> (String, &'static str) {
        if let Some(records) = self.records() {
            self.inner
                .records
                .set(i64::try_from(records).unwrap_or(i64::MAX));
        }
        if let Some(health) = self.store_health() {
            use crate::store::Writable;
            let level = match health.writable {
                Writable::Yes => 2,
                Writable::KnownClientsOnly => 1,
                Writable::No => 0,
            };
            self.inner.store_writable.set(level);
            let gauge = |bytes: Option<u64>| i64::try_from(bytes.unwrap_or(0)).unwrap_or(i64::MAX);
            self.inner.store_free.set(gauge(health.free_bytes));
            self.inner.store_bytes.set(gauge(health.store_bytes));
        }
        let encoder = TextEncoder::new();
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding counters, gauges and histograms into a Vec cannot fail.
        let _ = encoder.encode(&self.inner.registry.gather(), &mut out);
        (
            String::from_utf8(out).unwrap_or_default(),
            prometheus::TEXT_FORMAT,
        )
    }

    /// The running totals the node's history is sampled from.
    pub fn totals(&self) -> Totals {
        let timing = |h: &Histogram| Timing {
            count: h.get_sample_count(),
            seconds: h.get_sample_sum(),
        };
        let i = &self.inner;
        Totals {
            requests: i.iamat.get() + i.whatsat.get() + i.invalid.get(),
            ack: timing(&i.ack),
            flood: timing(&i.flood),
            flush: timing(&i.flush),
        }
    }

    /// A copy of everything the status page shows.
    pub fn snapshot(&self) -> Snapshot {
        let status = self.status();
        Snapshot {
            node: self.inner.node.clone(),
            started: self.inner.started,
            health: self.health(),
            links: status.links.clone(),
            recent: self.recent(),
            records: None,
            connections: self.inner.connections.get(),
            store: self.store_health(),
            store_refused: self.store_refusals(),
            cache_hits: self.inner.cache_hit.get(),
            cache_misses: self.inner.cache_miss.get(),
            requests: [
                (RequestKind::IAmAt, self.inner.iamat.get()),
                (RequestKind::WhatsAt, self.inner.whatsat.get()),
                (RequestKind::Invalid, self.inner.invalid.get()),
            ],
            refused: Refusal::ALL
                .into_iter()
                .map(|r| (r, self.refusals(r)))
                .filter(|(_, by)| !by.is_empty())
                .collect(),
        }
        .with_records(self.records())
    }
}

impl Telemetry {
    /// The latest stored reports, newest first.
    fn recent(&self) -> Vec<RecentReport> {
        let mut recent: Vec<RecentReport> = self
            .inner
            .recent
            .iter()
            .filter_map(|slot| slot.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect();
        recent.sort_by_key(|r| std::cmp::Reverse(r.seq));
        recent
    }
}

impl Snapshot {
    fn with_records(mut self, records: Option<u64>) -> Snapshot {
        self.records = records;
        self
    }
}

/// Counts a client connection closed when dropped.
pub struct ConnectionGuard {
    telemetry: Telemetry,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.telemetry.connection_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exported_with_its_labels() {
        let peers = ["Bona".to_string(), "Clark".to_string()];
        let t = Telemetry::new("Bailey", &peers);
        t.request(RequestKind::IAmAt);
        t.request(RequestKind::IAmAt);
        t.request(RequestKind::Invalid);
        t.report(true);
        t.peer_up("Bona", true);
        t.sync_bytes("Bona", 10, 20);
        t.sync_round("Bona");
        t.places_cache(true);
        t.places_upstream(Duration::from_millis(30));
        t.flush(Duration::from_micros(300));
        t.acknowledged(Duration::from_millis(2));
        t.flooded(Duration::from_millis(4));
        t.flooded(Duration::from_millis(6));
        let guard = t.connection_opened();
        t.connection_refused(true);
        t.admin_dropped(AdminDrop::PerSource);
        t.admin_dropped(AdminDrop::PerSource);
        let (text, content_type) = t.metrics_text();
        assert!(content_type.contains("version=0.0.4"), "{content_type}");
        for line in [
            "# TYPE herd_requests_total counter",
            "herd_requests_total{command=\"IAMAT\"} 2",
            "herd_requests_total{command=\"invalid\"} 1",
            "herd_requests_total{command=\"WHATSAT\"} 0",
            "herd_reports_total{outcome=\"stored\"} 1",
            "herd_reports_total{outcome=\"stale\"} 0",
            "herd_peer_up{peer=\"Bona\"} 1",
            "herd_peer_up{peer=\"Clark\"} 0",
            "herd_sync_rounds_total{peer=\"Bona\"} 1",
            "herd_sync_rounds_total{peer=\"Clark\"} 0",
            "herd_sync_bytes_total{direction=\"sent\",peer=\"Bona\"} 10",
            "herd_sync_bytes_total{direction=\"received\",peer=\"Bona\"} 20",
            "herd_places_cache_total{result=\"hit\"} 1",
            "herd_places_cache_total{result=\"miss\"} 0",
            "# TYPE herd_places_upstream_seconds histogram",
            "herd_places_upstream_seconds_count 1",
            "# TYPE herd_flush_seconds histogram",
            "herd_flush_seconds_count 1",
            "# TYPE herd_ack_seconds histogram",
            "herd_ack_seconds_count 1",
            "# TYPE herd_flood_seconds histogram",
            "herd_flood_seconds_count 2",
            "# TYPE herd_records gauge",
            "herd_connections 1",
            "herd_connections_refused_total{reason=\"per_source\"} 1",
            "herd_connections_refused_total{reason=\"max_connections\"} 0",
            "herd_admin_connections_dropped_total{reason=\"per_source\"} 2",
            "herd_admin_connections_dropped_total{reason=\"full\"} 0",
            "herd_admin_connections_dropped_total{reason=\"head_timeout\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        drop(guard);
        assert!(t.metrics_text().0.contains("herd_connections 0\n"));
        let totals = t.totals();
        assert_eq!(totals.requests, 3);
        assert_eq!(
            (totals.ack.count, totals.flood.count, totals.flush.count),
            (1, 2, 1)
        );
        assert!((totals.flood.seconds - 0.010).abs() < 1e-9, "{totals:?}");
        let snap = t.snapshot();
        let bona = &snap.links["Bona"];
        assert!(bona.up && bona.since.is_some());
        assert_eq!(bona.rounds, 1);
        let round = bona.last_sync.unwrap();
        assert_eq!((round.sent, round.received), (10, 20));
        assert!(!snap.links["Clark"].up && snap.links["Clark"].since.is_none());
    }

    #[test]
    fn links_added_and_removed_by_a_reload_come_and_go_from_the_metrics_and_status() {
        let peers = ["Bona".to_string()];
        let t = Telemetry::new("Bailey", &peers);
        t.add_peer("Dalton");
        let (text, _) = t.metrics_text();
        for line in [
            "herd_peer_up{peer=\"Dalton\"} 0",
            "herd_sync_rounds_total{peer=\"Dalton\"} 0",
            "herd_sync_bytes_total{direction=\"sent\",peer=\"Dalton\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
        t.peer_up("Dalton", true);
        assert!(t.snapshot().links["Dalton"].up);
        t.forget_peer("Bona");
        let (text, _) = t.metrics_text();
        assert!(!text.contains("peer=\"Bona\""), "{text}");
        assert!(text.contains("herd_peer_up{peer=\"Dalton\"} 1"), "{text}");
        assert!(!t.snapshot().links.contains_key("Bona"));
    }

    #[test]
    fn the_recent_list_keeps_the_newest_first_and_is_bounded() {
        let t = Telemetry::new("A", &[]);
        for i in 0..(RECENT_REPORTS + 3) {
            t.recent_report(Bytes::from(format!("AT A +0.1 c{i} +1+2 {i}\n")), None);
        }
        let recent = t.snapshot().recent;
        assert_eq!(recent.len(), RECENT_REPORTS);
        assert_eq!(
            recent[0].text(),
            format!("AT A +0.1 c{0} +1+2 {0}", RECENT_REPORTS + 2)
        );
        assert!(recent.windows(2).all(|w| w[0].seq > w[1].seq));
    }

    #[test]
    fn refusals_are_counted_per_reason_and_source_and_logged_at_a_bounded_rate() {
        let peers = ["Bona".to_string()];
        let t = Telemetry::new("Bailey", &peers);
        let (text, _) = t.metrics_text();
        for line in [
            "herd_reports_refused_total{reason=\"future\",source=\"Bona\"} 0",
            "herd_reports_refused_total{reason=\"expired\",source=\"client\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
        assert!(t.snapshot().refused.is_empty());
        let logged: Vec<Option<u64>> = (0..120)
            .map(|_| t.refused(Refusal::Future, Some("Bona")))
            .collect();
        assert_eq!(logged[0], Some(1), "the first is logged at once");
        assert!(
            logged[1..].iter().all(Option::is_none),
            "then not for a while"
        );
        assert_eq!(
            t.refused(Refusal::Future, None),
            Some(1),
            "each source apart"
        );
        for _ in 0..2 {
            let _ = t.refused(Refusal::Future, None);
        }
        let (text, _) = t.metrics_text();
        assert!(
            text.contains("herd_reports_refused_total{reason=\"future\",source=\"Bona\"} 120\n")
        );
        assert!(
            text.contains("herd_reports_refused_total{reason=\"future\",source=\"client\"} 3\n")
        );
        let snap = t.snapshot();
        assert_eq!(
            snap.refused,
            vec![(
                Refusal::Future,
                vec![("Bona".to_string(), 120), ("client".to_string(), 3)]
            )]
        );
    }

    #[test]
    fn health_moves_from_starting_to_ready_to_stopping() {
        let t = Telemetry::new("A", &[]);
        assert_eq!(t.health(), Health::Starting);
        t.set_ready();
        assert_eq!(t.health(), Health::Ready);
        t.set_stopping();
        assert_eq!(t.health(), Health::Stopping);
    }
}
