//! Changing a running herd: on SIGHUP a node reads its config file again and applies the
//! membership it describes, without a restart and without touching the links that stay.
//!
//! [`Change::between`] is the decision, without I/O: given the running config and the one just
//! read, which links to add, which to remove, which peers moved to a new address, and which
//! settings changed that only a restart applies. It refuses a config that renames this node
//! away or moves its listening address (both need a restart). [`reload_on_sighup`] is the
//! thin loop around it: read, validate (the rules of start-up, see [`Config::load`]), decide,
//! apply, log.
//!
//! What a reload promises:
//! - A config that does not load or validate changes nothing: the reason is logged, naming
//!   the file and key, and the node keeps running on the config it had.
//! - Links to peers whose name and address are unchanged stay up, and are not re-handshaken:
//!   their actors are not touched. Certificates are re-read only when their files changed.
//! - A new peer gets a link actor, which dials it and syncs at link-up like any other; a
//!   removed one's actor closes its connection and stops; a moved one's actor drops a
//!   connection it dialled to the old address and dials the new one.
//! - Settings other than `servers`, `links` and the other servers' `[admin]` addresses keep
//!   their running values; a change to one is logged as needing a restart, on every reload
//!   until the node is restarted.
//!
//! Reports naming a server this node does not know are stored and flooded like any other
//! (see [`crate::peer::link`]), so records keep converging while nodes disagree about the
//! membership, and after a server is removed. A node started on the built-in config has no
//! file to read again; it says so.

use std::collections::{BTreeMap, BTreeSet};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::node::Node;
use crate::peer::link;

/// What a reloaded config changes for node `me`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Servers newly linked to this node, with their addresses.
    pub linked: BTreeMap<String, String>,
    /// Servers no longer linked to this node.
    pub unlinked: BTreeSet<String>,
    /// Servers still linked to this node, at a new address.
    pub moved: BTreeMap<String, String>,
    /// Servers that joined the herd, and that left it (linked to this node or not).
    pub joined: BTreeSet<String>,
    pub left: BTreeSet<String>,
    /// The settings that differ but only apply on a restart, by their key in the file.
    pub need_restart: Vec<&'static str>,
}

impl Change {
    /// What changes for node `me` from `old` (the running config) to `new`; `Err` with the
    /// reason when `new` cannot be applied at run time at all.
    pub fn between(old: &Config, new: &Config, me: &str) -> Result<Change, String> {
        let Some(addr) = new.servers.get(me) else {
            return Err(format!(
                "servers: this server ({me}) is not listed; stop it to remove it from the herd"
            ));
        };
        let was = old.addr(me).unwrap_or_default();
        if addr != was {
            return Err(format!(
                "servers.{me}: this server's own address changed from {was} to {addr}; that needs a restart"
            ));
        }
        let before: BTreeSet<&String> = old.peers_of(me).collect();
        let after: BTreeSet<&String> = new.peers_of(me).collect();
        let addr_of = |c: &Config, p: &str| c.servers.get(p).cloned().unwrap_or_default();
        let mut change = Change {
            linked: after
                .difference(&before)
                .map(|p| ((*p).clone(), addr_of(new, p)))
                .collect(),
            unlinked: before.difference(&after).map(|p| (*p).clone()).collect(),
            moved: after
                .intersection(&before)
                .filter(|p| old.servers.get(**p) != new.servers.get(**p))
                .map(|p| ((*p).clone(), addr_of(new, p)))
                .collect(),
            joined: keys_not_in(&new.servers, &old.servers),
            left: keys_not_in(&old.servers, &new.servers),
            need_restart: Vec::new(),
        };
        let differ = [
            (
                "secret (HERD_SECRET or secret_file)",
                old.secret != new.secret,
            ),
            ("tls.dir", old.tls_dir != new.tls_dir),
            ("places", old.places != new.places),
            ("store", old.store != new.store),
            ("limits", old.limits != new.limits),
            ("peers", old.peers != new.peers),
            ("log", old.log != new.log),
            (
                "admin (this server's address)",
                old.admin.get(me) != new.admin.get(me),
            ),
        ];
        change.need_restart = differ
            .into_iter()
            .filter_map(|(key, differs)| differs.then_some(key))
            .collect();
        Ok(change)
    }

    /// Whether the links of this node change.
    pub fn moves_links(&self) -> bool {
        !(self.linked.is_empty() && self.unlinked.is_empty() && self.moved.is_empty())
    }

    /// The config the node runs on once this change is applied: `new`'s membership, and
    /// `old`'s value of every setting that needs a restart.
    pub fn adopt(old: &Config, new: Config, me: &str) -> Config {
        let mut admin = new.admin;
        match old.admin.get(me) {
            Some(own) => admin.insert(me.to_owned(), own.clone()),
            None => admin.remove(me),
        };
        Config {
            servers: new.servers,
            links: new.links,
            admin,
            ..old.clone()
        }
    }
}

fn keys_not_in(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> BTreeSet<String> {
    a.keys().filter(|k| !b.contains_key(*k)).cloned().collect()
}

/// Reloads the config on every SIGHUP until `stop`, starting the actors of new links in
/// `tasks`. `running` is the config the node started with.
///
/// The handler is installed when this is called, not when the task first runs: the default
/// action of SIGHUP ends the process, and an operator may send one as soon as the node says
/// it is ready.
pub fn reload_on_sighup(
    node: Node,
    mut running: Config,
    tasks: TaskTracker,
    stop: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    async move {
        let mut hup = match hup {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; the config will not be reloaded");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = hup.recv() => {
                    if let Some(next) = reload(&node, &running, &tasks) {
                        running = next;
                    }
                }
            }
        }
    }
}

/// One reload: returns the config now running, or `None` if nothing changed (logged why).
fn reload(node: &Node, running: &Config, tasks: &TaskTracker) -> Option<Config> {
    let me = node.name();
    let Some(path) = &running.path else {
        tracing::warn!("SIGHUP: this node runs on the built-in config, which cannot change; start it with --config FILE to change the herd at run time");
        return None;
    };
    let refuse = |why: &dyn std::fmt::Display| {
        tracing::error!(file = %path.display(), error = %why, "config reload refused; keeping the running config");
    };
    let new = match Config::load(Some(path)) {
        Ok(c) => c,
        Err(e) => {
            refuse(&e);
            return None;
        }
    };
    let change = match Change::between(running, &new, me) {
        Ok(c) => c,
        Err(why) => {
            refuse(&format_args!("{}: {why}", new.source));
            return None;
        }
    };
    if let Some(tls) = node.links().tls() {
        if let Err(e) = crate::peer::tls::check_names(&new) {
            refuse(&e);
            return None;
        }
        // Before the links change: a moved or new peer is dialled with the new certificates.
        match tls.reload_if_changed() {
            Ok(true) => {
                tracing::info!(dir = %tls.dir().display(), "TLS certificates reloaded; re-establishing peer links")
            }
            Ok(false) => {
                tracing::info!(dir = %tls.dir().display(), "TLS certificates unchanged; not reloaded")
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot reload the TLS certificates; keeping the old ones")
            }
        }
    }
    for key in &change.need_restart {
        tracing::warn!(file = %path.display(), key = %key, "this setting changed in the config file but applies only on a restart; keeping the running value");
    }
    let links = node.links();
    for peer in &change.unlinked {
        links.remove(peer);
    }
    for (peer, addr) in &change.moved {
        links.readdress(peer, addr);
        tracing::info!(peer = %peer, addr = %addr, "peer moved");
    }
    for (peer, addr) in &change.linked {
        if let Some(inbox) = links.add(peer, addr) {
            node.telemetry().add_peer(peer);
            link::spawn(tasks, node, inbox);
            tracing::info!(peer = %peer, addr = %addr, "link added");
        }
    }
    if !change.linked.is_empty() {
        node.store().remember_lines();
    }
    tracing::info!(
        file = %path.display(),
        joined = ?change.joined,
        left = ?change.left,
        linked = ?change.linked.keys().collect::<Vec<_>>(),
        unlinked = ?change.unlinked,
        moved = ?change.moved.keys().collect::<Vec<_>>(),
        links = ?links.peers(),
        "config reloaded"
    );
    Some(Change::adopt(running, new, me))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// A herd of `servers` (name and port) linked by `links`, with `extra` TOML.
    fn config(servers: &[(&str, u16)], links: &[(&str, &str)], extra: &str) -> Config {
        let mut text = String::from("links = [");
        for (a, b) in links {
            text.push_str(&format!("[{a:?}, {b:?}], "));
        }
        text.push_str("]\n");
        text.push_str(extra);
        text.push_str("\n[servers]\n");
        for (name, port) in servers {
            text.push_str(&format!("{name} = \"127.0.0.1:{port}\"\n"));
        }
        Config::parse(&text, "herd.toml", Some(SECRET.to_vec())).unwrap()
    }

    const THREE: [(&str, u16); 3] = [("A", 1), ("B", 2), ("C", 3)];

    fn names<const N: usize>(n: [&str; N]) -> BTreeSet<String> {
        n.into_iter().map(String::from).collect()
    }

    fn addrs<const N: usize>(n: [(&str, u16); N]) -> BTreeMap<String, String> {
        n.into_iter()
            .map(|(k, p)| (k.to_owned(), format!("127.0.0.1:{p}")))
            .collect()
    }

    #[test]
    fn the_same_config_changes_nothing() {
        let c = config(&THREE, &[("A", "B"), ("B", "C")], "");
        let change = Change::between(&c, &c, "B").unwrap();
        assert_eq!(change, Change::default());
        assert!(!change.moves_links());
    }

    #[test]
    fn a_server_added_and_linked_is_a_new_link_for_its_neighbours_only() {
        let old = config(&THREE, &[("A", "B"), ("B", "C")], "");
        let new = config(
            &[("A", 1), ("B", 2), ("C", 3), ("D", 4)],
            &[("A", "B"), ("B", "C"), ("D", "B")],
            "",
        );
        let b = Change::between(&old, &new, "B").unwrap();
        assert_eq!(b.linked, addrs([("D", 4)]));
        assert!(b.unlinked.is_empty() && b.moved.is_empty());
        assert_eq!(b.joined, names(["D"]));
        assert!(b.left.is_empty() && b.need_restart.is_empty());
        let a = Change::between(&old, &new, "A").unwrap();
        assert!(!a.moves_links(), "{a:?}");
        assert_eq!(a.joined, names(["D"]));
    }

    #[test]
    fn a_server_removed_is_unlinked_and_a_moved_one_redialled() {
        let old = config(&THREE, &[("A", "B"), ("B", "C"), ("A", "C")], "");
        let new = config(&[("A", 1), ("B", 5)], &[("A", "B")], "");
        let a = Change::between(&old, &new, "A").unwrap();
        assert_eq!(a.unlinked, names(["C"]));
        assert_eq!(a.moved, addrs([("B", 5)]));
        assert!(a.linked.is_empty());
        assert_eq!(a.left, names(["C"]));
        // A link removed while both servers stay.
        let new = config(&THREE, &[("A", "B"), ("B", "C")], "");
        let c = Change::between(&old, &new, "C").unwrap();
        assert_eq!(c.unlinked, names(["A"]));
        assert!(c.left.is_empty() && c.linked.is_empty() && c.moved.is_empty());
        // An unlinked server that moves is no link of ours.
        let new = config(
            &[("A", 1), ("B", 2), ("C", 7)],
            &[("A", "B"), ("B", "C")],
            "",
        );
        let old = config(&THREE, &[("A", "B"), ("B", "C")], "");
        assert!(!Change::between(&old, &new, "A").unwrap().moves_links());
        assert_eq!(
            Change::between(&old, &new, "B").unwrap().moved,
            addrs([("C", 7)])
        );
    }

    #[test]
    fn this_server_cannot_leave_or_move_at_run_time() {
        let old = config(&THREE, &[("A", "B")], "");
        let gone = config(&[("A", 1), ("C", 3)], &[], "");
        let e = Change::between(&old, &gone, "B").unwrap_err();
        assert!(
            e.contains("servers") && e.contains("(B) is not listed"),
            "{e}"
        );
        let moved = config(&[("A", 1), ("B", 9), ("C", 3)], &[("A", "B")], "");
        let e = Change::between(&old, &moved, "B").unwrap_err();
        assert!(
            e.contains("servers.B") && e.contains("127.0.0.1:9") && e.contains("restart"),
            "{e}"
        );
    }

    #[test]
    fn settings_that_need_a_restart_are_named_and_keep_their_running_values() {
        let old = config(&THREE, &[("A", "B")], "[admin]\nA = \"127.0.0.1:11\"\n");
        let new = config(
            &[("A", 1), ("B", 2), ("C", 3), ("D", 4)],
            &[("A", "B"), ("A", "D")],
            "[limits]\nmax_line_bytes = 4096\n[peers]\nqueue = 5\n[tls]\ndir = \"certs\"\n\
             [admin]\nA = \"127.0.0.1:12\"\nD = \"127.0.0.1:14\"\n",
        );
        let change = Change::between(&old, &new, "A").unwrap();
        assert_eq!(
            change.need_restart,
            [
                "tls.dir",
                "limits",
                "peers",
                "admin (this server's address)"
            ]
        );
        assert_eq!(change.linked, addrs([("D", 4)]));
        let running = Change::adopt(&old, new.clone(), "A");
        assert_eq!(running.servers, new.servers);
        assert_eq!(running.links, new.links);
        assert_eq!(running.limits, old.limits);
        assert_eq!(running.peers, old.peers);
        assert_eq!(running.tls_dir, None);
        assert_eq!(running.admin["A"], "127.0.0.1:11");
        assert_eq!(running.admin["D"], "127.0.0.1:14");
        // The next reload of the same file names the same settings again, and no links.
        let again = Change::between(&running, &new, "A").unwrap();
        assert!(!again.moves_links());
        assert_eq!(again.need_restart, change.need_restart);
    }

    #[test]
    fn a_changed_secret_needs_a_restart() {
        let old = config(&THREE, &[], "");
        let text = "[servers]\nA = \"127.0.0.1:1\"\nB = \"127.0.0.1:2\"\nC = \"127.0.0.1:3\"\n";
        let new = Config::parse(text, "herd.toml", Some([SECRET, b"!"].concat())).unwrap();
        let change = Change::between(&old, &new, "A").unwrap();
        assert_eq!(change.need_restart, ["secret (HERD_SECRET or secret_file)"]);
        assert_eq!(Change::adopt(&old, new, "A").secret, old.secret);
    }
}
