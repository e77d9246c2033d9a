//! Keys and encrypted channels for what leaves the host (docs/SECURITY.md has the threat
//! model): X25519 key pairs and their files ([`keys`]), shared by CurveZMQ on the control plane
//! and the ZeroMQ bus (`net::zmq`), and the Noise layer of the replication stream ([`noise`]).
//!
//! Nothing here reads a clock or keeps state beyond one channel; no crypto is implemented
//! here: libzmq/libsodium do CurveZMQ, snow with ring and curve25519-dalek does Noise.

pub mod keys;
pub mod noise;

pub use keys::{KeyPair, PublicKey};

/// Why a key or a secure channel could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecurityError {
    /// A key could not be read, parsed, written or trusted.
    Key(String),
    /// A handshake or record failed: wrong key, forged or damaged data.
    Channel(String),
}

impl std::fmt::Display for SecurityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecurityError::Key(e) => write!(f, "key: {e}"),
            SecurityError::Channel(e) => write!(f, "secure channel: {e}"),
        }
    }
}

impl std::error::Error for SecurityError {}
