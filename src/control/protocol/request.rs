//! Control-plane requests as types: what every client sends, serialized with serde into the
//! JSON docs/PROTOCOL.md (part 2) shows, and decoded by the controller from the same types.

use serde::{Deserialize, Serialize};

use crate::zones::{Grid, Reserved};

/// A device of this pair whose anchor is now in `zone`, which another pair serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crossing {
    pub device: u32,
    pub zone: u32,
}

/// Load figures a pair reports with each heartbeat.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Load {
    /// Device sessions joined to a scene.
    pub joined: u64,
    pub objects: u64,
    /// Datagrams received and sent per second over the last interval.
    pub datagrams_in_per_sec: f64,
    pub datagrams_out_per_sec: f64,
    /// Datagrams dropped by ingest since the pair started.
    pub dropped: u64,
}

/// Where a standby's mirror of one primary stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MirrorState {
    /// Dialing the primary (or re-dialing after it said bye).
    Connecting,
    /// Connected; the checkpoint has not arrived whole yet.
    Syncing,
    /// Holds the primary's state and follows it event by event.
    Synced,
    /// The stream broke without a bye while in sync: the primary died or the network failed.
    /// The mirror keeps what it had (it may be adopted) and the link keeps re-dialing.
    Lost,
}

impl MirrorState {
    pub fn name(self) -> &'static str {
        match self {
            MirrorState::Connecting => "connecting",
            MirrorState::Syncing => "syncing",
            MirrorState::Synced => "synced",
            MirrorState::Lost => "lost",
        }
    }
}

/// A standby's report on its mirror of one primary, sent with its heartbeats. An unknown
/// state is `bad_request`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MirrorReport {
    pub pair: u32,
    pub state: MirrorState,
}

/// A request, decoded. `token` is the cluster token (operator and pair ops) or the device
/// token (device.register, when the controller requires one).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum Request {
    #[serde(rename = "scene.create")]
    SceneCreate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        name: String,
        region: String,
        /// The scene's grid (none: the scene is one zone); see `zones`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grid: Option<Grid>,
        /// Layer names, layer 0 first (none: one layer).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        layers: Vec<String>,
        /// Named boxes served as zones of their own.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        reserved: Vec<Reserved>,
    },
    #[serde(rename = "scene.list")]
    SceneList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    #[serde(rename = "scene.get")]
    SceneGet {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        scene: u32,
    },
    #[serde(rename = "scene.delete")]
    SceneDelete {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        scene: u32,
    },
    #[serde(rename = "pair.register")]
    PairRegister {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        region: String,
        /// The UDP endpoint devices send to.
        udp: String,
        capacity: u32,
        version: String,
        /// The pair's replication stream (`tcp://HOST:PORT`), if it offers one: only such a
        /// pair gets a standby.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bus: Option<String>,
        /// The stream's Noise public key (Z85) when it is encrypted; standbys get it with the
        /// endpoint. Required by a controller that runs CURVE.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bus_key: Option<String>,
    },
    #[serde(rename = "pair.heartbeat")]
    PairHeartbeat {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        pair: u32,
        /// The assignment epoch the pair applied last (0: none yet).
        epoch: u64,
        #[serde(default)]
        load: Load,
        /// How this pair's mirrors of the pairs it stands by for are doing.
        #[serde(default)]
        mirrors: Vec<MirrorReport>,
        /// Devices whose anchor crossed into a zone another pair serves (each reported once).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        crossings: Vec<Crossing>,
    },
    #[serde(rename = "pair.deregister")]
    PairDeregister {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        pair: u32,
    },
    /// Move every scene of `pair` to its standby (state and devices included) and let the
    /// pair forward stragglers for a grace period, then leave: for rolling upgrades.
    #[serde(rename = "pair.drain")]
    PairDrain {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        pair: u32,
    },
    #[serde(rename = "device.register")]
    DeviceRegister {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        scene: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Where the device starts (x, y, z): in a scene whose zones several pairs serve, it
        /// is homed on the pair serving the zone of this point.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        anchor: Option<[f32; 3]>,
    },
    #[serde(rename = "device.locate")]
    DeviceLocate { device: u32 },
    #[serde(rename = "device.deregister")]
    DeviceDeregister {
        device: u32,
        /// The device's session key (hex): only the device may deregister itself.
        key: String,
    },
    #[serde(rename = "cluster.status")]
    ClusterStatus {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// "Who is the controller?": answered by any controller, no token.
    #[serde(rename = "discovery")]
    Discovery {},
    /// A passive controller asks the active for what followed `after` (long poll: answered
    /// when there is something new, or after a short wait with nothing). Asking again is the
    /// acknowledgement that everything up to `after` is durable on the passive.
    #[serde(rename = "replica.follow")]
    ReplicaFollow {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// The passive's own control endpoint (how status and discovery name it).
        name: String,
        /// The last batch the passive holds, and the term it was written under.
        after: u64,
        after_term: u64,
        /// The highest term the passive has seen: an active below it is refused.
        term: u64,
    },
    /// Graceful hand-over: the active stops deciding, lets its passives catch up, releases
    /// the lock (a passive takes it) and follows the new active.
    #[serde(rename = "controller.step_down")]
    ControllerStepDown {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// The whole durable state of the answering replica (disaster recovery: keep the answer
    /// as a file, start a controller with `--restore FILE`). It holds session keys.
    #[serde(rename = "controller.snapshot")]
    ControllerSnapshot {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
}

impl Request {
    /// `scene.create` of a scene that is one zone (no grid, layers or reserved zones).
    pub fn scene_create(token: Option<String>, name: String, region: String) -> Request {
        Request::SceneCreate {
            token,
            name,
            region,
            grid: None,
            layers: Vec::new(),
            reserved: Vec::new(),
        }
    }

    /// The `op` this request was sent as.
    pub fn op(&self) -> &'static str {
        match self {
            Request::SceneCreate { .. } => "scene.create",
            Request::SceneList { .. } => "scene.list",
            Request::SceneGet { .. } => "scene.get",
            Request::SceneDelete { .. } => "scene.delete",
            Request::PairRegister { .. } => "pair.register",
            Request::PairHeartbeat { .. } => "pair.heartbeat",
            Request::PairDeregister { .. } => "pair.deregister",
            Request::PairDrain { .. } => "pair.drain",
            Request::DeviceRegister { .. } => "device.register",
            Request::DeviceLocate { .. } => "device.locate",
            Request::DeviceDeregister { .. } => "device.deregister",
            Request::ClusterStatus { .. } => "cluster.status",
            Request::Discovery {} => "discovery",
            Request::ReplicaFollow { .. } => "replica.follow",
            Request::ControllerStepDown { .. } => "controller.step_down",
            Request::ControllerSnapshot { .. } => "controller.snapshot",
        }
    }
}
