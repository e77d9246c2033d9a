//! The replication stream's encryption: Noise `NK` (Curve25519, ChaCha20-Poly1305, SHA-256)
//! from `snow`, with ring's audited ChaCha20-Poly1305 and SHA-256 and curve25519-dalek's
//! Diffie-Hellman, as a byte-stream layer under the stream's own frames (the way TLS sits
//! under HTTP).
//!
//! `NK`: the initiator (a standby, a fanout half) knows the hub's static public key in advance
//! (the controller hands it out over the encrypted control plane) and has no static key of its
//! own; it proves itself with the cluster token in its hello, which only travels inside the
//! channel. Two handshake messages, then transport messages. Each message travels as a record
//! `len u16 BE | noise message` (at most 65535 bytes, the Noise limit), so plaintext goes out
//! in chunks of at most [`MAX_PLAIN`] bytes. The prologue binds the channel to this protocol.
//!
//! Sans I/O: the caller moves bytes between sockets and these buffers. `open` consumes every
//! complete record and leaves a partial one in place; a record that does not decrypt (a forged,
//! replayed, reordered or truncated one) is an error, after which the stream must be closed.

use snow::{HandshakeState, TransportState};

use super::keys::{KeyPair, PublicKey};
use super::SecurityError;

/// The Noise protocol name.
pub const PARAMS: &str = "Noise_NK_25519_ChaChaPoly_SHA256";
const PROLOGUE: &[u8] = b"zonecast replication stream 1";
/// Largest Noise message (record body).
pub const MAX_RECORD: usize = 65535;
const TAG: usize = 16;
/// Largest plaintext one record carries.
pub const MAX_PLAIN: usize = MAX_RECORD - TAG;

enum State {
    Handshake(Box<HandshakeState>),
    Transport(Box<TransportState>),
    Failed,
}

/// One end of an encrypted stream.
pub struct Channel {
    state: State,
    scratch: Vec<u8>,
}

fn noise(e: snow::Error) -> SecurityError {
    SecurityError::Channel(format!("noise: {e}"))
}

impl Channel {
    /// The dialing side, for a hub whose public key is `server`; returns the channel and the
    /// first handshake record to send.
    pub fn initiator(server: &PublicKey) -> Result<(Channel, Vec<u8>), SecurityError> {
        let params = PARAMS.parse().map_err(noise)?;
        let mut hs = snow::Builder::new(params)
            .prologue(PROLOGUE)
            .and_then(|b| b.remote_public_key(server.as_bytes()))
            .and_then(|b| b.build_initiator())
            .map_err(noise)?;
        let mut record = vec![0u8; 2 + MAX_RECORD];
        let n = hs.write_message(&[], &mut record[2..]).map_err(noise)?;
        record[..2].copy_from_slice(&(n as u16).to_be_bytes());
        record.truncate(2 + n);
        let channel = Channel {
            state: State::Handshake(Box::new(hs)),
            scratch: vec![0u8; MAX_RECORD],
        };
        Ok((channel, record))
    }

    /// The accepting side, holding the hub's key pair.
    pub fn responder(own: &KeyPair) -> Result<Channel, SecurityError> {
        let params = PARAMS.parse().map_err(noise)?;
        let secret = own.secret_bytes();
        let hs = snow::Builder::new(params)
            .prologue(PROLOGUE)
            .and_then(|b| b.local_private_key(&secret))
            .and_then(|b| b.build_responder())
            .map_err(noise)?;
        Ok(Channel {
            state: State::Handshake(Box::new(hs)),
            scratch: vec![0u8; MAX_RECORD],
        })
    }

    /// Whether the handshake is over (data can flow).
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Transport(_))
    }

    /// Takes every complete record off the front of `wire`: handshake records advance the
    /// handshake (a responder's answer is appended to `reply`), transport records are
    /// decrypted onto `plain`.
    pub fn open(
        &mut self,
        wire: &mut Vec<u8>,
        plain: &mut Vec<u8>,
        reply: &mut Vec<u8>,
    ) -> Result<(), SecurityError> {
        let mut at = 0;
        let result = loop {
            let Some(head) = wire.get(at..at + 2) else {
                break Ok(());
            };
            let len = usize::from(u16::from_be_bytes([head[0], head[1]]));
            let Some(record) = wire.get(at + 2..at + 2 + len) else {
                break Ok(());
            };
            at += 2 + len;
            if let Err(e) = self.open_record(record, plain, reply) {
                self.state = State::Failed;
                break Err(e);
            }
        };
        wire.drain(..at);
        result
    }

    fn open_record(
        &mut self,
        record: &[u8],
        plain: &mut Vec<u8>,
        reply: &mut Vec<u8>,
    ) -> Result<(), SecurityError> {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Failed => Err(SecurityError::Channel("the channel failed before".into())),
            State::Transport(mut t) => {
                let n = t.read_message(record, &mut self.scratch).map_err(noise)?;
                plain.extend_from_slice(&self.scratch[..n]);
                self.state = State::Transport(t);
                Ok(())
            }
            State::Handshake(mut hs) => {
                hs.read_message(record, &mut self.scratch).map_err(noise)?;
                if !hs.is_initiator() {
                    let n = hs.write_message(&[], &mut self.scratch).map_err(noise)?;
                    reply.extend_from_slice(&(n as u16).to_be_bytes());
                    reply.extend_from_slice(&self.scratch[..n]);
                }
                if !hs.is_handshake_finished() {
                    return Err(SecurityError::Channel("handshake out of step".into()));
                }
                self.state = State::Transport(Box::new(hs.into_transport_mode().map_err(noise)?));
                Ok(())
            }
        }
    }

    /// Encrypts `plain` into records appended to `out` (nothing for an empty `plain`).
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), SecurityError> {
        let State::Transport(t) = &mut self.state else {
            return Err(SecurityError::Channel("handshake not finished".into()));
        };
        for chunk in plain.chunks(MAX_PLAIN) {
            let at = out.len();
            out.resize(at + 2 + chunk.len() + TAG, 0);
            let n = t.write_message(chunk, &mut out[at + 2..]).map_err(noise)?;
            out[at..at + 2].copy_from_slice(&(n as u16).to_be_bytes());
            out.truncate(at + 2 + n);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected() -> (Channel, Channel) {
        let hub_key = KeyPair::generate();
        let (mut client, hello) = Channel::initiator(&hub_key.public()).unwrap();
        let mut server = Channel::responder(&hub_key).unwrap();
        let (mut wire, mut plain, mut reply) = (hello, Vec::new(), Vec::new());
        server.open(&mut wire, &mut plain, &mut reply).unwrap();
        assert!(server.is_ready() && plain.is_empty() && wire.is_empty());
        client
            .open(&mut reply, &mut plain, &mut Vec::new())
            .unwrap();
        assert!(client.is_ready());
        (client, server)
    }

    #[test]
    fn records_carry_any_size_in_order_even_split_anywhere() {
        let (mut client, mut server) = connected();
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        client.seal(b"hello", &mut wire).unwrap();
        client.seal(&big, &mut wire).unwrap();
        assert_eq!(
            wire.len(),
            5 + big.len() + 5 * (2 + TAG),
            "4 records for 200 kB + 1"
        );
        // Deliver it a few bytes at a time, as TCP may.
        let mut got = Vec::new();
        let mut pending = Vec::new();
        for piece in wire.chunks(7777) {
            pending.extend_from_slice(piece);
            server
                .open(&mut pending, &mut got, &mut Vec::new())
                .unwrap();
        }
        assert!(pending.is_empty());
        assert_eq!(&got[..5], b"hello");
        assert_eq!(&got[5..], &big[..]);
    }

    #[test]
    fn a_wrong_key_a_flipped_bit_or_a_replay_is_refused() {
        // A client that expects another hub key cannot complete the handshake.
        let hub_key = KeyPair::generate();
        let (_, hello) = Channel::initiator(&KeyPair::generate().public()).unwrap();
        let mut server = Channel::responder(&hub_key).unwrap();
        let mut wire = hello;
        assert!(server
            .open(&mut wire, &mut Vec::new(), &mut Vec::new())
            .is_err());

        let (mut client, mut server) = connected();
        let mut record = Vec::new();
        client.seal(b"state", &mut record).unwrap();
        let mut flipped = record.clone();
        flipped[5] ^= 1;
        assert!(server
            .open(&mut flipped, &mut Vec::new(), &mut Vec::new())
            .is_err());
        assert!(!server.is_ready(), "a failed channel stays failed");

        let (mut client, mut server) = connected();
        let mut record = Vec::new();
        client.seal(b"once", &mut record).unwrap();
        let mut twice = [record.clone(), record].concat();
        let mut got = Vec::new();
        assert!(server.open(&mut twice, &mut got, &mut Vec::new()).is_err());
        assert_eq!(got, b"once");
    }

    #[test]
    fn nothing_is_sealed_before_the_handshake() {
        let mut server = Channel::responder(&KeyPair::generate()).unwrap();
        assert!(server.seal(b"x", &mut Vec::new()).is_err());
    }
}
