//! Control-plane replies as types: the controller builds them, clients decode them, serde
//! writes and reads the JSON docs/PROTOCOL.md (part 2) shows. A successful reply is
//! `{"ok": true, ...the fields of one of these}`; clients ignore fields they do not know, so
//! replies can grow.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::request::{Load, MirrorState};
use crate::zones::{Geometry, ZoneInfo};

/// A scene as replies show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneInfo {
    pub id: u32,
    pub name: String,
    pub region: String,
    /// The pair serving it (`null` while its region has no live pair); its home when several
    /// serve its zones.
    pub pair: Option<u32>,
    pub devices: usize,
    /// How many zones it has (1 without a grid).
    #[serde(default = "one")]
    pub zones: u64,
    /// Every pair serving some of its zones, home first, when there are several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pairs: Vec<u32>,
}

fn one() -> u64 {
    1
}

/// One zone of a scene and the pair that serves it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZoneServed {
    #[serde(flatten)]
    pub zone: ZoneInfo,
    pub pair: Option<u32>,
}

/// `scene.create`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneCreated {
    pub scene: SceneInfo,
    pub epoch: u64,
}

/// `scene.list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scenes {
    pub scenes: Vec<SceneInfo>,
}

/// `scene.get`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SceneShown {
    pub scene: SceneInfo,
    /// Its grid, layers and reserved zones.
    #[serde(default)]
    pub geometry: Geometry,
    /// Every zone and who serves it.
    #[serde(default)]
    pub zones: Vec<ZoneServed>,
}

/// `scene.delete`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneDeleted {
    pub scene: u32,
    pub epoch: u64,
}

/// `pair.register`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairRegistered {
    pub pair: u32,
    pub epoch: u64,
    pub heartbeat_ms: u64,
    pub dead_after_ms: u64,
}

/// A device session a pair must serve.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionGrant {
    pub device: u32,
    pub scene: u32,
    /// The session key, 64 hex characters.
    pub key: String,
}

/// A primary this pair stands by for: its replication stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorTarget {
    pub pair: u32,
    pub bus: String,
    /// The stream's Noise public key (Z85), when it is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A scene whose zones several pairs serve, as one of them sees it: the zones it serves and the
/// pairs serving the others (their streams carry the objects there: the region bus).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SharedScene {
    pub scene: u32,
    /// The scene's zones (so the pair can tell when a device crosses into another's).
    pub geometry: Geometry,
    /// The zones this pair serves.
    pub zones: Vec<u32>,
    pub peers: Vec<ZonePeer>,
}

/// Another pair serving zones of a shared scene.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZonePeer {
    pub pair: u32,
    pub zones: Vec<u32>,
    /// Its replication stream (`null`: it has none, its objects are not seen here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A scene a draining pair hands over: forward its devices to `udp`, redirect them under
/// `epoch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverOrder {
    pub scene: u32,
    pub pair: u32,
    pub udp: String,
    pub epoch: u64,
}

/// What a pair must serve (docs/PROTOCOL.md, `pair.heartbeat`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub scenes: Vec<u32>,
    pub sessions: Vec<SessionGrant>,
    #[serde(default)]
    pub mirrors: Vec<MirrorTarget>,
    #[serde(default)]
    pub handovers: Vec<HandoverOrder>,
    /// Scenes of `scenes` a live draining pair is handing over to this one.
    #[serde(default)]
    pub incoming: Vec<u32>,
    #[serde(default)]
    pub draining: bool,
    /// Scenes of `scenes` whose other zones other pairs serve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<SharedScene>,
    /// Devices this pair hands over to another (they crossed into its zone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<DeviceMove>,
    /// Devices another pair is handing over to this one: their sessions (listed in
    /// `sessions`) come with the hand-over on that pair's stream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arriving: Vec<u32>,
}

/// A device to hand over to pair `pair` at `udp`, redirected under `epoch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMove {
    pub device: u32,
    pub pair: u32,
    pub udp: String,
    pub epoch: u64,
}

/// `pair.heartbeat`: the pair's assignment epoch, and the assignment when the pair's differs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub epoch: u64,
    /// The leadership term of the controller answering: a pair that has seen a higher one
    /// ignores this answer (it comes from a fenced old active).
    #[serde(default)]
    pub term: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<Assignment>,
}

/// Where a scene went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    pub scene: u32,
    /// `null`: no live pair was left in the region.
    pub pair: Option<u32>,
}

/// `pair.drain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairDraining {
    pub pair: u32,
    pub draining: bool,
    pub moved: Vec<Moved>,
    pub epoch: u64,
}

/// `pair.deregister`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairDeregistered {
    pub pair: u32,
    pub moved: Vec<Moved>,
    pub epoch: u64,
}

/// `device.register` (with `key`) and `device.locate`: where a device is homed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceLocation {
    pub device: u32,
    pub scene: u32,
    pub pair: u32,
    /// The pair's UDP endpoint.
    pub udp: String,
    pub epoch: u64,
    /// The session key (64 hex characters), in `device.register` replies only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `device.deregister`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDeregistered {
    pub device: u32,
    pub epoch: u64,
}

/// One region in `cluster.status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionStatus {
    pub name: String,
    pub live_pairs: usize,
    pub dead_pairs: usize,
    pub scenes: usize,
}

/// One pair in `cluster.status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairStatus {
    pub id: u32,
    pub region: String,
    pub udp: String,
    pub capacity: u32,
    pub version: String,
    pub alive: bool,
    pub heartbeat_age_ms: u64,
    /// The silence it is allowed now (the adaptive window, see "Failure detection").
    #[serde(default)]
    pub window_ms: u64,
    pub load: Load,
    pub scenes: Vec<u32>,
    pub devices: usize,
    pub bus: Option<String>,
    pub bus_key: Option<String>,
    pub standby: Option<u32>,
    /// The standby's last word on its mirror of this pair (`null`: nothing yet).
    pub standby_state: Option<MirrorState>,
    pub draining: bool,
}

/// `cluster.status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub epoch: u64,
    pub regions: Vec<RegionStatus>,
    pub pairs: Vec<PairStatus>,
    pub scenes: Vec<SceneInfo>,
    pub devices: usize,
    pub named_devices: usize,
    /// The controller replicas, as the answering one knows them.
    #[serde(default)]
    pub controllers: Vec<ControllerStatus>,
}

/// `discovery`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovered {
    /// This controller's role: `active`, `passive` or `leaving` (handing over).
    pub role: String,
    pub epoch: u64,
    /// The leadership term this controller knows.
    #[serde(default)]
    pub term: u64,
    /// The active controller's endpoint, if known (this one's, when it is active).
    #[serde(default)]
    pub active: Option<String>,
}

/// One controller replica in `cluster.status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerStatus {
    /// Its control endpoint.
    pub endpoint: String,
    /// `active`, `passive` or `leaving`.
    pub role: String,
    pub term: u64,
    /// The last batch of state changes it holds.
    pub seq: u64,
    /// Batches it is behind the active (as the answering controller sees it).
    pub lag: u64,
    /// Milliseconds since the answering controller heard from it (0 for itself).
    pub seen_ms: u64,
}

/// `replica.follow`: what the passive is missing, and the active's view of the pairs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FollowAnswer {
    /// The active's term.
    pub term: u64,
    /// The active's last batch.
    pub seq: u64,
    /// The whole state, when the passive's history does not match the active's (a new
    /// passive, one too far behind, or one that holds batches the active never had).
    pub snapshot: Option<crate::control::store::Snapshot>,
    /// The batches after the passive's `after` (or after the snapshot), in order.
    pub batches: Vec<crate::control::store::Batch>,
    pub live: crate::control::LiveView,
}

/// `controller.step_down`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SteppingDown {
    pub term: u64,
    /// The last batch the passives are to acknowledge before the lock is released.
    pub seq: u64,
}

/// Any successful reply.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    SceneCreated(SceneCreated),
    Scenes(Scenes),
    SceneShown(SceneShown),
    SceneDeleted(SceneDeleted),
    PairRegistered(PairRegistered),
    Heartbeat(HeartbeatReply),
    PairDraining(PairDraining),
    PairDeregistered(PairDeregistered),
    Location(DeviceLocation),
    DeviceDeregistered(DeviceDeregistered),
    Status(Box<ClusterStatus>),
    Discovered(Discovered),
    Followed(Box<FollowAnswer>),
    SteppingDown(SteppingDown),
    Snapshot(Box<crate::control::store::Snapshot>),
}

impl Reply {
    /// The reply body: its fields with `"ok": true`.
    pub fn to_json(&self) -> Value {
        let mut v =
            serde_json::to_value(self).unwrap_or_else(|_| Value::Object(Default::default()));
        if let Value::Object(map) = &mut v {
            map.insert("ok".into(), Value::Bool(true));
        }
        v
    }
}

macro_rules! into_reply {
    ($($t:ty => $v:ident),* $(,)?) => {
        $(impl From<$t> for Reply {
            fn from(r: $t) -> Reply {
                Reply::$v(r.into())
            }
        })*
    };
}

into_reply!(
    SceneCreated => SceneCreated,
    Scenes => Scenes,
    SceneShown => SceneShown,
    SceneDeleted => SceneDeleted,
    PairRegistered => PairRegistered,
    HeartbeatReply => Heartbeat,
    PairDraining => PairDraining,
    PairDeregistered => PairDeregistered,
    DeviceLocation => Location,
    DeviceDeregistered => DeviceDeregistered,
    ClusterStatus => Status,
    Discovered => Discovered,
    FollowAnswer => Followed,
    SteppingDown => SteppingDown,
    crate::control::store::Snapshot => Snapshot,
);
