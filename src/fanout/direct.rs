//! The direct bus transport: fanout runs inside the publishing thread. `publish` hands the
//! batch straight to a [`Sender`] and returns it emptied, so a pair is one thread that takes a
//! datagram from recvmmsg to sendmmsg with no hand-off (run to completion). On a busy core this
//! avoids a context switch per burst; the in-process channel transport remains for splitting
//! ingest and fanout across threads.

use std::sync::Arc;

use super::Sender;
use crate::ipc_bus::{BusError, Publisher};
use crate::scene::Batch;
use crate::stats::PairStats;

/// A [`Publisher`] that is the fanout.
pub struct DirectFanout {
    pub sender: Sender,
    pub stats: Arc<PairStats>,
}

impl Publisher for DirectFanout {
    fn publish(&mut self, mut batch: Batch) -> Result<Batch, BusError> {
        self.sender.process(&batch);
        self.sender.publish(&self.stats);
        batch.clear();
        Ok(batch)
    }
}
