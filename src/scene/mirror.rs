//! Replication of an engine's state into another engine (pure).
//!
//! A standby keeps one mirror [`Engine`] per primary it stands in for. The primary sends a
//! checkpoint when the standby connects ([`Engine::checkpoint`]: every session with its key,
//! address and replay window, every object with its owner and order, tombstones included),
//! then the events it publishes anyway; [`Engine::mirror`] applies both, so the mirror holds
//! what the primary accepted, in the primary's order. Nothing a mirror does produces events:
//! it serves no device until [`Engine::adopt`] moves a scene into the standby's serving engine
//! (a failover or a drain), which announces the sessions to fanout and redirects the devices.
//!
//! What a mirror cannot know: when each device was last heard (adopted devices count as heard
//! at adoption) and the sequence numbers of datagrams that produced no event (a keepalive
//! refused later, a join to an already-joined scene): the replay window holds every sequence
//! number that changed state, so a replayed datagram can at most repeat a no-op.
//!
//! Data layouts (little-endian), used on the bus by `Session` and `Object` events:
//! - session: `key [32] | flags u8 (1 joined, 2 quiet, 4 has replay top) | top u64 |
//!   seen u128 | area` (a wire interest body; a 61-byte record from before interest areas ends
//!   in an f32 and means everything), the address in the event's `addr`;
//! - interest: the `Interest` event's data is the device's new area (a wire interest body);
//! - object: `flags u8 (1 has owner, 2 deleted) | owner u32 | object body` (the body's origin
//!   fields are the last writer and its (seq, timestamp)).

use std::net::SocketAddr;
use std::time::Instant;

use zerocopy::IntoBytes;

use super::{DeviceSession, Engine, Forward, Object, ReplayWindow, Scene};
use crate::scene::{Batch, Event, EventKind};
use crate::wire::interest::Area;
use crate::wire::{
    parse_exact, KeepaliveAckBody, Kind, ObjectBody, RedirectBody, RejectBody, SessionKey,
    MAX_DATAGRAM,
};

/// One device session as replicated (see the module doc for its bytes).
#[derive(Clone, Debug, PartialEq)]
pub struct SessionRecord {
    pub key: [u8; 32],
    pub joined: bool,
    pub quiet: bool,
    pub top: Option<u64>,
    pub seen: u128,
    pub area: Area,
}

impl SessionRecord {
    /// Bytes before the area.
    const FIXED: usize = 32 + 1 + 8 + 16;
    /// A record written before interest areas: the fixed part and an unused f32.
    const LEGACY_LEN: usize = Self::FIXED + 4;

    pub(super) fn of(d: &DeviceSession) -> SessionRecord {
        SessionRecord {
            key: *d.key.raw(),
            joined: d.joined,
            quiet: d.quiet,
            top: d.replay.top(),
            seen: d.replay.seen(),
            area: d.area,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.key);
        let flags =
            u8::from(self.joined) | u8::from(self.quiet) << 1 | u8::from(self.top.is_some()) << 2;
        out.push(flags);
        out.extend_from_slice(&self.top.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&self.seen.to_le_bytes());
        let mut area = [0u8; crate::wire::MAX_BODY];
        let n = self.area.emit(&mut area).unwrap_or(0);
        out.extend_from_slice(&area[..n]);
    }

    pub fn decode(data: &[u8]) -> Option<SessionRecord> {
        if data.len() < Self::LEGACY_LEN {
            return None;
        }
        let area = match data.len() {
            Self::LEGACY_LEN => Area::EVERYTHING,
            _ => Area::parse(&data[Self::FIXED..]).ok()?,
        };
        let flags = data[32];
        let top = u64::from_le_bytes(data[33..41].try_into().ok()?);
        Some(SessionRecord {
            key: data[..32].try_into().ok()?,
            joined: flags & 1 != 0,
            quiet: flags & 2 != 0,
            top: (flags & 4 != 0).then_some(top),
            seen: u128::from_le_bytes(data[41..57].try_into().ok()?),
            area,
        })
    }
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

impl Engine {
    /// Appends events that rebuild this engine's whole state in an empty mirror:
    /// `Checkpoint`, a `Session` per device, an `Object` per object, `Synced`; scenes handed
    /// over in a drain (their devices forwarded) are left out.
    pub fn checkpoint(&self, out: &mut Batch) {
        out.push(EventKind::Checkpoint, 0, 0, None, &[]);
        // Scenes handed over are the new pair's state, not this one's.
        let handed: std::collections::HashSet<u32> = self
            .devices
            .values()
            .filter(|d| d.forward.is_some())
            .map(|d| d.scene)
            .collect();
        for (id, d) in self.devices.iter().filter(|(_, d)| d.forward.is_none()) {
            let record = SessionRecord::of(d);
            out.push_with(EventKind::Session, d.scene, *id, d.addr, |b| {
                record.encode(b)
            });
        }
        for (scene, s) in self
            .scenes
            .iter()
            .filter(|(scene, _)| !handed.contains(scene))
        {
            push_objects(*scene, s, out);
        }
        out.push(EventKind::Synced, 0, 0, None, &[]);
    }

    /// Forgets `scene`, its sessions and objects: it is no longer this pair's (it moved while
    /// this pair was declared dead, or it was deleted), and must not come back stale if it
    /// is assigned here again. A fresh checkpoint follows downstream, so fanout and every
    /// mirror of this pair forget it too. Nothing happens for a scene it does not hold.
    pub fn drop_scene(&mut self, scene: u32, out: &mut Batch) {
        let devices = self.devices_of(scene);
        if devices.is_empty() && !self.scenes.contains_key(&scene) {
            return;
        }
        for device in devices {
            self.revoke(device, out);
        }
        self.scenes.remove(&scene);
        self.tombstones.retain(|(_, s, _)| *s != scene);
        self.checkpoint(out);
    }

    /// Forgets every session and object (a pair the controller fenced off: whatever it served
    /// may be someone else's now, and must not come back if the scene returns here) and says
    /// so downstream with an empty checkpoint, so fanout and every mirror of this pair forget
    /// too.
    pub fn reset(&mut self, out: &mut Batch) {
        self.devices.clear();
        self.scenes.clear();
        self.tombstones.clear();
        out.push(EventKind::Checkpoint, 0, 0, None, &[]);
        out.push(EventKind::Synced, 0, 0, None, &[]);
    }

    /// Applies one replicated event to this mirror. False if the event does not fit the
    /// state (malformed data, or a write the primary accepted and the mirror would refuse:
    /// the mirror has diverged and needs a new checkpoint).
    pub fn mirror(&mut self, now: Instant, e: &Event, data: &[u8]) -> bool {
        match e.kind {
            EventKind::Checkpoint => {
                self.devices.clear();
                self.scenes.clear();
                self.tombstones.clear();
                true
            }
            EventKind::Synced
            | EventKind::Forwarded
            | EventKind::Handover
            | EventKind::Proxy(_)
            | EventKind::Deliver(_) => true,
            EventKind::Interest => match Area::parse(data) {
                Ok(area) => self.with_device(e.device, |d| d.area = area),
                Err(_) => false,
            },
            EventKind::Session => {
                let Some(r) = SessionRecord::decode(data) else {
                    return false;
                };
                self.set_session(e.device, e.scene, e.addr, &r, now);
                true
            }
            // An object handed over with its owner to another pair: no longer the primary's.
            EventKind::Object if e.device != 0 => {
                if let Some(id) = data.get(5..).and_then(|b| ObjectBody::parse(b).ok()) {
                    if let Some(s) = self.scenes.get_mut(&e.scene) {
                        s.objects.remove(&id.object);
                    }
                }
                true
            }
            EventKind::Object => self.set_object(now, e.scene, data).is_some(),
            EventKind::Admitted => {
                let Ok(raw) = <[u8; 32]>::try_from(data) else {
                    return false;
                };
                self.release(e.device);
                let session = DeviceSession::new(e.scene, SessionKey::new(raw), now);
                self.devices.insert(e.device, session);
                true
            }
            EventKind::Revoked => {
                self.release(e.device);
                self.devices.remove(&e.device);
                true
            }
            EventKind::Joined => {
                let Some(dev) = self.devices.get_mut(&e.device) else {
                    return false;
                };
                dev.addr = e.addr;
                if let Some(seq) = u64_at(data, 0) {
                    dev.replay.accept(seq);
                }
                if !dev.joined {
                    dev.joined = true;
                    let scene = dev.scene;
                    self.scene_mut(scene).joined += 1;
                }
                true
            }
            EventKind::Moved => self.with_device(e.device, |d| d.addr = e.addr),
            EventKind::Paused => self.with_device(e.device, |d| d.quiet = true),
            EventKind::Resumed => self.with_device(e.device, |d| d.quiet = false),
            EventKind::Left => {
                if let Some(seq) = u64_at(data, 1) {
                    self.with_device(e.device, |d| {
                        d.replay.accept(seq);
                    });
                }
                self.release(e.device);
                true
            }
            EventKind::Relay(kind) => self.mirror_write(now, e, kind, data).is_some(),
            EventKind::Direct(Kind::KeepaliveAck) => match parse_exact::<KeepaliveAckBody>(data) {
                Ok(b) => self.with_device(e.device, |d| {
                    d.replay.accept(b.echo_seq.get());
                }),
                Err(_) => false,
            },
            EventKind::Direct(Kind::Reject) => match parse_exact::<RejectBody>(data) {
                Ok(b) => self.with_device(e.device, |d| {
                    d.replay.accept(b.ref_seq.get());
                }),
                Err(_) => false,
            },
            EventKind::Direct(_) => true,
        }
    }

    /// A mirror forgets a device its primary handed over to another pair (no events: the
    /// primary's stream says what its devices and fanout must know).
    pub fn forget_moved(&mut self, device: u32) {
        self.release(device);
        self.devices.remove(&device);
    }

    /// Whether this engine holds sessions or objects of `scene`.
    pub fn holds(&self, scene: u32) -> bool {
        self.scenes.contains_key(&scene) || self.devices.values().any(|d| d.scene == scene)
    }

    /// Takes over `scene` from the mirror `from`: its sessions (keys, replay windows,
    /// membership), objects and tombstones move here; fanout and this pair's own standbys
    /// learn them through `Session` and `Object` events (without the objects, a standby of this
    /// pair would lose them at the next failover: found by the simulation), and every device
    /// with an address is sent a redirect to `redirect` (this pair's endpoint, under the
    /// assignment's epoch). Adopted devices count as heard `now`. A session this engine
    /// already had for one of the devices is replaced.
    pub fn adopt(
        &mut self,
        from: &mut Engine,
        scene: u32,
        now: Instant,
        redirect: Option<(SocketAddr, u64)>,
        out: &mut Batch,
    ) {
        let moving = from.devices_of(scene);
        let mut state = from
            .scenes
            .remove(&scene)
            .unwrap_or_else(|| Scene::new(&self.hasher, self.config.interest_cell));
        from.tombstones.retain(|t| t.1 != scene);
        // A scene this pair serves part of already (its other zones): merged, the mirror's
        // objects replacing proxies of them; else taken whole.
        let merging = self.scenes.contains_key(&scene);
        if !merging {
            self.tombstones.retain(|t| t.1 != scene);
        }
        for (id, o) in state.objects.iter_mut().filter(|(_, o)| !o.is_live()) {
            // Tombstones refuse late updates for a full period from the takeover.
            o.deleted_at = Some(now);
            self.tombstones.push_back((now, scene, *id));
        }
        state.joined = 0;
        // Downstream too: this pair's own standbys must hold the objects it now serves.
        push_objects(scene, &state, out);
        if merging {
            let mine = self.scene_mut(scene);
            for (id, o) in state.objects.drain() {
                if mine
                    .objects
                    .get(&id)
                    .is_none_or(|m| m.proxy.is_some() || !m.is_live())
                {
                    mine.objects.insert(id, o);
                }
            }
        } else {
            self.scenes.insert(scene, state);
        }
        for id in moving {
            let Some(mut d) = from.devices.remove(&id) else {
                continue;
            };
            if self.devices.contains_key(&id) {
                self.revoke(id, out);
            }
            d.last_seen = now;
            d.forward = None;
            if d.joined {
                self.scene_mut(scene).joined += 1;
            }
            let record = SessionRecord::of(&d);
            out.push_with(EventKind::Session, scene, id, d.addr, |b| record.encode(b));
            if let (Some((to, epoch)), Some(addr)) = (redirect, d.addr) {
                let body = RedirectBody::new(epoch, to);
                let kind = EventKind::Direct(Kind::Redirect);
                out.push(kind, scene, id, Some(addr), body.as_bytes());
            }
            self.devices.insert(id, d);
        }
        // A mirror keeps no interest index: build it for the devices and objects adopted.
        self.rebuild_view(scene);
    }

    /// A drain's handover arriving in the old pair's stream: [`Engine::adopt`], and every
    /// moved device is *arriving* (see `arrival`), as the old pair forwards its stragglers.
    pub fn adopt_handover(
        &mut self,
        from: &mut Engine,
        scene: u32,
        now: Instant,
        redirect: Option<(SocketAddr, u64)>,
        out: &mut Batch,
    ) {
        self.adopt(from, scene, now, redirect, out);
        for d in self.devices.values_mut().filter(|d| d.scene == scene) {
            d.arrival = Some(Box::default());
        }
    }

    /// Hands `scene` over to the pair at `to` (a drain): every device of the scene is
    /// forwarded and redirected there, and a `Handover` event tells the new pair, in stream
    /// order, that everything this pair accepted for the scene came before it.
    pub fn handover(&mut self, scene: u32, to: SocketAddr, epoch: u64, out: &mut Batch) {
        let body = RedirectBody::new(epoch, to);
        out.push(EventKind::Handover, scene, 0, None, body.as_bytes());
        // (A device already handed to another pair, after a border crossing, stays on its way.)
        let moving = |d: &super::DeviceSession| d.forward.as_ref().is_some_and(|f| f.device_move);
        for (id, d) in self
            .devices
            .iter_mut()
            .filter(|(_, d)| d.scene == scene && !moving(d))
        {
            d.forward = Some(Box::new(Forward {
                to,
                epoch,
                last_redirect: None,
                device_move: false,
            }));
            if let Some(addr) = d.addr {
                let kind = EventKind::Direct(Kind::Redirect);
                out.push(kind, scene, *id, Some(addr), body.as_bytes());
            }
        }
    }

    fn with_device(&mut self, device: u32, f: impl FnOnce(&mut DeviceSession)) -> bool {
        match self.devices.get_mut(&device) {
            Some(d) => {
                f(d);
                true
            }
            None => false,
        }
    }

    fn set_session(
        &mut self,
        device: u32,
        scene: u32,
        addr: Option<SocketAddr>,
        r: &SessionRecord,
        now: Instant,
    ) {
        self.release(device);
        let mut d = DeviceSession::new(scene, SessionKey::new(r.key), now);
        d.addr = addr;
        d.quiet = r.quiet;
        d.area = r.area;
        d.replay = ReplayWindow::from_parts(r.top, r.seen);
        if r.joined {
            d.joined = true;
            self.scene_mut(scene).joined += 1;
        }
        self.devices.insert(device, d);
    }

    fn set_object(&mut self, now: Instant, scene: u32, data: &[u8]) -> Option<()> {
        let flags = *data.first()?;
        let owner = u32::from_le_bytes(data.get(1..5)?.try_into().ok()?);
        let body = ObjectBody::parse(data.get(5..)?).ok()?;
        let mut obj = Object::new(body.origin_device);
        obj.owner = (flags & 1 != 0).then_some(owner);
        let order = (body.origin_timestamp_ns, body.origin_seq);
        obj.apply(body.origin_device, order, &body, true);
        if flags & 2 != 0 {
            obj.delete(body.origin_device, order, now);
            self.tombstones.push_back((now, scene, body.object));
        }
        self.scene_mut(scene).objects.insert(body.object, obj);
        Some(())
    }

    /// A write the previous owner of a scene accepted after this pair took the scene over from
    /// its mirror (the old pair did not know yet, or its stream lagged behind the takeover):
    /// applied with the usual ownership and order rules (a newer write the device sent here
    /// wins) and relayed like any accepted write. False if it was not applied.
    pub fn catch_up(
        &mut self,
        now: Instant,
        e: &Event,
        kind: Kind,
        data: &[u8],
        out: &mut Batch,
    ) -> bool {
        let Some((object, was)) = self.mirror_write(now, e, kind, data) else {
            return false;
        };
        out.push(EventKind::Relay(kind), e.scene, e.device, e.addr, data);
        self.view_write(e.scene, e.device, object, kind, was, out);
        true
    }

    /// Applies a replicated write; returns its object and where it was before (if live).
    fn mirror_write(
        &mut self,
        now: Instant,
        e: &Event,
        kind: Kind,
        data: &[u8],
    ) -> Option<(u64, super::interest::Spot)> {
        let body = ObjectBody::parse(data).ok()?;
        let (device, seq) = (body.origin_device, body.origin_seq);
        self.devices.get_mut(&device)?.replay.accept(seq);
        let order = (body.origin_timestamp_ns, seq);
        let was = self
            .write_object(now, e.scene, device, kind, order, &body)
            .ok()?;
        Some((body.object, was))
    }
}

/// Every object (tombstones included) of `scene` as `Object` events: what a mirror needs to
/// hold it (a checkpoint, a takeover).
fn push_objects(scene: u32, s: &Scene, out: &mut Batch) {
    let mut body = [0u8; MAX_DATAGRAM];
    // Proxies are their origin's to replicate: a mirror learns them from it when it serves.
    for (id, obj) in s.objects.iter().filter(|(_, o)| o.proxy.is_none()) {
        push_object(scene, 0, *id, obj, &mut body, out);
    }
}

/// One object as an `Object` event (`device`: 0 in a checkpoint, the owner handed over with
/// it in a device's hand-over, see `zoning`); `body` is scratch space.
pub(super) fn push_object(
    scene: u32,
    device: u32,
    id: u64,
    obj: &Object,
    body: &mut [u8; MAX_DATAGRAM],
    out: &mut Batch,
) {
    let Ok(n) = obj.as_body(id).emit(body) else {
        return;
    };
    let flags = u8::from(obj.owner.is_some()) | u8::from(!obj.is_live()) << 1;
    out.push_with(EventKind::Object, scene, device, None, |b| {
        b.push(flags);
        b.extend_from_slice(&obj.owner.unwrap_or(0).to_le_bytes());
        b.extend_from_slice(&body[..n]);
    });
}
