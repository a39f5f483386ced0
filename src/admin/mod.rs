//! The admin HTTP endpoint of one node: `/healthz`, `/metrics`, `/status`, `/clients/ID`,
//! `/backup`, and for the whole herd `/herd` (a page) and `/herd.json` (this node's part of
//! it), on its own address (never the client port), served by hyper on the node's own runtime.
//! Beside it runs the node's sampler, which keeps the node's own history for the plots of
//! `/herd`.
//!
//! What it promises:
//!
//! - **Bounded like the client port.** At most [`MAX_CONNECTIONS`] connections at once, and
//!   [`MAX_PER_SOURCE`] from one address; one request per connection (no keep-alive); the
//!   request head must arrive within [`HEAD_TIMEOUT`] and fit in [`MAX_HEAD_BYTES`] (hyper
//!   answers 431 otherwise); a connection lives at most [`CONNECTION_TIMEOUT`]. Request bodies
//!   are never read.
//! - **Always answerable.** A new connection is never refused: when there is no room, the
//!   oldest connection still sending its head is closed instead (see `slots.rs`), so any number
//!   of slow or idle connections cannot keep a probe out. Each connection closed early is
//!   counted in `herd_admin_connections_dropped_total{reason}`; the log gets the first one at
//!   once and then one summary per `[log] interval_secs`, never a record per connection.
//! - **Never in the clients' way.** Handlers read atomics, one mutex held for a copy, and at
//!   most one store lookup (a backup reads its pages on the blocking pool); nothing here
//!   waits on a client, a peer or a flush. `/herd` alone waits on something else: the other
//!   servers' admin endpoints, all asked at once, each for at most [`summary::FETCH_TIMEOUT`].
//! - **Exact answers.** `GET` (and `HEAD`) only: any other method is 405 with `Allow`; an
//!   unknown path is 404. `/healthz` is 200 `ok` (no newline) once the node is ready and 503 while it starts
//!   or stops. `/clients/ID` takes the client ID percent-encoded (any bytes) and answers the
//!   record as `herd inspect --format json` prints it, or 404. `/backup` streams every record
//!   as a records file (see `backup.rs`, one at a time); it alone outlives
//!   [`CONNECTION_TIMEOUT`], bounded instead by how long its reader may stall.
//! - **Protected mode.** Without a herd secret the endpoint may only listen on loopback, as
//!   peers may only connect from there; [`Admin::bind`] refuses anything else.
//!
//! Not a goal: authentication. With a secret set it may listen anywhere, and anyone who reaches
//! it can read client locations: put it on a private network.

mod backup;
mod herd_page;
pub mod history;
mod html;
mod slots;
mod status;
pub mod summary;
pub mod verdict;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::refusals::Refusals;
use crate::telemetry::{AdminDrop, Health, Telemetry};
use history::{History, Sample};
use slots::{Admitted, Slots};

/// The most admin connections open at once.
pub const MAX_CONNECTIONS: usize = 64;
/// The most admin connections open at once from one source address.
pub const MAX_PER_SOURCE: usize = 16;
/// How long a request head may take to arrive.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest request head accepted, in bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The longest an admin connection may stay open.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);

/// A bound admin endpoint, not yet serving.
pub struct Admin {
    listener: TcpListener,
    local: SocketAddr,
}

/// What the handlers share.
#[derive(Clone)]
struct Shared {
    telemetry: Telemetry,
    /// The node, once its store is open.
    node: Arc<OnceLock<Node>>,
    /// The herd's config: its servers, links and admin addresses, for `/herd`.
    config: Arc<Config>,
    /// This node's own history.
    history: Arc<Mutex<History>>,
    /// For asking the other servers' admin endpoints.
    http: reqwest::Client,
    /// One permit: one `/backup` at a time.
    backups: Arc<Semaphore>,
}

impl Admin {
    /// Binds `addr`. `named` says where the address came from (`--admin` or `admin.NAME`) for
    /// messages; `protected` (no herd secret) insists on a loopback address.
    pub async fn bind(addr: &str, named: &str, protected: bool) -> Result<Admin> {
        let listener = TcpListener::bind(addr).await.map_err(|e| Error::Address {
            addr: addr.to_owned(),
            message: format!("{named}: cannot listen: {e}"),
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("read the admin address", e))?;
        if protected && !local.ip().is_loopback() {
            return Err(Error::config(
                named,
                format!(
                    "admin address {addr} is not a loopback address; without a herd secret \
                     (HERD_SECRET or secret_file) the admin endpoint may only listen on loopback"
                ),
            ));
        }
        Ok(Admin { listener, local })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until `stop` fires, then waits (bounded) for the requests being answered.
    /// `node` is filled in once the store is open; until then `/clients` answers 503.
    /// Connections closed early are summarised in the log once per `[log] interval_secs`.
    /// The node's history is sampled meanwhile, every [`history::SAMPLE_EVERY`].
    pub async fn serve(
        self,
        telemetry: Telemetry,
        node: Arc<OnceLock<Node>>,
        config: Arc<Config>,
        stop: CancellationToken,
    ) {
        let interval = config.log.interval();
        let history = Arc::new(Mutex::new(History::new(history::KEEP)));
        let sampler = tokio::spawn(sample(
            telemetry.clone(),
            Arc::clone(&history),
            stop.clone(),
        ));
        let shared = Shared {
            telemetry,
            node,
            config,
            history,
            http: summary::http_client(),
            backups: Arc::new(Semaphore::new(1)),
        };
        let slots = Arc::new(Mutex::new(Slots::new(MAX_CONNECTIONS, MAX_PER_SOURCE)));
        let dropped = Arc::new(Mutex::new(Refusals::new()));
        let mut summary =
            tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let connections = TaskTracker::new();
        loop {
            let (stream, remote) = tokio::select! {
                _ = stop.cancelled() => break,
                _ = summary.tick() => {
                    log_summary(&dropped, interval);
                    continue;
                }
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let admitted = lock(&slots).admit(remote.ip());
            if let Some((ip, why)) = admitted.evicted {
                count_drop(&shared.telemetry, &dropped, ip, why, interval);
            }
            let shared = shared.clone();
            let stop = stop.clone();
            let slots = Arc::clone(&slots);
            let dropped = Arc::clone(&dropped);
            connections.spawn(async move {
                let Admitted {
                    id,
                    head_done,
                    close,
                    ..
                } = admitted;
                let telemetry = shared.telemetry.clone();
                let seen = Arc::clone(&head_done);
                let streaming = Arc::new(AtomicBool::new(false));
                let streams = Arc::clone(&streaming);
                let service = service_fn(move |req| {
                    seen.store(true, Ordering::Release);
                    let shared = shared.clone();
                    let streams = Arc::clone(&streams);
                    async move {
                        let answer = route(&shared, req).await;
                        if answer.extensions().get::<backup::Streaming>().is_some() {
                            streams.store(true, Ordering::Release);
                        }
                        Ok::<_, Infallible>(answer)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .max_buf_size(MAX_HEAD_BYTES)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                // A streamed answer (a backup) is bounded by its own stall limit instead.
                let deadline = tokio::time::sleep(CONNECTION_TIMEOUT);
                tokio::pin!(deadline);
                let mut deadline_on = true;
                let head_timer = tokio::time::sleep(HEAD_TIMEOUT);
                tokio::pin!(head_timer);
                let mut head_timer_on = true;
                loop {
                    tokio::select! {
                        result = &mut conn => {
                            if let Err(e) = result {
                                tracing::debug!(%remote, error = %e, "admin connection failed");
                            }
                            break;
                        }
                        _ = &mut deadline, if deadline_on => {
                            if streaming.load(Ordering::Acquire) {
                                deadline_on = false;
                                continue;
                            }
                            tracing::debug!(%remote, "admin connection timed out");
                            break;
                        }
                        _ = &mut head_timer, if head_timer_on => {
                            if head_done.load(Ordering::Acquire) {
                                head_timer_on = false;
                                continue;
                            }
                            count_drop(&telemetry, &dropped, remote.ip(), AdminDrop::HeadTimeout, interval);
                            break;
                        }
                        // Closed to make room: already counted.
                        _ = close.cancelled() => break,
                        _ = stop.cancelled() => break,
                    }
                }
                lock(&slots).leave(id);
            });
        }
        connections.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
        log_summary(&dropped, interval);
        let _ = sampler.await;
    }
}

/// Samples the node's totals every [`history::SAMPLE_EVERY`] into `history`, until `stop`.
async fn sample(telemetry: Telemetry, history: Arc<Mutex<History>>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(history::SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: it only takes the first reading.
    ticks.tick().await;
    let mut last = (tokio::time::Instant::now(), telemetry.totals());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {
                let now = tokio::time::Instant::now();
                let totals = telemetry.totals();
                let at = summary::unix(std::time::SystemTime::now());
                let sample = Sample::between(&last.1, &totals, now - last.0, at);
                lock(&history).push(sample);
                last = (now, totals);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts an admin connection closed early; the first after a quiet interval is logged at once,
/// the rest in the interval's summary.
fn count_drop(
    telemetry: &Telemetry,
    dropped: &Mutex<Refusals>,
    ip: IpAddr,
    why: AdminDrop,
    interval: Duration,
) {
    telemetry.admin_dropped(why);
    if lock(dropped).count(ip, why.label()) {
        tracing::warn!(
            source = %ip,
            reason = why.label(),
            limit = MAX_CONNECTIONS,
            per_source = MAX_PER_SOURCE,
            head_timeout_secs = HEAD_TIMEOUT.as_secs(),
            summary_secs = interval.as_secs(),
            "admin connection closed before its request; more are summarised once per interval"
        );
    }
}

/// Logs the interval's summary of admin connections closed early, if there is one.
fn log_summary(dropped: &Mutex<Refusals>, interval: Duration) {
    let Some(s) = lock(dropped).end_interval() else {
        return;
    };
    tracing::warn!(
        closed = s.total,
        reasons = %s.reasons,
        sources = s.sources,
        top = %s.top,
        interval_secs = interval.as_secs(),
        "admin connections closed before their request in the last interval"
    );
}

/// A running admin endpoint, as the node holds it.
pub struct Running {
    /// Filled in with the node once its store is open.
    pub node: Arc<OnceLock<Node>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops serving (the node calls this last, so `/healthz` says "stopping" while it drains).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Starts node `name`'s admin endpoint at `flag` (`--admin`) or else the config's
/// `admin.NAME`; `None` when neither names an address.
pub async fn start(
    name: &str,
    config: &crate::config::Config,
    flag: Option<String>,
    telemetry: &Telemetry,
) -> Result<Option<Running>> {
    let (addr, named) = match (flag, config.admin.get(name)) {
        (Some(addr), _) => (addr, "--admin".to_owned()),
        (None, Some(addr)) => (addr.clone(), format!("{}: admin.{name}", config.source)),
        (None, None) => return Ok(None),
    };
    let admin = Admin::bind(&addr, &named, config.secret.is_none()).await?;
    tracing::info!(admin = %admin.local_addr(), "admin endpoint listening");
    let node = Arc::new(OnceLock::new());
    let stop = CancellationToken::new();
    let task = tokio::spawn(admin.serve(
        telemetry.clone(),
        Arc::clone(&node),
        Arc::new(config.clone()),
        stop.clone(),
    ));
    Ok(Some(Running { node, stop, task }))
}

type Answer = Response<BoxBody<Bytes, std::io::Error>>;

fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let body = Full::new(body.into()).map_err(|never| match never {});
    let mut response = Response::new(body.boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

const TEXT: &str = "text/plain; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// This node's summary, as `/herd.json` serves it.
fn local_summary(shared: &Shared) -> summary::Summary {
    let history = lock(&shared.history).samples();
    summary::local(&shared.telemetry.snapshot(), shared.node.get(), history)
}

fn not_found() -> Answer {
    answer(StatusCode::NOT_FOUND, TEXT, "not found\n")
}

fn not_open() -> Answer {
    answer(
        StatusCode::SERVICE_UNAVAILABLE,
        TEXT,
        "the store is not open yet\n",
    )
}

async fn route(shared: &Shared, req: Request<Incoming>) -> Answer {
    let path = req.uri().path();
    let known = matches!(
        path,
        "/healthz" | "/metrics" | "/status" | "/" | "/herd" | "/backup" | summary::PATH
    ) || path.starts_with("/clients/");
    if !known {
        return not_found();
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = answer(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET and HEAD are allowed\n",
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let telemetry = &shared.telemetry;
    match path {
        "/healthz" => match telemetry.health() {
            Health::Ready => match telemetry.store_health() {
                // The readiness probe: a node that cannot write takes no report.
                Some(store) if store.writable == crate::store::Writable::No => answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    format!("store cannot write: {}", store.reason),
                ),
                _ => answer(StatusCode::OK, TEXT, "ok"),
            },
            Health::Starting => answer(StatusCode::SERVICE_UNAVAILABLE, TEXT, "starting"),
            Health::Stopping => answer(StatusCode::SERVICE_UNAVAILABLE, TEXT, "stopping"),
        },
        "/metrics" => {
            let (text, content_type) = telemetry.metrics_text();
            answer(StatusCode::OK, content_type, text)
        }
        "/status" | "/" => {
            let node = shared.node.get();
            let page = status::render(&telemetry.snapshot(), node);
            answer(StatusCode::OK, HTML, page)
        }
        summary::PATH => {
            let mut body = serde_json::to_string(&local_summary(shared)).unwrap_or_default();
            body.push('\n');
            answer(StatusCode::OK, "application/json", body)
        }
        "/herd" => {
            let me = local_summary(shared);
            let answers = summary::fetch_all(&shared.config, &shared.http, Some(&me)).await;
            let page = herd_page::render(&herd_page::View {
                me: &me.name,
                config: &shared.config,
                answers: &answers,
                now: std::time::SystemTime::now(),
            });
            answer(StatusCode::OK, HTML, page)
        }
        "/backup" => match shared.node.get() {
            Some(node) => backup::start(node, &shared.backups, req.method() == Method::HEAD),
            None => not_open(),
        },
        _ => {
            let encoded = &path["/clients/".len()..];
            client(shared, encoded)
        }
    }
}

/// `/clients/ID`: the stored record of client ID, as `herd inspect --format json` prints it.
fn client(shared: &Shared, encoded: &str) -> Answer {
    let id: Vec<u8> = percent_encoding::percent_decode_str(encoded).collect();
    if id.is_empty() {
        return not_found();
    }
    let Some(node) = shared.node.get() else {
        return not_open();
    };
    match node.store().get(&id) {
        Ok(Some(stored)) => {
            let mut body = crate::inspect::record_json(&stored).to_string();
            body.push('\n');
            answer(StatusCode::OK, "application/json", body)
        }
        Ok(None) => answer(
            StatusCode::NOT_FOUND,
            TEXT,
            format!("no record of client {}\n", crate::logging::Escaped(&id)),
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the store for /clients");
            answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                "cannot read the store\n",
            )
        }
    }
}
