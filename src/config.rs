//! The herd's configuration: a TOML file (see `data/herd.toml`, which is also compiled in as
//! the default), parsed into typed, validated settings.
//!
//! Every field has a default in code except `servers`. Unknown keys are errors that name the
//! key. Validation catches what TOML cannot: links to unknown servers, self-links, duplicate
//! addresses, addresses that are not `host:port`. The herd secret never comes from the config
//! text: it is read from `HERD_SECRET` or from the file named by `secret_file`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::places::PlacesConfig;

/// The default herd, compiled in: the same file as `data/herd.toml`.
pub const DEFAULT_CONFIG: &str = include_str!("../data/herd.toml");

/// The environment variable holding the herd's shared secret.
pub const SECRET_ENV: &str = "HERD_SECRET";

/// The shortest herd secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = crate::peer::auth::MIN_SECRET_BYTES;

/// The config file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    servers: BTreeMap<String, String>,
    #[serde(default)]
    links: Vec<(String, String)>,
    #[serde(default)]
    secret_file: Option<PathBuf>,
    #[serde(default)]
    places: PlacesConfig,
    #[serde(default)]
    store: StoreConfig,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    peers: PeerConfig,
    #[serde(default)]
    admin: BTreeMap<String, String>,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    tls: Option<TlsSection>,
}

/// `[tls]`: mutual TLS on peer links.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    /// The directory holding `ca.pem`, and `NAME.pem` with `NAME.key` for each server; a
    /// relative path is taken from the current directory, like `secret_file`.
    dir: PathBuf,
}

/// How hard the store works to keep an acknowledged report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// An IAMAT is answered only after its report is flushed by sled and the store's files
    /// are `fdatasync`ed (and their directories `fsync`ed), with concurrent reports sharing
    /// one flush (group commit). Survives a process crash, a kernel crash and a power cut.
    #[default]
    Flush,
    /// An IAMAT is answered after sled's flush alone, which hands the data to the kernel
    /// (`sync_file_range`) without `fdatasync`: survives a process crash, not a power cut.
    Os,
    /// An IAMAT is answered as soon as its report is in the store's memory; the store is
    /// written to its files in the background (by sled's flusher thread) every `flush_every_ms`.
    None,
}

/// `[store]`: the durable store.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `"flush"` (default): answer after the report is on disk, synced. `"os"`: answer after
    /// sled's flush, before the sync. `"none"`: answer at once.
    pub durability: Durability,
    /// With `durability = "none"`, how often the store is flushed in the background.
    pub flush_every_ms: u64,
    /// sled's page cache size, in MiB.
    pub cache_mib: u64,
    /// Free space kept on the store's disk, in MiB. Below it, reports for new clients are
    /// refused (`? `) while known clients still update; below a quarter of it nothing is
    /// written. A ballast file of up to a quarter of it (at most 16 MiB) is kept beside the
    /// store so that it can always be reopened. 0 switches all of this off.
    pub min_free_mib: u64,
    /// The most bytes a client ID may have; an IAMAT with a longer one is answered `? `, and a
    /// peer's report with one is dropped.
    pub max_client_id_bytes: usize,
    /// The most client records kept; past it, new clients are refused. 0: no limit.
    pub max_records: u64,
    /// The most MiB the store's files may take on disk; past it, new clients are refused.
    /// 0: no limit (but `min_free_mib`).
    pub max_store_mib: u64,
    /// Retention: a client whose newest report's timestamp is more than this many seconds old
    /// is expired (deleted), and a report already that old is refused. 0: kept forever.
    pub retain_secs: u64,
    /// Start even when the state or log directory is writable by its group or other users
    /// (by default that is refused: they could replace the store or the log with a link).
    pub allow_shared_dir: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            durability: Durability::Flush,
            flush_every_ms: 500,
            cache_mib: 64,
            min_free_mib: 256,
            max_client_id_bytes: 1024,
            max_records: 10_000_000,
            max_store_mib: 0,
            retain_secs: 0,
            allow_shared_dir: false,
        }
    }
}

/// `[limits]`: what one client may cost the node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The longest line accepted, in bytes, without its terminator.
    pub max_line_bytes: usize,
    /// The most client connections open at once; the excess is refused at once.
    pub max_connections: usize,
    /// A client connection with no complete line for this long is closed.
    pub idle_timeout_secs: u64,
    /// A line must be complete this long after its first byte arrived.
    pub line_timeout_secs: u64,
    /// The most requests of one connection being answered at once (pipelining depth); past it
    /// the node stops reading from that connection until answers are written.
    pub max_in_flight: usize,
    /// An answer that cannot be written within this long (the client is not reading) closes
    /// the connection and frees its slot.
    pub write_timeout_secs: u64,
    /// How far ahead of this server's clock a report's timestamp may be, in seconds. Beyond
    /// it an IAMAT is answered `? ` and a peer's AT line is dropped: under newest-wins such a
    /// report would pin its client's location until that time.
    pub max_future_secs: u64,
    /// The most client connections open at once from one source address; the excess from
    /// that address is refused at once, so one address cannot take every slot.
    pub max_connections_per_source: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 64 * 1024,
            max_connections: 10_000,
            idle_timeout_secs: 300,
            line_timeout_secs: 30,
            max_in_flight: 64,
            write_timeout_secs: 30,
            max_future_secs: 3600,
            max_connections_per_source: 4096,
        }
    }
}

impl Limits {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
    pub fn line_timeout(&self) -> Duration {
        Duration::from_secs(self.line_timeout_secs)
    }
    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_secs.max(1))
    }
}

/// `[peers]`: links between servers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeerConfig {
    /// Reports queued for one link before the newest are dropped (anti-entropy repairs drops).
    pub queue: usize,
    /// Bytes of reports queued for one link, at most, whatever their number.
    pub queue_bytes: usize,
    /// A link whose peer does not take a write within this long is dropped and re-dialled.
    pub write_timeout_ms: u64,
    /// The first reconnect delay, doubled after each failure up to `backoff_max_ms`.
    pub backoff_min_ms: u64,
    /// The longest reconnect delay.
    pub backoff_max_ms: u64,
    /// How often linked servers reconcile their stores while connected.
    pub sync_interval_secs: u64,
    /// A reconciliation round the peer has not finished answering within this long drops the
    /// link (a peer that stalls a round costs nothing more).
    pub sync_timeout_secs: u64,
    /// How long a dial or a handshake may take.
    pub connect_timeout_ms: u64,
    /// Ranges of the peer's sync questions served per second on one link (a token bucket
    /// holding one second's worth); past it the link waits before taking the next question.
    pub sync_ranges_per_sec: u64,
    /// Records read from the store to answer the peer's sync questions, per second on one
    /// link (records sent, records scanned to find the wanted ones, and the in-memory range
    /// sums, 1,024 of which count as one record).
    pub sync_records_per_sec: u64,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            queue: 65_536,
            queue_bytes: 16 * 1024 * 1024,
            write_timeout_ms: 10_000,
            backoff_min_ms: 50,
            backoff_max_ms: 2_000,
            sync_interval_secs: 30,
            sync_timeout_secs: 120,
            connect_timeout_ms: 2_000,
            sync_ranges_per_sec: 100_000,
            sync_records_per_sec: 100_000,
        }
    }
}

/// `[log]`: the node's log file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// The log file's size past which it is rotated: `NAME.log` becomes `NAME.log.1`, and so on.
    pub max_bytes: u64,
    /// Rotated files kept (`NAME.log.1` .. `NAME.log.KEEP`); older ones are deleted.
    pub keep: u32,
    /// The most bytes of a client's or peer's line shown (escaped) in one log line; a longer
    /// line is shown as its start and its length.
    pub line_bytes: usize,
    /// The period, in seconds, of the summaries that stand for many records (connections
    /// refused or evicted, lines over a connection's budget), and of the budget itself.
    pub interval_secs: u64,
    /// The most records one client connection may write per interval (its lines and answers,
    /// a run of blank lines counting as one); past it, its lines are answered but only counted,
    /// and one record says how many were not logged.
    pub connection_records: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_bytes: 64 * 1024 * 1024,
            keep: 4,
            line_bytes: 1024,
            interval_secs: 10,
            connection_records: 20_000,
        }
    }
}

impl LogConfig {
    /// The period of summaries and of a connection's log budget.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }
}

/// A validated herd configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from, for messages (`<built-in>` for the default).
    pub source: String,
    /// The file it was read from, to read again on SIGHUP; `None` for the built-in herd.
    pub path: Option<PathBuf>,
    /// Every server and the address it is reached at.
    pub servers: BTreeMap<String, String>,
    /// Every server's linked servers.
    pub links: BTreeMap<String, BTreeSet<String>>,
    /// The herd's shared secret, if any (at least [`MIN_SECRET_BYTES`] long).
    pub secret: Option<Vec<u8>>,
    /// With `[tls]`: the directory of the herd's CA and the servers' certificates.
    pub tls_dir: Option<PathBuf>,
    pub places: PlacesConfig,
    pub store: StoreConfig,
    pub limits: Limits,
    pub peers: PeerConfig,
    /// `[admin]`: the address of each server's admin HTTP endpoint, for those that have one.
    pub admin: BTreeMap<String, String>,
    pub log: LogConfig,
    /// The secret file and its permission bits, if its group or other users may read it
    /// (warned about at start-up, once logging runs).
    pub loose_secret_file: Option<(PathBuf, u32)>,
}

impl Config {
    /// Loads `path`, or with `None` the default: `data/herd.toml` under the current directory
    /// if it exists, else the compiled-in herd.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let local = Path::new("data/herd.toml");
        let file = path.or_else(|| local.exists().then_some(local));
        let (text, source) = match file {
            Some(p) => (read(p)?, p.display().to_string()),
            None => (DEFAULT_CONFIG.to_owned(), "<built-in>".to_owned()),
        };
        let mut config = Config::parse(
            &text,
            &source,
            std::env::var_os(SECRET_ENV).map(|s| s.into_encoded_bytes()),
        )?;
        config.path = file.map(Path::to_path_buf);
        Ok(config)
    }

    /// Parses and validates config text; `source` names it in messages.
    pub fn parse(text: &str, source: &str, secret_env: Option<Vec<u8>>) -> Result<Config> {
        let file: File = toml::from_str(text).map_err(|e| Error::config(source, e.to_string()))?;
        let mut seen_addr: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, addr) in &file.servers {
            if name.is_empty() || name.bytes().any(crate::protocol::request::is_space) {
                return Err(Error::config(
                    source,
                    format!("servers: invalid server name {name:?}"),
                ));
            }
            validate_addr(addr).map_err(|why| {
                Error::config(source, format!("servers.{name}: address {addr:?} {why}"))
            })?;
            if let Some(other) = seen_addr.insert(addr, name) {
                return Err(Error::config(
                    source,
                    format!("servers.{name}: address {addr} is also the address of {other}"),
                ));
            }
        }
        if file.servers.is_empty() {
            return Err(Error::config(source, "servers: no servers listed"));
        }
        let mut links: BTreeMap<String, BTreeSet<String>> = file
            .servers
            .keys()
            .map(|n| (n.clone(), BTreeSet::new()))
            .collect();
        for (a, b) in &file.links {
            for end in [a, b] {
                if !file.servers.contains_key(end) {
                    return Err(Error::config(
                        source,
                        format!("links: [{a:?}, {b:?}] names unknown server {end:?}"),
                    ));
                }
            }
            if a == b {
                return Err(Error::config(
                    source,
                    format!("links: [{a:?}, {b:?}] links a server to itself"),
                ));
            }
            links.get_mut(a).expect("known").insert(b.clone());
            links.get_mut(b).expect("known").insert(a.clone());
        }
        let mut loose_secret_file = None;
        let short = |what: String, len: usize| {
            Error::config(
                source,
                format!("{what} is {len} bytes; a herd secret must be at least {MIN_SECRET_BYTES} bytes (e.g. 32 random bytes in hex)"),
            )
        };
        let secret = match (&file.secret_file, secret_env) {
            (_, Some(s)) if !s.is_empty() => {
                if s.len() < MIN_SECRET_BYTES {
                    return Err(short(format!("the secret in {SECRET_ENV}"), s.len()));
                }
                Some(s)
            }
            (Some(path), _) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    Error::config(
                        source,
                        format!("secret_file: cannot read {}: {e}", path.display()),
                    )
                })?;
                loose_secret_file =
                    crate::private_files::loosely_readable(path).map(|mode| (path.clone(), mode));
                let trimmed = bytes.trim_ascii().to_vec();
                if trimmed.is_empty() {
                    return Err(Error::config(
                        source,
                        format!("secret_file: {} is empty", path.display()),
                    ));
                }
                if trimmed.len() < MIN_SECRET_BYTES {
                    return Err(short(
                        format!("secret_file: the secret in {}", path.display()),
                        trimmed.len(),
                    ));
                }
                Some(trimmed)
            }
            (None, _) => None,
        };
        file.places
            .validate()
            .map_err(|why| Error::config(source, format!("places: {why}")))?;
        if file.limits.max_line_bytes < 64
            || file.limits.max_connections == 0
            || file.limits.max_in_flight == 0
            || file.limits.max_connections_per_source == 0
        {
            return Err(Error::config(
                source,
                "limits: max_line_bytes must be at least 64; max_connections, max_connections_per_source and max_in_flight at least 1",
            ));
        }
        if file.store.max_client_id_bytes == 0 || file.store.max_client_id_bytes > 64 * 1024 {
            return Err(Error::config(
                source,
                "store: max_client_id_bytes must be between 1 and 65536",
            ));
        }
        if file.log.max_bytes < 4096 || file.log.line_bytes < 64 {
            return Err(Error::config(
                source,
                "log: max_bytes must be at least 4096 and line_bytes at least 64",
            ));
        }
        if !(1..=86_400).contains(&file.log.interval_secs) {
            return Err(Error::config(
                source,
                format!(
                    "log: interval_secs must be between 1 and 86400 (is {})",
                    file.log.interval_secs
                ),
            ));
        }
        if file.log.connection_records < 100 {
            return Err(Error::config(
                source,
                format!(
                    "log: connection_records must be at least 100 (is {}); an ordinary client \
                     logs two records a request",
                    file.log.connection_records
                ),
            ));
        }
        if file.peers.queue == 0
            || file.peers.backoff_min_ms == 0
            || file.peers.sync_interval_secs == 0
            || file.peers.sync_ranges_per_sec == 0
            || file.peers.sync_records_per_sec == 0
        {
            return Err(Error::config(
                source,
                "peers: queue, backoff_min_ms, sync_interval_secs, sync_ranges_per_sec and sync_records_per_sec must be positive",
            ));
        }
        for (name, addr) in &file.admin {
            if !file.servers.contains_key(name) {
                return Err(Error::config(
                    source,
                    format!("admin.{name}: no server named {name:?} in [servers]"),
                ));
            }
            validate_addr(addr).map_err(|why| {
                Error::config(source, format!("admin.{name}: address {addr:?} {why}"))
            })?;
            if let Some(other) = seen_addr.get(addr.as_str()) {
                return Err(Error::config(
                    source,
                    format!("admin.{name}: address {addr} is also the address of server {other}"),
                ));
            }
        }
        let tls_dir = file.tls.map(|t| t.dir);
        Ok(Config {
            source: source.to_owned(),
            path: None,
            servers: file.servers,
            links,
            secret,
            tls_dir,
            places: file.places,
            store: file.store,
            limits: file.limits,
            peers: file.peers,
            admin: file.admin,
            log: file.log,
            loose_secret_file,
        })
    }

    /// The address server `name` is listed at.
    pub fn addr(&self, name: &str) -> Result<&str> {
        self.servers.get(name).map(String::as_str).ok_or_else(|| {
            Error::config(&self.source, format!("servers: no server named {name:?}"))
        })
    }

    /// The servers `name` is linked to.
    pub fn peers_of(&self, name: &str) -> impl Iterator<Item = &String> {
        self.links.get(name).into_iter().flatten()
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::config(
            &path.display().to_string(),
            format!("cannot read config: {e}"),
        )
    })
}

/// Checks `host:port` (a bracketed IPv6 host is allowed) without resolving the host.
fn validate_addr(addr: &str) -> std::result::Result<(), &'static str> {
    let (host, port) = addr.rsplit_once(':').ok_or("is not host:port")?;
    if host.is_empty() {
        return Err("has no host");
    }
    port.parse::<u16>().map_err(|_| "has no valid port")?;
    if host.starts_with('[') != host.ends_with(']') {
        return Err("has unbalanced brackets");
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.contains(':') && bare.parse::<std::net::Ipv6Addr>().is_err() {
        return Err("is not host:port");
    }
    if bare.bytes().any(|b| b.is_ascii_whitespace() || b == b'/') {
        return Err("has an invalid host");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, "test.toml", None)
    }

    #[test]
    fn the_default_herd_parses() {
        let c = parse(DEFAULT_CONFIG).unwrap();
        assert_eq!(c.servers.len(), 5);
        assert_eq!(
            c.peers_of("Bailey").cloned().collect::<Vec<_>>(),
            ["Bona", "Campbell"]
        );
        assert_eq!(
            c.peers_of("Clark").cloned().collect::<Vec<_>>(),
            ["Bona", "Jaquez"]
        );
        // Admin is on by default, on loopback, a thousand ports above each client port.
        assert_eq!(c.admin.len(), c.servers.len());
        for (name, addr) in &c.servers {
            let port = |a: &str| a.rsplit_once(':').unwrap().1.parse::<u16>().unwrap();
            let admin = &c.admin[name];
            assert!(admin.starts_with("127.0.0.1:"), "{admin}");
            assert_eq!(port(admin), port(addr) + 1000, "{name}");
        }
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn every_durability_level_parses() {
        for (text, level) in [
            ("flush", Durability::Flush),
            ("os", Durability::Os),
            ("none", Durability::None),
        ] {
            let c = parse(&format!(
                "[servers]\nA = \"127.0.0.1:1\"\n[store]\ndurability = \"{text}\"\n"
            ))
            .unwrap();
            assert_eq!(c.store.durability, level);
        }
    }

    #[test]
    fn config_errors_name_what_is_wrong() {
        let e = err("[servers]\nA = \"127.0.0.1:1\"\n[bogus]\n");
        assert!(e.contains("bogus") && e.contains("test.toml"), "{e}");
        let e = err("links = [[\"A\", \"B\"]]\n[servers]\nA = \"127.0.0.1:1\"\n");
        assert!(e.contains("unknown server \"B\""), "{e}");
        let e = err("links = [[\"A\", \"A\"]]\n[servers]\nA = \"127.0.0.1:1\"\n");
        assert!(e.contains("itself"), "{e}");
        let e = err("[servers]\nA = \"127.0.0.1:1\"\nB = \"127.0.0.1:1\"\n");
        assert!(e.contains("also the address of A"), "{e}");
        let e = err("[servers]\nA = \"127.0.0.1\"\n");
        assert!(e.contains("servers.A") && e.contains("host:port"), "{e}");
        let e = err("[servers]\nA = \"127.0.0.1:99999\"\n");
        assert!(e.contains("port"), "{e}");
        let e = err("[servers]\nA = \"127.0.0.1:1\"\nA = \"127.0.0.1:2\"\n");
        assert!(e.to_lowercase().contains("duplicate"), "{e}");
        let e = err("[servers]\nA = \"127.0.0.1:1\"\n[admin]\nB = \"127.0.0.1:2\"\n");
        assert!(
            e.contains("admin.B") && e.contains("no server named"),
            "{e}"
        );
        let e = err("[servers]\nA = \"127.0.0.1:1\"\n[admin]\nA = \"127.0.0.1\"\n");
        assert!(e.contains("admin.A") && e.contains("host:port"), "{e}");
        let e = err("[servers]\nA = \"127.0.0.1:1\"\n[admin]\nA = \"127.0.0.1:1\"\n");
        assert!(
            e.contains("admin.A") && e.contains("also the address"),
            "{e}"
        );
        let e = err("[servers]\nA = \"127.0.0.1:1\"\n[limits]\nmax_connections_per_source = 0\n");
        assert!(e.contains("max_connections_per_source"), "{e}");
        let e = err("[servers]\nA = \"127.0.0.1:1\"\n[limits]\nmax_future_secs = -1\n");
        assert!(e.contains("max_future_secs"), "{e}");
        let e = err("[servers]\nA = \"127.0.0.1:1\"\n[peers]\nsync_records_per_sec = 0\n");
        assert!(e.contains("sync_records_per_sec"), "{e}");
        let e = err("[servers]\nA = \"127.0.0.1:1\"\n[peers]\nsync_ranges_per_sec = -5\n");
        assert!(e.contains("sync_ranges_per_sec"), "{e}");
        let e = err("[servers]\nA = \"127.0.0.1:1\"\n[log]\nmax_bytes = 10\n");
        assert!(e.contains("log: max_bytes"), "{e}");
        let e = err("[servers]\nA = \"127.0.0.1:1\"\n[log]\ninterval_secs = 0\n");
        assert!(e.contains("log: interval_secs"), "{e}");
        let e = err("[servers]\nA = \"127.0.0.1:1\"\n[log]\nconnection_records = 10\n");
        assert!(
            e.contains("connection_records must be at least 100 (is 10)"),
            "{e}"
        );
        let e = err("[servers]\nA = \"127.0.0.1:1\"\n[log]\nrotate = 1\n");
        assert!(e.contains("rotate"), "{e}");
        let e = err("[servers]\nA = \"127.0.0.1:1\"\n[store]\ndurability = \"maybe\"\n");
        assert!(e.contains("durability") || e.contains("maybe"), "{e}");
    }

    const LONG: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn the_secret_comes_from_the_environment_or_a_file() {
        let text = "[servers]\nA = \"127.0.0.1:1\"\n";
        assert_eq!(
            Config::parse(text, "t", Some(LONG.to_vec()))
                .unwrap()
                .secret,
            Some(LONG.to_vec())
        );
        let e = Config::parse(text, "t", Some(b"s3".to_vec()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("HERD_SECRET") && e.contains("at least 32"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "hunter2\n").unwrap();
        let with_file = format!("secret_file = {:?}\n{text}", path.display().to_string());
        let e = err(&with_file);
        assert!(e.contains("secret_file") && e.contains("7 bytes"), "{e}");
        std::fs::write(&path, [LONG, b"\n"].concat()).unwrap();
        assert_eq!(parse(&with_file).unwrap().secret, Some(LONG.to_vec()));
        let missing = format!(
            "secret_file = {:?}\n{text}",
            dir.path().join("nope").display().to_string()
        );
        assert!(err(&missing).contains("secret_file"));
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_others_can_read_is_reported() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "a long enough herd secret, for this test\n").unwrap();
        let text = format!(
            "secret_file = {:?}\n[servers]\nA = \"127.0.0.1:1\"\n",
            path.display().to_string()
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(parse(&text).unwrap().loose_secret_file, None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            parse(&text).unwrap().loose_secret_file,
            Some((path.clone(), 0o644))
        );
    }
}
