//! Interest management: who sees which object (pure).
//!
//! Every joined device has an [`Area`] (`wire::interest`). A device whose area is everything
//! (every revision-1 device) receives every update of its scene through the plain `Relay`
//! event, as before. For the others the engine keeps, per object, the sorted list of devices
//! that see it (`Object::viewers`), so that after every step a device sees an object exactly
//! when its area contains the object's position. Each accepted write re-evaluates its object:
//! devices that keep seeing it get the update, devices it enters get its full state, devices it
//! leaves get an `ObjectLeft` notice; a device whose area changes gets `ObjectLeft` for what
//! left it and an incremental snapshot of what entered. All of it goes out as `Deliver` events
//! with explicit recipient lists, which fanout bundles per device.
//!
//! Candidates come from a [`Space`]: a uniform grid over the scene (cell size per axis,
//! `Config::interest_cell`; an axis of size 0 is not split) that lists, per cell and layer, the
//! devices whose area reaches it and the objects inside it. An update looks at one cell; an area
//! change at the cells its old and new areas cover. An area covering more than [`MAX_CELLS`]
//! cells of a layer (or all of it) is kept in the layer's *wide* list and tested on every
//! update of that layer: set the cell size near the typical interest radius.

use super::{Batch, Engine, EventKind, Map};
use crate::wire::interest::{Area, Shape, MAX_LAYERS};
use crate::wire::{Fields, Kind, ObjectBody};

/// Most cells one layer of one area is listed in before it goes to the wide list.
pub const MAX_CELLS: i64 = 512;

/// A grid cell of one layer.
type Cell = (u8, [i32; 3]);

/// Which cells an area's layer covers.
enum Reach {
    Nothing,
    Cells([i32; 3], [i32; 3]),
    Wide,
}

/// Cell sizes and the arithmetic on them (a copy, so callers can hold it while they change
/// the index's lists).
#[derive(Clone, Copy)]
struct Cells([f32; 3]);

impl Cells {
    fn coord(self, axis: usize, v: f32) -> i32 {
        let c = self.0[axis];
        if c > 0.0 {
            // `as` saturates: a far-away position lands in the outermost cell, never panics.
            (v / c).floor() as i32
        } else {
            0
        }
    }

    fn cell_of(self, layer: u8, p: [f32; 3]) -> Cell {
        (
            layer,
            [
                self.coord(0, p[0]),
                self.coord(1, p[1]),
                self.coord(2, p[2]),
            ],
        )
    }

    fn reach(self, area: &Area, layer: usize) -> Reach {
        match area.layers[layer] {
            Shape::None => Reach::Nothing,
            Shape::All => Reach::Wide,
            shape => {
                let h = shape.reach().unwrap_or([0.0; 3]);
                let a = area.anchor;
                let lo = |i: usize| self.coord(i, a[i] - h[i]);
                let hi = |i: usize| self.coord(i, a[i] + h[i]);
                let (lo, hi) = ([lo(0), lo(1), lo(2)], [hi(0), hi(1), hi(2)]);
                // Saturating: a hostile extent spans 2^32 cells per axis.
                let cells = (0..3)
                    .map(|i| i64::from(hi[i]) - i64::from(lo[i]) + 1)
                    .fold(1i64, i64::saturating_mul);
                if cells > MAX_CELLS {
                    Reach::Wide
                } else {
                    Reach::Cells(lo, hi)
                }
            }
        }
    }

    /// Calls `f` for every cell `area` covers on each layer, or for the layer's wide list.
    fn each(self, area: &Area, mut f: impl FnMut(Option<Cell>, u8)) {
        for layer in 0..MAX_LAYERS {
            match self.reach(area, layer) {
                Reach::Nothing => {}
                Reach::Wide => f(None, layer as u8),
                Reach::Cells(lo, hi) => {
                    for x in lo[0]..=hi[0] {
                        for y in lo[1]..=hi[1] {
                            for z in lo[2]..=hi[2] {
                                f(Some((layer as u8, [x, y, z])), layer as u8);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The spatial index of one scene.
pub(crate) struct Space {
    cells: Cells,
    devices: Map<Cell, Vec<u32>>,
    wide: [Vec<u32>; MAX_LAYERS],
    objects: Map<Cell, Vec<u64>>,
}

impl Space {
    pub(crate) fn new(cell: [f32; 3], hasher: &super::Hasher) -> Space {
        Space {
            cells: Cells(cell),
            devices: Map::with_hasher(hasher.clone()),
            wide: Default::default(),
            objects: Map::with_hasher(hasher.clone()),
        }
    }

    fn add_device(&mut self, device: u32, area: &Area) {
        self.cells.each(area, |c, layer| match c {
            Some(c) => self.devices.entry(c).or_default().push(device),
            None => self.wide[usize::from(layer)].push(device),
        });
    }

    fn remove_device(&mut self, device: u32, area: &Area) {
        self.cells.each(area, |c, layer| {
            let list = match c {
                Some(c) => self.devices.get_mut(&c),
                None => Some(&mut self.wide[usize::from(layer)]),
            };
            if let Some(list) = list {
                if let Some(i) = list.iter().position(|d| *d == device) {
                    list.swap_remove(i);
                }
                if list.is_empty() {
                    if let Some(c) = c {
                        self.devices.remove(&c);
                    }
                }
            }
        });
    }

    /// Whether the cells `a` and `b` cover are the same (an anchor that moved within a cell).
    fn same_cells(&self, a: &Area, b: &Area) -> bool {
        (0..MAX_LAYERS).all(|l| match (self.cells.reach(a, l), self.cells.reach(b, l)) {
            (Reach::Nothing, Reach::Nothing) | (Reach::Wide, Reach::Wide) => true,
            (Reach::Cells(l1, h1), Reach::Cells(l2, h2)) => l1 == l2 && h1 == h2,
            _ => false,
        })
    }

    fn move_object(&mut self, id: u64, from: Option<(u8, [f32; 3])>, to: Option<(u8, [f32; 3])>) {
        let from = from.map(|(l, p)| self.cells.cell_of(l, p));
        let to = to.map(|(l, p)| self.cells.cell_of(l, p));
        if from == to {
            return;
        }
        if let Some(c) = from {
            if let Some(list) = self.objects.get_mut(&c) {
                if let Some(i) = list.iter().position(|o| *o == id) {
                    list.swap_remove(i);
                }
                if list.is_empty() {
                    self.objects.remove(&c);
                }
            }
        }
        if let Some(c) = to {
            self.objects.entry(c).or_default().push(id);
        }
    }

    /// Devices whose area may contain `p` on `layer` (each once).
    fn candidates(&self, layer: u8, p: [f32; 3], mut f: impl FnMut(u32)) {
        if let Some(list) = self.devices.get(&self.cells.cell_of(layer, p)) {
            list.iter().for_each(|d| f(*d));
        }
        if let Some(list) = self.wide.get(usize::from(layer)) {
            list.iter().for_each(|d| f(*d));
        }
    }

    /// Objects that may be inside `area` (each once per layer cell); `None` when the area is
    /// wide on some layer and the caller must look at every object.
    fn objects_near(&self, area: &Area, out: &mut Vec<u64>) -> Option<()> {
        let mut wide = false;
        self.cells.each(area, |c, _| match c {
            Some(c) => {
                if let Some(list) = self.objects.get(&c) {
                    out.extend_from_slice(list);
                }
            }
            None => wide = true,
        });
        (!wide).then_some(())
    }
}

/// An object's place in the index: layer and position, when it is live.
pub(super) type Spot = Option<(u8, [f32; 3])>;

/// Recipients of one write, split by what they get.
#[derive(Default)]
pub(crate) struct Scratch {
    pub(super) inside: Vec<u32>,
    same: Vec<u32>,
    enter: Vec<u32>,
    left: Vec<u32>,
    near: Vec<u64>,
    pub(super) entered: Vec<u64>,
    gone: Vec<u64>,
}

/// Appends a `Deliver` event: `count u16 | devices u32... | body` (an empty body: the
/// preceding `Relay` event's datagram).
fn push_deliver(out: &mut Batch, kind: Kind, scene: u32, from: u32, to: &[u32], body: &[u8]) {
    if to.is_empty() {
        return;
    }
    for chunk in to.chunks(u16::MAX as usize) {
        out.push_with(EventKind::Deliver(kind), scene, from, None, |d| {
            d.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
            for device in chunk {
                d.extend_from_slice(&device.to_le_bytes());
            }
            d.extend_from_slice(body);
        });
    }
}

/// The recipients and body of a `Deliver` event's data.
pub fn parse_deliver(data: &[u8]) -> Option<(impl Iterator<Item = u32> + '_, &[u8])> {
    let count = usize::from(u16::from_le_bytes(data.get(..2)?.try_into().ok()?));
    let list = data.get(2..2 + 4 * count)?;
    let body = &data[2 + 4 * count..];
    let devices = list
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    Some((devices, body))
}

/// The body of an `ObjectLeft` notice for `id`: its head only, origin = its last write.
fn left_body(obj: &super::Object, id: u64, buf: &mut [u8]) -> usize {
    let mut body = ObjectBody::new(id, 0, Fields::default(), &[]);
    body.origin_device = obj.writer;
    body.origin_timestamp_ns = obj.order.0;
    body.origin_seq = obj.order.1;
    body.layer = obj.layer;
    body.emit(buf).unwrap_or(0)
}

impl Engine {
    /// Whether `device` is in the index of its scene: joined, bounded area, served here.
    fn indexed(&self, device: u32) -> Option<(u32, Area)> {
        let d = self.devices.get(&device)?;
        (d.joined && d.forward.is_none() && !d.area.is_everything()).then_some((d.scene, d.area))
    }

    /// Re-evaluates object `id` of `scene` after `writer`'s accepted write (`was`: where it
    /// was before, if live): moves it in the index, updates its viewers and queues `Deliver`
    /// events after the write's `Relay` event (which everything-devices receive).
    pub(super) fn view_write(
        &mut self,
        scene: u32,
        writer: u32,
        id: u64,
        kind: Kind,
        was: Spot,
        out: &mut Batch,
    ) {
        let Some(s) = self.scenes.get_mut(&scene) else {
            return;
        };
        let Some(obj) = s.objects.get_mut(&id) else {
            return;
        };
        let now = obj.is_live().then_some((obj.layer, obj.fields.translation));
        s.space.move_object(id, was, now);
        let x = &mut self.scratch;
        x.inside.clear();
        if let Some((layer, p)) = now {
            let devices = &self.devices;
            s.space.candidates(layer, p, |d| {
                if devices.get(&d).is_some_and(|dev| {
                    dev.joined && dev.forward.is_none() && dev.area.contains(layer, p)
                }) {
                    x.inside.push(d);
                }
            });
            x.inside.sort_unstable();
            x.inside.dedup();
        }
        x.same.clear();
        x.enter.clear();
        x.left.clear();
        let (old, new) = (&obj.viewers, &x.inside);
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < new.len() {
            let (a, b) = (old.get(i).copied(), new.get(j).copied());
            match (a, b) {
                (Some(a), Some(b)) if a == b => {
                    x.same.push(a);
                    i += 1;
                    j += 1;
                }
                (Some(a), b) if b.is_none_or(|b| a < b) => {
                    x.left.push(a);
                    i += 1;
                }
                (_, Some(b)) => {
                    x.enter.push(b);
                    j += 1;
                }
                _ => break,
            }
        }
        if now.is_none() {
            // Deleted: whoever saw it is sent the delete, not a notice that it left.
            x.same.append(&mut x.left);
        }
        std::mem::swap(&mut obj.viewers, &mut x.inside);
        // The writer knows what it wrote: it is a viewer like any other, but is sent nothing.
        for list in [&mut x.same, &mut x.enter, &mut x.left] {
            if let Some(k) = list.iter().position(|d| *d == writer) {
                list.remove(k);
            }
        }
        push_deliver(out, kind, scene, writer, &x.same, &[]);
        // Bodies only when someone is told of an entry or an exit: most writes need none.
        if !x.enter.is_empty() {
            let mut buf = [0u8; crate::wire::MAX_DATAGRAM];
            let n = obj.as_body(id).emit(&mut buf).unwrap_or(0);
            push_deliver(
                out,
                Kind::ObjectOverwrite,
                scene,
                writer,
                &x.enter,
                &buf[..n],
            );
        }
        if !x.left.is_empty() {
            let mut buf = [0u8; crate::wire::OBJECT_HEAD_LEN];
            let n = left_body(obj, id, &mut buf);
            push_deliver(out, Kind::ObjectLeft, scene, writer, &x.left, &buf[..n]);
        }
    }

    /// Gives joined `device` the area `area`: re-indexes it, updates the viewers of every
    /// object whose visibility changed, announces the area downstream (an `Interest` event,
    /// for fanout and mirrors) and sends it `ObjectLeft` for what left its view. Returns the
    /// objects it now sees that it did not before (all it sees when `fresh`: it held nothing)
    /// in `self.scratch.entered`. A device that is not joined only has the area noted.
    pub(super) fn set_area(&mut self, device: u32, area: Area, fresh: bool, out: &mut Batch) {
        let Some(dev) = self.devices.get_mut(&device) else {
            return;
        };
        let (old, scene) = (dev.area, dev.scene);
        dev.area = area;
        if old != area {
            let mut buf = [0u8; crate::wire::MAX_BODY];
            let n = area.emit(&mut buf).unwrap_or(0);
            out.push(EventKind::Interest, scene, device, None, &buf[..n]);
        }
        self.scratch.entered.clear();
        self.scratch.gone.clear();
        let Some(dev) = self.devices.get(&device) else {
            return;
        };
        if !dev.joined || dev.forward.is_some() {
            return;
        }
        let s = super::scene_entry(
            &mut self.scenes,
            &self.hasher,
            scene,
            self.config.interest_cell,
        );
        let x = &mut self.scratch;
        let was_indexed = !fresh && !old.is_everything();
        let indexed = !area.is_everything();
        if was_indexed && indexed && s.space.same_cells(&old, &area) {
            // Moved within its cells: the index holds it already.
        } else {
            if was_indexed {
                s.space.remove_device(device, &old);
            }
            if indexed {
                s.space.add_device(device, &area);
            }
        }
        x.near.clear();
        // Candidates: what the old area may have held and what the new one may hold; every
        // object when either is unbounded on some layer.
        let mut all = (!fresh && !was_indexed) || !indexed;
        if was_indexed && !all {
            all = s.space.objects_near(&old, &mut x.near).is_none();
        }
        if !all {
            all = s.space.objects_near(&area, &mut x.near).is_none();
        }
        if all {
            x.near.clear();
            x.near.extend(
                s.objects
                    .iter()
                    .filter(|(_, o)| o.is_live())
                    .map(|(id, _)| *id),
            );
        }
        x.near.sort_unstable();
        x.near.dedup();
        let mut buf = [0u8; crate::wire::OBJECT_HEAD_LEN];
        for id in &x.near {
            let Some(obj) = s.objects.get_mut(id).filter(|o| o.is_live()) else {
                continue;
            };
            let pos = obj.viewers.binary_search(&device);
            let saw = !fresh && (old.is_everything() || pos.is_ok());
            let sees = area.contains(obj.layer, obj.fields.translation);
            match (indexed && sees, pos) {
                (true, Err(k)) => obj.viewers.insert(k, device),
                (false, Ok(k)) => {
                    obj.viewers.remove(k);
                }
                _ => {}
            }
            if sees && !saw {
                x.entered.push(*id);
            } else if saw && !sees {
                let n = left_body(obj, *id, &mut buf);
                out.push(
                    EventKind::Direct(Kind::ObjectLeft),
                    scene,
                    device,
                    None,
                    &buf[..n],
                );
                x.gone.push(*id);
            }
        }
    }

    /// Takes `device` (leaving, evicted, revoked) out of the index and every viewers list.
    pub(super) fn forget_view(&mut self, device: u32) {
        let Some((scene, area)) = self.indexed(device) else {
            return;
        };
        let Some(s) = self.scenes.get_mut(&scene) else {
            return;
        };
        s.space.remove_device(device, &area);
        let x = &mut self.scratch;
        x.near.clear();
        if s.space.objects_near(&area, &mut x.near).is_none() {
            x.near.clear();
            x.near.extend(s.objects.keys().copied());
        }
        for id in &x.near {
            if let Some(obj) = s.objects.get_mut(id) {
                if let Ok(k) = obj.viewers.binary_search(&device) {
                    obj.viewers.remove(k);
                }
            }
        }
    }

    /// The objects `device` sees now (all live ones for an everything-device), into
    /// `self.scratch.entered`: what a complete snapshot holds. A bounded area looks only at
    /// the objects of the cells it covers.
    pub(super) fn view_of(&mut self, device: u32) {
        self.scratch.entered.clear();
        let Some(d) = self.devices.get(&device) else {
            return;
        };
        let Some(s) = self.scenes.get(&d.scene) else {
            return;
        };
        let everything = d.area.is_everything();
        let x = &mut self.scratch;
        if !everything && s.space.objects_near(&d.area, &mut x.entered).is_some() {
            x.entered.retain(|id| {
                s.objects
                    .get(id)
                    .is_some_and(|o| o.is_live() && o.viewers.binary_search(&device).is_ok())
            });
            return;
        }
        x.entered.clear();
        x.entered.extend(
            s.objects
                .iter()
                .filter(|(_, o)| {
                    o.is_live() && (everything || o.viewers.binary_search(&device).is_ok())
                })
                .map(|(id, _)| *id),
        );
    }

    /// Rebuilds the index and every object's viewers of `scene` from its sessions and objects
    /// (after a takeover from a mirror, which keeps neither).
    pub(super) fn rebuild_view(&mut self, scene: u32) {
        let cell = self.config.interest_cell;
        let s = super::scene_entry(&mut self.scenes, &self.hasher, scene, cell);
        // Afresh, with this engine's cell size (the mirror's may differ).
        s.space = Space::new(cell, &self.hasher);
        for (id, o) in s.objects.iter_mut() {
            o.viewers.clear();
            if o.is_live() {
                s.space
                    .move_object(*id, None, Some((o.layer, o.fields.translation)));
            }
        }
        for (id, d) in &self.devices {
            if d.scene == scene && d.joined && d.forward.is_none() && !d.area.is_everything() {
                s.space.add_device(*id, &d.area);
            }
        }
        let devices = &self.devices;
        for o in s.objects.values_mut().filter(|o| o.is_live()) {
            let (layer, p) = (o.layer, o.fields.translation);
            let viewers = &mut o.viewers;
            s.space.candidates(layer, p, |d| {
                if devices
                    .get(&d)
                    .is_some_and(|dev| dev.area.contains(layer, p))
                {
                    viewers.push(d);
                }
            });
            viewers.sort_unstable();
            viewers.dedup();
        }
    }
}
