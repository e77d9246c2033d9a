//! Wire format of zonecast datagrams (pure: no sockets, no clock, no allocation).
//!
//! Every datagram is `header (32 bytes) | body (body_len bytes) | tag (16 bytes)`, all integers
//! and floats little-endian, parsed in place with zerocopy. docs/PROTOCOL.md is the normative
//! description; this module is its implementation.
//!
//! Parsing never panics on any input: every length is checked before it is used, and errors
//! carry a stable reason name (`WireError::reason`) that becomes a drop-counter label.

mod auth;
mod bodies;
pub mod bundle;
mod header;
pub mod interest;
mod object;
pub mod probe;

pub use auth::{nonce, Direction, SessionKey};
pub use bodies::{
    parse_exact, JoinBody, KeepaliveAckBody, PeerLeftBody, RedirectBody, RejectBody, RejectReason,
    SnapshotHead, SnapshotRecords, LEAVE_TIMED_OUT, LEAVE_VOLUNTARY, SNAPSHOT_HEAD_LEN,
    SNAPSHOT_INCREMENTAL,
};
pub use header::{seal, Datagram, Header, HeaderFields};
pub use object::{
    encoded_len, stamp_origin, Fields, ObjectBody, ObjectHead, LAYER_BITS, MASK_ALL, MASK_PAYLOAD,
    MASK_ROTATION, MASK_SCALE, MASK_TRANSLATION, OBJECT_HEAD_LEN,
};

/// First two bytes of every datagram: ASCII "ZC".
pub const MAGIC: [u8; 2] = *b"ZC";
/// Protocol version carried in byte 2. A receiver drops versions it does not speak.
pub const VERSION: u8 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 32;
/// Size of the authentication tag (ChaCha20-Poly1305).
pub const TAG_LEN: usize = 16;
/// Largest datagram zonecast sends or accepts. 1200 bytes fits in the IPv6 minimum MTU (1280)
/// minus IPv6 (40) and UDP (8) headers with room for a tunnel, the same bound QUIC uses.
pub const MAX_DATAGRAM: usize = 1200;
/// Largest body: what is left of `MAX_DATAGRAM` after header and tag.
pub const MAX_BODY: usize = MAX_DATAGRAM - HEADER_LEN - TAG_LEN;
/// Largest opaque application payload of one object.
pub const MAX_PAYLOAD: usize = 1024;
/// Sequence numbers must stay below 2^56: the low 7 bytes go into the AEAD nonce.
pub const MAX_SEQ: u64 = (1 << 56) - 1;

/// Datagram kinds. The numeric values are the wire values of header byte 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Device joins its scene (body: [`JoinBody`]). Answered with a snapshot.
    Join = 1,
    /// Device leaves its scene (empty body).
    Leave = 2,
    /// Device is alive (empty body). Answered with `KeepaliveAck`.
    Keepalive = 3,
    /// Server answers a keepalive (body: [`KeepaliveAckBody`]).
    KeepaliveAck = 4,
    /// Partial object update (body: [`ObjectBody`], fields chosen by the mask).
    ObjectUpdate = 5,
    /// Full object state: fields absent from the mask take their defaults.
    ObjectOverwrite = 6,
    /// Object deletion (body: [`ObjectBody`] with an empty mask).
    ObjectDelete = 7,
    /// One chunk of the scene's current objects (body: [`SnapshotHead`] + records).
    Snapshot = 8,
    /// "Your endpoint is now X" (body: [`RedirectBody`]).
    Redirect = 9,
    /// A device's datagram was refused (body: [`RejectBody`]).
    Reject = 10,
    /// Another device left the scene (body: [`PeerLeftBody`]).
    PeerLeft = 11,
    /// Several object datagrams for one device in one (body: [`bundle`] entries).
    Bundle = 12,
    // 13 and 14 are the controller's probe and its ack (`probe`), never device datagrams.
    /// Revision 2: an object left the device's interest area (body: [`ObjectBody`] with an
    /// empty mask; its origin fields are the write that moved it out).
    ObjectLeft = 15,
    /// Revision 2: the device's new interest area (body: [`interest::Area`]).
    Interest = 16,
}

impl Kind {
    /// Decodes header byte 3.
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Join,
            2 => Kind::Leave,
            3 => Kind::Keepalive,
            4 => Kind::KeepaliveAck,
            5 => Kind::ObjectUpdate,
            6 => Kind::ObjectOverwrite,
            7 => Kind::ObjectDelete,
            8 => Kind::Snapshot,
            9 => Kind::Redirect,
            10 => Kind::Reject,
            11 => Kind::PeerLeft,
            12 => Kind::Bundle,
            15 => Kind::ObjectLeft,
            16 => Kind::Interest,
            _ => return None,
        })
    }

    /// Whether a datagram of this kind may travel in `dir`.
    pub fn allowed(self, dir: Direction) -> bool {
        use Kind::*;
        match dir {
            Direction::ToServer => matches!(
                self,
                Join | Leave | Keepalive | ObjectUpdate | ObjectOverwrite | ObjectDelete | Interest
            ),
            Direction::ToDevice => !matches!(self, Join | Leave | Keepalive | Interest),
        }
    }

    /// Whether the body is an [`ObjectBody`] a device writes (update, overwrite, delete).
    pub fn is_object(self) -> bool {
        matches!(
            self,
            Kind::ObjectUpdate | Kind::ObjectOverwrite | Kind::ObjectDelete
        )
    }
}

/// Why a datagram could not be parsed or authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Larger than [`MAX_DATAGRAM`].
    Oversized,
    /// Shorter than a header plus a tag, or a body shorter than its fixed part.
    Truncated,
    /// Wrong magic, unknown version or kind, inconsistent lengths, bad field values.
    Malformed,
    /// The tag does not verify under the device's session key.
    BadTag,
    /// The output buffer cannot hold what is being written.
    NoRoom,
}

impl WireError {
    /// Stable, low-cardinality name (used as a metric label).
    pub fn reason(self) -> &'static str {
        match self {
            WireError::Oversized => "oversized",
            WireError::Truncated => "truncated",
            WireError::Malformed => "malformed",
            WireError::BadTag => "bad_tag",
            WireError::NoRoom => "no_room",
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for WireError {}

#[cfg(test)]
mod tests;
