//! The replication stream's I/O drivers: the bus carried over one TCP (`tcp://host:port`) or Unix
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
//! (a fanout half's carries its send totals: `"ZK" | datagrams u64 | updates u64 | bytes u64`,
//! little-endian), starting with a checkpoint, and `"ZY"` (bye) before the hub closes a stream on purpose
//! (the subscriber fell too far behind, or the hub is stopping), so that the subscriber can
//! tell a deliberate close from the death of the publisher.
//!
//! A hub given a key pair encrypts its `tcp://` streams: Noise NK under the frames
//! (`security::noise`); the subscriber must know the hub's public key (a standby learns it from
//! the controller, over the encrypted control plane). `ipc://` streams never leave the host and
//! stay plain. A hub drops a subscriber that has not said hello within [`HELLO_DEADLINE`] and
//! holds at most [`MAX_PEERS`] connections, each with at most
//! [`MAX_INPUT`](super::peer::MAX_INPUT) bytes unread.
//!
//! What a peer may say and when (hello, token, heartbeats, checkpoint first, backlog, bye) is
//! decided by the pure cores in `replication::peer`; these drivers accept, dial, read and write.

mod hub;
mod link;
mod transport;

pub use hub::{HubCounters, StreamHub};
pub use link::{LinkSubscriber, StreamLink};

pub use super::peer::{FanoutTotals, LinkEvent, Role, HELLO_DEADLINE};
use crate::ipc_bus::BusError;

/// Connections a hub holds at once (greeted or not); more are closed on accept.
pub const MAX_PEERS: usize = 256;

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
