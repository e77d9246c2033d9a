//! The replication stream: the bus carried over one TCP (`tcp://host:port`) or Unix
//! (`ipc:///path`) stream per subscriber, used where losing or reordering an event is not an
//! option: between the halves of a split pair and from a pair to its standby.
//!
//! Why not ZeroMQ PUB/SUB here (the [`zmq`](super::zmq) transport carries the same batches):
//! PUB drops whatever is published before a subscription has landed and gives the subscriber
//! no way to ask for the state it missed, and libzmq queues messages on its own I/O thread,
//! so a publisher killed with `kill -9` takes its last messages with it. Here the publishing
//! thread writes each batch into the kernel itself, *before* fanout sends the datagrams it
//! produced, so whatever devices have seen, the kernel will still deliver to the standby after
//! the publisher dies; a new subscriber gets a checkpoint of the whole state first
//! (`Engine::checkpoint`), in stream order with the live events that follow.
//!
//! Frames are `len u32 LE | payload`. Subscriber to hub: hello `"ZH" | 1 | role u8 |
//! token_len u8 | token` (the cluster token: the stream carries session keys), then heartbeat
//! `"ZK"` every 50 ms. Hub to subscriber: batches (the `codec` payload, `"ZB" | 1 | events`),
//! starting with a checkpoint, and `"ZY"` (bye) before the hub closes a stream on purpose
//! (the subscriber fell too far behind, or the hub is stopping), so that the subscriber can
//! tell a deliberate close from the death of the publisher.
//!
//! A hub given a key pair encrypts its `tcp://` streams: Noise NK under the frames
//! (`security::noise`); the subscriber must know the hub's public key (a standby learns it from
//! the controller, over the encrypted control plane). `ipc://` streams never leave the host and
//! stay plain. A hub drops a subscriber that has not said hello within [`HELLO_DEADLINE`] and
//! holds at most [`MAX_PEERS`] connections.

mod hub;
mod link;
mod transport;

use std::time::Duration;

pub use hub::{HubCounters, StreamHub};
pub use link::{LinkEvent, LinkSubscriber, StreamLink};

use super::BusError;

/// Largest frame either side accepts (a checkpoint of a full scene is well below).
pub const MAX_FRAME: usize = 64 << 20;
/// Bytes a hub queues for one slow subscriber before it says bye and drops it.
pub const MAX_BACKLOG: usize = 32 << 20;
/// How often a subscriber says it is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(50);
/// How long a new connection has to complete its handshake and say hello.
pub const HELLO_DEADLINE: Duration = Duration::from_secs(5);
/// Connections a hub holds at once (greeted or not); more are closed on accept.
pub const MAX_PEERS: usize = 256;

const HELLO: &[u8; 2] = b"ZH";
const BEAT: &[u8; 2] = b"ZK";
const BYE: &[u8; 2] = b"ZY";

/// What a subscriber is to the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The fanout half of a split pair: the pair is healthy only while it is connected.
    Fanout = 1,
    /// A standby pair mirroring this one.
    Standby = 2,
}

/// A parsed `tcp://` or `ipc://` endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(String),
    Ipc(std::path::PathBuf),
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Endpoint, BusError> {
        if let Some(a) = s.strip_prefix("tcp://") {
            return Ok(Endpoint::Tcp(a.to_string()));
        }
        if let Some(p) = s.strip_prefix("ipc://") {
            if !p.is_empty() {
                return Ok(Endpoint::Ipc(p.into()));
            }
        }
        Err(BusError::Transport(format!(
            "`{s}` is not tcp://HOST:PORT or ipc:///PATH"
        )))
    }
}

/// Splits complete frames off the front of `input`.
fn take_frame(input: &mut Vec<u8>) -> Result<Option<Vec<u8>>, ()> {
    if input.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes([input[0], input[1], input[2], input[3]]) as usize;
    if len > MAX_FRAME {
        return Err(());
    }
    if input.len() < 4 + len {
        return Ok(None);
    }
    let frame = input[4..4 + len].to_vec();
    input.drain(..4 + len);
    Ok(Some(frame))
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(payload);
    f
}
