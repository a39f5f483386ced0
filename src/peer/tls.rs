//! Mutual TLS on peer links: loading a node's certificates, the listener's side of a TLS
//! connection, reloading on SIGHUP, and `herd certs` for development herds.
//!
//! **How a connection becomes TLS.** Clients and peers share one port. A peer dials and starts
//! TLS at once; the listener tells the two apart by the first byte: a TLS record starts with
//! `0x16` (a handshake record), which no client line does. Inside TLS the peer handshake of
//! [`auth`](super::auth) runs as usual, starting with `HERD HELLO`.
//!
//! **What is checked.** Each node presents `dir/NAME.pem` with `dir/NAME.key` and accepts only
//! a peer whose certificate chains to `dir/ca.pem` (and is within its validity period). The
//! dialer checks that the listener's certificate names the server it dialled; the listener
//! checks that the dialer's certificate names the server its HELLO claims to be, so a
//! certificate of Bona cannot pose as Clark. A plaintext `HERD HELLO` is refused and logged.
//! With TLS on, the herd secret is optional; if set, it is proven inside TLS as well.
//!
//! **Rotation.** On SIGHUP (see [`crate::membership`]) the files are read again if their
//! contents changed. If they are good, new links use them and every link made under the old
//! ones is closed and made again (the link actors redial); if not, the error is logged and the
//! old certificates stay in use. Unchanged files leave every link alone.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::handshake::{self, next_line, peer_line_limit, Accepted, Listener, Transport};
use super::{Liveness, PeerReader, PeerWriter, Session, Watched};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::logging::Escaped;
use crate::node::Node;
use crate::protocol::frame::LineCodec;
use crate::protocol::request::{invalid_answer, parse, PeerLine, Request};

/// The first byte of a TLS handshake record.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// A node's TLS settings, replaceable at run time.
pub struct Tls {
    dir: PathBuf,
    me: String,
    current: RwLock<Loaded>,
}

struct Loaded {
    /// A hash of the files these were read from, to tell whether they changed since.
    files: [u8; 32],
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    /// Cancelled when these certificates are replaced: every session made with them ends.
    generation: CancellationToken,
}

/// `name` as the name a certificate must carry.
pub fn server_name(name: &str) -> std::result::Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_owned())
        .map_err(|_| format!("server name {name:?} cannot be named by a certificate"))
}

impl Tls {
    /// Reads `dir`'s `ca.pem`, `NAME.pem` and `NAME.key` for server `me`. A missing or bad file
    /// is a config error naming it; a key readable by others is a warning.
    pub fn load(config: &Config, me: &str) -> Result<Option<Arc<Tls>>> {
        let Some(dir) = &config.tls_dir else {
            return Ok(None);
        };
        check_names(config)?;
        let loaded = read(dir, me)?;
        Ok(Some(Arc::new(Tls {
            dir: dir.clone(),
            me: me.to_owned(),
            current: RwLock::new(loaded),
        })))
    }

    /// Reads the files again if they changed since they were last read; if they did and they
    /// load, new links use them and old ones are closed. Returns whether they were reloaded.
    pub fn reload_if_changed(&self) -> Result<bool> {
        let files = fingerprint(&self.dir, &self.me)?;
        if self.current.read().expect("not poisoned").files == files {
            return Ok(false);
        }
        let loaded = read(&self.dir, &self.me)?;
        let old = std::mem::replace(&mut *self.current.write().expect("not poisoned"), loaded);
        old.generation.cancel();
        Ok(true)
    }

    /// The directory the certificates are read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The acceptor for inbound links, and the token that ends sessions made with it.
    pub fn acceptor(&self) -> (TlsAcceptor, CancellationToken) {
        let c = self.current.read().expect("not poisoned");
        (c.acceptor.clone(), c.generation.clone())
    }

    /// The connector for outbound links, and the token that ends sessions made with it.
    pub fn connector(&self) -> (TlsConnector, CancellationToken) {
        let c = self.current.read().expect("not poisoned");
        (c.connector.clone(), c.generation.clone())
    }
}

/// Checks that a certificate can name every server of `config`.
pub fn check_names(config: &Config) -> Result<()> {
    for name in config.servers.keys() {
        server_name(name).map_err(|why| {
            Error::config(&config.source, format!("servers.{name}: with [tls], {why}"))
        })?;
    }
    Ok(())
}

/// The three files a node's TLS is read from: the CA, its certificate and its key.
fn files(dir: &Path, me: &str) -> [PathBuf; 3] {
    [
        dir.join("ca.pem"),
        dir.join(format!("{me}.pem")),
        dir.join(format!("{me}.key")),
    ]
}

/// A SHA-256 over the contents of the three files (each preceded by its length).
fn fingerprint(dir: &Path, me: &str) -> Result<[u8; 32]> {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for path in files(dir, me) {
        let bytes =
            std::fs::read(&path).map_err(|e| file_error(&path, format!("cannot read: {e}")))?;
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    Ok(hash.finalize().into())
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::config(&path.display().to_string(), message.to_string())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, format!("cannot read: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(path, "holds no certificate"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, format!("cannot read: {e}")))?;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(file = %path.display(), mode = format_args!("{mode:o}"), "TLS key is readable by other users; chmod 600 it");
        }
    }
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| file_error(path, format!("not a PEM private key: {e}")))
}

/// The CA certificates in `ca_pem`, as the roots a peer's certificate must chain to.
fn roots_of(ca_pem: &Path) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca_pem)? {
        roots
            .add(cert)
            .map_err(|e| file_error(ca_pem, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

fn read(dir: &Path, me: &str) -> Result<Loaded> {
    // Taken first: files replaced while they are read are read again on the next reload.
    let files = fingerprint(dir, me)?;
    let [ca_path, cert_path, key_path] = self::files(dir, me);
    let roots = roots_of(&ca_path)?;
    let chain = read_certs(&cert_path)?;
    let key = read_key(&key_path)?;
    let leaf = chain.first().expect("checked non-empty");
    if !names(leaf, me) {
        tracing::warn!(file = %cert_path.display(), server = me, "this certificate does not name this server; peers will refuse it");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| file_error(&ca_path, e))?;
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| file_error(dir, e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| {
            file_error(
                &key_path,
                format!("does not fit {}: {e}", cert_path.display()),
            )
        })?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| file_error(dir, e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            file_error(
                &key_path,
                format!("does not fit {}: {e}", cert_path.display()),
            )
        })?;
    Ok(Loaded {
        files,
        acceptor: TlsAcceptor::from(Arc::new(server)),
        connector: TlsConnector::from(Arc::new(client)),
        generation: CancellationToken::new(),
    })
}

/// Whether `cert` names server `name` (a DNS-name subject alternative name).
pub fn names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(name) = server_name(name) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
}

/// Serves a connection whose first byte is a TLS record: the listener's side of a TLS peer
/// link. Anything refused is logged and the connection closed.
pub async fn serve(node: Node, stream: TcpStream, remote: SocketAddr, tls: Arc<Tls>) {
    let _ = stream.set_nodelay(true);
    let timeout = std::time::Duration::from_millis(node.config().peers.connect_timeout_ms);
    let attempts = node.links().attempts();
    if !attempts.allowed(remote.ip()) {
        tracing::warn!(%remote, "peer refused: too many refused handshakes from this address");
        return;
    }
    let (acceptor, reloaded) = tls.acceptor();
    let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            // The dialer gave up (say, it took the link we dialled instead): not a refusal.
            tracing::debug!(%remote, "peer closed the connection during the TLS handshake");
            return;
        }
        Ok(Err(e)) => {
            attempts.refused(remote.ip());
            tracing::warn!(%remote, error = %e, "peer refused: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::warn!(%remote, "peer refused: TLS handshake timed out");
            return;
        }
    };
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned();
    let (rd, wr) = tokio::io::split(stream);
    let liveness = Liveness::new();
    let rd: PeerReader = Box::new(Watched::new(rd, liveness.clone(), Some(reloaded)));
    let mut writer: PeerWriter = Box::new(wr);
    let limit = peer_line_limit(node.config().limits.max_line_bytes);
    let mut reader = FramedRead::new(rd, LineCodec::new(limit));
    let hello = match tokio::time::timeout(timeout, next_line(&mut reader)).await {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => {
            tracing::warn!(%remote, error = %e, "peer handshake failed");
            return;
        }
        Err(_) => {
            tracing::warn!(%remote, "peer handshake timed out");
            return;
        }
    };
    let Request::Peer(PeerLine::Hello {
        dialer,
        listener,
        nonce,
    }) = parse(&hello)
    else {
        attempts.refused(remote.ip());
        tracing::warn!(%remote, line = %Escaped(&hello[..hello.len().min(256)]), "peer refused: a TLS connection must open with HERD HELLO");
        let _ = writer.write_all(&invalid_answer(&hello)).await;
        let _ = writer.shutdown().await;
        return;
    };
    let names_dialer = cert.as_ref().is_some_and(|c| names(c, &dialer));
    let l = Listener {
        me: node.name(),
        linked: node.is_linked(&dialer),
        secret: node.config().secret.as_deref(),
        tls_on: true,
        transport: Transport::Tls { names_dialer },
        remote,
        attempts,
        timeout,
    };
    match handshake::accept(
        &l,
        &hello,
        &dialer,
        &listener,
        &nonce,
        &mut reader,
        &mut writer,
    )
    .await
    {
        Ok(Accepted::Link(peer)) => {
            node.links()
                .hand_over(Session {
                    peer,
                    dialer,
                    addr: remote,
                    reader,
                    writer,
                    liveness,
                })
                .await;
        }
        Ok(Accepted::Refused) => {
            let _ = writer.shutdown().await;
        }
        Err(e) => {
            tracing::warn!(peer = %Escaped(dialer.as_bytes()), %remote, error = %e, "peer handshake failed");
        }
    }
}

/// `herd certs`: a development CA and one certificate per named server.
#[derive(Debug, Clone, clap::Args)]
pub struct CertsArgs {
    /// Where to write ca.pem, ca.key, NAME.pem and NAME.key.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The herd's config, for the hosts of the servers' addresses (default: data/herd.toml
    /// if it exists, else the built-in herd). A NAME it does not list is named by itself only.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Replace an existing CA (every certificate signed by the old one stops being accepted).
    #[arg(long)]
    pub force: bool,
    /// The servers to issue certificates for.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// Writes the certificates of the named servers, signed by the CA in `args.out` if there is
/// one (`ca.pem` with `ca.key`, as an earlier `herd certs` wrote them), else by a new CA, which
/// is written too; `--force` makes a new CA even if one is there. Returns the files written. A
/// name the config does not list gets a certificate naming only itself.
pub fn certs(args: &CertsArgs) -> Result<Vec<PathBuf>> {
    let config = Config::load(args.config.as_deref())?;
    let ca_pem = args.out.join("ca.pem");
    let ca_key = args.out.join("ca.key");
    let reuse = !args.force && (ca_pem.exists() || ca_key.exists());
    if reuse {
        for needed in [&ca_pem, &ca_key] {
            if !needed.exists() {
                return Err(file_error(
                    needed,
                    "missing: a CA needs both ca.pem and ca.key (pass --force to make a new CA; certificates the old one signed will no longer be accepted)",
                ));
            }
        }
    }
    let mut sans = Vec::new();
    for name in &args.names {
        server_name(name).map_err(|why| Error::config("herd certs", why))?;
        let mut names = vec![name.clone()];
        match config.servers.get(name) {
            Some(addr) => {
                let host = addr
                    .rsplit_once(':')
                    .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
                    .unwrap_or(addr);
                if host != name.as_str() {
                    names.push(host.to_owned());
                }
            }
            None => eprintln!(
                "herd certs: {name} is not a server of {}; its certificate names only {name}",
                config.source
            ),
        }
        sans.push((name, names));
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| Error::io(format!("create {}", args.out.display()), e))?;
    let (not_before, not_after) = validity();
    let (ca, ca_keys) = if reuse {
        existing_ca(&ca_pem, &ca_key)?
    } else {
        let keys = rcgen::KeyPair::generate().map_err(gen_err)?;
        let mut params = ca_params()?;
        params.not_before = not_before;
        params.not_after = not_after;
        (params.self_signed(&keys).map_err(gen_err)?, keys)
    };
    // Every certificate is made before any file is written, and with a reused CA checked to
    // chain to the ca.pem on disk, so a CA that cannot sign for the herd changes nothing.
    let verifier = reuse.then(|| verifier_of(&ca_pem)).transpose()?;
    let mut issued = Vec::new();
    for (name, names) in sans {
        let keys = rcgen::KeyPair::generate().map_err(gen_err)?;
        let mut params = rcgen::CertificateParams::new(names).map_err(gen_err)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name.as_str());
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&keys, &ca, &ca_keys).map_err(gen_err)?;
        if let Some(verifier) = &verifier {
            verifier
                .verify_client_cert(cert.der(), &[], rustls::pki_types::UnixTime::now())
                .map_err(|e| {
                    file_error(
                        &ca_pem,
                        format!("a certificate signed with {} does not chain to it ({e}); only a CA made by herd certs can be reused (pass --force to make a new one)", ca_key.display()),
                    )
                })?;
        }
        issued.push((name, cert, keys));
    }
    let mut written = Vec::new();
    for (name, cert, keys) in issued {
        let pem = args.out.join(format!("{name}.pem"));
        let key = args.out.join(format!("{name}.key"));
        write_file(&pem, cert.pem().as_bytes(), 0o644)?;
        write_file(&key, keys.serialize_pem().as_bytes(), 0o600)?;
        written.extend([pem, key]);
    }
    if !reuse {
        write_file(&ca_key, ca_keys.serialize_pem().as_bytes(), 0o600)?;
        write_file(&ca_pem, ca.pem().as_bytes(), 0o644)?;
        written.extend([ca_pem, ca_key]);
    }
    Ok(written)
}

fn gen_err(e: rcgen::Error) -> Error {
    Error::io("generate a certificate", std::io::Error::other(e))
}

/// The herd's development CA: its name and what it may sign.
fn ca_params() -> Result<rcgen::CertificateParams> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "herd development CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// The CA `herd certs` wrote earlier, as an issuer: its key from `ca.key`, and its name, which
/// is the herd CA's (a certificate's issuer is the CA's name and key, nothing else of it).
fn existing_ca(ca_pem: &Path, ca_key: &Path) -> Result<(rcgen::Certificate, rcgen::KeyPair)> {
    read_certs(ca_pem)?;
    let pem = std::fs::read_to_string(ca_key)
        .map_err(|e| file_error(ca_key, format!("cannot read: {e}")))?;
    let keys = rcgen::KeyPair::from_pem(&pem)
        .map_err(|e| file_error(ca_key, format!("not a usable CA key: {e}")))?;
    let issuer = ca_params()?.self_signed(&keys).map_err(gen_err)?;
    Ok((issuer, keys))
}

/// What a listener checks a dialer's certificate with, for the CA in `ca_pem`.
fn verifier_of(ca_pem: &Path) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiClientVerifier::builder_with_provider(roots_of(ca_pem)?, provider)
        .build()
        .map_err(|e| file_error(ca_pem, e))
}

/// Valid from a day ago (clocks differ) for ten years.
fn validity() -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (
        now - time::Duration::days(1),
        now + time::Duration::days(3650),
    )
}

/// Writes `bytes` to `path` with `mode`, replacing it; the mode is set before any byte is
/// written, so a key is never readable by others, not even for a moment.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(bytes))
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}
