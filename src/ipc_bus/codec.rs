//! How batches travel between processes: a ZeroMQ message is `[topic, payload]`. The topic is
//! `scene/<id>/` for scene events (ZeroMQ prefix subscriptions, the trailing slash keeps scene 1
//! from matching scene 12) and `ctl/` for session events, which every subscriber takes. The
//! payload is `"ZB" | version 1 | events`, each event
//! `code u8 | wire kind u8 | scene u32 | device u32 | family u8 | ip [16] | port u16 | len u16 | data`,
//! little-endian. Consecutive events of one topic share a message; message order is event order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::scene::{Batch, Event, EventKind};
use crate::wire::Kind;

const MAGIC: &[u8; 2] = b"ZB";
const VERSION: u8 = 1;
const EVENT_HEAD: usize = 1 + 1 + 4 + 4 + 1 + 16 + 2 + 2;

/// Topic prefix of session events.
pub const CONTROL_TOPIC: &str = "ctl/";

/// The topic prefix of `scene`'s events.
pub fn scene_topic(scene: u32) -> String {
    format!("scene/{scene}/")
}

fn topic_of(kind: EventKind, scene: u32) -> String {
    match kind {
        EventKind::Admitted | EventKind::Revoked | EventKind::Checkpoint | EventKind::Synced => {
            CONTROL_TOPIC.to_string()
        }
        _ => scene_topic(scene),
    }
}

fn code(kind: EventKind) -> (u8, u8) {
    match kind {
        EventKind::Admitted => (0, 0),
        EventKind::Revoked => (1, 0),
        EventKind::Joined => (2, 0),
        EventKind::Moved => (3, 0),
        EventKind::Left => (4, 0),
        EventKind::Paused => (5, 0),
        EventKind::Resumed => (6, 0),
        EventKind::Relay(k) => (7, k as u8),
        EventKind::Direct(k) => (8, k as u8),
        EventKind::Checkpoint => (9, 0),
        EventKind::Session => (10, 0),
        EventKind::Object => (11, 0),
        EventKind::Synced => (12, 0),
        EventKind::Forwarded => (13, 0),
        EventKind::Handover => (14, 0),
        EventKind::Interest => (15, 0),
        EventKind::Deliver(k) => (16, k as u8),
        EventKind::Proxy(k) => (17, k as u8),
    }
}

fn kind_of(code: u8, wire: u8) -> Option<EventKind> {
    let wire = || Kind::from_u8(wire);
    Some(match code {
        0 => EventKind::Admitted,
        1 => EventKind::Revoked,
        2 => EventKind::Joined,
        3 => EventKind::Moved,
        4 => EventKind::Left,
        5 => EventKind::Paused,
        6 => EventKind::Resumed,
        7 => EventKind::Relay(wire()?),
        8 => EventKind::Direct(wire()?),
        9 => EventKind::Checkpoint,
        10 => EventKind::Session,
        11 => EventKind::Object,
        12 => EventKind::Synced,
        13 => EventKind::Forwarded,
        14 => EventKind::Handover,
        15 => EventKind::Interest,
        16 => EventKind::Deliver(wire()?),
        17 => EventKind::Proxy(wire()?),
        _ => return None,
    })
}

/// Bus messages: (topic, payload), in order.
pub type Messages = Vec<(String, Vec<u8>)>;

/// Splits `batch` into (topic, payload) messages, in event order.
pub fn encode(batch: &Batch) -> Messages {
    let mut out: Messages = Vec::new();
    for (e, data) in batch.iter() {
        let topic = topic_of(e.kind, e.scene);
        if out.last().map(|(t, _)| t != &topic).unwrap_or(true) {
            let mut payload = Vec::with_capacity(256);
            payload.extend_from_slice(MAGIC);
            payload.push(VERSION);
            out.push((topic, payload));
        }
        if let Some((_, p)) = out.last_mut() {
            encode_event(p, e, data);
        }
    }
    out
}

/// Appends all of `batch` as one payload (for stream transports, which need no topics).
pub fn encode_into(batch: &Batch, out: &mut Vec<u8>) {
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    for (e, data) in batch.iter() {
        encode_event(out, e, data);
    }
}

fn encode_event(p: &mut Vec<u8>, e: &Event, data: &[u8]) {
    let (c, w) = code(e.kind);
    p.push(c);
    p.push(w);
    p.extend_from_slice(&e.scene.to_le_bytes());
    p.extend_from_slice(&e.device.to_le_bytes());
    let (family, ip, port) = match e.addr {
        None => (0u8, [0u8; 16], 0u16),
        Some(SocketAddr::V4(a)) => {
            let mut ip = [0u8; 16];
            ip[..4].copy_from_slice(&a.ip().octets());
            (4, ip, a.port())
        }
        Some(SocketAddr::V6(a)) => (6, a.ip().octets(), a.port()),
    };
    p.push(family);
    p.extend_from_slice(&ip);
    p.extend_from_slice(&port.to_le_bytes());
    let len = data.len().min(u16::MAX as usize);
    p.extend_from_slice(&(len as u16).to_le_bytes());
    p.extend_from_slice(&data[..len]);
}

/// Why a bus message was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

/// Appends the events of one payload to `batch`; on error appends nothing.
pub fn decode(payload: &[u8], batch: &mut Batch) -> Result<(), Malformed> {
    if payload.len() < 3 || &payload[..2] != MAGIC || payload[2] != VERSION {
        return Err(Malformed);
    }
    // Validate everything first so a bad message leaves the batch untouched.
    let mut events = Vec::new();
    let mut rest = &payload[3..];
    while !rest.is_empty() {
        if rest.len() < EVENT_HEAD {
            return Err(Malformed);
        }
        let kind = kind_of(rest[0], rest[1]).ok_or(Malformed)?;
        let u32_at =
            |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
        let (scene, device) = (u32_at(2), u32_at(6));
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&rest[11..27]);
        let port = u16::from_le_bytes([rest[27], rest[28]]);
        let addr = match rest[10] {
            0 => None,
            4 => Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
                port,
            )),
            6 => Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
            _ => return Err(Malformed),
        };
        let len = usize::from(u16::from_le_bytes([rest[29], rest[30]]));
        if rest.len() < EVENT_HEAD + len {
            return Err(Malformed);
        }
        events.push((
            kind,
            scene,
            device,
            addr,
            &rest[EVENT_HEAD..EVENT_HEAD + len],
        ));
        rest = &rest[EVENT_HEAD + len..];
    }
    for (kind, scene, device, addr, data) in events {
        batch.push(kind, scene, device, addr, data);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_split_by_topic_in_order() {
        let mut b = Batch::default();
        let addr: SocketAddr = "[::1]:7000".parse().unwrap();
        b.push(EventKind::Admitted, 1, 5, None, &[9; 32]);
        b.push(
            EventKind::Joined,
            1,
            5,
            Some("127.0.0.1:9".parse().unwrap()),
            &[],
        );
        b.push(
            EventKind::Relay(Kind::ObjectUpdate),
            1,
            5,
            Some(addr),
            &[1, 2, 3],
        );
        b.push(EventKind::Direct(Kind::Snapshot), 2, 6, Some(addr), &[4]);
        let msgs = encode(&b);
        let topics: Vec<&str> = msgs.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(topics, vec!["ctl/", "scene/1/", "scene/2/"]);
        let mut back = Batch::default();
        for (_, p) in &msgs {
            decode(p, &mut back).unwrap();
        }
        let flat = |b: &Batch| {
            b.iter()
                .map(|(e, d)| (e.kind, e.scene, e.device, e.addr, d.to_vec()))
                .collect::<Vec<_>>()
        };
        assert_eq!(flat(&back), flat(&b));
    }

    #[test]
    fn foreign_and_cut_messages_are_refused_whole() {
        let mut b = Batch::default();
        b.push(EventKind::Relay(Kind::ObjectUpdate), 1, 5, None, &[1, 2, 3]);
        let (_, p) = encode(&b).remove(0);
        let mut out = Batch::default();
        assert_eq!(decode(b"hello", &mut out), Err(Malformed));
        assert_eq!(decode(&p[..p.len() - 1], &mut out), Err(Malformed));
        let mut bad = p.clone();
        bad[3] = 99;
        assert_eq!(decode(&bad, &mut out), Err(Malformed));
        assert!(out.is_empty());
    }
}
