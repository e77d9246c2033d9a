//! The replication stream with real sockets: a checkpoint before any live batch, order kept
//! over tcp:// and ipc://, wrong tokens and garbage refused and counted, a deliberate close
//! (bye) told apart from a broken stream, and a link that reconnects for a fresh checkpoint.

use std::io::Write;
use std::time::{Duration, Instant};

use zonecast::replication::stream::{LinkEvent, Role, StreamHub, StreamLink};
use zonecast::scene::{Batch, EventKind};
use zonecast::security::KeyPair;
use zonecast::wire::Kind;

const TOKEN: &str = "stream-test-token";

fn relay(byte: u8) -> Batch {
    let mut b = Batch::default();
    b.push(EventKind::Relay(Kind::ObjectUpdate), 1, 7, None, &[byte]);
    b
}

fn checkpoint() -> Batch {
    let mut b = Batch::default();
    b.push(EventKind::Checkpoint, 0, 0, None, &[]);
    b.push(EventKind::Synced, 0, 0, None, &[]);
    b
}

/// Services `hub` (answering checkpoint requests) until `done` or 10 s.
fn pump(hub: &mut StreamHub, mut done: impl FnMut(&mut StreamHub) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(hub) {
        if hub.service(Instant::now()) {
            hub.send_checkpoint(&checkpoint());
        }
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The next event of `link` that is not `Up`.
fn next(link: &StreamLink) -> LinkEvent {
    loop {
        match link
            .next(Duration::from_secs(10))
            .expect("no event from the link")
        {
            LinkEvent::Up => continue,
            e => return e,
        }
    }
}

fn kinds(e: LinkEvent) -> Vec<(EventKind, Vec<u8>)> {
    match e {
        LinkEvent::Batch(b) => b.iter().map(|(e, d)| (e.kind, d.to_vec())).collect(),
        other => panic!("expected a batch, got {other:?}"),
    }
}

fn round_trip(endpoint: &str) {
    round_trip_with(endpoint, None);
}

/// With `key`, the hub encrypts tcp:// streams and the link knows its public key.
fn round_trip_with(endpoint: &str, key: Option<KeyPair>) {
    let public = key.as_ref().map(KeyPair::public);
    let mut hub = StreamHub::bind(&[endpoint.to_string()], TOKEN, key).unwrap();
    let bound = hub.endpoints()[0].clone();
    hub.send(&relay(0)); // nobody yet: nothing to do
    let link = StreamLink::connect(&bound, Role::Standby, TOKEN, public, None).unwrap();
    pump(&mut hub, |h| {
        h.has_live(Role::Standby, Instant::now(), Duration::from_secs(1))
    });
    for i in 1..=100u8 {
        hub.send(&relay(i));
    }
    let first = kinds(next(&link));
    assert_eq!(
        first[0].0,
        EventKind::Checkpoint,
        "the checkpoint comes first"
    );
    for i in 1..=100u8 {
        assert_eq!(
            kinds(next(&link)),
            vec![(EventKind::Relay(Kind::ObjectUpdate), vec![i])]
        );
    }
    assert_eq!(hub.counters().peers, 1);
    drop(hub);
    assert!(
        matches!(next(&link), LinkEvent::Bye),
        "a hub that stops says bye"
    );
}

#[test]
fn tcp_stream_delivers_a_checkpoint_then_every_batch_in_order() {
    round_trip("tcp://127.0.0.1:0");
}

#[test]
fn an_encrypted_tcp_stream_delivers_a_checkpoint_then_every_batch_in_order() {
    round_trip_with("tcp://127.0.0.1:0", Some(KeyPair::generate()));
}

#[test]
fn an_encrypted_hub_refuses_plain_subscribers_wrong_keys_and_silence() {
    let key = KeyPair::generate();
    let mut hub = StreamHub::bind(&["tcp://127.0.0.1:0".to_string()], TOKEN, Some(key)).unwrap();
    let bound = hub.endpoints()[0].clone();
    // Right token, but plain: its hello is not a Noise handshake.
    let plain = StreamLink::connect(&bound, Role::Standby, TOKEN, None, None).unwrap();
    pump(&mut hub, |h| h.counters().refused >= 1);
    // Right token, wrong hub key: the handshake fails on the hub's side.
    let impostor = KeyPair::generate().public();
    let wrong = StreamLink::connect(&bound, Role::Standby, TOKEN, Some(impostor), None).unwrap();
    pump(&mut hub, |h| h.counters().refused >= 2);
    hub.send(&relay(1));
    // The plain link thought it was up (it cannot tell), then lost the stream; the one with
    // the wrong key never got past the handshake. Neither got a batch.
    while let Some(e) = plain.try_next() {
        assert!(matches!(e, LinkEvent::Up | LinkEvent::Lost), "{e:?}");
    }
    while let Some(e) = wrong.try_next() {
        assert!(matches!(e, LinkEvent::Lost), "{e:?}");
    }
    drop((plain, wrong));
    // Let the closed links' last connections settle.
    let settle = Instant::now() + Duration::from_millis(300);
    pump(&mut hub, |_| Instant::now() > settle);
    // A connection that says nothing is dropped after the hello deadline, not before.
    let before = hub.counters().refused;
    let silent = std::net::TcpStream::connect(bound.trim_start_matches("tcp://")).unwrap();
    let quiet_since = Instant::now();
    pump(&mut hub, |h| h.counters().refused > before);
    assert!(quiet_since.elapsed() >= zonecast::replication::stream::HELLO_DEADLINE);
    assert_eq!(hub.counters().peers, 0);
    drop(silent);
}

#[test]
fn ipc_stream_delivers_a_checkpoint_then_every_batch_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stream.sock");
    // A stale socket file (nobody listening) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    round_trip(&format!("ipc://{}", path.display()));
    assert!(!path.exists(), "the hub removes its socket file");
}

#[test]
fn wrong_tokens_and_garbage_are_refused_and_counted() {
    let mut hub = StreamHub::bind(&["tcp://127.0.0.1:0".to_string()], TOKEN, None).unwrap();
    let bound = hub.endpoints()[0].clone();
    let wrong = StreamLink::connect(&bound, Role::Standby, "not-the-token", None, None).unwrap();
    pump(&mut hub, |h| h.counters().refused >= 1);
    let addr = bound.trim_start_matches("tcp://");
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    raw.write_all(&[0xff; 16]).unwrap();
    pump(&mut hub, |h| h.counters().refused >= 2);
    hub.send(&relay(1));
    assert_eq!(
        hub.counters().peers,
        0,
        "nobody refused ever receives a batch"
    );
    assert!(!matches!(
        wrong.next(Duration::from_millis(200)),
        Some(LinkEvent::Batch(_))
    ));
}

#[test]
fn a_link_reports_a_broken_stream_as_lost_and_reconnects_for_a_new_checkpoint() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let link =
        StreamLink::connect(&format!("tcp://{addr}"), Role::Fanout, TOKEN, None, None).unwrap();
    // A fake publisher that accepts and then vanishes without a bye (as after kill -9).
    let (s, _) = listener.accept().unwrap();
    drop(s);
    assert!(matches!(next(&link), LinkEvent::Lost));
    drop(listener);
    // A real hub on the same port later: the link finds it and gets a checkpoint.
    let mut hub = StreamHub::bind(&[format!("tcp://{addr}")], TOKEN, None).unwrap();
    pump(&mut hub, |h| {
        h.has_live(Role::Fanout, Instant::now(), Duration::from_secs(1))
    });
    assert_eq!(kinds(next(&link))[0].0, EventKind::Checkpoint);
}
