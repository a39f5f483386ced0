//! How a connection proves it is a configured server of the herd.
//!
//! Peers dial each other's client port and speak lines, like clients. The dialer D opens with
//!
//! ```text
//! D → L   HERD HELLO <D> <L> <nonce_d>
//! ```
//!
//! **With a herd secret** both sides prove they know it, and the secret never crosses the wire:
//!
//! ```text
//! L → D   HERD CHALLENGE <nonce_l> <mac_l>     mac_l = HMAC-SHA256(secret, "listener" transcript)
//! D → L   HERD PROOF <mac_d>                   mac_d = HMAC-SHA256(secret, "dialer" transcript)
//! L → D   HERD WELCOME
//! ```
//!
//! where the transcript is `herd-auth-v1`, the role, D, L, nonce_d and nonce_l, NUL-separated,
//! and each nonce is 16 fresh random bytes in hex. Both nonces are fresh per connection, so a
//! recorded exchange cannot be replayed, and the role in the MAC stops one side's proof from
//! being reflected back as the other's. Macs are compared in constant time.
//!
//! **Without a secret** (protected mode) the listener accepts a HELLO only from a loopback
//! address and answers `HERD WELCOME` at once. A dialer that has a secret refuses a listener
//! that skips the challenge, so a mixed herd fails closed.
//!
//! In either mode the listener refuses a HELLO that names another server as L, or a D that is
//! not linked to L in the config. A refused line is answered like any invalid request (`? ...`)
//! and logged; the connection stays an ordinary client connection.

use hmac::{Hmac, Mac};
use sha2::Sha256;

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
            &b"herd-auth-v1"[..],
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
}
