//! Snapshots: the live objects of a scene for a device that joins, in chunks that each fit a
//! datagram (every chunk's head says how many chunks there are): a device's complete view when
//! it joins or resumes, the objects that entered its view when its area changes.

use std::net::SocketAddr;

use zerocopy::IntoBytes;

use super::{Batch, Engine, EventKind};
use crate::wire::{
    Kind, SnapshotHead, MAX_BODY, MAX_DATAGRAM, SNAPSHOT_HEAD_LEN, SNAPSHOT_INCREMENTAL,
};

impl Engine {
    /// Queues the complete view of `device` (every live object of `scene` for an
    /// everything-device, what its area holds otherwise), in chunks that each fit a datagram.
    pub(super) fn push_snapshot(
        &mut self,
        scene: u32,
        device: u32,
        to: SocketAddr,
        out: &mut Batch,
    ) {
        self.view_of(device);
        self.push_listed(scene, device, to, false, out);
    }

    /// Queues the objects listed in `self.scratch.entered` for `device`: an incremental
    /// snapshot (they entered its view) or the complete view.
    pub(super) fn push_listed(
        &mut self,
        scene: u32,
        device: u32,
        to: SocketAddr,
        incremental: bool,
        out: &mut Batch,
    ) {
        self.snapshots = self.snapshots.wrapping_add(1);
        let snapshot_id = self.snapshots;
        let ids = &self.scratch.entered;
        let objects = self.scenes.get(&scene).map(|s| &s.objects);
        let live = || {
            ids.iter().filter_map(|id| {
                let o = objects?.get(id)?;
                o.is_live().then_some((id, o))
            })
        };
        // Pass 1 counts the chunks, pass 2 writes them with the count in every head.
        let mut chunks = 1u16;
        let mut used = SNAPSHOT_HEAD_LEN;
        for (id, obj) in live() {
            let len = obj.as_body(*id).len();
            if used + len > MAX_BODY {
                chunks = chunks.saturating_add(1);
                used = SNAPSHOT_HEAD_LEN;
            }
            used += len;
        }
        let flags = if incremental { SNAPSHOT_INCREMENTAL } else { 0 };
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut index = 0u16;
        let mut count = 0u16;
        used = SNAPSHOT_HEAD_LEN;
        let mut flush = |buf: &mut [u8; MAX_DATAGRAM], index: u16, count: u16, used: usize| {
            let head = SnapshotHead {
                snapshot_id: snapshot_id.into(),
                chunk_index: index.into(),
                chunk_count: chunks.into(),
                object_count: count.into(),
                flags: flags.into(),
            };
            buf[..SNAPSHOT_HEAD_LEN].copy_from_slice(head.as_bytes());
            let kind = EventKind::Direct(Kind::Snapshot);
            out.push(kind, scene, device, Some(to), &buf[..used]);
        };
        for (id, obj) in live() {
            let body = obj.as_body(*id);
            if used + body.len() > MAX_BODY {
                flush(&mut buf, index, count, used);
                index += 1;
                count = 0;
                used = SNAPSHOT_HEAD_LEN;
            }
            // Fits: every body is at most MAX_BODY - SNAPSHOT_HEAD_LEN (MAX_PAYLOAD bound).
            if let Ok(n) = body.emit(&mut buf[used..MAX_BODY]) {
                used += n;
                count += 1;
            }
        }
        flush(&mut buf, index, count, used);
    }
}
