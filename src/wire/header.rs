//! The fixed 32-byte header, the checked view over a whole datagram, and sealing.

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::auth::{Direction, SessionKey};
use super::{
    Kind, WireError, HEADER_LEN, MAGIC, MAX_BODY, MAX_DATAGRAM, MAX_SEQ, TAG_LEN, VERSION,
};

/// The header as it lies on the wire (see docs/PROTOCOL.md, "Header").
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct Header {
    pub magic: [u8; 2],
    pub version: u8,
    pub kind: u8,
    /// Sender device (to server) or recipient device (to device).
    pub device: U32,
    pub scene: U32,
    /// Per-sender, per-direction sequence number, below 2^56.
    pub seq: U64,
    /// Sender's wall clock, nanoseconds since the Unix epoch.
    pub timestamp_ns: U64,
    pub body_len: U16,
    /// Reserved, zero.
    pub flags: U16,
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_LEN);

/// The header's variable fields, for building a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderFields {
    pub kind: Kind,
    pub device: u32,
    pub scene: u32,
    pub seq: u64,
    pub timestamp_ns: u64,
}

/// A datagram whose framing has been checked (not yet its tag).
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    bytes: &'a [u8],
    header: &'a Header,
    kind: Kind,
}

impl<'a> Datagram<'a> {
    /// Checks framing: size bounds, magic, version, kind, body length, reserved flags, sequence
    /// range. Never panics.
    pub fn parse(bytes: &'a [u8]) -> Result<Datagram<'a>, WireError> {
        if bytes.len() > MAX_DATAGRAM {
            return Err(WireError::Oversized);
        }
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(WireError::Truncated);
        }
        let (header, _) = Header::ref_from_prefix(bytes).map_err(|_| WireError::Truncated)?;
        if header.magic != MAGIC || header.version != VERSION || header.flags.get() != 0 {
            return Err(WireError::Malformed);
        }
        let kind = Kind::from_u8(header.kind).ok_or(WireError::Malformed)?;
        if header.seq.get() > MAX_SEQ {
            return Err(WireError::Malformed);
        }
        let body_len = usize::from(header.body_len.get());
        match (HEADER_LEN + body_len + TAG_LEN).cmp(&bytes.len()) {
            std::cmp::Ordering::Greater => return Err(WireError::Truncated),
            std::cmp::Ordering::Less => return Err(WireError::Malformed),
            std::cmp::Ordering::Equal => {}
        }
        Ok(Datagram {
            bytes,
            header,
            kind,
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn header(&self) -> &'a Header {
        self.header
    }

    pub fn device(&self) -> u32 {
        self.header.device.get()
    }

    pub fn scene(&self) -> u32 {
        self.header.scene.get()
    }

    pub fn seq(&self) -> u64 {
        self.header.seq.get()
    }

    pub fn timestamp_ns(&self) -> u64 {
        self.header.timestamp_ns.get()
    }

    pub fn body(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..self.bytes.len() - TAG_LEN]
    }

    /// Verifies the tag under `key` for a datagram travelling in `dir`.
    pub fn verify(&self, key: &SessionKey, dir: Direction) -> Result<(), WireError> {
        if !self.kind.allowed(dir) {
            return Err(WireError::Malformed);
        }
        let split = self.bytes.len() - TAG_LEN;
        let (signed, tag) = self.bytes.split_at(split);
        key.verify(self.device(), dir, self.seq(), signed, tag)
    }
}

/// Completes a datagram whose body the caller already wrote at `buf[HEADER_LEN..][..body_len]`:
/// writes the header in front and the tag behind. Returns the datagram length.
pub fn seal(
    buf: &mut [u8],
    fields: &HeaderFields,
    body_len: usize,
    key: &SessionKey,
    dir: Direction,
) -> Result<usize, WireError> {
    if body_len > MAX_BODY || fields.seq > MAX_SEQ {
        return Err(WireError::Malformed);
    }
    let len = HEADER_LEN + body_len + TAG_LEN;
    if buf.len() < len {
        return Err(WireError::NoRoom);
    }
    let header = Header {
        magic: MAGIC,
        version: VERSION,
        kind: fields.kind as u8,
        device: U32::new(fields.device),
        scene: U32::new(fields.scene),
        seq: U64::new(fields.seq),
        timestamp_ns: U64::new(fields.timestamp_ns),
        // body_len <= MAX_BODY < u16::MAX, checked above.
        body_len: U16::new(body_len as u16),
        flags: U16::new(0),
    };
    buf[..HEADER_LEN].copy_from_slice(header.as_bytes());
    let (signed, rest) = buf.split_at_mut(HEADER_LEN + body_len);
    let tag = key.sign(fields.device, dir, fields.seq, signed);
    rest[..TAG_LEN].copy_from_slice(&tag);
    Ok(len)
}
