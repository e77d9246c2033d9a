//! Control-plane messages: JSON requests with an `op` field ([`request`]), JSON replies
//! `{"ok": true, ...}` ([`reply`]) or `{"ok": false, "error": {"code": "...", "message": "..."}}`
//! (here: [`ErrorCode`], [`ControlError`]). Every message is a type at both ends; serde writes
//! and reads the JSON. docs/PROTOCOL.md ("Control plane") documents every op with an example.

pub mod reply;
pub mod request;

use serde_json::{json, Value};

pub use reply::*;
pub use request::{Crossing, Load, MirrorReport, MirrorState, Request};

/// Largest request body the controller reads; larger ones get `too_large`.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Every op, as sent in the `op` field.
pub const OPS: [&str; 16] = [
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
    "replica.follow",
    "controller.step_down",
    "controller.snapshot",
];

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
    /// This controller is a passive replica (or is handing over): writes go to the active,
    /// named in the error's `active` field when known.
    NotActive,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 14] = [
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
        ErrorCode::NotActive,
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
            ErrorCode::NotActive => "not_active",
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
    /// With `not_active`: the active controller's endpoint, when this one knows it.
    pub active: Option<String>,
}

impl ControlError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ControlError {
        ControlError {
            code,
            message: message.into(),
            active: None,
        }
    }

    /// `not_active`, naming the active controller if known.
    pub fn not_active(active: Option<String>, message: impl Into<String>) -> ControlError {
        ControlError {
            active,
            ..ControlError::new(ErrorCode::NotActive, message)
        }
    }

    pub fn to_json(&self) -> Value {
        let mut error = json!({"code": self.code.as_str(), "message": self.message});
        if let Some(a) = &self.active {
            error["active"] = Value::String(a.clone());
        }
        json!({"ok": false, "error": error})
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
    let active = err
        .and_then(|e| e.get("active"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Err(ControlError {
        active,
        ..ControlError::new(code, message)
    })
}
