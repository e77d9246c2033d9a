//! A device's view of its scene: the objects it holds, kept by applying what it receives the
//! way docs/PROTOCOL.md says (pure).
//!
//! Updates change the fields their mask selects; overwrites and snapshot records replace an
//! object; deletes and `Left` notices remove it; an incremental snapshot adds what entered; a
//! complete snapshot, once every chunk of it arrived, *replaces* the view (what it lacks is not
//! in the view any more), with whatever arrived meanwhile applied on top. A partial update of
//! an object the view does not hold cannot be applied (its other fields are unknown): it is
//! counted in [`View::gaps`] and the next complete snapshot (a pair sends one every few
//! seconds to a device with an interest area) brings the object in full. The device's own
//! objects are not sent back to it, so they are not in its view.

use std::collections::{BTreeMap, BTreeSet};

use super::{Event, ObjectRecord};
use crate::wire::MASK_PAYLOAD;

/// The objects a device holds.
#[derive(Clone, Debug, Default)]
pub struct View {
    objects: BTreeMap<u64, ObjectRecord>,
    /// A complete snapshot being received: its id, the chunks in, their count, and the view it
    /// will become.
    staging: Option<Staging>,
    gaps: u64,
}

#[derive(Clone, Debug)]
struct Staging {
    snapshot_id: u32,
    chunks: BTreeSet<u16>,
    count: u16,
    objects: BTreeMap<u64, ObjectRecord>,
}

impl View {
    pub fn new() -> View {
        View::default()
    }

    /// The object `id`, if the view holds it.
    pub fn get(&self, id: u64) -> Option<&ObjectRecord> {
        self.objects.get(&id)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Object ids and states, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &ObjectRecord)> {
        self.objects.iter()
    }

    /// Partial updates of objects the view did not hold (so far).
    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    /// Applies one received event (events that concern no object change nothing).
    pub fn apply(&mut self, e: &Event) {
        match e {
            Event::Update(r) => {
                let known = apply_update(&mut self.objects, r);
                if let Some(s) = self.staging.as_mut() {
                    apply_update(&mut s.objects, r);
                }
                if !known {
                    self.gaps += 1;
                }
            }
            Event::Overwrite(r) => self.each(|m| {
                m.insert(r.object, r.clone());
            }),
            Event::Delete(r) | Event::Left(r) => self.each(|m| {
                m.remove(&r.object);
            }),
            Event::Snapshot {
                incremental: true,
                objects,
                ..
            } => {
                for r in objects {
                    self.each(|m| {
                        m.insert(r.object, r.clone());
                    });
                }
            }
            Event::Snapshot {
                snapshot_id,
                chunk_index,
                chunk_count,
                objects,
                ..
            } => self.complete_chunk(*snapshot_id, *chunk_index, *chunk_count, objects),
            _ => {}
        }
    }

    fn each(&mut self, mut f: impl FnMut(&mut BTreeMap<u64, ObjectRecord>)) {
        f(&mut self.objects);
        if let Some(s) = self.staging.as_mut() {
            f(&mut s.objects);
        }
    }

    fn complete_chunk(&mut self, id: u32, index: u16, count: u16, objects: &[ObjectRecord]) {
        let fresh = self
            .staging
            .as_ref()
            .is_none_or(|s| s.snapshot_id != id || s.count != count);
        if fresh {
            self.staging = Some(Staging {
                snapshot_id: id,
                chunks: BTreeSet::new(),
                count,
                objects: BTreeMap::new(),
            });
        }
        let Some(s) = self.staging.as_mut() else {
            return;
        };
        if !s.chunks.insert(index) {
            return;
        }
        for r in objects {
            s.objects.insert(r.object, r.clone());
        }
        if s.chunks.len() == usize::from(s.count) {
            if let Some(s) = self.staging.take() {
                self.objects = s.objects;
            }
        }
    }
}

/// Applies a partial update to `m`; false if `m` did not hold the object.
fn apply_update(m: &mut BTreeMap<u64, ObjectRecord>, r: &ObjectRecord) -> bool {
    let Some(o) = m.get_mut(&r.object) else {
        return false;
    };
    o.fields.merge(r.mask, &r.fields);
    if r.mask & MASK_PAYLOAD != 0 {
        o.payload.clone_from(&r.payload);
    }
    o.layer = r.layer;
    o.origin_device = r.origin_device;
    o.origin_seq = r.origin_seq;
    o.origin_timestamp_ns = r.origin_timestamp_ns;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Fields, MASK_ALL, MASK_TRANSLATION};

    fn rec(object: u64, mask: u8, x: f32) -> ObjectRecord {
        ObjectRecord {
            object,
            origin_device: 9,
            origin_seq: 1,
            origin_timestamp_ns: 1,
            mask,
            layer: 0,
            fields: Fields {
                translation: [x, 0.0, 0.0],
                ..Fields::default()
            },
            payload: Vec::new(),
        }
    }

    fn snapshot(
        id: u32,
        index: u16,
        count: u16,
        incremental: bool,
        objects: Vec<ObjectRecord>,
    ) -> Event {
        Event::Snapshot {
            snapshot_id: id,
            chunk_index: index,
            chunk_count: count,
            incremental,
            objects,
        }
    }

    #[test]
    fn events_keep_the_view_and_a_complete_snapshot_replaces_it_once_whole() {
        let mut v = View::new();
        v.apply(&snapshot(
            1,
            0,
            1,
            false,
            vec![rec(1, MASK_ALL, 1.0), rec(2, MASK_ALL, 2.0)],
        ));
        assert_eq!(v.len(), 2);
        v.apply(&Event::Update(rec(1, MASK_TRANSLATION, 5.0)));
        assert_eq!(v.get(1).unwrap().fields.translation[0], 5.0);
        v.apply(&Event::Update(rec(3, MASK_TRANSLATION, 5.0)));
        assert_eq!(
            (v.get(3), v.gaps()),
            (None, 1),
            "a partial update of an unknown object"
        );
        v.apply(&Event::Left(rec(2, 0, 0.0)));
        v.apply(&Event::Overwrite(rec(4, MASK_ALL, 4.0)));
        v.apply(&snapshot(2, 0, 1, true, vec![rec(5, MASK_ALL, 5.0)]));
        assert_eq!(v.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![1, 4, 5]);
        // A complete snapshot in two chunks: nothing changes until both are in; what came in
        // between applies on top; what it lacks (4, 5) is gone.
        v.apply(&snapshot(3, 1, 2, false, vec![rec(6, MASK_ALL, 6.0)]));
        assert_eq!(v.len(), 3, "half a snapshot replaces nothing");
        v.apply(&Event::Update(rec(6, MASK_TRANSLATION, 7.0)));
        v.apply(&snapshot(3, 0, 2, false, vec![rec(1, MASK_ALL, 1.5)]));
        assert_eq!(v.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![1, 6]);
        assert_eq!(v.get(6).unwrap().fields.translation[0], 7.0);
        assert_eq!(v.get(1).unwrap().fields.translation[0], 1.5);
        v.apply(&Event::Delete(rec(1, 0, 0.0)));
        assert_eq!(v.len(), 1);
    }
}
