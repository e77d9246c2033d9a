//! What a pair's control side asks of its ingest loop: session admits and revokes from the
//! controller's assignment, and the replication moves (mirror, unmirror, promote, hand over).
//! Produced by the assignment tracker (pure), carried to ingest by `udp_ingest::SessionControl`.

use std::net::SocketAddr;

use crate::security::PublicKey;
use crate::wire::SessionKey;

/// A change to what a pair serves, applied by ingest between bursts.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionCommand {
    Admit {
        device: u32,
        scene: u32,
        key: SessionKey,
    },
    Revoke {
        device: u32,
    },
    /// Forget `scene`: it is no longer this pair's (it moved while the pair was declared
    /// dead, or was deleted).
    Drop {
        scene: u32,
    },
    /// Forget every session and object, whatever the controller admitted or a mirror handed
    /// over: the controller fenced this pair off.
    Reset,
    /// Mirror pair `pair` from its replication stream (this pair is its standby); `key`: the
    /// stream's Noise key, when it is encrypted.
    Mirror {
        pair: u32,
        endpoint: String,
        key: Option<PublicKey>,
    },
    /// Stop mirroring `pair`.
    Unmirror {
        pair: u32,
    },
    /// Follow pair `pair`'s stream at `endpoint` as a neighbour (the region bus): it serves
    /// other zones of `scenes`, whose objects there become proxies here. Replaces an earlier
    /// follow of the same pair.
    Follow {
        pair: u32,
        /// This pair's own id (hand-overs of devices name the pair they are for).
        me: u32,
        endpoint: String,
        key: Option<PublicKey>,
        scenes: Vec<u32>,
    },
    /// Stop following `pair`. With `adopt`, this pair serves that pair's zones now (it
    /// failed or drained): the proxies of it still here become this pair's own objects
    /// (what a mirror of it held replaced them first, if this pair stood by for it).
    Unfollow {
        pair: u32,
        adopt: bool,
    },
    /// What this pair serves of `scene` when other pairs serve its other zones (`None`: the
    /// whole scene): devices whose anchor leaves these zones are reported as crossings.
    Zones {
        scene: u32,
        zoning: Option<crate::scene::Zoning>,
    },
    /// Hand `device` over to pair `pair` at `to` (its anchor crossed into that pair's zone and
    /// the controller moved its home there under `epoch`).
    MoveDevice {
        device: u32,
        pair: u32,
        to: SocketAddr,
        epoch: u64,
    },
    /// `device` is being handed over to this pair by another: until its hand-over arrives on
    /// that pair's stream, its datagrams are held, not refused.
    Expect {
        device: u32,
    },
    /// Take `scene` over from a mirror (its pair died) and redirect its devices to `to`.
    /// Mirrors of `serving` are left alone: those pairs still serve their zones of the scene.
    Promote {
        scene: u32,
        to: SocketAddr,
        epoch: u64,
        serving: Vec<u32>,
    },
    /// Hand `scene` over to the pair at `to` (a drain): forward and redirect its devices.
    Handover {
        scene: u32,
        to: SocketAddr,
        epoch: u64,
    },
}
