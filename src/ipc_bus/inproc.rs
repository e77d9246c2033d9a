//! In-process bus: bounded crossbeam channels carrying whole batches, one per subscriber,
//! plus a return channel that recycles drained batches (no allocation in steady state).
//!
//! A full channel blocks the publisher (back-pressure): inside one process, dropping events
//! would lose session and membership changes, whereas blocking ingest lets the kernel's socket
//! buffer absorb a burst and count what it cannot (`RcvbufErrors`).

use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

use super::{Batch, BusError, Publisher, Subscriber, Topic};

/// Events and arena bytes a fresh batch reserves.
const BATCH_EVENTS: usize = 64;
const BATCH_BYTES: usize = 16 * 1024;

/// Builder: create subscribers first, then take the publisher.
pub struct InprocBus {
    capacity: usize,
    subs: Vec<(Sender<Batch>, Vec<Topic>)>,
    recycle_tx: Sender<Batch>,
    recycle_rx: Receiver<Batch>,
}

impl InprocBus {
    /// A bus whose subscriber queues hold `capacity` batches each.
    pub fn new(capacity: usize) -> InprocBus {
        let (recycle_tx, recycle_rx) = bounded(capacity.max(1) * 2);
        InprocBus {
            capacity: capacity.max(1),
            subs: Vec::new(),
            recycle_tx,
            recycle_rx,
        }
    }

    pub fn subscribe(&mut self, topics: &[Topic]) -> InprocSubscriber {
        let (tx, rx) = bounded(self.capacity);
        self.subs.push((tx, topics.to_vec()));
        InprocSubscriber {
            rx,
            recycle: self.recycle_tx.clone(),
        }
    }

    pub fn publisher(self) -> InprocPublisher {
        InprocPublisher {
            subs: self.subs,
            recycle: self.recycle_rx,
        }
    }
}

pub struct InprocPublisher {
    subs: Vec<(Sender<Batch>, Vec<Topic>)>,
    recycle: Receiver<Batch>,
}

impl InprocPublisher {
    fn fresh(&self) -> Batch {
        match self.recycle.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => Batch::with_capacity(BATCH_EVENTS, BATCH_BYTES),
        }
    }
}

impl Publisher for InprocPublisher {
    fn publish(&mut self, batch: Batch) -> Result<Batch, BusError> {
        let whole = |topics: &[Topic]| topics.contains(&Topic::All);
        if let [(tx, topics)] = self.subs.as_slice() {
            if whole(topics) {
                tx.send(batch).map_err(|_| BusError::Closed)?;
                return Ok(self.fresh());
            }
        }
        // Several subscribers or narrower topics: each gets its own filtered copy.
        let mut delivered = false;
        for (tx, topics) in &self.subs {
            let mut copy = self.fresh();
            for (e, data) in batch.iter() {
                if topics.iter().any(|t| t.matches(e.kind, e.scene)) {
                    copy.push(e.kind, e.scene, e.device, e.addr, data);
                }
            }
            if !copy.is_empty() {
                delivered |= tx.send(copy).is_ok();
            } else {
                delivered |= true;
            }
        }
        if !delivered && !self.subs.is_empty() {
            return Err(BusError::Closed);
        }
        let mut batch = batch;
        batch.clear();
        Ok(batch)
    }
}

pub struct InprocSubscriber {
    rx: Receiver<Batch>,
    recycle: Sender<Batch>,
}

impl Subscriber for InprocSubscriber {
    fn recv(&mut self, timeout: Duration) -> Result<Option<Batch>, BusError> {
        match self.rx.recv_timeout(timeout) {
            Ok(b) => Ok(Some(b)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(BusError::Closed),
        }
    }

    fn recycle(&mut self, batch: Batch) {
        // A full recycle queue just lets the batch go.
        let _ = self.recycle.try_send(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::EventKind;
    use crate::wire::Kind;

    fn relay(b: &mut Batch, scene: u32, byte: u8) {
        b.push(
            EventKind::Relay(Kind::ObjectUpdate),
            scene,
            1,
            None,
            &[byte],
        );
    }

    #[test]
    fn delivers_in_order_and_recycles() {
        let mut bus = InprocBus::new(4);
        let mut sub = bus.subscribe(&[Topic::All]);
        let mut publisher = bus.publisher();
        let mut b = Batch::default();
        relay(&mut b, 1, 10);
        relay(&mut b, 2, 20);
        let b = publisher.publish(b).unwrap();
        assert!(b.is_empty());
        let got = sub.recv(Duration::from_secs(1)).unwrap().unwrap();
        let bytes: Vec<u8> = got.iter().map(|(_, d)| d[0]).collect();
        assert_eq!(bytes, vec![10, 20]);
        sub.recycle(got);
        let again = publisher.publish(Batch::default()).unwrap();
        assert!(again.is_empty());
        assert_eq!(
            sub.recv(Duration::from_millis(10)).unwrap().unwrap().len(),
            0
        );
    }

    #[test]
    fn scene_topics_filter_but_sessions_reach_everyone() {
        let mut bus = InprocBus::new(4);
        let mut one = bus.subscribe(&[Topic::Scene(1)]);
        let mut two = bus.subscribe(&[Topic::Scene(2)]);
        let mut publisher = bus.publisher();
        let mut b = Batch::default();
        b.push(EventKind::Admitted, 9, 5, None, &[0; 32]);
        relay(&mut b, 1, 10);
        relay(&mut b, 2, 20);
        publisher.publish(b).unwrap();
        let t = Duration::from_secs(1);
        let kinds = |b: Batch| b.iter().map(|(e, _)| (e.kind, e.scene)).collect::<Vec<_>>();
        let relay_kind = EventKind::Relay(Kind::ObjectUpdate);
        assert_eq!(
            kinds(one.recv(t).unwrap().unwrap()),
            vec![(EventKind::Admitted, 9), (relay_kind, 1)]
        );
        assert_eq!(
            kinds(two.recv(t).unwrap().unwrap()),
            vec![(EventKind::Admitted, 9), (relay_kind, 2)]
        );
    }

    #[test]
    fn closed_when_subscriber_gone() {
        let mut bus = InprocBus::new(1);
        drop(bus.subscribe(&[Topic::All]));
        let mut publisher = bus.publisher();
        assert_eq!(
            publisher.publish(Batch::default()).unwrap_err(),
            BusError::Closed
        );
    }
}
