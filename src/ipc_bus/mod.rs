//! The pub-sub bus between ingest and fanout (and, later, between pairs).
//!
//! Publishers send [`Batch`]es of events; every event has a topic (its scene); subscribers
//! receive the events of the topics they subscribed to, in publish order. Session events
//! (admitted, revoked) reach every subscriber. The in-process transport is [`inproc`]; the
//! direct transport (`fanout::DirectFanout`) runs fanout inside the publisher's thread; [`zmq`]
//! carries batches over ZeroMQ `ipc://` and `tcp://` (format in [`codec`]).

pub mod codec;
pub mod inproc;
pub mod zmq;

use std::time::Duration;

use crate::scene::{Batch, EventKind};

/// What a subscriber wants to receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    /// Every scene.
    All,
    /// One scene.
    Scene(u32),
}

impl Topic {
    /// Whether an event of `kind` in `scene` belongs to this topic.
    pub fn matches(self, kind: EventKind, scene: u32) -> bool {
        match self {
            Topic::All => true,
            Topic::Scene(s) => {
                s == scene || matches!(kind, EventKind::Admitted | EventKind::Revoked)
            }
        }
    }
}

/// Why the bus could not carry a batch.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BusError {
    /// The other side is gone; nothing more will be delivered.
    Closed,
    /// A transport could not be set up (bind, runtime, thread).
    Transport(String),
}

impl std::fmt::Display for BusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusError::Closed => f.write_str("bus closed"),
            BusError::Transport(e) => write!(f, "bus transport: {e}"),
        }
    }
}

impl std::error::Error for BusError {}

/// Removes a stale `ipc://` socket file (nobody listens on it); refuses one that someone
/// listens on. Other endpoints are left alone.
pub(crate) fn clear_stale_ipc(endpoint: &str) -> Result<(), BusError> {
    let Some(path) = endpoint.strip_prefix("ipc://") else {
        return Ok(());
    };
    let path = std::path::Path::new(path);
    if !path.exists() {
        return Ok(());
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(BusError::Transport(format!("{endpoint} is in use")));
    }
    std::fs::remove_file(path)
        .map_err(|e| BusError::Transport(format!("cannot remove stale {endpoint}: {e}")))
}

/// The sending side of the bus.
pub trait Publisher: Send {
    /// Publishes `batch` and returns an empty batch to fill next (a recycled one when possible).
    fn publish(&mut self, batch: Batch) -> Result<Batch, BusError>;
}

impl<P: Publisher + ?Sized> Publisher for Box<P> {
    fn publish(&mut self, batch: Batch) -> Result<Batch, BusError> {
        (**self).publish(batch)
    }
}

/// The receiving side of the bus.
pub trait Subscriber: Send {
    /// Waits up to `timeout` for the next batch. `Ok(None)` on timeout.
    fn recv(&mut self, timeout: Duration) -> Result<Option<Batch>, BusError>;
    /// Gives a drained batch back for reuse.
    fn recycle(&mut self, batch: Batch);
}
