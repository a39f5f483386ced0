//! `herd serve`: start one node and run it until the shutdown future resolves.
//!
//! Start-up order is what the promises need: bind the listening socket first (clients can
//! connect within milliseconds), then open the store (its writer starts with it, and builds
//! the anti-entropy fingerprints in the background), start the link actors, and announce
//! readiness. On shutdown: stop accepting, stop reading, let every connection answer what it
//! has read (the store keeps writing and flushing for them), stop the links, then close the
//! store, which applies and flushes everything it was given. A connection beyond
//! `max_connections`, or beyond `max_connections_per_source` from one address, is closed at
//! once; the log gets the first such refusal when it happens, then one summary per
//! `[log] interval_secs` (counts, reasons, the busiest sources), and a last one at shutdown.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::peer::{link, Links};
use crate::places::Places;
use crate::refusals::Refusals;
use crate::sources::Sources;
use crate::store::Store;
use crate::telemetry::Telemetry;

/// How long shutdown waits for connections to answer what they have read.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What `herd serve` needs.
pub struct ServeOptions {
    pub name: String,
    pub config: Config,
    pub state_dir: PathBuf,
    /// Bind this instead of the listed address.
    pub listen: Option<String>,
    /// Serve the admin HTTP endpoint here (overrides `[admin]` in the config).
    pub admin: Option<String>,
}

/// Runs a node until `shutdown` resolves; returns once the store is flushed.
pub async fn run(opts: ServeOptions, shutdown: impl Future<Output = ()>) -> Result<()> {
    let ServeOptions {
        name,
        config,
        state_dir,
        listen,
        admin,
    } = opts;
    let listed = config.addr(&name)?.to_owned();
    let tls = crate::peer::tls::Tls::load(&config, &name)?;
    let addr = listen.unwrap_or_else(|| listed.clone());
    let listener = TcpListener::bind(&addr).await.map_err(|e| Error::Address {
        addr: addr.clone(),
        message: format!("cannot listen: {e}"),
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("read the listening address", e))?;
    let telemetry = Telemetry::new(&name, config.peers_of(&name));
    let admin = crate::admin::start(&name, &config, admin, &telemetry).await?;

    let store_dir = state_dir.clone();
    let store_config = config.store.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&store_dir, &store_config))
        .await
        .map_err(|e| Error::io("open the store", std::io::Error::other(e)))??;
    let places = Places::new(&config.places)?.observed_by(telemetry.clone());
    if let Some((path, mode)) = &config.loose_secret_file {
        tracing::warn!(secret_file = %path.display(), mode = format_args!("{mode:o}"), "secret_file is readable by its group or by other users; anyone who can read it can join the herd (chmod 600 it)");
    }
    if config.secret.is_none() && tls.is_none() {
        tracing::warn!("no herd secret set (HERD_SECRET or secret_file): protected mode, only loopback connections may become peer links");
    }

    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let (links, inboxes) = Links::new(
        config
            .peers_of(&name)
            .filter_map(|p| config.servers.get_key_value(p)),
        config.peers.queue,
        config.peers.queue_bytes,
        tls,
        stop.clone(),
    );
    let max_connections = crate::fdlimit::prepare(
        config.limits.max_connections,
        config.peers_of(&name).count(),
    );
    let flushes = telemetry.clone();
    store.on_flush(Box::new(move |took| flushes.flush(took)));
    telemetry.store_opened(store.clone());
    let running = config.clone();
    let node = Node::new(
        name.clone(),
        config,
        store.clone(),
        places,
        links,
        telemetry.clone(),
    );
    if let Some(admin) = &admin {
        let _ = admin.node.set(node.clone());
    }
    for inbox in inboxes {
        link::spawn(&tasks, &node, inbox);
    }
    tasks.spawn(crate::membership::reload_on_sighup(
        node.clone(),
        running,
        tasks.clone(),
        stop.clone(),
    ));

    telemetry.set_ready();
    tracing::info!(target: "herd::ready", server = %name, listen = %local, store = %store.path().display(), "ready");

    let connections = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(max_connections));
    let ids = AtomicU64::new(0);
    let sources = Sources::new(node.config().limits.max_connections_per_source);
    let interval = node.config().log.interval();
    let mut refusals = Refusals::new();
    let mut summary = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = summary.tick() => log_refusals(&mut refusals, interval),
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        drop(stream);
                        telemetry.connection_refused(false);
                        if refusals.count(remote.ip(), "max_connections") {
                            tracing::warn!(%remote, limit = max_connections, summary_secs = interval.as_secs(), "connection limit reached; refusing (further refusals are summarised once per interval)");
                        }
                        continue;
                    };
                    let Some(slot) = sources.try_acquire(remote.ip()) else {
                        drop(stream);
                        telemetry.connection_refused(true);
                        if refusals.count(remote.ip(), "per_source") {
                            tracing::warn!(%remote, limit = sources.limit(), summary_secs = interval.as_secs(), "per-source connection limit reached; refusing (further refusals are summarised once per interval)");
                        }
                        continue;
                    };
                    let id = ids.fetch_add(1, Ordering::Relaxed);
                    let span = tracing::info_span!("conn", id, %remote);
                    let (node, stop) = (node.clone(), stop.clone());
                    let counted = telemetry.connection_opened();
                    connections.spawn(
                        async move {
                            crate::connection::serve(node, stream, id, remote, stop).await;
                            drop((counted, permit, slot));
                        }
                        .instrument(span),
                    );
                }
                Err(e) => {
                    // Out of file descriptors, typically: back off rather than spin.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    log_refusals(&mut refusals, interval);

    telemetry.set_stopping();
    tracing::info!(server = %name, "shutting down");
    drop(listener);
    stop.cancel();
    connections.close();
    tasks.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish in time");
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some links did not stop in time");
    }
    store.close().await;
    tracing::info!(server = %name, "stopped; store flushed");
    if let Some(admin) = admin {
        admin.stop().await;
    }
    Ok(())
}

/// Logs the summary of the connections refused in the interval that ends, if any were
/// beyond the one logged when it happened.
fn log_refusals(refusals: &mut Refusals, interval: Duration) {
    if let Some(s) = refusals.end_interval() {
        tracing::warn!(
            refused = s.total,
            reasons = %s.reasons,
            sources = s.sources,
            top = %s.top,
            interval_secs = interval.as_secs(),
            "connections refused in the last interval"
        );
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
