//! A passive replica's link to the active: one DEALER socket (CURVE when the replicas run it)
//! carrying `replica.follow` long polls, one at a time. An ask unanswered for
//! [`FOLLOW_TIMEOUT`] (the active parks an ask at most [`super::PARK`]) drops the socket; the
//! next ask connects afresh, to whichever active the lock names by then.

use std::time::{Duration, Instant};

use crate::control::client::{decode_reply, RequestError};
use crate::control::protocol::{FollowAnswer, Request};
use crate::net::zeromq::{self, Curve, Limits};

/// An ask with no answer for this long is given up.
pub const FOLLOW_TIMEOUT: Duration = Duration::from_millis(500);

/// A follow answer may carry the whole state (a snapshot).
const LIMITS: Limits = Limits {
    max_message: 1 << 30,
    rcv_hwm: 4,
    snd_hwm: 4,
};

pub struct Follow {
    curve: Curve,
    socket: Option<(String, zmq::Socket)>,
    /// When the ask in flight was sent.
    asked: Option<Instant>,
}

impl Follow {
    pub fn new(curve: Curve) -> Follow {
        Follow {
            curve,
            socket: None,
            asked: None,
        }
    }

    /// The socket to poll, while an ask is in flight.
    pub fn socket(&self) -> Option<&zmq::Socket> {
        self.socket
            .as_ref()
            .filter(|_| self.asked.is_some())
            .map(|(_, s)| s)
    }

    /// Sends `ask` to `active` unless an ask is already in flight there; gives up an ask
    /// that timed out or went to another endpoint.
    pub fn ask(&mut self, now: Instant, active: &str, ask: &Request) -> Result<(), String> {
        let stale = self
            .asked
            .is_some_and(|t| now.duration_since(t) > FOLLOW_TIMEOUT);
        let moved = self.socket.as_ref().is_some_and(|(e, _)| e != active);
        if stale || moved {
            self.drop_socket();
        }
        if self.asked.is_some() {
            return Ok(());
        }
        if self.socket.is_none() {
            let s = zeromq::socket(zmq::DEALER, &LIMITS, &self.curve, active)?;
            s.connect(active)
                .map_err(|e| format!("connect {active}: {e}"))?;
            self.socket = Some((active.to_string(), s));
        }
        let body = serde_json::to_vec(ask).map_err(|e| e.to_string())?;
        let (_, s) = self.socket.as_ref().ok_or("no socket")?;
        s.send_multipart([&b""[..], &body[..]], zmq::DONTWAIT)
            .map_err(|e| format!("send: {e}"))?;
        self.asked = Some(now);
        Ok(())
    }

    /// The answer, if it has come.
    pub fn answer(&mut self) -> Option<Result<FollowAnswer, RequestError>> {
        let (_, s) = self.socket.as_ref()?;
        let frames = s.recv_multipart(zmq::DONTWAIT).ok()?;
        self.asked = None;
        let body = frames.last()?;
        Some(decode_reply(body).and_then(|v| {
            serde_json::from_value(v).map_err(|e| RequestError::BadReply(e.to_string()))
        }))
    }

    pub fn drop_socket(&mut self) {
        self.socket = None;
        self.asked = None;
    }
}
