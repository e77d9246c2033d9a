//! Seed inputs for the fuzz targets: one well-formed run of each, in the targets' own input
//! encodings, so mutation starts from inputs that reach deep (a joined device updating
//! objects, a controller with pairs and devices, a checkpoint on the stream). The smoke test
//! mutates them; `cargo test --test fuzz_smoke -- --write-seeds DIR` writes them out as the
//! cargo-fuzz corpus.

use std::net::SocketAddr;
use std::time::Instant;

use zerocopy::IntoBytes;

use super::{Counter, DEVICES, TOKEN};
use crate::control::protocol::decode;
use crate::control::{Config as ControlConfig, Controller};
use crate::ipc_bus::codec;
use crate::replication::peer::{LinkSession, Role};
use crate::scene::{Batch, Engine};
use crate::wire::bundle::BundleWriter;
use crate::wire::interest::{Area, Shape};
use crate::wire::{
    Fields, JoinBody, KeepaliveAckBody, Kind, ObjectBody, PeerLeftBody, RedirectBody, RejectBody,
    RejectReason, SnapshotHead, MASK_ALL, MASK_TRANSLATION,
};

/// The seeds of target `name` (`datagram`, `client_events`, `control`, `stream`,
/// `sessions_file`); none for another name.
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    match name {
        "datagram" => datagram(),
        "client_events" => client_events(),
        "control" => control(),
        "stream" => stream(),
        "sessions_file" => vec![SESSIONS.as_bytes().to_vec(), b"{\"devices\":[]}".to_vec()],
        _ => Vec::new(),
    }
}

/// Every target's name.
pub const TARGETS: [&str; 5] = [
    "datagram",
    "client_events",
    "control",
    "stream",
    "sessions_file",
];

const SESSIONS: &str = r#"{"devices":[
{"device":1,"scene":1,"key":"1111111111111111111111111111111111111111111111111111111111111111"},
{"device":2,"scene":2,"key":"2222222222222222222222222222222222222222222222222222222222222222"}]}"#;

/// A sealed-datagram op: `op | kind-1 | who | seq u16 | len u16 | body`.
fn op(out: &mut Vec<u8>, kind: Kind, who: u8, seq: u16, body: &[u8]) {
    let pick = super::KINDS
        .iter()
        .position(|k| *k == kind as u8)
        .unwrap_or(0) as u8;
    out.extend_from_slice(&[1, pick, who]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(body);
}

fn object(id: u64, mask: u8, payload: &[u8]) -> Vec<u8> {
    let fields = Fields {
        translation: [1.0, 2.0, 3.0],
        ..Fields::default()
    };
    let body = ObjectBody::new(id, mask, fields, payload);
    let mut out = vec![0u8; body.len()];
    let n = body.emit(&mut out).expect("room for one object");
    out.truncate(n);
    out
}

fn join() -> Vec<u8> {
    JoinBody {
        interest_radius: 10.0f32.into(),
        reserved: 0.into(),
    }
    .as_bytes()
    .to_vec()
}

/// A revision-2 interest area: a sphere on layer 0, a box on layer 1.
fn area(x: f32) -> Vec<u8> {
    let mut a = Area::sphere([x, 0.0, 0.0], 4.0);
    a.layers[1] = Shape::Box([1.0, 2.0, 3.0]);
    let mut out = vec![0u8; a.len()];
    a.emit(&mut out).expect("room for an area");
    out
}

fn datagram() -> Vec<Vec<u8>> {
    let mut run = Vec::new();
    op(&mut run, Kind::Join, 0, 1, &join());
    op(&mut run, Kind::Join, 1, 1, &area(0.0));
    op(&mut run, Kind::Interest, 1, 10, &area(2.0));
    op(&mut run, Kind::Keepalive, 1, 11, &[0; 12]);
    op(
        &mut run,
        Kind::ObjectUpdate,
        0,
        2,
        &object(5, MASK_ALL, b"hello"),
    );
    op(
        &mut run,
        Kind::ObjectUpdate,
        1,
        2,
        &object(5, MASK_TRANSLATION, b""),
    );
    op(
        &mut run,
        Kind::ObjectOverwrite,
        0,
        3,
        &object(6, MASK_ALL, b"x"),
    );
    op(&mut run, Kind::Keepalive, 1, 3, &[]);
    run.extend_from_slice(&[3, 200]);
    op(&mut run, Kind::ObjectDelete, 0, 4, &object(5, 0, b""));
    op(&mut run, Kind::Leave, 1, 4, &[]);
    let mut replay = Vec::new();
    op(&mut replay, Kind::Join, 2, 9, &join());
    op(&mut replay, Kind::Join, 2, 9, &join());
    vec![run, replay, vec![0, 40, 0]]
}

fn client_events() -> Vec<Vec<u8>> {
    let mut run = vec![1];
    op(
        &mut run,
        Kind::ObjectUpdate,
        0,
        1,
        &object(5, MASK_ALL, b"p"),
    );
    let mut snapshot = SnapshotHead {
        snapshot_id: 1.into(),
        chunk_index: 0.into(),
        chunk_count: 1.into(),
        object_count: 2.into(),
        flags: 0.into(),
    }
    .as_bytes()
    .to_vec();
    snapshot.extend(object(5, MASK_ALL, b"a"));
    snapshot.extend(object(6, MASK_TRANSLATION, b""));
    op(&mut run, Kind::Snapshot, 0, 2, &snapshot);
    let ack = KeepaliveAckBody {
        echo_seq: 3.into(),
        echo_timestamp_ns: 3000.into(),
    };
    op(&mut run, Kind::KeepaliveAck, 0, 3, ack.as_bytes());
    let to: SocketAddr = "127.0.0.1:7001".parse().expect("an address");
    op(
        &mut run,
        Kind::Redirect,
        0,
        4,
        RedirectBody::new(9, to).as_bytes(),
    );
    let reject = RejectBody::new(RejectReason::NotOwner, 2, 5);
    op(&mut run, Kind::Reject, 0, 5, reject.as_bytes());
    let left = PeerLeftBody {
        device: 2.into(),
        reason: 1,
        reserved: [0; 3],
    };
    op(&mut run, Kind::PeerLeft, 0, 6, left.as_bytes());
    let mut buf = vec![0u8; 512];
    let mut bundle = BundleWriter::new(&mut buf);
    bundle.push(Kind::ObjectUpdate, &object(5, MASK_ALL, b"b"));
    bundle.push(Kind::ObjectDelete, &object(6, 0, b""));
    let n = bundle.len();
    op(&mut run, Kind::Bundle, 0, 7, &buf[..n]);
    vec![run]
}

/// Requests that build a region with two pairs standing by for each other, a scene and
/// devices, then drain the first; replies: what the first pair heard (its assignment, then its
/// hand-over), and a stale refusal.
fn control() -> Vec<Vec<u8>> {
    let t = TOKEN;
    let register = |port: u16| {
        format!(
            r#"{{"op":"pair.register","token":"{t}","region":"eu","udp":"127.0.0.1:{port}","capacity":100,"version":"f","bus":"tcp://127.0.0.1:{}"}}"#,
            port + 1000
        )
    };
    let heartbeat = |pair: u32, epoch: u64, mirrors: &str| {
        format!(
            r#"{{"op":"pair.heartbeat","token":"{t}","pair":{pair},"epoch":{epoch},"load":{{"joined":2,"objects":0,"datagrams_in_per_sec":0,"datagrams_out_per_sec":0,"dropped":0}},"mirrors":[{mirrors}]}}"#
        )
    };
    let requests = [
        format!(r#"{{"op":"scene.create","token":"{t}","name":"arena","region":"eu"}}"#),
        register(7000),
        register(7001),
        r#"{"op":"device.register","scene":1}"#.to_string(),
        r#"{"op":"device.register","scene":1,"name":"b"}"#.to_string(),
        heartbeat(1, 0, r#"{"pair":2,"state":"synced"}"#),
        heartbeat(2, 0, r#"{"pair":1,"state":"synced"}"#),
        r#"{"op":"device.locate","device":1}"#.to_string(),
        format!(r#"{{"op":"cluster.status","token":"{t}"}}"#),
        format!(r#"{{"op":"pair.drain","token":"{t}","pair":1}}"#),
        heartbeat(1, 1, ""),
        format!(r#"{{"op":"scene.get","token":"{t}","scene":1}}"#),
    ];
    // What the first pair hears, as it would read it.
    let mut controller = Controller::with_random(ControlConfig::new(TOKEN), Box::new(Counter(1)));
    let now = Instant::now();
    let mut replies = Vec::new();
    for r in &requests {
        let Ok(req) = decode(r.as_bytes()) else {
            continue;
        };
        let first_pair = r.contains(r#""op":"pair.heartbeat","token":"fuzz","pair":1,"#);
        if let Ok(reply) = controller.handle(now, req) {
            if first_pair {
                replies.push(reply.to_json().to_string());
            }
        }
    }
    replies.push(r#"{"ok":false,"error":"stale_epoch","message":"m"}"#.to_string());
    let mut run = requests.join("\n").into_bytes();
    run.extend_from_slice(b"\n#replies\n");
    run.extend_from_slice(replies.join("\n").as_bytes());
    vec![run]
}

/// A subscriber's hello and beats; a hub's checkpoint and live batch, framed; one payload.
fn stream() -> Vec<Vec<u8>> {
    let link = LinkSession::new(Role::Standby, TOKEN, Instant::now()).expect("a short token");
    let mut hello = vec![0, link.hello().len() as u8];
    hello.extend_from_slice(link.hello());
    hello.extend_from_slice(&[8, 2, 0, 0, 0, b'Z', b'K']);
    // A serving engine's checkpoint and then what it relays.
    let mut engine = Engine::new(super::engine_config());
    let mut live = Batch::default();
    let mut data = Vec::new();
    for (device, scene, key) in DEVICES {
        let key = crate::wire::SessionKey::new([key; 32]);
        engine.admit(Instant::now(), device, scene, key, &mut live);
    }
    let mut ops = Vec::new();
    op(&mut ops, Kind::Join, 0, 1, &join());
    op(
        &mut ops,
        Kind::ObjectUpdate,
        0,
        2,
        &object(5, MASK_ALL, b"s"),
    );
    super::drive(&mut engine, &ops, &mut live, |_, _| {});
    let mut checkpoint = Batch::default();
    engine.checkpoint(&mut checkpoint);
    let mut frames = vec![1];
    for batch in [&checkpoint, &live] {
        for (_, payload) in codec::encode(batch) {
            frames.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            frames.extend_from_slice(&payload);
        }
    }
    let mut payload = vec![2];
    for (_, p) in codec::encode(&live).into_iter().take(1) {
        payload.extend_from_slice(&p);
    }
    data.extend_from_slice(&frames);
    vec![hello, data, payload]
}
