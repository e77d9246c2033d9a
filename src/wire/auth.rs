//! Datagram authentication: ChaCha20-Poly1305 (RFC 8439) from `ring` (BoringSSL's audited
//! assembly, chosen with runtime CPU detection), used as a MAC.
//!
//! The plaintext is empty and the whole datagram before the tag is the associated data, so the
//! tag authenticates every header and body byte. The 12-byte nonce is
//! `device (u32 LE) | direction (u8) | seq (low 7 bytes, LE)`: unique per key as long as each
//! sender never reuses a sequence number in its direction, which is why sequence numbers are
//! seeded from the wall clock (see docs/PROTOCOL.md, "Authentication").

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};

use super::{WireError, TAG_LEN};

/// Which way a datagram travels; part of the nonce so a datagram cannot be reflected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Direction {
    /// Device to server (ingest).
    ToServer = 0,
    /// Server (fanout) to device.
    ToDevice = 1,
}

/// Builds the AEAD nonce for one datagram.
pub fn nonce(device: u32, dir: Direction, seq: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&device.to_le_bytes());
    n[4] = dir as u8;
    n[5..].copy_from_slice(&seq.to_le_bytes()[..7]);
    n
}

/// A device's 32-byte session key. Only the raw key is stored (a ring key object is sized for
/// its largest algorithm, several hundred bytes); the cipher is built per use, which for
/// ChaCha20 is a copy of the key.
#[derive(Clone)]
pub struct SessionKey {
    raw: [u8; 32],
}

impl SessionKey {
    pub fn new(raw: [u8; 32]) -> SessionKey {
        SessionKey { raw }
    }

    fn cipher(&self) -> LessSafeKey {
        let key = UnboundKey::new(&CHACHA20_POLY1305, &self.raw)
            .expect("a 32-byte key is the ChaCha20-Poly1305 key length");
        LessSafeKey::new(key)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<SessionKey> {
        let mut raw = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut raw).ok()?;
        Some(SessionKey::new(raw))
    }

    /// A fresh random key from the operating system.
    pub fn random() -> SessionKey {
        let mut raw = [0u8; 32];
        getrandom::getrandom(&mut raw).expect("the operating system's random source failed");
        SessionKey::new(raw)
    }

    pub fn raw(&self) -> &[u8; 32] {
        &self.raw
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.raw)
    }

    /// The tag over `signed` for the datagram (device, dir, seq).
    pub fn sign(&self, device: u32, dir: Direction, seq: u64, signed: &[u8]) -> [u8; TAG_LEN] {
        let n = Nonce::assume_unique_for_key(nonce(device, dir, seq));
        let tag = self
            .cipher()
            .seal_in_place_separate_tag(n, Aad::from(signed), &mut [])
            .expect("ChaCha20-Poly1305 accepts any associated data below 2^64 bytes");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Checks `tag` in constant time.
    pub fn verify(
        &self,
        device: u32,
        dir: Direction,
        seq: u64,
        signed: &[u8],
        tag: &[u8],
    ) -> Result<(), WireError> {
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| WireError::BadTag)?;
        let n = Nonce::assume_unique_for_key(nonce(device, dir, seq));
        self.cipher()
            .open_in_place_separate_tag(n, Aad::from(signed), Tag::from(tag), &mut [], 0..)
            .map(|_| ())
            .map_err(|_| WireError::BadTag)
    }
}

/// Compared in constant time.
impl PartialEq for SessionKey {
    fn eq(&self, other: &SessionKey) -> bool {
        bool::from(subtle::ConstantTimeEq::ct_eq(&self.raw[..], &other.raw[..]))
    }
}

impl Eq for SessionKey {}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}
