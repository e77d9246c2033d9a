//! Devices crossing zone borders (pure): which zones of a shared scene this pair serves, when a
//! device's anchor has crossed into a zone another pair serves, and the device's hand-over to
//! that pair in stream order (the drain of one device).
//!
//! Rules, as decided here (also in docs/PROTOCOL.md, "Zones"):
//! - A device is homed by its anchor on layer 0 (a device with no bounded area has none and
//!   stays on the pair it registered on). It has crossed when its anchor lies in a zone
//!   this pair does not serve by a margin ([`MARGIN`] of the cell size, on every axis), so a
//!   device walking along a border does not bounce between pairs. Each crossing is reported
//!   once ([`Engine::take_crossings`]); the pair asks the controller, which moves the device's
//!   home and tells this pair to hand it over ([`Engine::move_device`]).
//! - A hand-over, in stream order: a `Handover` event for the device (the new pair's id and
//!   endpoint, the session with its replay window and area), then its live objects as `Object`
//!   events carrying its id (they move with their owner), then, for a grace period, its
//!   stragglers as `Forwarded` events, while the device is redirected. Here the device is no
//!   longer a member (nobody is told it left) and its objects become proxies of the new pair.
//! - The new pair (following this one on the region bus) adopts the session and the objects
//!   when the events arrive (`Engine::follow`): the device is *arriving*, so forwarded
//!   stragglers and its direct datagrams are applied in sequence order, each once.

use std::net::SocketAddr;
use std::time::Instant;

use zerocopy::IntoBytes;

use super::mirror::{push_object, SessionRecord};
use super::{Batch, DeviceSession, Engine, EventKind, Forward};
use crate::wire::{Kind, RedirectBody, MAX_DATAGRAM};
use crate::zones::Geometry;

/// How far (a fraction of the cell size) an anchor must be inside another pair's zone before
/// the device is handed over.
pub const MARGIN: f32 = 0.05;

/// What this pair serves of a shared scene.
#[derive(Clone, Debug, PartialEq)]
pub struct Zoning {
    pub geometry: Geometry,
    /// The zones served here.
    pub here: Vec<u32>,
}

impl Zoning {
    /// The zone `anchor` has crossed into, if it is another pair's with the margin to spare.
    fn crossed(&self, anchor: [f32; 3]) -> Option<u32> {
        let zone = self.geometry.zone_of(0, anchor);
        if self.here.contains(&zone) {
            return None;
        }
        let cell = self.geometry.grid.as_ref().map_or([0.0; 3], |g| g.cell);
        let inside = (0..3).all(|a| {
            [-1.0f32, 1.0].iter().all(|s| {
                let mut p = anchor;
                p[a] += s * MARGIN * cell[a];
                self.geometry.zone_of(0, p) == zone
            })
        });
        inside.then_some(zone)
    }
}

impl Engine {
    /// What this pair serves of `scene` when other pairs serve its other zones (`None`: it
    /// serves the scene whole). Devices already across a border are reported at once.
    pub fn set_zoning(&mut self, scene: u32, zoning: Option<Zoning>) {
        match zoning {
            Some(z) => {
                self.zoning.insert(scene, z);
                for d in self.devices_of(scene) {
                    self.check_crossing(d);
                }
            }
            None => {
                self.zoning.remove(&scene);
            }
        }
    }

    /// Notes whether `device`'s anchor has crossed into another pair's zone.
    pub(super) fn check_crossing(&mut self, device: u32) {
        let Some(d) = self.devices.get_mut(&device) else {
            return;
        };
        // A device with no bounded area declared no anchor: it stays where it was homed.
        if !d.joined || d.forward.is_some() || d.area.is_everything() {
            return;
        }
        let Some(z) = self.zoning.get(&d.scene) else {
            return;
        };
        let now = z.crossed(d.area.anchor);
        if now != d.crossing {
            d.crossing = now;
            self.crossings.push((device, now));
        }
    }

    /// Devices that crossed into another pair's zone since the last call, (device, zone), or
    /// came back before they were moved (device, `None`).
    pub fn take_crossings(&mut self) -> Vec<(u32, Option<u32>)> {
        std::mem::take(&mut self.crossings)
    }

    /// Hands `device` over to pair `pair` at `to` under `epoch` (the controller moved its home
    /// there): see the module doc. Nothing happens for a device this engine does not serve.
    pub fn move_device(
        &mut self,
        device: u32,
        pair: u32,
        to: SocketAddr,
        epoch: u64,
        out: &mut Batch,
    ) {
        let Some(d) = self.devices.get(&device).filter(|d| d.forward.is_none()) else {
            return;
        };
        let scene = d.scene;
        let addr = d.addr;
        let record = SessionRecord::of(d);
        self.moves.0 += 1;
        let redirect = RedirectBody::new(epoch, to);
        out.push_with(EventKind::Handover, scene, device, addr, |b| {
            b.extend_from_slice(redirect.as_bytes());
            b.extend_from_slice(&pair.to_le_bytes());
            record.encode(b);
        });
        // Its objects go with it: the new pair serves them, this one shows them as proxies.
        if let Some(s) = self.scenes.get_mut(&scene) {
            let mut body = [0u8; MAX_DATAGRAM];
            for (id, o) in s.objects.iter_mut() {
                if o.owner == Some(device) && o.is_live() && o.proxy.is_none() {
                    push_object(scene, device, *id, o, &mut body, out);
                    o.proxy = Some(pair);
                }
            }
        }
        // No longer a member here, silently: it did not leave the scene.
        if self.devices.get(&device).is_some_and(|d| d.joined) {
            self.forget_view(device);
            if let Some(s) = self.scenes.get_mut(&scene) {
                s.joined = s.joined.saturating_sub(1);
            }
        }
        let Some(d) = self.devices.get_mut(&device) else {
            return;
        };
        d.joined = false;
        d.crossing = None;
        d.forward = Some(Box::new(Forward {
            to,
            epoch,
            last_redirect: None,
            device_move: true,
        }));
        if let Some(addr) = addr {
            let kind = EventKind::Direct(Kind::Redirect);
            out.push(kind, scene, device, Some(addr), redirect.as_bytes());
        }
    }

    /// A `Handover` event of another pair's stream for one device: if it names `me`, the
    /// device's session is adopted (arriving: its stragglers follow as `Forwarded` events).
    /// True if adopted.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn adopt_device(
        &mut self,
        now: Instant,
        me: u32,
        scene: u32,
        device: u32,
        addr: Option<SocketAddr>,
        data: &[u8],
        out: &mut Batch,
    ) -> bool {
        const HEAD: usize = std::mem::size_of::<RedirectBody>() + 4;
        let Some(pair) = data.get(HEAD - 4..HEAD) else {
            return false;
        };
        if u32::from_le_bytes(pair.try_into().unwrap_or_default()) != me {
            return false;
        }
        let Some(r) = SessionRecord::decode(&data[HEAD..]) else {
            return false;
        };
        if self.devices.contains_key(&device) {
            self.revoke(device, out);
        }
        let mut d = DeviceSession::new(scene, crate::wire::SessionKey::new(r.key), now);
        d.addr = addr;
        d.area = r.area;
        d.quiet = r.quiet;
        d.joined = r.joined;
        d.replay = super::ReplayWindow::from_parts(r.top, r.seen);
        d.arrival = Some(Box::default());
        // Downstream (fanout, this pair's standbys) learn the session as it is.
        out.push_with(EventKind::Session, scene, device, addr, |b| r.encode(b));
        self.devices.insert(device, d);
        self.moves.1 += 1;
        if r.joined {
            self.scene_mut(scene).joined += 1;
            // Indexed, and sent the state of what it sees from here (what the old pair showed
            // it, unless something changed in between).
            self.set_area(device, r.area, true, out);
            if let Some(addr) = addr {
                self.push_listed(scene, device, addr, true, out);
            }
        }
        true
    }
}
