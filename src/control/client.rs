//! A control-plane client with the "lazy pirate" pattern (zguide ch. 4): every attempt has a
//! timeout; on timeout or error the REQ socket is closed and a new one connects before the next
//! try, so a lost peer never hangs the caller. Used by the pair agent, devices and the CLI.
//! With the controller's public key (`with_server_key`) every socket is a CURVE client: the
//! controller is authenticated by its key and the channel is encrypted, so tokens and session
//! keys never cross the network in clear.
//!
//! The endpoint may be a comma-separated list of controller replicas: a request goes to the
//! one that answered last; on silence the client moves to the next, and a `not_active` answer
//! from a passive sends it straight to the active the passive names (if it is in the list).
//! Reads a passive can answer (`device.locate`, `scene.get`, ...) are served where they land.
//!
//! A retried request may reach the controller twice if only its reply was lost; heartbeats,
//! reads and locates are idempotent, and a duplicated `device.register` only leaves an unused
//! session behind.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::protocol::{into_result, ControlError, DeviceLocation, ErrorCode, Request};
use crate::net::zeromq::{self, Curve, Limits};
use crate::security::PublicKey;
use crate::wire::SessionKey;

/// Bounds of a client socket: replies (a `cluster.status` of a large cluster included) up to
/// 16 MiB; a REQ socket has one reply in flight.
const LIMITS: Limits = Limits {
    max_message: 16 << 20,
    rcv_hwm: 4,
    snd_hwm: 4,
};

/// Why a request got no useful answer.
#[derive(Debug)]
#[non_exhaustive]
pub enum RequestError {
    /// No reply after every retry.
    Unavailable(String),
    /// The controller answered with a typed error.
    Refused(ControlError),
    /// The reply was not what the protocol says.
    BadReply(String),
}

/// A reply body as a client reads it: its fields on success, else the controller's typed
/// error (or `BadReply` for a body that is not the protocol's JSON).
pub fn decode_reply(body: &[u8]) -> Result<Value, RequestError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| RequestError::BadReply(e.to_string()))?;
    into_result(value).map_err(RequestError::Refused)
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Unavailable(e) => write!(f, "controller unavailable: {e}"),
            RequestError::Refused(e) => write!(f, "controller refused: {e}"),
            RequestError::BadReply(e) => write!(f, "bad reply from controller: {e}"),
        }
    }
}

impl std::error::Error for RequestError {}

/// Where a device is homed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub device: u32,
    pub scene: u32,
    pub pair: u32,
    pub udp: SocketAddr,
    pub epoch: u64,
}

/// A device registration: its location and its session key.
#[derive(Clone, Debug)]
pub struct Registration {
    pub location: Location,
    pub key: SessionKey,
}

/// A synchronous lazy-pirate REQ client.
pub struct ControlClient {
    endpoints: Vec<String>,
    /// The one in use.
    current: usize,
    timeout: Duration,
    retries: u32,
    curve: Curve,
    socket: Option<zmq::Socket>,
}

/// Checks that `endpoint` is one ZeroMQ can connect to: `tcp://HOST:PORT` (a numeric port)
/// or `ipc://PATH`. Anything else would fail forever on every attempt, so it is refused up
/// front.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "`{endpoint}` is not a control endpoint ({why}): give tcp://HOST:PORT or ipc://PATH"
        ))
    };
    if let Some(path) = endpoint.strip_prefix("ipc://") {
        return if path.is_empty() {
            bad("empty path")
        } else {
            Ok(())
        };
    }
    let Some(rest) = endpoint.strip_prefix("tcp://") else {
        return bad("unknown transport");
    };
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => bad("no HOST:PORT"),
    }
}

impl ControlClient {
    /// A client for `endpoint` (or a comma-separated list of replicas); nothing connects
    /// until the first request.
    pub fn new(endpoint: &str) -> std::io::Result<ControlClient> {
        let endpoints: Vec<String> = endpoint
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect();
        if endpoints.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no controller endpoint",
            ));
        }
        for e in &endpoints {
            check_endpoint(e)
                .map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidInput, m))?;
        }
        Ok(ControlClient {
            endpoints,
            current: 0,
            timeout: Duration::from_millis(1000),
            retries: 3,
            curve: Curve::Off,
            socket: None,
        })
    }

    /// Talks CurveZMQ to a controller whose public key is `server` (`None`: plain).
    pub fn with_server_key(mut self, server: Option<PublicKey>) -> ControlClient {
        self.curve = server.map_or(Curve::Off, Curve::Client);
        self.socket = None;
        self
    }

    /// How long one attempt (connect, send, receive) may take.
    pub fn with_timeout(mut self, timeout: Duration) -> ControlClient {
        self.timeout = timeout;
        self
    }

    /// How many attempts a request gets.
    pub fn with_retries(mut self, retries: u32) -> ControlClient {
        self.retries = retries.max(1);
        self
    }

    /// The endpoint in use.
    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    /// Sends `req` and returns the reply's fields, retrying with a fresh socket on silence
    /// (on the next replica, if there are several) and following `not_active` to the active.
    pub fn request(&mut self, req: &Value) -> Result<Value, RequestError> {
        let body = req.to_string();
        let mut last = String::new();
        let attempts = self.retries as usize + self.endpoints.len() - 1;
        let mut wait = false;
        for _ in 0..attempts {
            if std::mem::take(&mut wait) {
                let backoff = (self.timeout / 4).min(Duration::from_millis(200));
                std::thread::sleep(backoff);
            }
            match self.attempt(body.as_bytes()).map(|r| decode_reply(&r)) {
                Err(e) => {
                    last = e;
                    self.switch(None);
                    wait = true;
                }
                Ok(Err(RequestError::Refused(e)))
                    if e.code == ErrorCode::NotActive && self.endpoints.len() > 1 =>
                {
                    // Straight to the active it names; with none named (a hand-over under
                    // way), the next replica after a pause.
                    wait = !self.switch(e.active.as_deref());
                    last = e.to_string();
                }
                Ok(reply) => return reply,
            }
        }
        Err(RequestError::Unavailable(format!(
            "{} after {attempts} attempts: {last}",
            self.endpoints.join(",")
        )))
    }

    /// Moves to `to` if it is one of the endpoints (returns true), else to the next one.
    fn switch(&mut self, to: Option<&str>) -> bool {
        self.socket = None;
        match to.and_then(|a| self.endpoints.iter().position(|e| e == a)) {
            Some(i) if i != self.current => {
                self.current = i;
                true
            }
            _ => {
                self.current = (self.current + 1) % self.endpoints.len();
                false
            }
        }
    }

    fn attempt(&mut self, body: &[u8]) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + self.timeout;
        if self.socket.is_none() {
            let endpoint = &self.endpoints[self.current];
            let s = zeromq::socket(zmq::REQ, &LIMITS, &self.curve, endpoint)?;
            s.set_sndtimeo(self.timeout.as_millis().clamp(1, i32::MAX as u128) as i32)
                .map_err(|e| format!("ZeroMQ option sndtimeo: {e}"))?;
            s.connect(endpoint)
                .map_err(|e| format!("connect {endpoint}: {e}"))?;
            self.socket = Some(s);
        }
        let socket = self.socket.as_ref().ok_or("no socket")?;
        // The request waits in the socket until the connection (and its handshake) is up.
        socket.send(body, 0).map_err(|e| format!("send: {e}"))?;
        let left = deadline.saturating_duration_since(Instant::now());
        let ready = socket
            .poll(zmq::POLLIN, left.as_millis().max(1) as i64)
            .map_err(|e| format!("poll: {e}"))?;
        if ready == 0 {
            return Err(if self.curve.is_on() {
                "no reply in time (is the controller's key right?)".into()
            } else {
                "no reply in time".into()
            });
        }
        let frames = socket
            .recv_multipart(0)
            .map_err(|e| format!("receive: {e}"))?;
        frames
            .into_iter()
            .last()
            .ok_or_else(|| "empty reply".into())
    }

    /// Sends a typed request and decodes its typed reply.
    pub fn call<R: DeserializeOwned>(&mut self, req: &Request) -> Result<R, RequestError> {
        let body = serde_json::to_value(req).map_err(|e| RequestError::BadReply(e.to_string()))?;
        let fields = self.request(&body)?;
        serde_json::from_value(fields).map_err(|e| RequestError::BadReply(e.to_string()))
    }

    /// `device.register`: a new device session in `scene`.
    pub fn register_device(
        &mut self,
        scene: u32,
        name: Option<&str>,
        token: Option<&str>,
    ) -> Result<Registration, RequestError> {
        self.register_device_at(scene, name, token, None)
    }

    /// `device.register` with the device's starting position: homed on the pair serving it.
    pub fn register_device_at(
        &mut self,
        scene: u32,
        name: Option<&str>,
        token: Option<&str>,
        anchor: Option<[f32; 3]>,
    ) -> Result<Registration, RequestError> {
        let reply: DeviceLocation = self.call(&Request::DeviceRegister {
            token: token.map(str::to_string),
            scene,
            name: name.map(str::to_string),
            anchor,
        })?;
        let key = reply
            .key
            .as_deref()
            .and_then(SessionKey::from_hex)
            .ok_or_else(|| RequestError::BadReply("no valid `key`".into()))?;
        Ok(Registration {
            location: location(reply)?,
            key,
        })
    }

    /// `device.locate`: where `device` is homed now.
    pub fn locate(&mut self, device: u32) -> Result<Location, RequestError> {
        location(self.call(&Request::DeviceLocate { device })?)
    }
}

fn location(reply: DeviceLocation) -> Result<Location, RequestError> {
    let udp = reply
        .udp
        .parse()
        .map_err(|_| RequestError::BadReply(format!("`udp` {} is not HOST:PORT", reply.udp)))?;
    Ok(Location {
        device: reply.device,
        scene: reply.scene,
        pair: reply.pair,
        udp,
        epoch: reply.epoch,
    })
}
