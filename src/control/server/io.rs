//! The control socket's I/O: whole messages in, their envelopes checked; replies out with the
//! envelope unchanged; libzmq's monitor events as connection counters.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::{MAX_ENVELOPE_BYTES, MAX_ENVELOPE_FRAMES};
use crate::control::stats::{Connection, ControlStats, Dropped};
use crate::net::zeromq;

/// A request as received: its routing frames (to send the reply back) and its body.
pub struct Incoming {
    pub envelope: Vec<zmq::Message>,
    pub body: zmq::Message,
}

/// The next whole message, if one is queued, with an envelope a REQ or DEALER client sends
/// (others are dropped and counted: the controller never reflects a sender's bytes back).
pub fn receive(socket: &zmq::Socket, stats: &ControlStats) -> Option<Option<Incoming>> {
    let first = socket.recv_msg(zmq::DONTWAIT).ok()?;
    let mut more = first.get_more();
    let mut frames = vec![first];
    while more {
        let Ok(f) = socket.recv_msg(0) else { break };
        more = f.get_more();
        // libzmq delivers a message's frames together, never more than MAX_FRAMES of them.
        if frames.len() <= zeromq::MAX_FRAMES {
            frames.push(f);
        }
    }
    // [routing id, envelope..., body]
    let envelope = frames.get(1..frames.len().saturating_sub(1)).unwrap_or(&[]);
    let envelope_bytes: usize = envelope.iter().map(|f| f.len()).sum();
    if frames.len() < 2
        || envelope.len() > MAX_ENVELOPE_FRAMES
        || envelope_bytes > MAX_ENVELOPE_BYTES
    {
        stats.dropped(Dropped::Envelope);
        return Some(None);
    }
    let body = frames.pop()?;
    Some(Some(Incoming {
        envelope: frames,
        body,
    }))
}

/// Sends `reply` back along `envelope`; a client that went away (or whose queue is full)
/// just loses it.
pub fn send(socket: &zmq::Socket, envelope: Vec<zmq::Message>, reply: &[u8]) {
    for f in envelope {
        if socket.send(f, zmq::SNDMORE | zmq::DONTWAIT).is_err() {
            return;
        }
    }
    let _ = socket.send(reply, zmq::DONTWAIT);
}

/// A PAIR socket receiving libzmq's monitor events for `socket`.
///
/// libzmq's I/O thread sends each event with a blocking send: an event that finds the pipe
/// full, or finds no reader because the PAIR was closed first, blocks that thread and with it
/// every ZeroMQ socket of the process (libzmq#3575; one CI run saw a second controller in the
/// same process answer nothing for 20 s). So the pipe is unbounded (the loop drains it every
/// turn; a stalled loop costs memory, not the process's I/O) and [`unwatch`] stops the
/// monitor before either socket is closed.
pub fn watch(socket: &zmq::Socket) -> Result<zmq::Socket, String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let address = format!(
        "inproc://zc-controller-monitor-{}",
        NEXT.fetch_add(1, Relaxed)
    );
    let events = zmq::SocketEvent::ACCEPTED as i32
        | zmq::SocketEvent::DISCONNECTED as i32
        | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32
        | zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as i32
        | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32;
    socket
        .monitor(&address, events)
        .map_err(|e| format!("cannot monitor the control socket: {e}"))?;
    let monitor = zeromq::context()
        .socket(zmq::PAIR)
        .and_then(|m| m.set_rcvhwm(0).map(|_| m))
        .and_then(|m| m.connect(&address).map(|_| m))
        .map_err(|e| format!("cannot monitor the control socket: {e}"))?;
    Ok(monitor)
}

/// Stops `socket`'s monitor (see [`watch`]): after this, closing either socket cannot block
/// libzmq's I/O thread.
pub fn unwatch(socket: &mut zmq::Socket, monitor: &zmq::Socket) {
    while monitor_event(monitor).is_some() {}
    // SAFETY: `socket` is a live libzmq socket (borrowed mutably, so not closed meanwhile);
    // a null endpoint is libzmq's documented way to stop monitoring (zmq_socket_monitor(3)).
    unsafe { zmq_sys::zmq_socket_monitor(socket.as_mut_ptr(), std::ptr::null(), 0) };
}

/// The next monitor event, if one is queued.
pub fn monitor_event(monitor: &zmq::Socket) -> Option<Connection> {
    loop {
        let head = monitor.recv_msg(zmq::DONTWAIT).ok()?;
        // Second frame: the endpoint, unused.
        while monitor.get_rcvmore().unwrap_or(false) {
            let _ = monitor.recv_msg(0);
        }
        if head.len() < 2 {
            continue;
        }
        let event = zmq::SocketEvent::from_raw(u16::from_le_bytes([head[0], head[1]]));
        let counted = match event {
            zmq::SocketEvent::ACCEPTED => Connection::Accepted,
            zmq::SocketEvent::DISCONNECTED => Connection::Closed,
            zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL => Connection::HandshakeProtocol,
            zmq::SocketEvent::HANDSHAKE_FAILED_AUTH => Connection::HandshakeAuth,
            zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL => Connection::HandshakeOther,
            _ => continue,
        };
        return Some(counted);
    }
}
