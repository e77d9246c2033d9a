//! Device client library: what a game links to talk to a pair, and what tests, benchmarks and
//! the `device` and `up` commands use.
//!
//! A [`Device`] owns one non-blocking UDP socket. Every datagram it sends is sealed under the
//! session key; every datagram it receives is verified (tag, recipient, replay window) before it
//! becomes an [`Event`]; anything else is counted in [`Device::dropped`] and skipped. A redirect
//! switches the device to its new endpoint and re-joins there by itself.

mod event;
mod poller;
mod roaming;
mod view;

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use zerocopy::IntoBytes;

pub use event::{Event, ObjectRecord};
pub use poller::Poller;
pub use roaming::{RoamAction, RoamPolicy, Roaming};
pub use view::View;

use crate::net::unix_ns;
use crate::scene::ReplayWindow;
use crate::wire::interest;
pub use crate::wire::interest::{Area, Shape};
use crate::wire::{
    seal, Datagram, Direction, Fields, HeaderFields, JoinBody, Kind, ObjectBody, RejectReason,
    SessionKey, WireError, HEADER_LEN, MASK_ALL, MAX_DATAGRAM, MAX_PAYLOAD, MAX_SEQ,
};

/// What a device needs to talk to its pair.
#[derive(Clone, Debug)]
pub struct Session {
    pub device: u32,
    pub scene: u32,
    pub key: SessionKey,
    /// The pair's UDP endpoint.
    pub pair: SocketAddr,
}

/// Why a client call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    Io(io::Error),
    /// The datagram could not be built (payload too large, body too large).
    Encode(WireError),
    /// The controller refused or did not answer (registration, deregistration).
    Control(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "socket: {e}"),
            ClientError::Encode(e) => write!(f, "cannot encode datagram: {e}"),
            ClientError::Control(e) => write!(f, "controller: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// A device session on one UDP socket.
pub struct Device {
    session: Session,
    socket: UdpSocket,
    seq: u64,
    inbound: ReplayWindow,
    interest_radius: f32,
    /// The interest area it declared (revision 2); `None`: it receives everything.
    area: Option<Area>,
    dropped: u64,
    last_heard: Option<Instant>,
    /// When the pair last answered one of its own datagrams (a keepalive ack, a snapshot).
    last_answered: Option<Instant>,
    /// When the last Join went out while no snapshot has answered it yet.
    join_pending: Option<Instant>,
    /// Epoch of the assignment the device follows (0: none known).
    epoch: u64,
    /// Events decoded from a bundle and not yet returned.
    pending: VecDeque<Event>,
    rx: [u8; 2048],
    tx: [u8; MAX_DATAGRAM],
}

impl Device {
    /// Binds an ephemeral local port (loopback if the pair is on loopback).
    pub fn connect(session: Session) -> io::Result<Device> {
        let local: SocketAddr = match session.pair {
            SocketAddr::V4(a) if a.ip().is_loopback() => "127.0.0.1:0".parse().expect("literal"),
            SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
            SocketAddr::V6(_) => "[::]:0".parse().expect("literal"),
        };
        let socket = UdpSocket::bind(local)?;
        socket.set_nonblocking(true)?;
        Ok(Device {
            session,
            socket,
            // Seeded from the clock so a restarted device never reuses a nonce under its key.
            seq: unix_ns() / 1000,
            inbound: ReplayWindow::default(),
            interest_radius: 0.0,
            area: None,
            dropped: 0,
            last_heard: None,
            last_answered: None,
            join_pending: None,
            epoch: 0,
            pending: VecDeque::new(),
            rx: [0; 2048],
            tx: [0; MAX_DATAGRAM],
        })
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Received datagrams that failed verification or parsing and were skipped.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The interest radius of the last revision-1 join.
    pub fn interest_radius(&self) -> f32 {
        self.interest_radius
    }

    /// The interest area it declared, if any (`None`: it receives everything).
    pub fn area(&self) -> Option<&Area> {
        self.area.as_ref()
    }

    /// When the last verified datagram from the pair arrived.
    pub fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }

    /// When its pair last answered the device itself (a keepalive ack or a snapshot): proof
    /// that the pair it sends to serves it. Relays may come from a pair it no longer talks to.
    pub fn last_answered(&self) -> Option<Instant> {
        self.last_answered
    }

    /// Epoch of the assignment the device follows (0: none known).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Records the epoch of the assignment the device was registered under.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
    }

    /// Talks to `pair` from now on, under assignment `epoch`, and joins there (after a
    /// redirect or a `device.locate`).
    pub fn redirect(&mut self, pair: SocketAddr, epoch: u64) -> Result<u64, ClientError> {
        self.session.pair = pair;
        self.epoch = self.epoch.max(epoch);
        // A new pair numbers its datagrams afresh.
        self.inbound = ReplayWindow::default();
        self.rejoin()
    }

    /// Joins again as it last joined (with its interest area, if it declared one).
    pub fn rejoin(&mut self) -> Result<u64, ClientError> {
        match self.area {
            Some(area) => self.join_area(area),
            None => self.join(self.interest_radius),
        }
    }

    /// Joins and waits for the first snapshot chunk, re-sending the join every 100 ms: with a
    /// controller, a registration can reach the device before its session reaches the pair.
    /// Returns the chunk, or `None` if none came within `timeout`.
    pub fn join_until_snapshot(
        &mut self,
        interest_radius: f32,
        timeout: Duration,
    ) -> Result<Option<Event>, ClientError> {
        self.interest_radius = interest_radius;
        self.area = None;
        self.rejoin_until_snapshot(timeout)
    }

    /// [`Device::join_until_snapshot`] with an interest area (revision 2).
    pub fn join_area_until_snapshot(
        &mut self,
        area: Area,
        timeout: Duration,
    ) -> Result<Option<Event>, ClientError> {
        self.area = Some(area);
        self.rejoin_until_snapshot(timeout)
    }

    fn rejoin_until_snapshot(&mut self, timeout: Duration) -> Result<Option<Event>, ClientError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            self.rejoin()?;
            let step = Instant::now() + Duration::from_millis(100);
            while Instant::now() < step {
                let left = step.saturating_duration_since(Instant::now());
                if let Some(e @ Event::Snapshot { .. }) = self.recv(left)? {
                    return Ok(Some(e));
                }
            }
        }
        Ok(None)
    }

    /// Joins the scene as a revision-1 device: it receives every update of the scene (the
    /// radius is carried but ignored by the pair). The pair answers with a snapshot.
    pub fn join(&mut self, interest_radius: f32) -> Result<u64, ClientError> {
        self.interest_radius = interest_radius;
        self.area = None;
        let body = JoinBody {
            interest_radius: interest_radius.into(),
            reserved: 0.into(),
        };
        let seq = self.send(Kind::Join, body.as_bytes())?;
        self.join_pending = Some(Instant::now());
        Ok(seq)
    }

    /// Joins the scene with an interest area (revision 2): the pair sends updates of objects
    /// inside it only, `Event::Left` when one leaves it, and answers with a snapshot of it.
    pub fn join_area(&mut self, area: Area) -> Result<u64, ClientError> {
        let seq = self.send_area(Kind::Join, area)?;
        self.join_pending = Some(Instant::now());
        Ok(seq)
    }

    /// Declares a new interest area (revision 2; the device must have joined). The pair answers
    /// with `Event::Left` for what left it and an incremental snapshot of what entered it.
    pub fn set_interest(&mut self, area: Area) -> Result<u64, ClientError> {
        self.send_area(Kind::Interest, area)
    }

    /// Makes `area` the device's and sends it as the body of a datagram of `kind`.
    fn send_area(&mut self, kind: Kind, area: Area) -> Result<u64, ClientError> {
        self.area = Some(area);
        let len = area
            .emit(&mut self.tx[HEADER_LEN..])
            .map_err(ClientError::Encode)?;
        self.seal_and_send(kind, len)
    }

    /// Moves the anchor of its interest area (revision 2): sent at once in a keepalive, and in
    /// every keepalive after. A device that declared no area starts with a sphere of radius 0
    /// on layer 0, so call [`Device::set_interest`] or [`Device::join_area`] first.
    pub fn move_anchor(&mut self, anchor: [f32; 3]) -> Result<u64, ClientError> {
        let mut area = self.area.unwrap_or_else(|| Area::sphere(anchor, 0.0));
        area.anchor = anchor;
        self.area = Some(area);
        self.keepalive()
    }

    /// Since when a Join has gone unanswered (no snapshot yet), if one has.
    pub fn join_pending_since(&self) -> Option<Instant> {
        self.join_pending
    }

    pub fn leave(&mut self) -> Result<u64, ClientError> {
        self.send(Kind::Leave, &[])
    }

    /// Tells the pair it is alive; carries the anchor of its interest area, if it has one.
    pub fn keepalive(&mut self) -> Result<u64, ClientError> {
        match self.area {
            Some(area) => {
                let len = interest::emit_anchor(area.anchor, &mut self.tx[HEADER_LEN..])
                    .map_err(ClientError::Encode)?;
                self.seal_and_send(Kind::Keepalive, len)
            }
            None => self.send(Kind::Keepalive, &[]),
        }
    }

    /// Sends the fields selected by `mask` (and the payload if `MASK_PAYLOAD` is set).
    pub fn update(
        &mut self,
        object: u64,
        mask: u8,
        fields: &Fields,
        payload: &[u8],
    ) -> Result<u64, ClientError> {
        self.send_object(
            Kind::ObjectUpdate,
            ObjectBody::new(object, mask, *fields, payload),
        )
    }

    /// Replaces the object's whole state.
    pub fn overwrite(
        &mut self,
        object: u64,
        fields: &Fields,
        payload: &[u8],
    ) -> Result<u64, ClientError> {
        self.send_object(
            Kind::ObjectOverwrite,
            ObjectBody::new(object, MASK_ALL, *fields, payload),
        )
    }

    /// Sends an update (`overwrite` false) or overwrite of an object on `layer` (0..8): the
    /// layer is part of its state, and decides which devices' layer shapes it is tested against.
    pub fn write_on_layer(
        &mut self,
        layer: u8,
        overwrite: bool,
        object: u64,
        mask: u8,
        fields: &Fields,
        payload: &[u8],
    ) -> Result<u64, ClientError> {
        let (kind, mask) = match overwrite {
            true => (Kind::ObjectOverwrite, MASK_ALL),
            false => (Kind::ObjectUpdate, mask),
        };
        let mut body = ObjectBody::new(object, mask, *fields, payload);
        body.layer = layer & crate::wire::LAYER_BITS;
        self.send_object(kind, body)
    }

    pub fn delete(&mut self, object: u64) -> Result<u64, ClientError> {
        self.send_object(
            Kind::ObjectDelete,
            ObjectBody::new(object, 0, Fields::default(), &[]),
        )
    }

    fn send_object(&mut self, kind: Kind, body: ObjectBody<'_>) -> Result<u64, ClientError> {
        if body.payload.len() > MAX_PAYLOAD {
            return Err(ClientError::Encode(WireError::Oversized));
        }
        let len = body
            .emit(&mut self.tx[HEADER_LEN..])
            .map_err(ClientError::Encode)?;
        self.seal_and_send(kind, len)
    }

    /// Sends a datagram of `kind` with an arbitrary body (for tools and tests).
    pub fn send(&mut self, kind: Kind, body: &[u8]) -> Result<u64, ClientError> {
        self.write_body(body)?;
        self.seal_and_send(kind, body.len())
    }

    /// Copies `body` into `tx` after the header space.
    fn write_body(&mut self, body: &[u8]) -> Result<(), ClientError> {
        let end = HEADER_LEN + body.len();
        if end > self.tx.len() {
            return Err(ClientError::Encode(WireError::Oversized));
        }
        self.tx[HEADER_LEN..end].copy_from_slice(body);
        Ok(())
    }

    /// Seals the datagram of `kind` whose body is already in `tx`; returns (seq, length).
    fn seal_tx(&mut self, kind: Kind, body_len: usize) -> Result<(u64, usize), ClientError> {
        let seq = self.seq.min(MAX_SEQ);
        let fields = HeaderFields {
            kind,
            device: self.session.device,
            scene: self.session.scene,
            seq,
            timestamp_ns: unix_ns(),
        };
        let len = seal(
            &mut self.tx,
            &fields,
            body_len,
            &self.session.key,
            Direction::ToServer,
        )
        .map_err(ClientError::Encode)?;
        self.seq += 1;
        Ok((seq, len))
    }

    /// Seals and sends the datagram whose body is already in `tx`; returns its sequence number.
    fn seal_and_send(&mut self, kind: Kind, body_len: usize) -> Result<u64, ClientError> {
        let (seq, len) = self.seal_tx(kind, body_len)?;
        self.socket.send_to(&self.tx[..len], self.session.pair)?;
        Ok(seq)
    }

    /// Sends raw bytes to the pair, unsealed (for tests of hostile input).
    pub fn send_raw(&self, bytes: &[u8]) -> io::Result<()> {
        self.socket.send_to(bytes, self.session.pair).map(|_| ())
    }

    /// A sealed datagram as it would be sent, without sending it (for tests). It uses up a
    /// sequence number like a sent one.
    pub fn seal_raw(&mut self, kind: Kind, body: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.write_body(body)?;
        let (_, len) = self.seal_tx(kind, body.len())?;
        Ok(self.tx[..len].to_vec())
    }

    /// Waits up to `timeout` for the next valid event.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Event>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.try_recv()? {
                return Ok(Some(e));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            Poller::new(std::slice::from_ref(self)).wait(left);
        }
    }

    /// The next valid event if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Result<Option<Event>, ClientError> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            let len = match self.socket.recv_from(&mut self.rx) {
                Ok((len, _)) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                // ICMP errors from an earlier send: not about this receive.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e.into()),
            };
            if !self.decode(len) {
                self.dropped += 1;
                continue;
            }
            match self.pending.pop_front() {
                // A redirect older than the assignment the device follows is a replay: the
                // inbound window restarts with each pair, the epoch does not.
                Some(Event::Redirect { epoch, .. }) if epoch <= self.epoch => self.dropped += 1,
                Some(Event::Redirect { to, epoch }) => {
                    self.redirect(to, epoch)?;
                    return Ok(Some(Event::Redirect { to, epoch }));
                }
                // The pair no longer counts the device as joined (it was restarted or fenced
                // off, or took the session over without its membership): join again, once,
                // until a snapshot answers (roaming re-sends an unanswered join).
                Some(
                    e @ Event::Reject {
                        reason: Some(RejectReason::NotJoined),
                        ..
                    },
                ) => {
                    if self.join_pending.is_none() {
                        self.join(self.interest_radius)?;
                    }
                    return Ok(Some(e));
                }
                Some(e) => return Ok(Some(e)),
                None => {}
            }
        }
    }

    /// Verifies the datagram in `rx[..len]` and queues its events; false if it is not valid.
    fn decode(&mut self, len: usize) -> bool {
        let Ok(dg) = Datagram::parse(&self.rx[..len]) else {
            return false;
        };
        if dg.device() != self.session.device || dg.scene() != self.session.scene {
            return false;
        }
        if dg.verify(&self.session.key, Direction::ToDevice).is_err() {
            return false;
        }
        // A redirect is judged by its epoch (`try_recv`), not by the inbound window: the pair
        // a device is handed to may reach it first, numbering from its own clock, and the old
        // pair's redirect would then look like a replay.
        if dg.kind() != Kind::Redirect && !self.inbound.accept(dg.seq()) {
            return false;
        }
        let before = self.pending.len();
        if Event::decode_into(&dg, &mut self.pending).is_err() {
            return false;
        }
        self.last_heard = Some(Instant::now());
        let mut answers = self.pending.iter().skip(before);
        if answers.any(|e| matches!(e, Event::Snapshot { .. } | Event::KeepaliveAck { .. })) {
            self.last_answered = self.last_heard;
        }
        if self
            .pending
            .iter()
            .skip(before)
            .any(|e| matches!(e, Event::Snapshot { .. }))
        {
            self.join_pending = None;
        }
        true
    }
}
