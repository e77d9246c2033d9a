//! What a device receives, decoded into owned values.

use std::net::SocketAddr;
use std::time::Duration;

use crate::net::unix_ns;
use crate::wire::{
    parse_exact, Datagram, Fields, KeepaliveAckBody, Kind, ObjectBody, PeerLeftBody, RedirectBody,
    RejectBody, RejectReason, SnapshotHead, WireError, LEAVE_TIMED_OUT,
};

/// One object's state as another device wrote it.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectRecord {
    pub object: u64,
    /// The device that wrote it.
    pub origin_device: u32,
    pub origin_seq: u64,
    /// The writer's clock when it sent the update (nanoseconds since the Unix epoch).
    pub origin_timestamp_ns: u64,
    /// Which fields the update carried (an overwrite or snapshot carries all).
    pub mask: u8,
    pub fields: Fields,
    pub payload: Vec<u8>,
}

impl ObjectRecord {
    fn from_body(b: &ObjectBody<'_>) -> ObjectRecord {
        ObjectRecord {
            object: b.object,
            origin_device: b.origin_device,
            origin_seq: b.origin_seq,
            origin_timestamp_ns: b.origin_timestamp_ns,
            mask: b.mask,
            fields: b.fields,
            payload: b.payload.to_vec(),
        }
    }
}

/// A verified datagram from the pair.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Update(ObjectRecord),
    Overwrite(ObjectRecord),
    /// The object is gone (the record carries only id and origin).
    Delete(ObjectRecord),
    /// One chunk of the scene's state, sent after a join.
    Snapshot {
        snapshot_id: u32,
        chunk_index: u16,
        chunk_count: u16,
        objects: Vec<ObjectRecord>,
    },
    KeepaliveAck {
        echo_seq: u64,
        /// Round trip measured on this device's clock.
        rtt: Duration,
    },
    /// The device now talks to `to` (the client already switched and re-joined).
    Redirect {
        to: SocketAddr,
        epoch: u64,
    },
    /// The pair refused datagram `seq`; `reason` is `None` for a code this client doesn't know.
    Reject {
        reason: Option<RejectReason>,
        seq: u64,
        object: u64,
    },
    PeerLeft {
        device: u32,
        timed_out: bool,
    },
}

impl Event {
    /// Decodes a verified server-to-device datagram.
    pub fn decode(dg: &Datagram<'_>) -> Result<Event, WireError> {
        let body = dg.body();
        Ok(match dg.kind() {
            Kind::ObjectUpdate => Event::Update(ObjectRecord::from_body(&ObjectBody::parse(body)?)),
            Kind::ObjectOverwrite => {
                Event::Overwrite(ObjectRecord::from_body(&ObjectBody::parse(body)?))
            }
            Kind::ObjectDelete => Event::Delete(ObjectRecord::from_body(&ObjectBody::parse(body)?)),
            Kind::Snapshot => {
                let (head, records) = SnapshotHead::parse(body)?;
                let objects = records
                    .map(|r| r.map(|b| ObjectRecord::from_body(&b)))
                    .collect::<Result<Vec<_>, _>>()?;
                Event::Snapshot {
                    snapshot_id: head.snapshot_id.get(),
                    chunk_index: head.chunk_index.get(),
                    chunk_count: head.chunk_count.get(),
                    objects,
                }
            }
            Kind::KeepaliveAck => {
                let b = parse_exact::<KeepaliveAckBody>(body)?;
                let rtt = unix_ns().saturating_sub(b.echo_timestamp_ns.get());
                Event::KeepaliveAck {
                    echo_seq: b.echo_seq.get(),
                    rtt: Duration::from_nanos(rtt),
                }
            }
            Kind::Redirect => {
                let b = parse_exact::<RedirectBody>(body)?;
                Event::Redirect {
                    to: b.endpoint()?,
                    epoch: b.epoch.get(),
                }
            }
            Kind::Reject => {
                let b = parse_exact::<RejectBody>(body)?;
                Event::Reject {
                    reason: RejectReason::from_u8(b.reason),
                    seq: b.ref_seq.get(),
                    object: b.object.get(),
                }
            }
            Kind::PeerLeft => {
                let b = parse_exact::<PeerLeftBody>(body)?;
                Event::PeerLeft {
                    device: b.device.get(),
                    timed_out: b.reason == LEAVE_TIMED_OUT,
                }
            }
            Kind::Join | Kind::Leave | Kind::Keepalive => return Err(WireError::Malformed),
        })
    }
}
