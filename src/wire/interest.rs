//! Interest areas: what part of a scene a device wants to receive (protocol revision 2; pure).
//!
//! An [`Area`] is an anchor (a position the device reports, e.g. its avatar or camera) and one
//! [`Shape`] per object layer: nothing, everything, a sphere of a radius around the anchor, or an
//! axis-aligned box of half-extents around it. Body (little-endian, docs/PROTOCOL.md
//! "Interest"): `anchor [f32; 3] | count u8 | reserved [u8; 3] | count x shape`, each shape
//! `kind u8 | reserved [u8; 3] | extent [f32; 3]` (sphere: radius in extent[0], the rest zero;
//! box: half-extents; none and all: zero). Layers past `count` take the shape of none. The same
//! body follows a Join and makes up an Interest datagram; a Keepalive may carry the anchor alone.

use super::WireError;

/// Object layers a scene may use (the layer is 3 bits of an object head's flags).
pub const MAX_LAYERS: usize = 8;
/// Bytes of the fixed part of an interest body (anchor, count, reserved).
pub const AREA_HEAD_LEN: usize = 16;
/// Bytes of one layer's shape.
pub const SHAPE_LEN: usize = 16;
/// Bytes of a keepalive body that carries the anchor.
pub const ANCHOR_LEN: usize = 12;

/// What a device wants of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    /// No object of the layer.
    None,
    /// Every object of the layer, wherever it is (revision 1 behaviour).
    All,
    /// Objects within this distance of the anchor (inclusive).
    Sphere(f32),
    /// Objects within these half-extents of the anchor along x, y and z (inclusive).
    Box([f32; 3]),
}

impl Shape {
    fn code(self) -> (u8, [f32; 3]) {
        match self {
            Shape::None => (0, [0.0; 3]),
            Shape::All => (1, [0.0; 3]),
            Shape::Sphere(r) => (2, [r, 0.0, 0.0]),
            Shape::Box(h) => (3, h),
        }
    }

    /// Half-extents of the box around the anchor that holds the shape; `None` when it is
    /// unbounded (all) or empty (none).
    pub fn reach(self) -> Option<[f32; 3]> {
        match self {
            Shape::Sphere(r) => Some([r; 3]),
            Shape::Box(h) => Some(h),
            Shape::None | Shape::All => None,
        }
    }
}

/// A device's interest: an anchor and a shape per layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Area {
    pub anchor: [f32; 3],
    pub layers: [Shape; MAX_LAYERS],
}

impl Area {
    /// Every object of every layer: what a revision-1 device (8-byte join) receives.
    pub const EVERYTHING: Area = Area {
        anchor: [0.0; 3],
        layers: [Shape::All; MAX_LAYERS],
    };

    /// A sphere of `radius` around `anchor` on layer 0, nothing of the other layers.
    pub fn sphere(anchor: [f32; 3], radius: f32) -> Area {
        let mut layers = [Shape::None; MAX_LAYERS];
        layers[0] = Shape::Sphere(radius);
        Area { anchor, layers }
    }

    /// Whether this area is [`Area::EVERYTHING`] in effect (every layer all).
    pub fn is_everything(&self) -> bool {
        self.layers.iter().all(|s| *s == Shape::All)
    }

    /// Whether a position on `layer` is inside the area.
    pub fn contains(&self, layer: u8, p: [f32; 3]) -> bool {
        let d = [
            p[0] - self.anchor[0],
            p[1] - self.anchor[1],
            p[2] - self.anchor[2],
        ];
        match self.layers.get(usize::from(layer)).copied() {
            Some(Shape::All) => true,
            Some(Shape::Sphere(r)) => d[0] * d[0] + d[1] * d[1] + d[2] * d[2] <= r * r,
            Some(Shape::Box(h)) => d[0].abs() <= h[0] && d[1].abs() <= h[1] && d[2].abs() <= h[2],
            Some(Shape::None) | None => false,
        }
    }

    /// Encoded size (every layer up to the last that is not none).
    pub fn len(&self) -> usize {
        AREA_HEAD_LEN + SHAPE_LEN * self.count()
    }

    /// Always false: an area has at least its head.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn count(&self) -> usize {
        self.layers
            .iter()
            .rposition(|s| *s != Shape::None)
            .map_or(0, |i| i + 1)
    }

    /// Writes the body at the front of `out`; returns its length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let len = self.len();
        if out.len() < len {
            return Err(WireError::NoRoom);
        }
        put_floats(&mut out[..12], &self.anchor);
        out[12] = self.count() as u8;
        out[13..16].fill(0);
        for (i, shape) in self.layers[..self.count()].iter().enumerate() {
            let at = AREA_HEAD_LEN + i * SHAPE_LEN;
            let (code, extent) = shape.code();
            out[at] = code;
            out[at + 1..at + 4].fill(0);
            put_floats(&mut out[at + 4..at + 16], &extent);
        }
        Ok(len)
    }

    /// Parses a body that must fill `bytes` exactly. Non-finite or negative values, unknown
    /// shapes, nonzero reserved bytes and more than [`MAX_LAYERS`] layers are malformed.
    pub fn parse(bytes: &[u8]) -> Result<Area, WireError> {
        if bytes.len() < AREA_HEAD_LEN {
            return Err(WireError::Truncated);
        }
        let anchor = parse_anchor(&bytes[..12])?;
        let count = usize::from(bytes[12]);
        if count > MAX_LAYERS || bytes[13..16] != [0; 3] {
            return Err(WireError::Malformed);
        }
        let need = AREA_HEAD_LEN + count * SHAPE_LEN;
        if bytes.len() != need {
            return Err(if bytes.len() < need {
                WireError::Truncated
            } else {
                WireError::Malformed
            });
        }
        let mut layers = [Shape::None; MAX_LAYERS];
        for (i, layer) in layers.iter_mut().take(count).enumerate() {
            let s = &bytes[AREA_HEAD_LEN + i * SHAPE_LEN..][..SHAPE_LEN];
            let e = floats(&s[4..16]);
            if s[1..4] != [0; 3] || e.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(WireError::Malformed);
            }
            *layer = match (s[0], e) {
                (0, [0.0, 0.0, 0.0]) => Shape::None,
                (1, [0.0, 0.0, 0.0]) => Shape::All,
                (2, [r, 0.0, 0.0]) => Shape::Sphere(r),
                (3, h) => Shape::Box(h),
                _ => return Err(WireError::Malformed),
            };
        }
        Ok(Area { anchor, layers })
    }
}

/// Parses a 12-byte anchor (three finite f32).
pub fn parse_anchor(bytes: &[u8]) -> Result<[f32; 3], WireError> {
    if bytes.len() != ANCHOR_LEN {
        return Err(if bytes.len() < ANCHOR_LEN {
            WireError::Truncated
        } else {
            WireError::Malformed
        });
    }
    let a = floats(bytes);
    if a.iter().any(|v| !v.is_finite()) {
        return Err(WireError::Malformed);
    }
    Ok(a)
}

/// Writes `anchor` as a keepalive body; returns its length.
pub fn emit_anchor(anchor: [f32; 3], out: &mut [u8]) -> Result<usize, WireError> {
    if out.len() < ANCHOR_LEN {
        return Err(WireError::NoRoom);
    }
    put_floats(&mut out[..ANCHOR_LEN], &anchor);
    Ok(ANCHOR_LEN)
}

fn floats(b: &[u8]) -> [f32; 3] {
    let f = |i: usize| f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    [f(0), f(4), f(8)]
}

fn put_floats(out: &mut [u8], v: &[f32; 3]) {
    for (i, x) in v.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_contains() {
        let mut a = Area::sphere([1.0, 2.0, 3.0], 5.0);
        a.layers[2] = Shape::Box([1.0, 2.0, 3.0]);
        let mut buf = [0u8; 256];
        let n = a.emit(&mut buf).unwrap();
        assert_eq!(n, AREA_HEAD_LEN + 3 * SHAPE_LEN);
        assert_eq!(Area::parse(&buf[..n]).unwrap(), a);
        assert!(a.contains(0, [6.0, 2.0, 3.0]), "on the sphere's surface");
        assert!(!a.contains(0, [6.01, 2.0, 3.0]));
        assert!(!a.contains(1, [1.0, 2.0, 3.0]), "layer 1 is none");
        assert!(a.contains(2, [2.0, 0.0, 6.0]) && !a.contains(2, [2.0, 0.0, 6.1]));
        assert!(!a.contains(9, [1.0, 2.0, 3.0]), "no such layer");
        let e = Area::EVERYTHING;
        let n = e.emit(&mut buf).unwrap();
        assert!(Area::parse(&buf[..n]).unwrap().is_everything());
        assert!(e.contains(7, [1e30, -1e30, 0.0]));
    }

    #[test]
    fn the_worked_example_of_docs_protocol_holds() {
        let mut buf = [0u8; 64];
        let n = Area::sphere([1.0, 2.0, 3.0], 10.0).emit(&mut buf).unwrap();
        let hex: Vec<String> = buf[..n].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex.join(" "),
            "00 00 80 3f 00 00 00 40 00 00 40 40 01 00 00 00 \
             02 00 00 00 00 00 20 41 00 00 00 00 00 00 00 00"
        );
        let n = emit_anchor([4.0, 0.0, -2.5], &mut buf).unwrap();
        assert_eq!(&buf[..n], &[0, 0, 0x80, 0x40, 0, 0, 0, 0, 0, 0, 0x20, 0xc0]);
    }

    #[test]
    fn hostile_bodies_are_refused() {
        let a = Area::sphere([0.0; 3], 5.0);
        let mut buf = [0u8; 64];
        let n = a.emit(&mut buf).unwrap();
        assert_eq!(Area::parse(&buf[..n - 1]), Err(WireError::Truncated));
        assert_eq!(Area::parse(&buf[..n + 1]), Err(WireError::Malformed));
        let mut bad = buf;
        bad[12] = 9;
        assert_eq!(Area::parse(&bad[..n]), Err(WireError::Malformed));
        let mut bad = buf;
        bad[20..24].copy_from_slice(&(-1.0f32).to_le_bytes());
        assert_eq!(Area::parse(&bad[..n]), Err(WireError::Malformed));
        let mut bad = buf;
        bad[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(Area::parse(&bad[..n]), Err(WireError::Malformed));
        let mut bad = buf;
        bad[16] = 7;
        assert_eq!(Area::parse(&bad[..n]), Err(WireError::Malformed));
        let mut bad = buf;
        bad[24..28].copy_from_slice(&1.0f32.to_le_bytes());
        assert_eq!(
            Area::parse(&bad[..n]),
            Err(WireError::Malformed),
            "sphere with y"
        );
        assert_eq!(parse_anchor(&[0; 11]), Err(WireError::Truncated));
        assert_eq!(parse_anchor(&[0; 12]), Ok([0.0; 3]));
    }
}
