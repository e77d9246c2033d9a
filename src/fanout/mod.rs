//! Fanout: turns bus events into datagrams sealed under each recipient's key and sent with
//! sendmmsg; the updates queued for one recipient in a burst share a datagram (a bundle).
//!
//! An accepted update goes to every other joined device of its scene whose interest area is
//! everything, and to the devices the engine lists in `Deliver` events (see
//! `scene::interest`), never back to its sender. A recipient whose address is dead costs only
//! its own datagram (counted as `refused`); a full socket send buffer waits at most a few
//! milliseconds, then drops and counts. Allocation only happens when a session or a scene is
//! added.

mod direct;
mod table;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use zerocopy::IntoBytes;

pub use direct::DirectFanout;
pub use table::{Recipient, Table};

use crate::ipc_bus::{BusError, Subscriber};
use crate::net::mmsg::{FlushReport, SendBatch};
use crate::net::unix_ns;
use crate::scene::{parse_deliver, SessionRecord};
use crate::scene::{Batch, EventKind};
use crate::stats::PairStats;
use crate::wire::bundle::{BundleWriter, ENTRY_HEAD};
use crate::wire::interest::Area;
use crate::wire::{
    seal, Direction, HeaderFields, Kind, PeerLeftBody, SessionKey, HEADER_LEN, MAX_BODY,
};

/// Datagrams per sendmmsg call.
pub const BURST: usize = 64;

/// The fanout half of a pair.
pub struct Fanout<S: Subscriber> {
    pub socket: std::net::UdpSocket,
    pub subscriber: S,
    pub stats: Arc<PairStats>,
}

impl<S: Subscriber> Fanout<S> {
    /// Runs until the bus closes (ingest stopped).
    pub fn run(mut self) -> Result<(), BusError> {
        let mut sender = Sender::new(self.socket);
        loop {
            match self.subscriber.recv(Duration::from_millis(200)) {
                Ok(Some(batch)) => {
                    sender.process(&batch);
                    self.subscriber.recycle(batch);
                    sender.publish(&self.stats);
                }
                Ok(None) => {}
                Err(BusError::Closed) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

/// First outgoing sequence number of a session: the wall clock in microseconds when fanout
/// learns it, so neither a restarted pair nor a standby taking a device over (both number
/// afresh) ever reuses a (key, nonce) pair or falls behind the device's replay window: a pair
/// sends fewer than one datagram per microsecond to one device.
fn first_seq() -> u64 {
    unix_ns() / 1000
}

/// The state of the send side, separate from the loop so it can be driven by tests.
pub struct Sender {
    fd: RawFd,
    /// Keeps the socket behind `fd` open.
    _socket: std::net::UdpSocket,
    table: Table,
    out: SendBatch,
    totals: FlushReport,
    no_session: u64,
    /// Scratch: the scenes of a relay run.
    scenes: Vec<u32>,
    /// Object updates put into datagrams (one per recipient; a bundle carries several).
    updates: u64,
    /// Scratch: (recipient, event index) of the `Deliver` events of a relay run.
    pending: Vec<(u32, u32)>,
}

impl Sender {
    pub fn new(socket: std::net::UdpSocket) -> Sender {
        Sender {
            fd: socket.as_raw_fd(),
            _socket: socket,
            table: Table::default(),
            out: SendBatch::new(BURST),
            totals: FlushReport::default(),
            no_session: 0,
            scenes: Vec::new(),
            updates: 0,
            pending: Vec::new(),
        }
    }

    /// Handles every event of `batch` in order and sends the resulting datagrams.
    pub fn process(&mut self, batch: &Batch) {
        let now_ns = unix_ns();
        let mut i = 0;
        while let Some((e, data)) = batch.get(i) {
            if is_relay(e.kind) {
                // A run of relays is fanned out together so each recipient gets them bundled.
                let mut end = i + 1;
                while batch.get(end).is_some_and(|(e, _)| is_relay(e.kind)) {
                    end += 1;
                }
                self.relay_run(batch, i, end, now_ns);
                i = end;
                continue;
            }
            i += 1;
            match e.kind {
                EventKind::Admitted => {
                    if let Ok(raw) = <[u8; 32]>::try_from(data) {
                        let key = SessionKey::new(raw);
                        self.table.admit(e.device, e.scene, key, first_seq());
                    }
                }
                EventKind::Session => {
                    if let Some(r) = SessionRecord::decode(data) {
                        let key = SessionKey::new(r.key);
                        self.table.admit(e.device, e.scene, key, first_seq());
                        self.table.set_everything(e.device, r.area.is_everything());
                        if let (true, Some(addr)) = (r.joined, e.addr) {
                            self.table.join(e.device, addr);
                        }
                        self.table.set_paused(e.device, r.quiet);
                    }
                }
                EventKind::Checkpoint => self.table = Table::default(),
                EventKind::Object
                | EventKind::Synced
                | EventKind::Forwarded
                | EventKind::Handover => {}
                EventKind::Revoked => self.table.revoke(e.device),
                EventKind::Joined => {
                    if let Some(addr) = e.addr {
                        if !self.table.join(e.device, addr) {
                            self.no_session += 1;
                        }
                    }
                }
                EventKind::Moved => {
                    if let Some(addr) = e.addr {
                        self.table.moved(e.device, addr);
                    }
                }
                EventKind::Paused => self.table.set_paused(e.device, true),
                EventKind::Resumed => self.table.set_paused(e.device, false),
                EventKind::Left => {
                    // Everything-devices hear of every departure; devices with an area are
                    // told by the engine (a `Direct(PeerLeft)`) when they saw its objects.
                    self.table.leave(e.device);
                    let body = PeerLeftBody {
                        device: e.device.into(),
                        reason: data.first().copied().unwrap_or(0),
                        reserved: [0; 3],
                    };
                    self.send_to_scene(Kind::PeerLeft, e.scene, None, body.as_bytes(), now_ns);
                }
                EventKind::Interest => {
                    if let Ok(area) = Area::parse(data) {
                        self.table.set_everything(e.device, area.is_everything());
                    }
                }
                EventKind::Relay(_) | EventKind::Proxy(_) | EventKind::Deliver(_) => {}
                EventKind::Direct(kind) => {
                    self.send_to_device(kind, e.scene, e.device, e.addr, data, now_ns);
                }
            }
        }
        self.flush();
    }

    /// Adds this sender's totals to `stats`.
    pub fn publish(&self, stats: &PairStats) {
        stats.fanout_datagrams.store(self.totals.sent, Relaxed);
        stats.fanout_bytes.store(self.totals.bytes, Relaxed);
        stats
            .fanout_buffer_full
            .store(self.totals.buffer_full, Relaxed);
        stats.fanout_refused.store(self.totals.refused, Relaxed);
        stats.fanout_no_session.store(self.no_session, Relaxed);
        stats.fanout_updates.store(self.updates, Relaxed);
    }

    /// Fans out the relay events `batch[from..to]`: to every everything-member of each scene
    /// concerned, the updates of the others; to each device a `Deliver` event lists, what it
    /// lists for it. Each recipient's share goes out in as few datagrams as fit (a plain object
    /// datagram when there is one, a bundle when there are several), in event order.
    fn relay_run(&mut self, batch: &Batch, from: usize, to: usize, now_ns: u64) {
        self.scenes.clear();
        self.pending.clear();
        for k in from..to {
            let Some((e, data)) = batch.get(k) else {
                continue;
            };
            match e.kind {
                EventKind::Relay(_) | EventKind::Proxy(_) if !self.scenes.contains(&e.scene) => {
                    self.scenes.push(e.scene)
                }
                EventKind::Deliver(_) => {
                    if let Some((devices, _)) = parse_deliver(data) {
                        self.pending.extend(devices.map(|d| (d, k as u32)));
                    }
                }
                _ => {}
            }
        }
        for si in 0..self.scenes.len() {
            let scene = self.scenes[si];
            let Some(members) = self.table.everyone.get(&scene) else {
                continue;
            };
            for &device in members {
                let mut entries = (from..to)
                    .filter_map(|k| batch.get(k))
                    .filter_map(|(e, data)| match e.kind {
                        EventKind::Relay(kind) | EventKind::Proxy(kind)
                            if e.scene == scene && e.device != device =>
                        {
                            Some((kind, data))
                        }
                        _ => None,
                    })
                    .peekable();
                send_bundled(
                    &mut self.out,
                    &mut self.totals,
                    &mut self.table.devices,
                    self.fd,
                    device,
                    scene,
                    &mut entries,
                    now_ns,
                    &mut self.updates,
                );
            }
        }
        // Listed recipients, each device's entries together and in event order.
        self.pending.sort_unstable();
        let mut at = 0;
        while at < self.pending.len() {
            let device = self.pending[at].0;
            let mut end = at;
            while self.pending.get(end).is_some_and(|p| p.0 == device) {
                end += 1;
            }
            let scene = batch
                .get(self.pending[at].1 as usize)
                .map_or(0, |(e, _)| e.scene);
            let mut entries = self.pending[at..end]
                .iter()
                .filter_map(|&(_, k)| delivery(batch, k as usize))
                .peekable();
            send_bundled(
                &mut self.out,
                &mut self.totals,
                &mut self.table.devices,
                self.fd,
                device,
                scene,
                &mut entries,
                now_ns,
                &mut self.updates,
            );
            at = end;
        }
    }

    /// One datagram to every joined everything-member of `scene` except `skip`.
    fn send_to_scene(
        &mut self,
        kind: Kind,
        scene: u32,
        skip: Option<u32>,
        body: &[u8],
        now_ns: u64,
    ) {
        let Some(members) = self.table.everyone.get(&scene) else {
            return;
        };
        for &device in members {
            if Some(device) == skip {
                continue;
            }
            let Some(r) = self.table.devices.get_mut(&device) else {
                continue;
            };
            if self.out.is_full() {
                self.totals = add(self.totals, self.out.flush(self.fd));
            }
            queue(&mut self.out, r, device, kind, scene, None, body, now_ns);
        }
    }

    /// One datagram to `device`, at `addr` if given (it may not have joined yet).
    fn send_to_device(
        &mut self,
        kind: Kind,
        scene: u32,
        device: u32,
        addr: Option<std::net::SocketAddr>,
        body: &[u8],
        now_ns: u64,
    ) {
        let Some(r) = self.table.devices.get_mut(&device) else {
            self.no_session += 1;
            return;
        };
        if self.out.is_full() {
            self.totals = add(self.totals, self.out.flush(self.fd));
        }
        queue(&mut self.out, r, device, kind, scene, addr, body, now_ns);
    }

    fn flush(&mut self) {
        if !self.out.is_empty() {
            self.totals = add(self.totals, self.out.flush(self.fd));
        }
    }
}

fn is_relay(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Relay(_) | EventKind::Proxy(_) | EventKind::Deliver(_)
    )
}

/// What `Deliver` event `k` of `batch` sends: its kind and body (the preceding relay's when it
/// carries none).
fn delivery(batch: &Batch, k: usize) -> Option<(Kind, &[u8])> {
    let (e, data) = batch.get(k)?;
    let EventKind::Deliver(kind) = e.kind else {
        return None;
    };
    let (_, body) = parse_deliver(data)?;
    if !body.is_empty() {
        return Some((kind, body));
    }
    match batch.get(k.checked_sub(1)?)? {
        (prev, body)
            if prev.kind == EventKind::Relay(kind) || prev.kind == EventKind::Proxy(kind) =>
        {
            Some((kind, body))
        }
        _ => None,
    }
}

/// Sends `entries` to `device` (if it is joined, not paused and has an address) in as few
/// datagrams as they fit: a plain datagram for one, bundles for several.
#[allow(clippy::too_many_arguments)]
fn send_bundled<'a>(
    out: &mut SendBatch,
    totals: &mut FlushReport,
    devices: &mut std::collections::HashMap<u32, Recipient>,
    fd: RawFd,
    device: u32,
    scene: u32,
    entries: &mut std::iter::Peekable<impl Iterator<Item = (Kind, &'a [u8])>>,
    now_ns: u64,
    updates: &mut u64,
) {
    let Some(r) = devices.get_mut(&device).filter(|r| r.joined && !r.paused) else {
        return;
    };
    let Some(to) = r.addr else {
        return;
    };
    while entries.peek().is_some() {
        if out.is_full() {
            *totals = add(*totals, out.flush(fd));
        }
        let buf = out.next_buf();
        let mut w = BundleWriter::new(&mut buf[HEADER_LEN..HEADER_LEN + MAX_BODY]);
        let mut last = Kind::ObjectUpdate;
        while let Some(&(kind, data)) = entries.peek() {
            if !w.push(kind, data) {
                if w.is_empty() {
                    // Cannot fit even alone (never for a valid body): skip it.
                    entries.next();
                }
                break;
            }
            last = kind;
            entries.next();
        }
        let (count, len) = (w.count(), w.len());
        if count == 0 {
            continue;
        }
        let (kind, body_len) = if count == 1 {
            // One update: send it as itself, not as a bundle of one.
            let start = HEADER_LEN + ENTRY_HEAD;
            buf.copy_within(start..HEADER_LEN + len, HEADER_LEN);
            (last, len - ENTRY_HEAD)
        } else {
            (Kind::Bundle, len)
        };
        if seal_queued(out, r, device, kind, scene, body_len, now_ns, to) {
            *updates += count as u64;
        }
    }
}

/// Writes one sealed datagram for `r` into the next send slot.
#[allow(clippy::too_many_arguments)]
fn queue(
    out: &mut SendBatch,
    r: &mut Recipient,
    device: u32,
    kind: Kind,
    scene: u32,
    addr: Option<std::net::SocketAddr>,
    body: &[u8],
    now_ns: u64,
) {
    let Some(to) = addr.or(r.addr) else {
        return;
    };
    if body.len() > MAX_BODY {
        return;
    }
    out.next_buf()[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(body);
    seal_queued(out, r, device, kind, scene, body.len(), now_ns, to);
}

/// Seals the body already written into the next send slot for recipient `r` (its key, its
/// next sequence number) and queues it for `to`. False if it could not be sealed.
#[allow(clippy::too_many_arguments)]
fn seal_queued(
    out: &mut SendBatch,
    r: &mut Recipient,
    device: u32,
    kind: Kind,
    scene: u32,
    body_len: usize,
    now_ns: u64,
    to: std::net::SocketAddr,
) -> bool {
    let fields = HeaderFields {
        kind,
        device,
        scene,
        seq: r.seq,
        timestamp_ns: now_ns,
    };
    match seal(
        out.next_buf(),
        &fields,
        body_len,
        &r.key,
        Direction::ToDevice,
    ) {
        Ok(n) => {
            r.seq += 1;
            out.commit(n, to);
            true
        }
        Err(_) => false,
    }
}

fn add(a: FlushReport, b: FlushReport) -> FlushReport {
    FlushReport {
        sent: a.sent + b.sent,
        bytes: a.bytes + b.bytes,
        buffer_full: a.buffer_full + b.buffer_full,
        refused: a.refused + b.refused,
    }
}
