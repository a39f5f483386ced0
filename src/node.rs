//! One running server of the herd, as a cheap handle shared by every task: its name, config,
//! store, places service and links.

use std::sync::Arc;

use crate::config::Config;
use crate::error::Result;
use crate::herd::{forward_targets, Origin};
use crate::peer::Links;
use crate::places::Places;
use crate::report::Report;
use crate::store::{Merged, Store};
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
    links: Links,
    telemetry: Telemetry,
}

impl Node {
    pub fn new(
        name: String,
        config: Config,
        store: Store,
        places: Places,
        links: Links,
        telemetry: Telemetry,
    ) -> Node {
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

    /// Whether `name` is a server linked to this one.
    pub fn is_linked(&self, name: &str) -> bool {
        self.inner
            .config
            .peers_of(&self.inner.name)
            .any(|p| p == name)
    }

    /// Offers a report to the store; if it wins, queues it for every linked server but the one
    /// it came from. The forward is queued before this returns, so before any answer.
    pub fn accept(&self, report: Report, came_from: Option<Origin<'_>>) -> Result<Merged> {
        let merged = self.inner.store.merge(&report, came_from)?;
        let stored = matches!(merged, Merged::Stored(_));
        self.inner.telemetry.report(stored);
        if stored {
            // Rendered once, shared by every link's queue.
            let mut line = report.at_line();
            line.push(b'\n');
            let line = bytes::Bytes::from(line);
            let from = came_from.map(|o| o.peer);
            self.inner.telemetry.recent_report(line.clone(), from);
            for peer in forward_targets(self.inner.config.peers_of(&self.inner.name), from) {
                self.inner.links.forward(peer, &line);
            }
        }
        Ok(merged)
    }
}
