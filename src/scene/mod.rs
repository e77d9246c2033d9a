//! Scene state: device sessions, objects, ownership, ordering, replay and eviction (pure).
//!
//! [`Engine`] is a state machine in the quinn style: the I/O driver feeds it datagrams with
//! `handle(now, from, bytes, out)` and time with `tick(now, out)`; everything it wants done
//! (relay an update, answer a device, announce a departure) comes out as events appended to a
//! caller-owned [`Batch`]. It never touches a socket or a clock, never panics on input, and
//! allocates only when a scene grows (new object, larger payload, new session).
//!
//! Decisions worth knowing (also in docs/PROTOCOL.md):
//! - the first device to write an object owns it; only the owner may update or delete it;
//! - order is last-writer-wins on (timestamp, seq), compared between writes of one owner;
//! - a deleted object stays a tombstone for `tombstone_ttl`, so a late update can't revive it;
//! - when a device leaves or is evicted its objects stay, ownerless: the next writer claims them.

mod arrival;
mod device;
mod drops;
mod events;
mod interest;
mod mirror;
mod object;
pub(crate) mod proxy;
mod replay;
mod snapshot;
mod zoning;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use zerocopy::IntoBytes;

pub use arrival::{Arrival, GAP_WAIT, MAX_WAITING};
pub use device::{DeviceSession, Forward};
pub use drops::{DropCounts, DropReason};
pub use events::{Batch, Event, EventKind};
pub use interest::{parse_deliver, MAX_CELLS};
pub use mirror::SessionRecord;
pub use object::{Object, Order};
pub use replay::{ReplayWindow, WINDOW as REPLAY_WINDOW};
pub use zoning::{Zoning, MARGIN as ZONE_MARGIN};

use crate::wire::interest::{parse_anchor, Area, AREA_HEAD_LEN};
use crate::wire::{
    parse_exact, stamp_origin, Datagram, Direction, JoinBody, KeepaliveAckBody, Kind, ObjectBody,
    PeerLeftBody, RedirectBody, RejectBody, RejectReason, SessionKey, LEAVE_TIMED_OUT,
    LEAVE_VOLUNTARY,
};

/// Tunables of the scene rules.
#[derive(Clone, Debug)]
pub struct Config {
    /// A joined device silent this long is evicted and its departure announced.
    pub evict_after: Duration,
    /// A joined device silent this long gets no fanout until it is heard again: a frozen or
    /// vanished client stops costing the pair (and the path to it) long before eviction.
    /// Devices keepalive at least every second, so a live one is never paused.
    pub quiet_after: Duration,
    /// How long a deleted object's tombstone refuses late updates.
    pub tombstone_ttl: Duration,
    /// Objects (tombstones included) one scene may hold; at most 65535 (snapshot chunking).
    pub max_objects_per_scene: usize,
    /// Keys of the engine's hash tables. `None` (production): random per engine, so no one
    /// can aim collisions at it. A seed (the simulation): fixed, so iteration order, and with
    /// it the order of the events the engine emits, replays exactly.
    pub hash_seed: Option<u64>,
    /// Cell size of the interest index along x, y and z (0: the axis is not split); about the
    /// typical interest radius works best (see `interest`).
    pub interest_cell: [f32; 3],
    /// How often a device with a bounded interest area is sent its complete view (a snapshot),
    /// so a lost `ObjectLeft` or a lost entry cannot leave its view wrong for long; `None`:
    /// never. A view is a few datagrams: cheap next to the updates it repairs.
    pub view_refresh: Option<Duration>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            evict_after: Duration::from_secs(10),
            quiet_after: Duration::from_secs(2),
            tombstone_ttl: Duration::from_secs(10),
            max_objects_per_scene: 16_384,
            hash_seed: None,
            interest_cell: [32.0; 3],
            view_refresh: Some(Duration::from_secs(5)),
        }
    }
}

/// The hasher of the engine's tables (ahash: fast, keyed).
type Hasher = ahash::RandomState;
type Map<K, V> = HashMap<K, V, Hasher>;

pub(crate) struct Scene {
    objects: Map<u64, Object>,
    joined: usize,
    space: interest::Space,
}

impl Scene {
    fn new(hasher: &Hasher, cell: [f32; 3]) -> Scene {
        Scene {
            objects: HashMap::with_hasher(hasher.clone()),
            joined: 0,
            space: interest::Space::new(cell, hasher),
        }
    }
}

/// `scene`'s state in `scenes`, created empty (interest cells of `cell`) if it has none. For
/// callers that hold other fields of the engine at the same time; else [`Engine::scene_mut`].
fn scene_entry<'a>(
    scenes: &'a mut Map<u32, Scene>,
    hasher: &Hasher,
    scene: u32,
    cell: [f32; 3],
) -> &'a mut Scene {
    scenes
        .entry(scene)
        .or_insert_with(|| Scene::new(hasher, cell))
}

/// Which way a datagram reached the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// From the device, on this pair's socket (or held until its scene arrived).
    Direct,
    /// Forwarded by the pair that served the scene before.
    Forwarded,
    /// A direct one that waited for forwarded ones (see `arrival`).
    Released,
}

/// What became of a datagram the engine did not drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Taken {
    Applied,
    /// Kept until the forwarded datagrams before it arrive (see `arrival`).
    Waiting,
    /// Would wait, but too many of this device's wait already.
    Full(u32),
}

/// All scenes and sessions one pair serves.
pub struct Engine {
    config: Config,
    hasher: Hasher,
    devices: Map<u32, DeviceSession>,
    scenes: Map<u32, Scene>,
    /// Deletions in time order, to expire tombstones without scanning every object.
    tombstones: VecDeque<(Instant, u32, u64)>,
    drops: DropCounts,
    accepted: u64,
    /// Datagrams that waited for a gap (see `arrival`): fed in order, fed after giving up.
    reordered: (u64, u64),
    snapshots: u32,
    /// Reused buffers of interest evaluation (no allocation per write in steady state).
    scratch: interest::Scratch,
    /// Origins no longer followed, and when their unconfirmed proxies go (see `proxy`).
    proxy_sweeps: Vec<(Instant, u32)>,
    /// What this pair serves of each shared scene (see `zoning`).
    zoning: Map<u32, Zoning>,
    /// Devices whose anchor crossed into another pair's zone, not yet reported.
    crossings: Vec<(u32, Option<u32>)>,
    /// Devices handed over to this pair by another (device, that pair), while their
    /// stragglers may still come forwarded on its stream.
    moved_in: Vec<(u32, u32)>,
    /// Devices handed over to other pairs, and taken over from them (border crossings).
    moves: (u64, u64),
}

impl Engine {
    pub fn new(mut config: Config) -> Engine {
        config.max_objects_per_scene = config.max_objects_per_scene.min(u16::MAX as usize);
        let hasher = match config.hash_seed {
            Some(s) => Hasher::with_seeds(s, s.rotate_left(16), s.rotate_left(32), !s),
            None => Hasher::new(),
        };
        Engine {
            config,
            devices: HashMap::with_hasher(hasher.clone()),
            scenes: HashMap::with_hasher(hasher.clone()),
            zoning: HashMap::with_hasher(hasher.clone()),
            hasher,
            tombstones: VecDeque::new(),
            drops: DropCounts::default(),
            accepted: 0,
            reordered: (0, 0),
            snapshots: 0,
            scratch: interest::Scratch::default(),
            proxy_sweeps: Vec::new(),
            crossings: Vec::new(),
            moved_in: Vec::new(),
            moves: (0, 0),
        }
    }

    /// `scene`'s state, created empty if this engine has none.
    fn scene_mut(&mut self, scene: u32) -> &mut Scene {
        scene_entry(
            &mut self.scenes,
            &self.hasher,
            scene,
            self.config.interest_cell,
        )
    }

    /// Adds or replaces the session of `device` in `scene`. A replaced session with another key
    /// or scene leaves its scene first and starts a fresh replay window.
    /// `now` starts its liveness clock.
    pub fn admit(
        &mut self,
        now: Instant,
        device: u32,
        scene: u32,
        key: SessionKey,
        out: &mut Batch,
    ) {
        if let Some(old) = self.devices.get(&device) {
            // A session handed to another pair (a border crossing) that is admitted again
            // came back (that pair failed, or the device crossed back): afresh.
            let moved_away = old.forward.as_ref().is_some_and(|f| f.device_move);
            if old.key.raw() == key.raw() && old.scene == scene && !moved_away {
                return;
            }
            self.revoke(device, out);
        }
        out.push(EventKind::Admitted, scene, device, None, key.raw());
        self.devices
            .insert(device, DeviceSession::new(scene, key, now));
    }

    /// Removes the session of `device`; it leaves its scene if it had joined.
    pub fn revoke(&mut self, device: u32, out: &mut Batch) {
        self.leave(device, LEAVE_VOLUNTARY, None, out);
        if let Some(old) = self.devices.remove(&device) {
            out.push(EventKind::Revoked, old.scene, device, None, &[]);
        }
    }

    /// Feeds one received datagram. On a drop, counts it and returns the reason.
    pub fn handle(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        out: &mut Batch,
    ) -> Result<(), DropReason> {
        match self.handle_path(now, from, bytes, out, Path::Direct) {
            Ok(Taken::Full(id)) => {
                // Too many wait: the gap is given up, the waiting ones go first.
                self.feed_waiting(now, id, true, out);
                self.handle_path(now, from, bytes, out, Path::Released)
                    .map(|_| ())
            }
            r => r.map(|_| ()),
        }
    }

    /// Feeds a datagram the pair that served the scene before forwarded (a drain's
    /// straggler, from the replication stream): it may fill a gap arriving devices wait on.
    pub fn handle_forwarded(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        out: &mut Batch,
    ) -> Result<(), DropReason> {
        let result = self.handle_path(now, from, bytes, out, Path::Forwarded);
        if let Ok(dg) = Datagram::parse(bytes) {
            self.feed_waiting(now, dg.device(), false, out);
        }
        result.map(|_| ())
    }

    /// `handle_inner` with its outcome counted.
    fn handle_path(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        out: &mut Batch,
        path: Path,
    ) -> Result<Taken, DropReason> {
        let result = self.handle_inner(now, from, bytes, out, path);
        match result {
            Ok(Taken::Applied) => self.accepted += 1,
            Ok(_) => {}
            Err(reason) => self.drops.add(reason),
        }
        result
    }

    /// Feeds the waiting datagrams of arriving `device` that are due (all if `give_up`); the
    /// arrival ends once none waits.
    fn feed_waiting(&mut self, now: Instant, device: u32, give_up: bool, out: &mut Batch) {
        let Some(dev) = self.devices.get_mut(&device) else {
            return;
        };
        let top = dev.replay.top();
        let Some(arrival) = dev.arrival.as_mut().filter(|a| a.is_waiting()) else {
            return;
        };
        let due = arrival.due(top, give_up);
        if !arrival.is_waiting() {
            dev.arrival = None;
        }
        let n = due.len() as u64;
        if give_up {
            self.reordered.1 += n;
        } else {
            self.reordered.0 += n;
        }
        for (from, bytes) in due {
            let _ = self.handle_path(now, from, &bytes, out, Path::Released);
        }
    }

    /// Pauses and evicts silent devices and expires old tombstones.
    pub fn tick(&mut self, now: Instant, out: &mut Batch) {
        let quiet_after = self.config.quiet_after;
        self.proxy_tick(now, out);
        // Arriving devices whose gap is given up (rare: no allocation unless one is found).
        let mut expired = Vec::new();
        let mut refresh = Vec::new();
        for (id, d) in self.devices.iter_mut() {
            if d.arrival.as_ref().is_some_and(|a| a.expired(now)) {
                expired.push(*id);
            }
            // A forwarded device is the new pair's to pause or evict.
            let ours = d.forward.is_none();
            if let Some(every) = self.config.view_refresh {
                if ours && d.joined && !d.quiet && !d.area.is_everything() {
                    match d.refresh_at {
                        None => d.refresh_at = Some(now + every),
                        Some(at) if now >= at => {
                            d.refresh_at = Some(now + every);
                            if let Some(addr) = d.addr {
                                refresh.push((*id, d.scene, addr));
                            }
                        }
                        Some(_) => {}
                    }
                }
            }
            if ours
                && d.joined
                && !d.quiet
                && now.saturating_duration_since(d.last_seen) >= quiet_after
            {
                d.quiet = true;
                out.push(EventKind::Paused, d.scene, *id, None, &[]);
            }
        }
        let evict_after = self.config.evict_after;
        let silent: Vec<u32> = self
            .devices
            .iter()
            .filter(|(_, d)| {
                d.forward.is_none()
                    && d.joined
                    && now.saturating_duration_since(d.last_seen) >= evict_after
            })
            .map(|(id, _)| *id)
            .collect();
        for device in silent {
            self.leave(device, LEAVE_TIMED_OUT, None, out);
        }
        for device in expired {
            self.feed_waiting(now, device, true, out);
        }
        for (device, scene, addr) in refresh {
            self.push_snapshot(scene, device, addr, out);
        }
        while let Some(&(at, scene, object)) = self.tombstones.front() {
            if now.saturating_duration_since(at) < self.config.tombstone_ttl {
                break;
            }
            self.tombstones.pop_front();
            if let Some(s) = self.scenes.get_mut(&scene) {
                if s.objects.get(&object).and_then(|o| o.deleted_at) == Some(at) {
                    s.objects.remove(&object);
                }
            }
        }
    }

    /// Counts a drop decided before the engine saw the datagram (e.g. cut by the socket).
    pub fn count_drop(&mut self, reason: DropReason) {
        self.drops.add(reason);
    }

    /// Takes back a drop `handle` counted: the caller kept the datagram to feed it again.
    pub fn uncount_drop(&mut self, reason: DropReason) {
        self.drops.remove(reason);
    }

    pub fn drops(&self) -> &DropCounts {
        &self.drops
    }

    /// Direct datagrams that waited for a gap to fill (see `arrival`): (fed in order, fed
    /// after the gap was given up).
    pub fn reordered(&self) -> (u64, u64) {
        self.reordered
    }

    /// Datagrams accepted so far (every kind).
    /// Devices handed over to other pairs and taken over from them (see `zoning`).
    pub fn moves(&self) -> (u64, u64) {
        self.moves
    }

    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    pub fn sessions(&self) -> usize {
        self.devices.len()
    }

    pub fn joined(&self) -> usize {
        self.scenes.values().map(|s| s.joined).sum()
    }

    /// Objects held, tombstones included.
    pub fn objects(&self) -> usize {
        self.scenes.values().map(|s| s.objects.len()).sum()
    }

    /// The live object `object` of `scene`, if any.
    pub fn object(&self, scene: u32, object: u64) -> Option<&Object> {
        self.scenes
            .get(&scene)?
            .objects
            .get(&object)
            .filter(|o| o.is_live())
    }

    /// The devices with a session in `scene`.
    fn devices_of(&self, scene: u32) -> Vec<u32> {
        self.devices
            .iter()
            .filter(|(_, d)| d.scene == scene)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn device(&self, device: u32) -> Option<&DeviceSession> {
        self.devices.get(&device)
    }

    fn handle_inner(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        out: &mut Batch,
        path: Path,
    ) -> Result<Taken, DropReason> {
        let dg = Datagram::parse(bytes)?;
        if !dg.kind().allowed(Direction::ToServer) {
            return Err(DropReason::Malformed);
        }
        let id = dg.device();
        let dev = self.devices.get_mut(&id).ok_or(DropReason::UnknownDevice)?;
        dg.verify(&dev.key, Direction::ToServer)?;
        if path == Path::Direct && dev.forward.is_none() {
            if let Some(arrival) = dev.arrival.as_mut() {
                if !arrival.must_wait(dev.replay.top(), dg.seq()) {
                    // Everything the device sent the old pair came before this one.
                    dev.arrival = None;
                } else if arrival.wait(now, dg.seq(), from, bytes) {
                    return Ok(Taken::Waiting);
                } else {
                    return Ok(Taken::Full(id));
                }
            }
        }
        if !dev.replay.accept(dg.seq()) {
            return Err(DropReason::Replay);
        }
        dev.last_seen = now;
        if let Some(fwd) = dev.forward.as_mut() {
            // The scene moved to another pair: hand the datagram over and tell the device.
            let scene = dev.scene;
            out.push(EventKind::Forwarded, scene, id, Some(from), bytes);
            if fwd.redirect_due(now) {
                let body = RedirectBody::new(fwd.epoch, fwd.to);
                let kind = EventKind::Direct(Kind::Redirect);
                out.push(kind, scene, id, Some(from), body.as_bytes());
            }
            return Ok(Taken::Applied);
        }
        let resumed = dev.quiet;
        if resumed {
            dev.quiet = false;
            out.push(EventKind::Resumed, dev.scene, id, None, &[]);
        }
        if dev.addr != Some(from) {
            dev.addr = Some(from);
            if dev.joined {
                out.push(EventKind::Moved, dev.scene, id, Some(from), &[]);
            }
        }
        let (scene, joined) = (dev.scene, dev.joined);
        if resumed && joined && dg.kind() != Kind::Join {
            // It missed what fanout skipped while it was paused: send the current state (a Join
            // gets its snapshot below).
            self.push_snapshot(scene, id, from, out);
        }
        let reject = |out: &mut Batch, reason: RejectReason, object: u64| {
            let body = RejectBody::new(reason, dg.seq(), object);
            out.push(
                EventKind::Direct(Kind::Reject),
                scene,
                id,
                Some(from),
                body.as_bytes(),
            );
        };
        if dg.scene() != scene {
            reject(out, RejectReason::WrongScene, 0);
            return Err(DropReason::WrongScene);
        }
        let applied = match dg.kind() {
            Kind::Join => {
                let area = join_area(dg.body())?;
                let dev = self.devices.get_mut(&id).ok_or(DropReason::UnknownDevice)?;
                if dev.joined {
                    self.set_area(id, area, false, out);
                    self.check_crossing(id);
                    self.push_snapshot(scene, id, from, out);
                } else {
                    dev.joined = true;
                    self.scene_mut(scene).joined += 1;
                    // The area goes downstream before the join: fanout must know from the
                    // start whether the device takes every relay.
                    self.set_area(id, area, true, out);
                    self.check_crossing(id);
                    let seq = dg.seq().to_le_bytes();
                    out.push(EventKind::Joined, scene, id, Some(from), &seq);
                    self.push_listed(scene, id, from, false, out);
                }
                Ok(())
            }
            Kind::Leave => {
                self.leave(id, LEAVE_VOLUNTARY, Some(dg.seq()), out);
                Ok(())
            }
            // A keepalive is answered with an ack only when the device is a member: one whose
            // membership this pair lost (restarted, fenced off, or holding the session without
            // it) is told to join again, or it would be answered forever and hear nothing.
            Kind::Keepalive if !joined => {
                reject(out, RejectReason::NotJoined, 0);
                Err(DropReason::NotJoined)
            }
            Kind::Keepalive => {
                if !dg.body().is_empty() {
                    // Revision 2: the keepalive carries the device's anchor.
                    let anchor = parse_anchor(dg.body())?;
                    let mut area = self.devices.get(&id).map_or(Area::EVERYTHING, |d| d.area);
                    area.anchor = anchor;
                    self.set_area(id, area, false, out);
                    self.check_crossing(id);
                    if !self.scratch.entered.is_empty() {
                        self.push_listed(scene, id, from, true, out);
                    }
                }
                let body = KeepaliveAckBody {
                    echo_seq: dg.header().seq,
                    echo_timestamp_ns: dg.header().timestamp_ns,
                };
                let kind = EventKind::Direct(Kind::KeepaliveAck);
                out.push(kind, scene, id, Some(from), body.as_bytes());
                Ok(())
            }
            Kind::Interest if !joined => {
                reject(out, RejectReason::NotJoined, 0);
                Err(DropReason::NotJoined)
            }
            Kind::Interest => {
                let area = Area::parse(dg.body())?;
                self.set_area(id, area, false, out);
                self.check_crossing(id);
                // Always answered, if only with an empty incremental snapshot: the device
                // learns that its area holds.
                self.push_listed(scene, id, from, true, out);
                Ok(())
            }
            kind if !joined => {
                let object = ObjectBody::parse(dg.body()).map(|b| b.object).unwrap_or(0);
                debug_assert!(kind.is_object());
                reject(out, RejectReason::NotJoined, object);
                Err(DropReason::NotJoined)
            }
            kind => {
                let body = match ObjectBody::parse(dg.body()) {
                    Ok(body) if kind != Kind::ObjectDelete || body.mask == 0 => body,
                    parsed => {
                        reject(out, RejectReason::Malformed, 0);
                        return Err(parsed.err().map_or(DropReason::Malformed, DropReason::from));
                    }
                };
                let order = (dg.timestamp_ns(), dg.seq());
                let result = self.write_object(now, scene, id, kind, order, &body);
                match result {
                    Ok(was) => {
                        out.push(EventKind::Relay(kind), scene, id, Some(from), dg.body());
                        if let Some(data) = out.last_data_mut() {
                            stamp_origin(data, id, dg.seq(), dg.timestamp_ns());
                        }
                        self.view_write(scene, id, body.object, kind, was, out);
                        Ok(())
                    }
                    Err(reason) => {
                        let code = match reason {
                            DropReason::NotOwner => Some(RejectReason::NotOwner),
                            DropReason::SceneFull => Some(RejectReason::SceneFull),
                            DropReason::UnknownObject => Some(RejectReason::UnknownObject),
                            _ => None,
                        };
                        if let Some(code) = code {
                            reject(out, code, body.object);
                        }
                        Err(reason)
                    }
                }
            }
        };
        applied.map(|()| Taken::Applied)
    }

    /// Applies the ownership and ordering rules to one object write; returns where the object
    /// was before it, if it was live (for the interest index).
    fn write_object(
        &mut self,
        now: Instant,
        scene: u32,
        device: u32,
        kind: Kind,
        order: Order,
        body: &ObjectBody<'_>,
    ) -> Result<interest::Spot, DropReason> {
        let max = self.config.max_objects_per_scene;
        let scene_state = scene_entry(
            &mut self.scenes,
            &self.hasher,
            scene,
            self.config.interest_cell,
        );
        let full = scene_state.objects.len() >= max;
        let mut was = None;
        let object = match scene_state.objects.get_mut(&body.object) {
            Some(obj) => {
                if !obj.is_live() && kind == Kind::ObjectDelete {
                    return Err(DropReason::UnknownObject);
                }
                if obj.proxy.is_some() && obj.is_live() {
                    // Another pair's object: written where its owner is served.
                    return Err(DropReason::NotOwner);
                }
                obj.proxy = None;
                obj.admit(device, order)?;
                was = obj.is_live().then_some((obj.layer, obj.fields.translation));
                obj
            }
            None if kind == Kind::ObjectDelete => return Err(DropReason::UnknownObject),
            None if full => return Err(DropReason::SceneFull),
            None => scene_state
                .objects
                .entry(body.object)
                .or_insert_with(|| Object::new(device)),
        };
        if kind == Kind::ObjectDelete {
            object.delete(device, order, now);
            self.tombstones.push_back((now, scene, body.object));
        } else {
            object.apply(device, order, body, kind == Kind::ObjectOverwrite);
        }
        Ok(was)
    }

    /// Takes `device` out of its scene (if joined), releases its objects and announces it;
    /// `seq` is the leave datagram's when the device asked.
    fn leave(&mut self, device: u32, reason: u8, seq: Option<u64>, out: &mut Batch) {
        if let Some(scene) = self.release(device) {
            out.push_with(EventKind::Left, scene, device, None, |d| {
                d.push(reason);
                if let Some(seq) = seq {
                    d.extend_from_slice(&seq.to_le_bytes());
                }
            });
            // Fanout tells everything-devices; a device with an area is told when it saw one
            // of the leaver's objects (release collected them), not the whole scene: a crowd
            // leaving must not cost a datagram per member per departure.
            let body = PeerLeftBody {
                device: device.into(),
                reason,
                reserved: [0; 3],
            };
            let told = std::mem::take(&mut self.scratch.inside);
            for &d in &told {
                let Some(to) = self
                    .devices
                    .get(&d)
                    .filter(|s| s.joined)
                    .and_then(|s| s.addr)
                else {
                    continue;
                };
                out.push(
                    EventKind::Direct(Kind::PeerLeft),
                    scene,
                    d,
                    Some(to),
                    body.as_bytes(),
                );
            }
            self.scratch.inside = told;
        }
    }

    /// The state half of `leave`: returns the scene left, if the device had joined.
    fn release(&mut self, device: u32) -> Option<u32> {
        if !self.devices.get(&device)?.joined {
            return None;
        }
        self.forget_view(device);
        let dev = self.devices.get_mut(&device)?;
        dev.joined = false;
        dev.quiet = false;
        let scene = dev.scene;
        // Who saw its objects (with a bounded area): `leave` tells them it left.
        let told = &mut self.scratch.inside;
        told.clear();
        if let Some(s) = self.scenes.get_mut(&scene) {
            s.joined = s.joined.saturating_sub(1);
            for obj in s.objects.values_mut() {
                if obj.owner == Some(device) {
                    obj.owner = None;
                    told.extend(obj.viewers.iter().filter(|d| **d != device));
                }
            }
        }
        told.sort_unstable();
        told.dedup();
        Some(scene)
    }
}

/// The area a join asks for: everything for a revision-1 body (8 bytes), else its interest body.
fn join_area(body: &[u8]) -> Result<Area, DropReason> {
    if body.len() < AREA_HEAD_LEN {
        parse_exact::<JoinBody>(body)?;
        return Ok(Area::EVERYTHING);
    }
    Ok(Area::parse(body)?)
}

#[cfg(test)]
mod interest_tests;
#[cfg(test)]
mod tests;
