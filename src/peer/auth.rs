//! How a connection proves it is a configured server of the herd, and the limits on trying.
//!
//! Peers dial each other's client port and speak lines, like clients (over TLS when `[tls]`
//! is configured; see [`tls`](super::tls)). The dialer D opens with
//!
//! ```text
//! D → L   HERD HELLO <D> <L> <nonce_d>
//! ```
//!
//! **With a herd secret** the dialer proves first, and the listener reveals nothing derived
//! from the secret until that proof has been checked:
//!
//! ```text
//! L → D   HERD CHALLENGE <nonce_l>             a fresh nonce, nothing else
//! D → L   HERD PROOF <mac_d>                   mac_d = HMAC-SHA256(secret, "dialer" transcript)
//! L → D   HERD WELCOME <mac_l>                 mac_l = HMAC-SHA256(secret, "listener" transcript)
//! ```
//!
//! where the transcript is `herd-auth-v2`, the role, D, L, nonce_d and nonce_l, each followed
//! by a NUL, and each nonce is 16 fresh random bytes in hex. A caller that does not know the
//! secret therefore never sees a MAC it could test guesses against offline; the listener's
//! proof (which stops a dialer from linking to an impostor) comes only after the dialer's.
//! Both nonces are fresh per connection, so a recorded exchange cannot be replayed, and the
//! role in the MAC stops one side's proof from being reflected back as the other's. MACs
//! are compared in constant time. The full argument is in `docs/peers.md`.
//!
//! **With TLS and no secret** the certificates authenticate both ends and the listener answers
//! `HERD WELCOME` at once (after checking that the dialer's certificate names D).
//!
//! **Without a secret or TLS** (protected mode) the listener accepts a HELLO only from a
//! loopback address and answers `HERD WELCOME` at once. A dialer that has a secret refuses a
//! listener that welcomes it without a proof, so a mixed herd fails closed.
//!
//! In every mode the listener refuses a HELLO that names another server as L, or a D that is
//! not linked to L in its current config. A refused line is answered like any invalid request
//! (`? ...`) and logged. [`Attempts`] bounds how often that may happen: a connection is closed
//! after [`PER_CONNECTION`] refused handshakes, and a source address with [`PER_SOURCE`]
//! refusals in the last [`SOURCE_WINDOW`] is refused at once, without a challenge. Only
//! refusals that could be guesses count against the source (a wrong proof, a failed TLS
//! handshake, a certificate naming another server, a plaintext or non-loopback HELLO the mode
//! forbids): a HELLO naming an unlinked D or another L is refused before any challenge, tests
//! nothing, and is what a server just added to the herd sends to nodes that have not reloaded
//! their config yet, so it is not counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The shortest herd secret accepted, in bytes: 256 bits if it is random, and long enough
/// that a passphrase has to be more than a word or two.
pub const MIN_SECRET_BYTES: usize = 32;

/// Refused handshakes after which a connection is closed.
pub const PER_CONNECTION: u32 = 3;
/// Refused handshakes from one source address, within [`SOURCE_WINDOW`], after which its
/// HELLOs are refused at once.
pub const PER_SOURCE: u32 = 20;
/// The window [`PER_SOURCE`] counts over.
pub const SOURCE_WINDOW: Duration = Duration::from_secs(60);
/// Source addresses remembered at most; the oldest windows are forgotten first.
const MAX_SOURCES: usize = 4096;

/// A fresh 16-byte nonce, hex-encoded.
pub fn nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[derive(Clone, Copy)]
pub enum Role {
    Listener,
    Dialer,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Listener => b"listener",
            Role::Dialer => b"dialer",
        }
    }
}

/// The handshake's transcript: who dials whom, with which nonces.
pub struct Transcript<'a> {
    pub dialer: &'a str,
    pub listener: &'a str,
    pub nonce_d: &'a [u8],
    pub nonce_l: &'a [u8],
}

impl Transcript<'_> {
    fn keyed(&self, secret: &[u8], role: Role) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
        for part in [
            &b"herd-auth-v2"[..],
            role.label(),
            self.dialer.as_bytes(),
            self.listener.as_bytes(),
            self.nonce_d,
            self.nonce_l,
        ] {
            mac.update(part);
            mac.update(b"\0");
        }
        mac
    }

    /// The proof `role` sends, hex-encoded.
    pub fn mac(&self, secret: &[u8], role: Role) -> String {
        hex::encode(self.keyed(secret, role).finalize().into_bytes())
    }

    /// Checks a proof sent by `role`, in constant time.
    pub fn verify(&self, secret: &[u8], role: Role, mac_hex: &[u8]) -> bool {
        let Ok(mac) = hex::decode(mac_hex) else {
            return false;
        };
        self.keyed(secret, role).verify_slice(&mac).is_ok()
    }
}

/// Refused handshakes per source address, over a fixed window.
#[derive(Default)]
pub struct Attempts {
    sources: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Attempts {
    /// Whether `source` may still try a handshake.
    pub fn allowed(&self, source: IpAddr) -> bool {
        let sources = self.sources.lock().expect("not poisoned");
        match sources.get(&source) {
            Some((since, n)) => since.elapsed() >= SOURCE_WINDOW || *n < PER_SOURCE,
            None => true,
        }
    }

    /// Counts one refused handshake from `source`; returns the count in the current window.
    pub fn refused(&self, source: IpAddr) -> u32 {
        let mut sources = self.sources.lock().expect("not poisoned");
        if sources.len() >= MAX_SOURCES && !sources.contains_key(&source) {
            sources.retain(|_, (since, _)| since.elapsed() < SOURCE_WINDOW);
            if sources.len() >= MAX_SOURCES {
                // Forget the oldest window rather than grow without bound.
                if let Some(oldest) = sources.iter().min_by_key(|(_, (s, _))| *s).map(|(k, _)| *k) {
                    sources.remove(&oldest);
                }
            }
        }
        let entry = sources.entry(source).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= SOURCE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        entry.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript<'a>(nd: &'a [u8], nl: &'a [u8]) -> Transcript<'a> {
        Transcript {
            dialer: "Bona",
            listener: "Clark",
            nonce_d: nd,
            nonce_l: nl,
        }
    }

    #[test]
    fn proofs_verify_only_with_the_same_secret_role_and_nonces() {
        let t = transcript(b"aa", b"bb");
        let mac = t.mac(b"secret", Role::Dialer);
        assert!(t.verify(b"secret", Role::Dialer, mac.as_bytes()));
        assert!(!t.verify(b"other", Role::Dialer, mac.as_bytes()));
        assert!(
            !t.verify(b"secret", Role::Listener, mac.as_bytes()),
            "a proof must not be reflected"
        );
        assert!(!transcript(b"aa", b"cc").verify(b"secret", Role::Dialer, mac.as_bytes()));
        assert!(!t.verify(b"secret", Role::Dialer, b"zz"));
        assert!(!mac.contains("secret"));
    }

    #[test]
    fn nonces_are_fresh() {
        assert_ne!(nonce(), nonce());
        assert_eq!(nonce().len(), 32);
    }

    #[test]
    fn a_source_is_refused_after_too_many_failures() {
        let attempts = Attempts::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for i in 1..=PER_SOURCE {
            assert!(attempts.allowed(a));
            assert_eq!(attempts.refused(a), i);
        }
        assert!(!attempts.allowed(a));
        assert!(attempts.allowed(b), "another source is not affected");
    }
}
