//! libzmq plumbing every zonecast ZeroMQ socket goes through: the process's one context, the
//! input bounds a socket gets before it binds or connects, and its CURVE role.
//!
//! Why libzmq (the reference ZeroMQ, through the `zmq` crate) and not a pure-Rust ZeroMQ: it
//! refuses an oversized frame from its length header, before allocating (`ZMQ_MAXMSGSIZE`;
//! the pure-Rust `zeromq` crate reserved whatever a header declared, so 73 bytes could abort
//! the controller), and it has CurveZMQ, interoperable with pyzmq and every libzmq binding.
//! What libzmq lacks is a bound on a *whole* multipart message: it queues every frame of a
//! message before the application can read any, so a peer could grow memory without end with
//! one message of endless small frames. Our copy of libzmq (vendor/, built with libsodium for
//! CURVE) carries a small patch: with `ZMQ_MAXMSGSIZE` set, it bounds the sum of a message's
//! frames and their number ([`MAX_FRAMES`]), and a peer over either bound loses its connection
//! (the partial message is rolled back). So per connection, libzmq holds at most
//! `(rcv_hwm + 1) * max_message` bytes of input, and nothing a peer sends can make it reserve
//! more. See vendor/README.md and docs/SECURITY.md.

use std::sync::OnceLock;

use crate::security::{KeyPair, PublicKey};

/// Frames an inbound message may have (compiled into the vendored libzmq as
/// `ZMQ_ZC_MAX_FRAMES`; applies to sockets with `ZMQ_MAXMSGSIZE` set, which all of ours have).
pub const MAX_FRAMES: usize = 16;

/// How long a peer may take over the ZMTP (and CURVE) handshake before it is dropped.
const HANDSHAKE_MS: i32 = 5_000;

/// The process's ZeroMQ context (one I/O thread, shared by every socket).
pub fn context() -> &'static zmq::Context {
    static CONTEXT: OnceLock<zmq::Context> = OnceLock::new();
    CONTEXT.get_or_init(zmq::Context::new)
}

/// Input bounds of one socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest inbound message, every frame counted (bytes).
    pub max_message: usize,
    /// Whole inbound messages queued per peer before libzmq stops reading from it.
    pub rcv_hwm: i32,
    /// Outbound messages queued per peer before sends to it are dropped or refused.
    pub snd_hwm: i32,
}

impl Limits {
    /// The most input libzmq holds for one connection.
    pub fn per_connection(&self) -> usize {
        (self.rcv_hwm.max(1) as usize + 1) * self.max_message
    }
}

/// A socket's CURVE role.
#[derive(Clone, Debug, Default)]
pub enum Curve {
    /// Plain ZMTP: for loopback, `ipc://` and the embedded default only.
    #[default]
    Off,
    /// A CURVE server holding this key pair: every peer must know its public key.
    Server(KeyPair),
    /// A CURVE client of the server with this public key (a fresh key pair per socket: the
    /// server authenticates clients by their token inside the channel, not by their key).
    Client(PublicKey),
}

impl Curve {
    pub fn is_on(&self) -> bool {
        !matches!(self, Curve::Off)
    }

    /// How a peer of the same cluster talks to this end: a CURVE server's replicas share its
    /// key pair, so a replica following another is that key's client.
    pub fn as_client(&self) -> Curve {
        match self {
            Curve::Off => Curve::Off,
            Curve::Server(k) => Curve::Client(k.public()),
            Curve::Client(p) => Curve::Client(*p),
        }
    }
}

/// A socket of `kind` with `limits` and `curve` applied, ready to bind or connect to
/// `endpoint` (IPv6 is switched on for an `[address]` endpoint only, so an IPv4 endpoint keeps
/// its IPv4 form).
pub fn socket(
    kind: zmq::SocketType,
    limits: &Limits,
    curve: &Curve,
    endpoint: &str,
) -> Result<zmq::Socket, String> {
    let s = context()
        .socket(kind)
        .map_err(|e| format!("cannot create a ZeroMQ socket: {e}"))?;
    let set = |r: zmq::Result<()>, what: &str| r.map_err(|e| format!("ZeroMQ option {what}: {e}"));
    set(s.set_linger(0), "linger")?;
    set(s.set_maxmsgsize(limits.max_message as i64), "maxmsgsize")?;
    set(s.set_rcvhwm(limits.rcv_hwm), "rcvhwm")?;
    set(s.set_sndhwm(limits.snd_hwm), "sndhwm")?;
    set(s.set_handshake_ivl(HANDSHAKE_MS), "handshake_ivl")?;
    set(s.set_ipv6(endpoint.contains('[')), "ipv6")?;
    match curve {
        Curve::Off => {}
        Curve::Server(pair) => {
            set(s.set_curve_server(true), "curve_server")?;
            set(
                s.set_curve_secretkey(&pair.secret_bytes()),
                "curve_secretkey",
            )?;
        }
        Curve::Client(server) => {
            let own = KeyPair::generate();
            set(s.set_curve_serverkey(server.as_bytes()), "curve_serverkey")?;
            set(
                s.set_curve_publickey(own.public().as_bytes()),
                "curve_publickey",
            )?;
            set(
                s.set_curve_secretkey(&own.secret_bytes()),
                "curve_secretkey",
            )?;
        }
    }
    Ok(s)
}

/// Whether traffic to or from `endpoint` can leave this host: any `tcp://` endpoint whose
/// host is not a loopback address (`*`, `0.0.0.0`, a LAN address, a name other than
/// `localhost`). `ipc://` and `inproc://` stay on the host.
pub fn leaves_host(endpoint: &str) -> bool {
    let Some(rest) = endpoint.strip_prefix("tcp://") else {
        return false;
    };
    let host = match rest.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => rest,
    };
    if host.eq_ignore_ascii_case("localhost") {
        return false;
    }
    !host.parse::<std::net::IpAddr>().is_ok_and(|ip| match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        v4 => v4.is_loopback(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_local_endpoints_stay_on_the_host() {
        for e in [
            "tcp://127.0.0.1:7100",
            "tcp://127.9.0.1:1",
            "tcp://[::1]:5",
            "tcp://localhost:1",
            "tcp://[::ffff:127.0.0.1]:9",
            "ipc:///tmp/x",
        ] {
            assert!(!leaves_host(e), "{e}");
        }
        for e in [
            "tcp://0.0.0.0:7100",
            "tcp://*:7100",
            "tcp://10.0.0.2:7100",
            "tcp://[::]:1",
            "tcp://ctl.example:1",
        ] {
            assert!(leaves_host(e), "{e}");
        }
    }
}
