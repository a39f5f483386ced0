//! `/herd.json`: what one node says about itself to the rest of the herd, and how a node (for
//! `/herd`) or an operator's tool (`herd check`) asks every server of a config for it.
//!
//! A summary is small and cheap: the node's state, its record count and the fingerprint of its
//! whole store (the root of the ranges anti-entropy compares: see
//! [`crate::store::fingerprint`]), its links as it sees them, and its own history
//! ([`super::history`]). Two stores hold the same records exactly when (but for a 2⁻⁶⁴
//! accident) their roots are equal, so comparing roots is comparing stores.
//!
//! Asking is bounded: every server is asked at once, each answer must come within
//! [`FETCH_TIMEOUT`], and a server that does not answer in time, refuses, or answers something
//! else than a summary is reported with the reason, never waited for.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::history::Sample;
use crate::config::Config;
use crate::node::Node;
use crate::store::fingerprint::{Fingerprint, Node as Range};
use crate::telemetry::{Health, Snapshot};

/// Where a node serves its summary.
pub const PATH: &str = "/herd.json";
/// How long one node's summary may take to arrive.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(1);

/// One node, as it describes itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The server's name.
    pub name: String,
    /// `starting`, `ready` or `stopping`.
    pub state: String,
    /// Clients stored; `None` while the store builds its fingerprints at start.
    pub records: Option<u64>,
    /// The fingerprint of the whole store; `None` while it is being built.
    pub root: Option<Root>,
    /// Client requests per second over the latest sample interval.
    pub requests_per_sec: f64,
    /// Every configured link of this server.
    pub links: Vec<LinkSummary>,
    /// The node's own history, oldest first.
    pub history: Vec<Sample>,
}

/// The fingerprint of a whole store: its record count and the wrapping sum of its records'
/// item hashes (16 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Root {
    pub count: u64,
    pub sum: String,
}

impl From<Fingerprint> for Root {
    fn from(fp: Fingerprint) -> Root {
        Root {
            count: fp.count,
            sum: format!("{:016x}", fp.sum),
        }
    }
}

/// One link, as one of its ends sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkSummary {
    pub peer: String,
    pub up: bool,
    /// When the link last went up or down (Unix seconds); `None` if it was never up.
    pub since: Option<u64>,
    /// When the last sync round with this peer completed (Unix seconds).
    pub last_sync: Option<u64>,
}

/// What asking one server for its summary came to.
pub type Fetched = Result<Summary, String>;

/// Unix seconds.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// This node's summary, from its telemetry snapshot, its store (once open) and its history.
pub fn local(snap: &Snapshot, node: Option<&Node>, history: Vec<Sample>) -> Summary {
    let state = match snap.health {
        Health::Starting => "starting",
        Health::Ready => "ready",
        Health::Stopping => "stopping",
    };
    // Only from the in-memory buckets: before they are built, the root would be a scan of the
    // whole store.
    let root = node
        .map(Node::store)
        .filter(|store| store.ready())
        .and_then(|store| match store.fingerprint(Range::ROOT) {
            Ok(fp) => Some(Root::from(fp)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the store's root fingerprint");
                None
            }
        });
    Summary {
        name: snap.node.clone(),
        state: state.to_owned(),
        records: snap.records,
        root,
        requests_per_sec: history.last().map_or(0.0, |s| s.requests_per_sec),
        links: snap
            .links
            .iter()
            .map(|(peer, link)| LinkSummary {
                peer: peer.clone(),
                up: link.up,
                since: link.since.map(unix),
                last_sync: link.last_sync.map(|round| unix(round.at)),
            })
            .collect(),
        history,
    }
}

/// An HTTP client for asking servers: short timeouts, no proxy (admin endpoints are on this
/// machine or a private network, never behind the environment's proxy).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .no_proxy()
        .build()
        // Only a TLS back end that cannot start fails here; plain HTTP still works without it.
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Asks every server of `config` for its summary at once, in the config's order of servers.
/// `me`, if given, is answered with its own summary instead of asking over HTTP; a server
/// without an admin address is reported as such.
pub async fn fetch_all(
    config: &Config,
    client: &reqwest::Client,
    me: Option<&Summary>,
) -> Vec<(String, Fetched)> {
    let asks = config.servers.keys().map(|name| async move {
        let fetched = match (me, config.admin.get(name)) {
            (Some(me), _) if me.name == *name => Ok(me.clone()),
            (_, None) => Err("has no admin address".to_owned()),
            (_, Some(addr)) => fetch(client, name, addr).await,
        };
        (name.clone(), fetched)
    });
    futures::future::join_all(asks).await
}

/// Asks the node `name` at admin address `addr` for its summary.
async fn fetch(client: &reqwest::Client, name: &str, addr: &str) -> Fetched {
    let url = format!("http://{addr}{PATH}");
    let response = client.get(&url).send().await.map_err(|e| {
        if e.is_timeout() {
            format!("no answer from {url} within {FETCH_TIMEOUT:?}")
        } else if e.is_connect() {
            format!("cannot connect to {url}")
        } else {
            format!("{url}: {e}")
        }
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("{url} answered {status}"));
    }
    let summary: Summary = response
        .json()
        .await
        .map_err(|e| format!("{url}: not a summary: {e}"))?;
    if summary.name != name {
        return Err(format!("{url} is server {:?}, not {name}", summary.name));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Telemetry;

    #[test]
    fn a_summary_carries_the_links_and_the_latest_rate() {
        let peers = ["Bona".to_string(), "Clark".to_string()];
        let t = Telemetry::new("Bailey", &peers);
        t.set_ready();
        t.peer_up("Bona", true);
        t.sync_round("Bona");
        let sample = |at, rate| Sample {
            at,
            requests_per_sec: rate,
            ack_ms: None,
            flood_ms: None,
            fsync_ms: None,
        };
        let s = local(&t.snapshot(), None, vec![sample(1, 3.0), sample(6, 4.5)]);
        assert_eq!((s.name.as_str(), s.state.as_str()), ("Bailey", "ready"));
        assert_eq!((s.records, s.root.as_ref()), (None, None), "no store yet");
        assert_eq!(s.requests_per_sec, 4.5);
        assert_eq!(s.links.len(), 2);
        let bona = &s.links[0];
        assert!(bona.up && bona.since.is_some() && bona.last_sync.is_some());
        let clark = &s.links[1];
        assert!(!clark.up && clark.since.is_none() && clark.last_sync.is_none());
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Summary>(&json).unwrap(), s);
    }

    #[test]
    fn a_root_is_its_count_and_its_sum_in_hex() {
        let root = Root::from(Fingerprint { count: 3, sum: 255 });
        assert_eq!(
            root,
            Root {
                count: 3,
                sum: "00000000000000ff".into()
            }
        );
    }
}
