//! Object bodies: the 32-byte object head, then the fields its mask selects, then the payload.
//! Used by ObjectUpdate, ObjectOverwrite, ObjectDelete and by snapshot records.

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{WireError, MAX_PAYLOAD};

pub const MASK_TRANSLATION: u8 = 1;
pub const MASK_ROTATION: u8 = 2;
pub const MASK_SCALE: u8 = 4;
pub const MASK_PAYLOAD: u8 = 8;
pub const MASK_ALL: u8 = MASK_TRANSLATION | MASK_ROTATION | MASK_SCALE | MASK_PAYLOAD;
/// The bits of an object head's flags that hold the object's layer (revision 2; a revision-1
/// writer sends zero, layer 0). The other bits are reserved, zero.
pub const LAYER_BITS: u8 = 0b111;

/// Fixed part of an object body (see docs/PROTOCOL.md, "Object body").
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct ObjectHead {
    pub object: U64,
    /// Device whose update this is. Devices send 0; the server fills it in.
    pub origin_device: U32,
    pub mask: u8,
    /// Bits 0-2: the object's layer ([`LAYER_BITS`]); the rest reserved, zero.
    pub flags: u8,
    pub payload_len: U16,
    /// The origin datagram's sequence number. Devices send 0; the server fills it in.
    pub origin_seq: U64,
    /// The origin datagram's timestamp. Devices send 0; the server fills it in.
    pub origin_timestamp_ns: U64,
}

pub const OBJECT_HEAD_LEN: usize = 32;
const _: () = assert!(std::mem::size_of::<ObjectHead>() == OBJECT_HEAD_LEN);

/// An object's spatial state. Rotation is a quaternion (x, y, z, w).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fields {
    pub translation: [f32; 3],
    pub rotation: [f32; 4],
    pub scale: [f32; 3],
}

impl Default for Fields {
    /// The state fields absent from an overwrite take: origin, identity rotation, unit scale.
    fn default() -> Fields {
        Fields {
            translation: [0.0; 3],
            rotation: [0.0, 0.0, 0.0, 1.0],
            scale: [1.0; 3],
        }
    }
}

impl Fields {
    /// Takes the fields of `other` that `mask` selects (translation, rotation, scale): what a
    /// partial update does to an object's state.
    pub fn merge(&mut self, mask: u8, other: &Fields) {
        if mask & MASK_TRANSLATION != 0 {
            self.translation = other.translation;
        }
        if mask & MASK_ROTATION != 0 {
            self.rotation = other.rotation;
        }
        if mask & MASK_SCALE != 0 {
            self.scale = other.scale;
        }
    }
}

/// A decoded object body. Fields whose mask bit is clear hold their defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ObjectBody<'a> {
    pub object: u64,
    pub origin_device: u32,
    pub origin_seq: u64,
    pub origin_timestamp_ns: u64,
    pub mask: u8,
    /// The object's layer (0..8): which of the scene's grids it lives in.
    pub layer: u8,
    pub fields: Fields,
    pub payload: &'a [u8],
}

impl<'a> ObjectBody<'a> {
    /// A body for `object` carrying `fields` and `payload` under `mask`, origin left zero.
    pub fn new(object: u64, mask: u8, fields: Fields, payload: &'a [u8]) -> ObjectBody<'a> {
        ObjectBody {
            object,
            origin_device: 0,
            origin_seq: 0,
            origin_timestamp_ns: 0,
            mask,
            layer: 0,
            fields,
            payload,
        }
    }

    /// Encoded size.
    pub fn len(&self) -> usize {
        encoded_len(self.mask, self.payload.len())
    }

    /// Always false: a body has at least its head.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Parses a body that must fill `bytes` exactly.
    pub fn parse(bytes: &'a [u8]) -> Result<ObjectBody<'a>, WireError> {
        let (body, used) = ObjectBody::parse_prefix(bytes)?;
        if used != bytes.len() {
            return Err(WireError::Malformed);
        }
        Ok(body)
    }

    /// Parses one body at the front of `bytes`; returns it and the bytes it used.
    pub fn parse_prefix(bytes: &'a [u8]) -> Result<(ObjectBody<'a>, usize), WireError> {
        let (head, rest) = ObjectHead::ref_from_prefix(bytes).map_err(|_| WireError::Truncated)?;
        let mask = head.mask;
        let payload_len = usize::from(head.payload_len.get());
        if mask & !MASK_ALL != 0
            || head.flags & !LAYER_BITS != 0
            || payload_len > MAX_PAYLOAD
            || (mask & MASK_PAYLOAD == 0 && payload_len != 0)
        {
            return Err(WireError::Malformed);
        }
        let need = encoded_len(mask, payload_len);
        if bytes.len() < need {
            return Err(WireError::Truncated);
        }
        let mut floats = Floats { rest, ok: true };
        let mut fields = Fields::default();
        if mask & MASK_TRANSLATION != 0 {
            fields.translation = floats.take();
        }
        if mask & MASK_ROTATION != 0 {
            fields.rotation = floats.take();
        }
        if mask & MASK_SCALE != 0 {
            fields.scale = floats.take();
        }
        if !floats.ok {
            return Err(WireError::Malformed);
        }
        let payload = &floats.rest[..payload_len];
        let body = ObjectBody {
            object: head.object.get(),
            origin_device: head.origin_device.get(),
            origin_seq: head.origin_seq.get(),
            origin_timestamp_ns: head.origin_timestamp_ns.get(),
            mask,
            layer: head.flags & LAYER_BITS,
            fields,
            payload,
        };
        Ok((body, need))
    }

    /// Writes the body at the front of `out`; returns its length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let len = self.len();
        if out.len() < len || self.payload.len() > MAX_PAYLOAD {
            return Err(WireError::NoRoom);
        }
        let payload = if self.mask & MASK_PAYLOAD != 0 {
            self.payload
        } else {
            &[]
        };
        let head = ObjectHead {
            object: U64::new(self.object),
            origin_device: U32::new(self.origin_device),
            mask: self.mask & MASK_ALL,
            flags: self.layer & LAYER_BITS,
            payload_len: U16::new(payload.len() as u16),
            origin_seq: U64::new(self.origin_seq),
            origin_timestamp_ns: U64::new(self.origin_timestamp_ns),
        };
        out[..OBJECT_HEAD_LEN].copy_from_slice(head.as_bytes());
        let mut at = OBJECT_HEAD_LEN;
        let mut put = |values: &[f32]| {
            for v in values {
                out[at..at + 4].copy_from_slice(&v.to_le_bytes());
                at += 4;
            }
        };
        if self.mask & MASK_TRANSLATION != 0 {
            put(&self.fields.translation);
        }
        if self.mask & MASK_ROTATION != 0 {
            put(&self.fields.rotation);
        }
        if self.mask & MASK_SCALE != 0 {
            put(&self.fields.scale);
        }
        out[at..at + payload.len()].copy_from_slice(payload);
        Ok(at + payload.len())
    }
}

/// Encoded size of a body with `mask` and a payload of `payload_len` bytes.
pub fn encoded_len(mask: u8, payload_len: usize) -> usize {
    let mut len = OBJECT_HEAD_LEN;
    if mask & MASK_TRANSLATION != 0 {
        len += 12;
    }
    if mask & MASK_ROTATION != 0 {
        len += 16;
    }
    if mask & MASK_SCALE != 0 {
        len += 12;
    }
    len + payload_len
}

/// Writes the origin fields into an encoded body in place (the server stamps who sent it).
pub fn stamp_origin(body: &mut [u8], device: u32, seq: u64, timestamp_ns: u64) {
    if let Ok((head, _)) = ObjectHead::mut_from_prefix(body) {
        head.origin_device = U32::new(device);
        head.origin_seq = U64::new(seq);
        head.origin_timestamp_ns = U64::new(timestamp_ns);
    }
}

/// Reads little-endian f32s; marks itself not ok on a non-finite value. Lengths are checked by
/// the caller before use.
struct Floats<'a> {
    rest: &'a [u8],
    ok: bool,
}

impl<'a> Floats<'a> {
    fn take<const N: usize>(&mut self) -> [f32; N] {
        let mut out = [0f32; N];
        for v in out.iter_mut() {
            let (b, rest) = self.rest.split_at(4);
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            self.ok &= v.is_finite();
            self.rest = rest;
        }
        out
    }
}
