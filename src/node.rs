//! One running server of the herd, as a cheap handle shared by every task: its name, config,
//! store, places service, links and telemetry.

use std::sync::Arc;

use crate::config::Config;
use crate::error::Result;
use crate::peer::Links;
use crate::places::Places;
use crate::report::Report;
use crate::store::{Pending, Store};
use crate::telemetry::Telemetry;

/// A node handle. Cloning is an `Arc` bump.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    config: Config,
    store: Store,
    places: Places,
    links: Arc<Links>,
    telemetry: Telemetry,
}

impl Node {
    /// Assembles a node, and has its store flood every report that wins to every linked server
    /// but the one it came from, once it is durable as configured (so before any answer to it).
    /// Every outcome is counted in `telemetry`.
    pub fn new(
        name: String,
        config: Config,
        store: Store,
        places: Places,
        links: Links,
        telemetry: Telemetry,
    ) -> Node {
        let links = Arc::new(links);
        if !links.peers().is_empty() {
            // Most reports will come over two links: the second copy is known at once.
            store.remember_lines();
        }
        let flood = Arc::clone(&links);
        let counted = telemetry.clone();
        store.on_stored(Box::new(move |report: &Report, from: Option<&str>| {
            // Rendered once, shared by every link's queue and the status page.
            let mut line = Vec::with_capacity(report.at_line().len() + 1);
            line.extend_from_slice(report.at_line());
            line.push(b'\n');
            let line = bytes::Bytes::from(line);
            counted.report(true);
            counted.recent_report(line.clone(), from);
            // A peer's report was flooded by the link that read it, as a rule before the
            // writer applied it: then this finds it flooded already.
            flood.flood(&line, from);
        }));
        let counted = telemetry.clone();
        store.on_stale(Box::new(move || counted.report(false)));
        let counted = telemetry.clone();
        store.on_refused(Box::new(move |why, from| match why {
            // Older than the retention window: counted with the reports refused as from the
            // future, per source, and shown beside them.
            crate::store::Refusal::Expired => {
                if let Some(n) = counted.refused(crate::telemetry::Refusal::Expired, from) {
                    tracing::warn!(
                        source = from.unwrap_or("client"),
                        refused = n,
                        "reports refused as older than the retention window (retain_secs)"
                    );
                }
            }
            _ => counted.store_refused(why, from),
        }));
        Node {
            inner: Arc::new(Inner {
                name,
                config,
                store,
                places,
                links,
                telemetry,
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The settings the node started with. Its membership (`servers`, `links`) may have
    /// changed since, on a reload: who this node links to is [`Node::links`]'s to say.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn store(&self) -> Store {
        self.inner.store.clone()
    }

    pub fn places(&self) -> &Places {
        &self.inner.places
    }

    pub fn links(&self) -> &Links {
        &self.inner.links
    }

    /// Counters, gauges and status-page state.
    pub fn telemetry(&self) -> &Telemetry {
        &self.inner.telemetry
    }

    /// Whether `name` is a server linked to this one in its current config.
    pub fn is_linked(&self, name: &str) -> bool {
        self.inner.links.contains(name)
    }

    /// Offers a client's report to the store (waiting only for room in its queue).
    pub async fn accept(&self, report: Report) -> Result<Pending> {
        self.inner.store.submit(report, None).await
    }
}
