//! Memory per device session and per object, counted by a global allocator wrapper while the
//! real data structures are filled: the scene engine (ingest) and the fanout table, with
//! 100k sessions joined over 100 scenes and 1M objects.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Instant;

use serde_json::{json, Value};
use zonecast::fanout::Table;
use zonecast::scene::Batch;
use zonecast::scene::{Config, Engine};
use zonecast::wire::{
    seal, Direction, Fields, HeaderFields, Kind, ObjectBody, SessionKey, HEADER_LEN,
    MASK_TRANSLATION, MAX_DATAGRAM,
};

/// Counts live heap bytes.
pub struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as i64 - layout.size() as i64, Relaxed);
        System.realloc(ptr, layout, new)
    }
}

fn live() -> i64 {
    LIVE.load(Relaxed)
}

fn datagram(
    key: &SessionKey,
    device: u32,
    scene: u32,
    seq: u64,
    kind: Kind,
    body: &[u8],
) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    buf[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(body);
    let f = HeaderFields {
        kind,
        device,
        scene,
        seq,
        timestamp_ns: seq,
    };
    let n = seal(&mut buf, &f, body.len(), key, Direction::ToServer).expect("seal");
    buf.truncate(n);
    buf
}

/// Measures and returns bytes per session and per object.
pub fn measure(sessions: u32, objects: u32, scenes: u32) -> Value {
    let started = Instant::now();
    let now = Instant::now();
    let from: SocketAddr = "127.0.0.1:40000".parse().expect("literal");
    let keys: Vec<SessionKey> = (0..sessions)
        .map(|i| SessionKey::new([(i % 251) as u8; 32]))
        .collect();
    let scene_of = |d: u32| 1 + d % scenes;

    let base = live();
    let mut engine = Engine::new(Config {
        max_objects_per_scene: 65_535,
        ..Config::default()
    });
    for d in 0..sessions {
        let mut out = Batch::default();
        engine.admit(now, d + 1, scene_of(d), keys[d as usize].clone(), &mut out);
        let j = datagram(
            &keys[d as usize],
            d + 1,
            scene_of(d),
            1,
            Kind::Join,
            &[0; 8],
        );
        let _ = engine.handle(now, from, &j, &mut out);
    }
    let engine_sessions = live() - base;

    let base = live();
    let mut table = Table::default();
    for d in 0..sessions {
        table.admit(d + 1, scene_of(d), keys[d as usize].clone(), 1);
        table.join(d + 1, from);
    }
    let fanout_sessions = live() - base;

    let base = live();
    let mut seq = vec![1u64; sessions as usize];
    for o in 0..objects {
        let d = o % sessions;
        seq[d as usize] += 1;
        let f = Fields {
            translation: [o as f32, 0.0, 0.0],
            ..Fields::default()
        };
        let b = ObjectBody::new(u64::from(o), MASK_TRANSLATION, f, &[]);
        let mut body = vec![0u8; b.len()];
        let _ = b.emit(&mut body);
        let u = datagram(
            &keys[d as usize],
            d + 1,
            scene_of(d),
            seq[d as usize],
            Kind::ObjectUpdate,
            &body,
        );
        let mut out = Batch::default();
        let _ = engine.handle(now, from, &u, &mut out);
    }
    let object_bytes = live() - base;
    assert_eq!(
        engine.objects(),
        objects as usize,
        "every object was accepted"
    );
    assert_eq!(engine.joined(), sessions as usize);
    let per_session = (engine_sessions + fanout_sessions) as f64 / f64::from(sessions);
    let per_object = object_bytes as f64 / f64::from(objects);
    drop(table);
    drop(engine);
    json!({
        "sessions": sessions, "objects": objects, "scenes": scenes,
        "bytes_per_session": per_session,
        "bytes_per_session_ingest": engine_sessions as f64 / f64::from(sessions),
        "bytes_per_session_fanout": fanout_sessions as f64 / f64::from(sessions),
        "bytes_per_object": per_object,
        "secs": started.elapsed().as_secs_f64(),
    })
}
