//! What the scene engine outputs, and so what the bus carries: a batch of events with their
//! bytes in one arena (pure data).
//!
//! Ingest fills a batch per receive burst, fanout drains it, then hands it back to be reused,
//! so in steady state no event costs an allocation. Events keep their order, which is what lets
//! fanout learn a device's session before the first datagram addressed to it.

use std::net::SocketAddr;
use std::ops::Range;

use crate::wire::Kind;

/// What an event asks of the bus's subscribers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A device session exists; data = its 32-byte session key.
    Admitted,
    /// A device session no longer exists.
    Revoked,
    /// `device` joined `scene` from `addr`; data = the join datagram's seq (u64 LE).
    Joined,
    /// `device` now sends from `addr`.
    Moved,
    /// `device` left `scene`; data = one byte, the wire leave reason, then the leave
    /// datagram's seq (u64 LE) when the device asked to leave.
    Left,
    /// `device` has been silent for a while: send it nothing until it is heard again.
    Paused,
    /// `device` was heard again after a pause.
    Resumed,
    /// An accepted object datagram of this kind from `device`, for every other member of
    /// `scene`; data = the object body, origin stamped.
    Relay(Kind),
    /// An object datagram of this kind another pair accepted (its stream, the region bus,
    /// carried it), for this pair's devices as if it were a `Relay`: data = the body, origin
    /// stamped there. `device` is the writer, served elsewhere. Never streamed on.
    Proxy(Kind),
    /// One datagram of this kind for `device` at `addr`; data = its body.
    Direct(Kind),
    /// Replication: a state checkpoint follows; a mirror forgets what it held.
    Checkpoint,
    /// Replication: one whole device session at `addr` (see `scene::mirror` for the data).
    Session,
    /// Replication: one whole object of `scene` (see `scene::mirror` for the data).
    Object,
    /// Replication: the checkpoint is complete; live events follow.
    Synced,
    /// A datagram a draining pair received for a scene that moved: data = the datagram as
    /// received from `addr`, for the new pair to handle as its own.
    Forwarded,
    /// Replication: `scene` now belongs to the pair in data (a wire `RedirectBody`: epoch and
    /// endpoint); this pair forwards its devices' datagrams from here on (a drain).
    Handover,
    /// `device` has a new interest area; data = a wire interest body (see `wire::interest`).
    Interest,
    /// A datagram of this kind for each listed device (see `scene::interest`): data =
    /// `count u16 | device u32 x count | body`; an empty body means the preceding `Relay`
    /// event's. `device` is the writer whose update caused it.
    Deliver(Kind),
}

/// One event; its bytes live in the batch arena.
#[derive(Clone, Debug)]
pub struct Event {
    pub kind: EventKind,
    pub scene: u32,
    pub device: u32,
    pub addr: Option<SocketAddr>,
    data: Range<u32>,
}

/// Events plus the arena holding their bytes.
#[derive(Clone, Default, Debug)]
pub struct Batch {
    events: Vec<Event>,
    data: Vec<u8>,
}

impl Batch {
    pub fn with_capacity(events: usize, bytes: usize) -> Batch {
        Batch {
            events: Vec::with_capacity(events),
            data: Vec::with_capacity(bytes),
        }
    }

    /// Appends an event whose bytes `write` appends to the arena.
    pub fn push_with(
        &mut self,
        kind: EventKind,
        scene: u32,
        device: u32,
        addr: Option<SocketAddr>,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        let start = self.data.len();
        write(&mut self.data);
        self.events.push(Event {
            kind,
            scene,
            device,
            addr,
            data: start as u32..self.data.len() as u32,
        });
    }

    /// Appends an event carrying a copy of `bytes`.
    pub fn push(
        &mut self,
        kind: EventKind,
        scene: u32,
        device: u32,
        addr: Option<SocketAddr>,
        bytes: &[u8],
    ) {
        self.push_with(kind, scene, device, addr, |d| d.extend_from_slice(bytes));
    }

    /// The bytes of the last event pushed, for in-place edits.
    pub fn last_data_mut(&mut self) -> Option<&mut [u8]> {
        let range = self.events.last()?.data.clone();
        Some(&mut self.data[range.start as usize..range.end as usize])
    }

    /// The events with their bytes, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Event, &[u8])> {
        self.events
            .iter()
            .map(|e| (e, &self.data[e.data.start as usize..e.data.end as usize]))
    }

    /// Event `i` with its bytes.
    pub fn get(&self, i: usize) -> Option<(&Event, &[u8])> {
        let e = self.events.get(i)?;
        Some((e, &self.data[e.data.start as usize..e.data.end as usize]))
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Empties the batch, keeping its capacity.
    pub fn clear(&mut self) {
        self.events.clear();
        self.data.clear();
    }
}
