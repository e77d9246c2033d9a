//! One object's state and the rules that guard it: single owner, last writer wins (pure).

use std::time::Instant;

use super::DropReason;

use crate::wire::{Fields, ObjectBody, MASK_PAYLOAD, MASK_ROTATION, MASK_SCALE, MASK_TRANSLATION};

/// Position of an update in its object's history: (sender timestamp, sender sequence).
pub type Order = (u64, u64);

/// An object of a scene, or the tombstone of a deleted one.
#[derive(Clone, Debug)]
pub struct Object {
    /// The owning device; `None` after the owner left (the next writer claims it).
    pub owner: Option<u32>,
    /// The device whose update was accepted last.
    pub writer: u32,
    pub order: Order,
    pub fields: Fields,
    pub payload: Vec<u8>,
    /// Set while the object is a tombstone: it was deleted at this instant.
    pub deleted_at: Option<Instant>,
    /// Its layer, as its last write said (see `wire::LAYER_BITS`).
    pub layer: u8,
    /// Devices with a bounded interest area (not everything) that currently see it, sorted:
    /// exactly the joined ones whose area contains it (see `interest`). Kept by the serving
    /// engine only; a mirror rebuilds it when it takes the scene over.
    pub viewers: Vec<u32>,
    /// A proxy: the object lives in a zone another pair serves, and this is that pair's id
    /// (see `scene::proxy`). Devices here cannot write it.
    pub proxy: Option<u32>,
    /// A proxy not confirmed since its origin's stream restarted (swept when it is synced).
    pub stale: bool,
}

impl Object {
    /// A new object created by `device`'s write.
    pub fn new(device: u32) -> Object {
        Object {
            owner: Some(device),
            writer: device,
            order: (0, 0),
            fields: Fields::default(),
            payload: Vec::new(),
            deleted_at: None,
            layer: 0,
            viewers: Vec::new(),
            proxy: None,
            stale: false,
        }
    }

    pub fn is_live(&self) -> bool {
        self.deleted_at.is_none()
    }

    /// Checks that `device` may write at `order`; claims an ownerless object. Ordering is
    /// compared only between writes of one owner: a claim starts a fresh history, so one
    /// device's clock never blocks another's writes.
    pub fn admit(&mut self, device: u32, order: Order) -> Result<(), DropReason> {
        match self.owner {
            None => {
                self.owner = Some(device);
                Ok(())
            }
            Some(owner) if owner != device => Err(DropReason::NotOwner),
            Some(_) if order <= self.order => Err(DropReason::Stale),
            Some(_) => Ok(()),
        }
    }

    /// Applies an admitted update (partial: only masked fields change) or overwrite (full:
    /// unmasked fields reset to defaults). Reuses the payload buffer's capacity.
    pub fn apply(&mut self, device: u32, order: Order, body: &ObjectBody<'_>, overwrite: bool) {
        if overwrite {
            self.fields = Fields::default();
            self.payload.clear();
        }
        self.fields.merge(body.mask, &body.fields);
        if body.mask & MASK_PAYLOAD != 0 {
            self.payload.clear();
            self.payload.extend_from_slice(body.payload);
        }
        self.layer = body.layer;
        self.writer = device;
        self.order = order;
        self.deleted_at = None;
    }

    /// Turns the object into a tombstone that keeps its owner and order, so a reordered older
    /// update cannot bring it back.
    pub fn delete(&mut self, device: u32, order: Order, now: Instant) {
        self.writer = device;
        self.order = order;
        self.deleted_at = Some(now);
        self.payload = Vec::new();
    }

    /// The object as a full-state body (for snapshots).
    pub fn as_body(&self, object: u64) -> ObjectBody<'_> {
        let mut mask = MASK_TRANSLATION | MASK_ROTATION | MASK_SCALE;
        if !self.payload.is_empty() {
            mask |= MASK_PAYLOAD;
        }
        ObjectBody {
            object,
            origin_device: self.writer,
            origin_seq: self.order.1,
            origin_timestamp_ns: self.order.0,
            mask,
            layer: self.layer,
            fields: self.fields,
            payload: &self.payload,
        }
    }
}
