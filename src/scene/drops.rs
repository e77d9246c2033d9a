//! Why ingest drops a datagram, with stable names that label the drop counters.

use crate::wire::WireError;

/// Every reason ingest drops a datagram. Adding one: append, and extend `ALL` and `name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    Oversized,
    Truncated,
    Malformed,
    UnknownDevice,
    BadTag,
    Replay,
    Stale,
    NotOwner,
    NotJoined,
    WrongScene,
    SceneFull,
    UnknownObject,
}

impl DropReason {
    pub const ALL: [DropReason; 12] = [
        DropReason::Oversized,
        DropReason::Truncated,
        DropReason::Malformed,
        DropReason::UnknownDevice,
        DropReason::BadTag,
        DropReason::Replay,
        DropReason::Stale,
        DropReason::NotOwner,
        DropReason::NotJoined,
        DropReason::WrongScene,
        DropReason::SceneFull,
        DropReason::UnknownObject,
    ];

    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Oversized => "oversized",
            DropReason::Truncated => "truncated",
            DropReason::Malformed => "malformed",
            DropReason::UnknownDevice => "unknown_device",
            DropReason::BadTag => "bad_tag",
            DropReason::Replay => "replay",
            DropReason::Stale => "stale",
            DropReason::NotOwner => "not_owner",
            DropReason::NotJoined => "not_joined",
            DropReason::WrongScene => "wrong_scene",
            DropReason::SceneFull => "scene_full",
            DropReason::UnknownObject => "unknown_object",
        }
    }
}

impl From<WireError> for DropReason {
    fn from(e: WireError) -> DropReason {
        match e {
            WireError::Oversized => DropReason::Oversized,
            WireError::Truncated => DropReason::Truncated,
            WireError::BadTag => DropReason::BadTag,
            _ => DropReason::Malformed,
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for DropReason {}

/// One counter per reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::ALL.len()]);

impl DropCounts {
    pub fn add(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
    }

    /// Takes back one count of `reason` (the datagram was held, not dropped, after all).
    pub fn remove(&mut self, reason: DropReason) {
        self.0[reason as usize] = self.0[reason as usize].saturating_sub(1);
    }

    pub fn set(&mut self, reason: DropReason, value: u64) {
        self.0[reason as usize] = value;
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &DropCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}
