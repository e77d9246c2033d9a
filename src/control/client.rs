//! A control-plane client with the "lazy pirate" pattern (zguide ch. 4): every attempt has a
//! timeout; on timeout or error the REQ socket is closed and a new one connects before the next
//! try, so a lost peer never hangs the caller. Used by the pair agent, devices and the CLI.
//!
//! A retried request may reach the controller twice if only its reply was lost; heartbeats,
//! reads and locates are idempotent, and a duplicated `device.register` only leaves an unused
//! session behind.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use zeromq::{ReqSocket, Socket, SocketOptions, SocketRecv, SocketSend, ZmqMessage};

use super::protocol::{into_result, ControlError};
use crate::wire::SessionKey;

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
    endpoint: String,
    timeout: Duration,
    retries: u32,
    rt: tokio::runtime::Runtime,
    socket: Option<ReqSocket>,
}

impl ControlClient {
    /// A client for `endpoint`; nothing connects until the first request.
    pub fn new(endpoint: &str) -> std::io::Result<ControlClient> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(ControlClient {
            endpoint: endpoint.to_string(),
            timeout: Duration::from_millis(1000),
            retries: 3,
            rt,
            socket: None,
        })
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

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends `req` and returns the reply's fields, retrying with a fresh socket on silence.
    pub fn request(&mut self, req: &Value) -> Result<Value, RequestError> {
        let body = req.to_string();
        let mut last = String::new();
        for attempt in 0..self.retries {
            if attempt > 0 {
                let backoff = (self.timeout / 4).min(Duration::from_millis(200));
                std::thread::sleep(backoff);
            }
            match self.attempt(&body) {
                Ok(reply) => {
                    let value: Value = serde_json::from_slice(&reply)
                        .map_err(|e| RequestError::BadReply(e.to_string()))?;
                    return into_result(value).map_err(RequestError::Refused);
                }
                Err(e) => {
                    last = e;
                    self.close();
                }
            }
        }
        Err(RequestError::Unavailable(format!(
            "{} after {} attempts: {last}",
            self.endpoint, self.retries
        )))
    }

    fn attempt(&mut self, body: &str) -> Result<Vec<u8>, String> {
        let timeout = self.timeout;
        let endpoint = self.endpoint.clone();
        let mut socket = match self.socket.take() {
            Some(s) => s,
            None => {
                let mut opts = SocketOptions::default();
                opts.connect_timeout(timeout);
                let mut s = ReqSocket::with_options(opts);
                self.rt
                    .block_on(async { tokio::time::timeout(timeout, s.connect(&endpoint)).await })
                    .map_err(|_| "connect timed out".to_string())?
                    .map_err(|e| format!("connect: {e}"))?;
                s
            }
        };
        let msg = ZmqMessage::from(body.to_string());
        let result = self.rt.block_on(async {
            tokio::time::timeout(timeout, async {
                socket.send(msg).await.map_err(|e| format!("send: {e}"))?;
                socket.recv().await.map_err(|e| format!("receive: {e}"))
            })
            .await
            .map_err(|_| "no reply in time".to_string())?
        });
        match result {
            Ok(reply) => {
                self.socket = Some(socket);
                let frames = reply.into_vec();
                frames
                    .last()
                    .map(|b| b.to_vec())
                    .ok_or_else(|| "empty reply".to_string())
            }
            Err(e) => {
                let _guard = self.rt.enter();
                drop(socket);
                Err(e)
            }
        }
    }

    fn close(&mut self) {
        let _guard = self.rt.enter();
        self.socket = None;
    }

    /// `device.register`: a new device session in `scene`.
    pub fn register_device(
        &mut self,
        scene: u32,
        name: Option<&str>,
        token: Option<&str>,
    ) -> Result<Registration, RequestError> {
        let reply = self.request(&json!({
            "op": "device.register", "scene": scene, "name": name, "token": token,
        }))?;
        let key = reply
            .get("key")
            .and_then(Value::as_str)
            .and_then(SessionKey::from_hex)
            .ok_or_else(|| RequestError::BadReply("no valid `key`".into()))?;
        Ok(Registration {
            location: parse_location(&reply)?,
            key,
        })
    }

    /// `device.locate`: where `device` is homed now.
    pub fn locate(&mut self, device: u32) -> Result<Location, RequestError> {
        let reply = self.request(&json!({ "op": "device.locate", "device": device }))?;
        parse_location(&reply)
    }
}

impl Drop for ControlClient {
    fn drop(&mut self) {
        self.close();
    }
}

fn parse_location(reply: &Value) -> Result<Location, RequestError> {
    let num = |k: &str| {
        reply
            .get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| RequestError::BadReply(format!("no `{k}`")))
    };
    let udp = reply
        .get("udp")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RequestError::BadReply("no valid `udp`".into()))?;
    Ok(Location {
        device: num("device")? as u32,
        scene: num("scene")? as u32,
        pair: num("pair")? as u32,
        udp,
        epoch: num("epoch")?,
    })
}
