//! Fixed-layout bodies of the non-object kinds: join, keepalive ack, snapshot head, redirect,
//! reject, peer-left. Each parses with [`parse_exact`], which checks the length and never panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use zerocopy::byteorder::little_endian::{F32, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{ObjectBody, WireError};

/// Parses a fixed-layout body that must fill `bytes` exactly.
pub fn parse_exact<T: FromBytes + KnownLayout + Immutable + Unaligned>(
    bytes: &[u8],
) -> Result<&T, WireError> {
    T::ref_from_bytes(bytes).map_err(|_| {
        if bytes.len() < std::mem::size_of::<T>() {
            WireError::Truncated
        } else {
            WireError::Malformed
        }
    })
}

/// Join, revision 1 (8 bytes): the device receives every update of its scene; the radius is
/// ignored. A join whose body is an interest area (`interest::Area`, 16 bytes or more) is
/// revision 2.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct JoinBody {
    pub interest_radius: F32,
    pub reserved: U32,
}

/// Keepalive ack: echoes the keepalive's sequence number and timestamp (for RTT).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct KeepaliveAckBody {
    pub echo_seq: U64,
    pub echo_timestamp_ns: U64,
}

/// Head of a snapshot chunk, followed by `object_count` object bodies back to back.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct SnapshotHead {
    /// Identifies one snapshot; all its chunks share it.
    pub snapshot_id: U32,
    pub chunk_index: U16,
    pub chunk_count: U16,
    pub object_count: U16,
    /// Bit 0 ([`SNAPSHOT_INCREMENTAL`]): the chunks add objects that entered the device's
    /// interest to its view; clear: they are the complete view (what is absent is not in it).
    /// Other bits reserved, zero.
    pub flags: U16,
}

/// Snapshot flag: objects that entered the view, not the whole view (revision 2).
pub const SNAPSHOT_INCREMENTAL: u16 = 1;

pub const SNAPSHOT_HEAD_LEN: usize = 12;
const _: () = assert!(std::mem::size_of::<SnapshotHead>() == SNAPSHOT_HEAD_LEN);

impl SnapshotHead {
    /// Splits a snapshot body into its head and its records.
    pub fn parse(body: &[u8]) -> Result<(&SnapshotHead, SnapshotRecords<'_>), WireError> {
        let (head, rest) = SnapshotHead::ref_from_prefix(body).map_err(|_| WireError::Truncated)?;
        if head.chunk_index.get() >= head.chunk_count.get() {
            return Err(WireError::Malformed);
        }
        let records = SnapshotRecords {
            rest,
            left: head.object_count.get(),
        };
        Ok((head, records))
    }
}

/// Iterates the object records of a snapshot chunk; yields an error (then stops) on a bad one
/// or on bytes left over.
pub struct SnapshotRecords<'a> {
    rest: &'a [u8],
    left: u16,
}

impl<'a> Iterator for SnapshotRecords<'a> {
    type Item = Result<ObjectBody<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            if self.rest.is_empty() {
                return None;
            }
            self.rest = &[];
            return Some(Err(WireError::Malformed));
        }
        match ObjectBody::parse_prefix(self.rest) {
            Ok((body, used)) => {
                self.left -= 1;
                self.rest = &self.rest[used..];
                Some(Ok(body))
            }
            Err(e) => {
                self.left = 0;
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// Redirect: the device's endpoint is now `addr`, under assignment `epoch`.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct RedirectBody {
    pub epoch: U64,
    pub port: U16,
    /// 4 or 6.
    pub family: u8,
    pub reserved: u8,
    /// IPv4 in the first 4 bytes (rest zero), or IPv6.
    pub addr: [u8; 16],
}

impl RedirectBody {
    pub fn new(epoch: u64, to: SocketAddr) -> RedirectBody {
        let mut addr = [0u8; 16];
        let family = match to.ip() {
            IpAddr::V4(v4) => {
                addr[..4].copy_from_slice(&v4.octets());
                4
            }
            IpAddr::V6(v6) => {
                addr.copy_from_slice(&v6.octets());
                6
            }
        };
        RedirectBody {
            epoch: U64::new(epoch),
            port: U16::new(to.port()),
            family,
            reserved: 0,
            addr,
        }
    }

    /// The endpoint, or an error for an unknown family or a zero port.
    pub fn endpoint(&self) -> Result<SocketAddr, WireError> {
        let ip = match self.family {
            4 => IpAddr::V4(Ipv4Addr::new(
                self.addr[0],
                self.addr[1],
                self.addr[2],
                self.addr[3],
            )),
            6 => IpAddr::V6(Ipv6Addr::from(self.addr)),
            _ => return Err(WireError::Malformed),
        };
        if self.port.get() == 0 {
            return Err(WireError::Malformed);
        }
        Ok(SocketAddr::new(ip, self.port.get()))
    }
}

/// Why the server refused an authenticated datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RejectReason {
    /// The object belongs to another device.
    NotOwner = 1,
    /// The device sent an object datagram before joining.
    NotJoined = 2,
    /// The header's scene is not the device's scene.
    WrongScene = 3,
    /// The scene holds as many objects as the pair allows.
    SceneFull = 4,
    /// The body did not parse.
    Malformed = 5,
    /// Delete of an object that does not exist.
    UnknownObject = 6,
}

impl RejectReason {
    pub fn from_u8(v: u8) -> Option<RejectReason> {
        Some(match v {
            1 => RejectReason::NotOwner,
            2 => RejectReason::NotJoined,
            3 => RejectReason::WrongScene,
            4 => RejectReason::SceneFull,
            5 => RejectReason::Malformed,
            6 => RejectReason::UnknownObject,
            _ => return None,
        })
    }
}

/// Reject: the reason, the refused datagram's sequence number and object (0 if none).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct RejectBody {
    pub reason: u8,
    pub reserved: [u8; 7],
    pub ref_seq: U64,
    pub object: U64,
}

impl RejectBody {
    pub fn new(reason: RejectReason, ref_seq: u64, object: u64) -> RejectBody {
        RejectBody {
            reason: reason as u8,
            reserved: [0; 7],
            ref_seq: U64::new(ref_seq),
            object: U64::new(object),
        }
    }
}

/// The device left on its own (Leave datagram).
pub const LEAVE_VOLUNTARY: u8 = 0;
/// The device was silent longer than the eviction timeout.
pub const LEAVE_TIMED_OUT: u8 = 1;

/// Peer left: `device` is no longer in the scene.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct PeerLeftBody {
    pub device: U32,
    /// [`LEAVE_VOLUNTARY`] or [`LEAVE_TIMED_OUT`].
    pub reason: u8,
    pub reserved: [u8; 3],
}
