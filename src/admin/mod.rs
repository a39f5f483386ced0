//! The admin HTTP endpoint of one node: `/healthz`, `/metrics`, `/status` and `/clients/ID`,
//! on its own address (never the client port), served by hyper on the node's own runtime.
//!
//! What it promises:
//!
//! - **Bounded like the client port.** At most [`MAX_CONNECTIONS`] connections at once (the
//!   excess is closed at once); one request per connection (no keep-alive); the request head
//!   must arrive within [`HEAD_TIMEOUT`] and fit in [`MAX_HEAD_BYTES`] (hyper answers 431
//!   otherwise); a connection lives at most [`CONNECTION_TIMEOUT`]. Request bodies are never
//!   read.
//! - **Never in the clients' way.** Handlers read atomics, one mutex held for a copy, and at
//!   most one store lookup; nothing here waits on a client, a peer or a flush.
//! - **Exact answers.** `GET` (and `HEAD`) only: any other method is 405 with `Allow`; an
//!   unknown path is 404. `/healthz` is 200 `ok` (no newline) once the node is ready and 503 while it starts
//!   or stops. `/clients/ID` takes the client ID percent-encoded (any bytes) and answers the
//!   record as `herd inspect --format json` prints it, or 404.
//! - **Protected mode.** Without a herd secret the endpoint may only listen on loopback, as
//!   peers may only connect from there; [`Admin::bind`] refuses anything else.
//!
//! Not a goal: authentication. With a secret set it may listen anywhere, and anyone who reaches
//! it can read client locations: put it on a private network.

mod status;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{Error, Result};
use crate::node::Node;
use crate::telemetry::{Health, Telemetry};

/// The most admin connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a request head may take to arrive.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
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
    pub async fn serve(
        self,
        telemetry: Telemetry,
        node: Arc<OnceLock<Node>>,
        stop: CancellationToken,
    ) {
        let shared = Shared { telemetry, node };
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let connections = TaskTracker::new();
        loop {
            let (stream, remote) = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                tracing::warn!(%remote, limit = MAX_CONNECTIONS, "admin connection limit reached; refusing");
                continue;
            };
            let shared = shared.clone();
            let stop = stop.clone();
            connections.spawn(async move {
                let service = service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(route(&shared, req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    result = tokio::time::timeout(CONNECTION_TIMEOUT, conn) => match result {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "admin connection failed"),
                        Err(_) => tracing::debug!(%remote, "admin connection timed out"),
                    },
                    _ = stop.cancelled() => {}
                }
                drop(permit);
            });
        }
        connections.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
    }
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
    let task = tokio::spawn(admin.serve(telemetry.clone(), Arc::clone(&node), stop.clone()));
    Ok(Some(Running { node, stop, task }))
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

const TEXT: &str = "text/plain; charset=utf-8";

fn not_found() -> Answer {
    answer(StatusCode::NOT_FOUND, TEXT, "not found\n")
}

fn route(shared: &Shared, req: Request<Incoming>) -> Answer {
    let path = req.uri().path();
    let known =
        matches!(path, "/healthz" | "/metrics" | "/status" | "/") || path.starts_with("/clients/");
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
            answer(StatusCode::OK, "text/html; charset=utf-8", page)
        }
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
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "the store is not open yet\n",
        );
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
