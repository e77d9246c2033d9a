//! Control-plane messages: JSON requests with an `op` field, JSON replies
//! `{"ok": true, ...}` or `{"ok": false, "error": {"code": "...", "message": "..."}}`.
//! docs/PROTOCOL.md ("Control plane") documents every op with an example.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Largest request body the controller reads; larger ones get `too_large`.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Every op, as sent in the `op` field.
pub const OPS: [&str; 13] = [
    "scene.create",
    "scene.list",
    "scene.get",
    "scene.delete",
    "pair.register",
    "pair.heartbeat",
    "pair.deregister",
    "pair.drain",
    "device.register",
    "device.locate",
    "device.deregister",
    "cluster.status",
    "discovery",
];

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

/// A standby's report on its mirror of one primary, sent with its heartbeats.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MirrorReport {
    pub pair: u32,
    /// `connecting`, `syncing`, `synced` or `lost` (the stream broke without a goodbye:
    /// the primary is probably dead).
    pub state: String,
}

/// A request, decoded. `token` is the cluster token (operator and pair ops) or the device
/// token (device.register, when the controller requires one).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum Request {
    #[serde(rename = "scene.create")]
    SceneCreate {
        token: Option<String>,
        name: String,
        region: String,
    },
    #[serde(rename = "scene.list")]
    SceneList { token: Option<String> },
    #[serde(rename = "scene.get")]
    SceneGet { token: Option<String>, scene: u32 },
    #[serde(rename = "scene.delete")]
    SceneDelete { token: Option<String>, scene: u32 },
    #[serde(rename = "pair.register")]
    PairRegister {
        token: Option<String>,
        region: String,
        /// The UDP endpoint devices send to.
        udp: String,
        capacity: u32,
        version: String,
        /// The pair's replication stream (`tcp://HOST:PORT`), if it offers one: only such a
        /// pair gets a standby.
        #[serde(default)]
        bus: Option<String>,
        /// The stream's Noise public key (Z85) when it is encrypted; standbys get it with the
        /// endpoint. Required by a controller that runs CURVE.
        #[serde(default)]
        bus_key: Option<String>,
    },
    #[serde(rename = "pair.heartbeat")]
    PairHeartbeat {
        token: Option<String>,
        pair: u32,
        /// The assignment epoch the pair applied last (0: none yet).
        epoch: u64,
        #[serde(default)]
        load: Load,
        /// How this pair's mirrors of the pairs it stands by for are doing.
        #[serde(default)]
        mirrors: Vec<MirrorReport>,
    },
    #[serde(rename = "pair.deregister")]
    PairDeregister { token: Option<String>, pair: u32 },
    /// Move every scene of `pair` to its standby (state and devices included) and let the
    /// pair forward stragglers for a grace period, then leave: for rolling upgrades.
    #[serde(rename = "pair.drain")]
    PairDrain { token: Option<String>, pair: u32 },
    #[serde(rename = "device.register")]
    DeviceRegister {
        token: Option<String>,
        scene: u32,
        name: Option<String>,
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
    ClusterStatus { token: Option<String> },
    /// "Who is the controller?": answered by any controller, no token.
    #[serde(rename = "discovery")]
    Discovery {},
}

impl Request {
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
        }
    }
}

/// Error codes of the control plane; stable strings clients can match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not JSON, not an object, a missing or ill-typed field.
    BadRequest,
    UnknownOp,
    /// Missing or wrong token.
    Unauthorized,
    TooLarge,
    UnknownScene,
    UnknownPair,
    UnknownDevice,
    /// A scene of that name already exists.
    Conflict,
    /// The scene's region has no live pair.
    NoPair,
    /// The pair was declared dead or replaced: it must drop its scenes and register again.
    StaleEpoch,
    /// A field value is out of range (empty region, capacity 0, bad endpoint, ...).
    InvalidValue,
    /// Too many registrations from this source: retry after the time in the message.
    RateLimited,
    /// The scene holds as many devices as the controller allows.
    SceneFull,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::BadRequest,
        ErrorCode::UnknownOp,
        ErrorCode::Unauthorized,
        ErrorCode::TooLarge,
        ErrorCode::UnknownScene,
        ErrorCode::UnknownPair,
        ErrorCode::UnknownDevice,
        ErrorCode::Conflict,
        ErrorCode::NoPair,
        ErrorCode::StaleEpoch,
        ErrorCode::InvalidValue,
        ErrorCode::RateLimited,
        ErrorCode::SceneFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnknownScene => "unknown_scene",
            ErrorCode::UnknownPair => "unknown_pair",
            ErrorCode::UnknownDevice => "unknown_device",
            ErrorCode::Conflict => "conflict",
            ErrorCode::NoPair => "no_pair",
            ErrorCode::StaleEpoch => "stale_epoch",
            ErrorCode::InvalidValue => "invalid_value",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::SceneFull => "scene_full",
        }
    }

    /// The code named `s`, if it is one (inverse of `as_str`).
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// A typed error reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlError {
    pub code: ErrorCode,
    pub message: String,
}

impl ControlError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ControlError {
        ControlError {
            code,
            message: message.into(),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"ok": false, "error": {"code": self.code.as_str(), "message": self.message}})
    }
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ControlError {}

/// Decodes a request body: size, JSON, `op`, then the op's fields.
pub fn decode(body: &[u8]) -> Result<Request, ControlError> {
    if body.len() > MAX_REQUEST {
        let msg = format!(
            "request is {} bytes, the limit is {MAX_REQUEST}",
            body.len()
        );
        return Err(ControlError::new(ErrorCode::TooLarge, msg));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ControlError::new(ErrorCode::BadRequest, format!("not JSON: {e}")))?;
    let op = match value.get("op") {
        Some(Value::String(op)) => op.clone(),
        Some(_) => {
            return Err(ControlError::new(
                ErrorCode::BadRequest,
                "`op` must be a string",
            ))
        }
        None if value.is_object() => {
            return Err(ControlError::new(ErrorCode::BadRequest, "missing `op`"))
        }
        None => {
            return Err(ControlError::new(
                ErrorCode::BadRequest,
                "request must be a JSON object",
            ))
        }
    };
    if !OPS.contains(&op.as_str()) {
        let msg = format!("unknown op `{op}`; ops are {}", OPS.join(", "));
        return Err(ControlError::new(ErrorCode::UnknownOp, msg));
    }
    serde_json::from_value(value)
        .map_err(|e| ControlError::new(ErrorCode::BadRequest, format!("{op}: {e}")))
}

/// Wraps a successful reply's fields with `"ok": true`.
pub fn ok(mut fields: Value) -> Value {
    if let Value::Object(map) = &mut fields {
        map.insert("ok".into(), Value::Bool(true));
        return fields;
    }
    json!({"ok": true, "result": fields})
}

/// Splits a reply into its fields or its typed error.
pub fn into_result(reply: Value) -> Result<Value, ControlError> {
    if reply.get("ok") == Some(&Value::Bool(true)) {
        return Ok(reply);
    }
    let err = reply.get("error");
    let code = err
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .and_then(ErrorCode::parse)
        .unwrap_or(ErrorCode::BadRequest);
    let message = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("reply without ok or error")
        .to_string();
    Err(ControlError::new(code, message))
}
