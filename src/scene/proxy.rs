//! Proxied objects (pure): objects of a shared scene that live in zones another pair serves,
//! learned from that pair's replication stream (the region bus, see `replication::neighbours`)
//! and shown to this pair's devices by the same interest rules as local ones.
//!
//! Rules, as decided here (also in docs/PROTOCOL.md, "Zones"):
//! - The origin pair decides (ownership, order); a proxy only follows what its stream says, in
//!   stream order, so a proxy holds exactly the origin's last accepted state (LWW order is the
//!   origin's). Writes from this pair's devices to a proxy are refused `not_owner`.
//! - A live local object wins over a proxy of the same id (two pairs' devices created one id
//!   each): the proxy update is dropped and counted `not_owner`. Object ids are scene-wide;
//!   devices that create objects should draw them from their own range (e.g. device id in the
//!   high bits).
//! - A proxy may change origin (its zones failed over or moved: the new pair's checkpoint
//!   carries it); when an origin's stream starts over (a checkpoint), its proxies are marked
//!   stale and those its checkpoint does not confirm are deleted once it is synced; when this
//!   pair stops following an origin, its proxies still held by that origin are deleted after
//!   [`PROXY_GRACE`] (time for the pair taking its zones over to confirm them).
//! - Taking a scene over from a mirror (`adopt`) replaces proxies with the mirror's objects.

use std::time::{Duration, Instant};

use super::{DropReason, Engine, Event, EventKind, Object};
use crate::scene::Batch;
use crate::wire::{Fields, Kind, ObjectBody, MAX_DATAGRAM};

/// How long proxies of an origin no longer followed are kept, waiting to be confirmed by the
/// pair that took its zones.
pub const PROXY_GRACE: Duration = Duration::from_secs(2);

impl Engine {
    /// Applies one event of pair `origin`'s stream (the region bus) to the proxies of the
    /// scenes `shared` accepts: a checkpoint marks its proxies, its objects confirm or update
    /// them, `Synced` sweeps what it did not confirm, each accepted write updates one. A
    /// device `origin` hands over to this pair (`me`) is adopted with its objects, and its
    /// forwarded stragglers are applied (see `zoning`). Other events (sessions, deliveries,
    /// its own proxies) are not this pair's business.
    #[allow(clippy::too_many_arguments)]
    pub fn follow(
        &mut self,
        now: Instant,
        me: u32,
        origin: u32,
        e: &Event,
        data: &[u8],
        shared: impl Fn(u32) -> bool,
        out: &mut Batch,
    ) -> Result<(), DropReason> {
        match e.kind {
            EventKind::Checkpoint => {
                self.proxy_mark(origin);
                Ok(())
            }
            EventKind::Synced => {
                self.proxy_sweep(now, origin, out);
                Ok(())
            }
            EventKind::Handover if e.device != 0 && shared(e.scene) => {
                if self.adopt_device(now, me, e.scene, e.device, e.addr, data, out) {
                    self.moved_in.retain(|m| m.0 != e.device);
                    self.moved_in.push((e.device, origin));
                }
                Ok(())
            }
            EventKind::Object if e.device != 0 && self.moved_in.contains(&(e.device, origin)) => {
                // An object of a device handed over here: this pair's now.
                let id = self.proxy_object(now, origin, e.scene, data, out)?;
                if let Some(o) = self
                    .scenes
                    .get_mut(&e.scene)
                    .and_then(|s| s.objects.get_mut(&id))
                {
                    o.proxy = None;
                    let mut body = [0u8; MAX_DATAGRAM];
                    super::mirror::push_object(e.scene, 0, id, o, &mut body, out);
                }
                Ok(())
            }
            EventKind::Forwarded if self.moved_in.contains(&(e.device, origin)) => {
                let from = e.addr.ok_or(DropReason::Malformed)?;
                self.handle_forwarded(now, from, data, out)
            }
            EventKind::Object if shared(e.scene) => self
                .proxy_object(now, origin, e.scene, data, out)
                .map(|_| ()),
            EventKind::Relay(kind) if shared(e.scene) => {
                self.proxy_write(now, origin, e.scene, kind, data, out)
            }
            _ => Ok(()),
        }
    }

    /// An object datagram pair `origin` accepted for `scene` (its stream's `Relay` event; the
    /// body is origin stamped): applied to the proxy and shown to the devices that see it.
    pub fn proxy_write(
        &mut self,
        now: Instant,
        origin: u32,
        scene: u32,
        kind: Kind,
        data: &[u8],
        out: &mut Batch,
    ) -> Result<(), DropReason> {
        if !kind.is_object() {
            return Err(DropReason::Malformed);
        }
        let body = ObjectBody::parse(data)?;
        self.proxy_apply(now, origin, scene, kind, None, &body, data, out)
    }

    /// One object of pair `origin`'s checkpoint (its stream's `Object` event: flags, owner,
    /// full body): the proxy is confirmed, and updated if it changed. Returns its id.
    pub fn proxy_object(
        &mut self,
        now: Instant,
        origin: u32,
        scene: u32,
        data: &[u8],
        out: &mut Batch,
    ) -> Result<u64, DropReason> {
        let (Some(&flags), Some(owner)) = (data.first(), data.get(1..5)) else {
            return Err(DropReason::Malformed);
        };
        let owner = u32::from_le_bytes(owner.try_into().map_err(|_| DropReason::Malformed)?);
        let bytes = &data[5..];
        let body = ObjectBody::parse(bytes)?;
        let order = (body.origin_timestamp_ns, body.origin_seq);
        let held = self
            .scenes
            .get_mut(&scene)
            .and_then(|s| s.objects.get_mut(&body.object));
        if let Some(o) = held.filter(|o| o.proxy.is_some() && o.order == order) {
            // Unchanged: confirmed, nobody is told anything.
            o.proxy = Some(origin);
            o.stale = false;
            return Ok(body.object);
        }
        let owner = (flags & 1 != 0).then_some(owner);
        if flags & 2 != 0 {
            // A tombstone: only a proxy this pair shows is deleted.
            if self
                .object(scene, body.object)
                .is_some_and(|o| o.proxy.is_some())
            {
                let (id, writer) = (body.object, body.origin_device);
                self.proxy_delete(now, origin, scene, (id, writer, order), owner, out)?;
            }
            return Ok(body.object);
        }
        let kind = Kind::ObjectOverwrite;
        self.proxy_apply(now, origin, scene, kind, owner, &body, bytes, out)?;
        Ok(body.object)
    }

    /// Deletes proxy `object` of `scene` (its last writer and order as given) for whoever
    /// sees it.
    fn proxy_delete(
        &mut self,
        now: Instant,
        origin: u32,
        scene: u32,
        (object, writer, order): (u64, u32, super::Order),
        owner: Option<u32>,
        out: &mut Batch,
    ) -> Result<(), DropReason> {
        let mut del = ObjectBody::new(object, 0, Fields::default(), &[]);
        del.origin_device = writer;
        del.origin_timestamp_ns = order.0;
        del.origin_seq = order.1;
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = del.emit(&mut buf).map_err(|_| DropReason::Malformed)?;
        let kind = Kind::ObjectDelete;
        self.proxy_apply(now, origin, scene, kind, owner, &del, &buf[..n], out)
    }

    /// Pair `origin`'s stream starts over (a checkpoint follows): its proxies are stale until
    /// the checkpoint confirms them.
    pub fn proxy_mark(&mut self, origin: u32) {
        for s in self.scenes.values_mut() {
            for o in s.objects.values_mut().filter(|o| o.proxy == Some(origin)) {
                o.stale = true;
            }
        }
    }

    /// Deletes the live proxies of `origin` still stale (its checkpoint is complete, or this
    /// pair stopped following it [`PROXY_GRACE`] ago): viewers are sent the delete.
    pub fn proxy_sweep(&mut self, now: Instant, origin: u32, out: &mut Batch) {
        let mut gone = Vec::new();
        for (scene, s) in &self.scenes {
            for (id, o) in &s.objects {
                if o.proxy == Some(origin) && o.stale && o.is_live() {
                    gone.push((*scene, *id, o.writer, o.order));
                }
            }
        }
        for (scene, id, writer, order) in gone {
            let _ = self.proxy_delete(now, origin, scene, (id, writer, order), None, out);
        }
    }

    /// This pair stops following `origin`: its proxies are marked, and swept by `tick` after
    /// [`PROXY_GRACE`] unless another origin confirms them first.
    pub fn proxy_unfollow(&mut self, now: Instant, origin: u32) {
        self.proxy_mark(origin);
        self.proxy_sweeps.push((now + PROXY_GRACE, origin));
    }

    /// This pair serves `origin`'s zones now (it failed or drained): its proxies still here
    /// become this pair's own objects, announced downstream (this pair's standbys).
    pub fn proxy_adopt(&mut self, origin: u32, out: &mut Batch) {
        self.proxy_sweeps.retain(|(_, o)| *o != origin);
        let mut body = [0u8; MAX_DATAGRAM];
        for (scene, s) in self.scenes.iter_mut() {
            for (id, o) in s
                .objects
                .iter_mut()
                .filter(|(_, o)| o.proxy == Some(origin))
            {
                o.proxy = None;
                o.stale = false;
                super::mirror::push_object(*scene, 0, *id, o, &mut body, out);
            }
        }
    }

    /// Sweeps whose grace is over (called by `tick`).
    pub(super) fn proxy_tick(&mut self, now: Instant, out: &mut Batch) {
        if !self.moved_in.is_empty() {
            let devices = &self.devices;
            self.moved_in
                .retain(|(d, _)| devices.get(d).is_some_and(|s| s.arrival.is_some()));
        }
        if self.proxy_sweeps.is_empty() {
            return;
        }
        let due: Vec<u32> = self
            .proxy_sweeps
            .iter()
            .filter(|(at, _)| *at <= now)
            .map(|(_, origin)| *origin)
            .collect();
        self.proxy_sweeps.retain(|(at, _)| *at > now);
        for origin in due {
            self.proxy_sweep(now, origin, out);
        }
    }

    /// Proxies this engine shows.
    pub fn proxies(&self) -> usize {
        self.scenes
            .values()
            .map(|s| {
                s.objects
                    .values()
                    .filter(|o| o.proxy.is_some() && o.is_live())
                    .count()
            })
            .sum()
    }

    /// Applies one origin-decided write to the proxy and shows it (a `Proxy` event for the
    /// everything-devices, deliveries for those with an area).
    #[allow(clippy::too_many_arguments)]
    fn proxy_apply(
        &mut self,
        now: Instant,
        origin: u32,
        scene: u32,
        kind: Kind,
        owner: Option<u32>,
        body: &ObjectBody<'_>,
        bytes: &[u8],
        out: &mut Batch,
    ) -> Result<(), DropReason> {
        let max = self.config.max_objects_per_scene;
        let writer = body.origin_device;
        let order = (body.origin_timestamp_ns, body.origin_seq);
        let s = self.scene_mut(scene);
        let full = s.objects.len() >= max;
        let was = match s.objects.get(&body.object) {
            Some(o) if o.proxy.is_none() && o.is_live() => return Err(DropReason::NotOwner),
            Some(o) if !o.is_live() && kind == Kind::ObjectDelete => {
                return Err(DropReason::UnknownObject)
            }
            Some(o) => o.is_live().then_some((o.layer, o.fields.translation)),
            None if kind == Kind::ObjectDelete => return Err(DropReason::UnknownObject),
            None if full => return Err(DropReason::SceneFull),
            None => None,
        };
        let obj = s
            .objects
            .entry(body.object)
            .or_insert_with(|| Object::new(writer));
        obj.proxy = Some(origin);
        obj.stale = false;
        obj.owner = owner.or(Some(writer));
        if kind == Kind::ObjectDelete {
            obj.delete(writer, order, now);
            self.tombstones.push_back((now, scene, body.object));
        } else {
            obj.deleted_at = None;
            obj.apply(writer, order, body, kind == Kind::ObjectOverwrite);
        }
        out.push(EventKind::Proxy(kind), scene, writer, None, bytes);
        self.view_write(scene, writer, body.object, kind, was, out);
        Ok(())
    }
}
