//! What a device receives, decoded into owned values.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crate::net::unix_ns;
use crate::wire::bundle;
use crate::wire::{
    parse_exact, Datagram, Fields, KeepaliveAckBody, Kind, ObjectBody, PeerLeftBody, RedirectBody,
    RejectBody, RejectReason, SnapshotHead, WireError, LEAVE_TIMED_OUT, SNAPSHOT_INCREMENTAL,
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
    /// The object's layer.
    pub layer: u8,
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
            layer: b.layer,
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
    /// Revision 2: the object left this device's interest area (it still exists; the record
    /// carries id, layer and the write that moved it out). Forget it until it comes back.
    Left(ObjectRecord),
    /// One chunk of a snapshot. Complete (`incremental` false, after a join or a pause): the
    /// chunks together are the device's whole view, and an object absent from every chunk is
    /// not in it. Incremental (revision 2, after an interest change): objects that entered.
    Snapshot {
        snapshot_id: u32,
        chunk_index: u16,
        chunk_count: u16,
        incremental: bool,
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
    /// Decodes a verified server-to-device datagram into the events it carries (several for a
    /// bundle), appended to `out`. Nothing is appended on error.
    pub fn decode_into(dg: &Datagram<'_>, out: &mut VecDeque<Event>) -> Result<(), WireError> {
        if dg.kind() != Kind::Bundle {
            out.push_back(Event::decode(dg)?);
            return Ok(());
        }
        let start = out.len();
        for entry in bundle::entries(dg.body()) {
            match entry.and_then(|(kind, body)| Event::object(kind, body)) {
                Ok(e) => out.push_back(e),
                Err(e) => {
                    out.truncate(start);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// An object event of `kind` from its body.
    fn object(kind: Kind, body: &[u8]) -> Result<Event, WireError> {
        let record = ObjectRecord::from_body(&ObjectBody::parse(body)?);
        Ok(match kind {
            Kind::ObjectUpdate => Event::Update(record),
            Kind::ObjectOverwrite => Event::Overwrite(record),
            Kind::ObjectDelete => Event::Delete(record),
            Kind::ObjectLeft => Event::Left(record),
            _ => return Err(WireError::Malformed),
        })
    }

    /// Decodes a verified server-to-device datagram that carries one event (not a bundle).
    pub fn decode(dg: &Datagram<'_>) -> Result<Event, WireError> {
        let body = dg.body();
        Ok(match dg.kind() {
            kind @ (Kind::ObjectUpdate
            | Kind::ObjectOverwrite
            | Kind::ObjectDelete
            | Kind::ObjectLeft) => Event::object(kind, body)?,
            Kind::Snapshot => {
                let (head, records) = SnapshotHead::parse(body)?;
                let objects = records
                    .map(|r| r.map(|b| ObjectRecord::from_body(&b)))
                    .collect::<Result<Vec<_>, _>>()?;
                Event::Snapshot {
                    snapshot_id: head.snapshot_id.get(),
                    chunk_index: head.chunk_index.get(),
                    chunk_count: head.chunk_count.get(),
                    incremental: head.flags.get() & SNAPSHOT_INCREMENTAL != 0,
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
            Kind::Join | Kind::Leave | Kind::Keepalive | Kind::Bundle | Kind::Interest => {
                return Err(WireError::Malformed)
            }
        })
    }
}
