//! Hostile input to every port that speaks ZeroMQ or the replication stream, with real
//! processes and a raw ZMTP peer written here byte by byte: the 73-byte greeting + long-frame
//! header that used to abort the controller, a 64 MiB body, a 100,000-frame message, a 64 MiB
//! message in 64 KiB frames, a reflected envelope. Each is cut off or dropped and counted, the
//! controller's peak memory (VmHWM) stays within the bound docs/SECURITY.md states, and a
//! legitimate pyzmq client is still answered.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use zonecast::ipc_bus::zmq::{ZmqPublisher, ZmqSubscriber};
use zonecast::ipc_bus::{Publisher, Subscriber, Topic};
use zonecast::net::zeromq::Curve;
use zonecast::scene::{Batch, EventKind};
use zonecast::wire::Kind;

/// What the controller's peak resident memory may grow by over everything one test sends
/// (docs/SECURITY.md: a connection holds at most (8 + 1) x 256 KiB of input).
const GROWTH_BOUND_KB: u64 = 24 * 1024;

/// A ZMTP 3.0 greeting with the NULL mechanism, as a client.
fn greeting() -> Vec<u8> {
    let mut g = vec![0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 3, 0];
    let mut mechanism = b"NULL".to_vec();
    mechanism.resize(20, 0);
    g.extend_from_slice(&mechanism);
    g.push(0); // as-server
    g.resize(64, 0);
    g
}

/// The READY command of a socket of `kind` (`DEALER`, `SUB`).
fn ready(kind: &str) -> Vec<u8> {
    let mut body = b"\x05READY".to_vec();
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&(kind.len() as u32).to_be_bytes());
    body.extend_from_slice(kind.as_bytes());
    let mut f = vec![0x04, body.len() as u8];
    f.extend_from_slice(&body);
    f
}

/// A frame header: short or long, with or without MORE.
fn header(len: u64, more: bool) -> Vec<u8> {
    let more = u8::from(more);
    if len < 256 {
        vec![more, len as u8]
    } else {
        let mut h = vec![0x02 | more];
        h.extend_from_slice(&len.to_be_bytes());
        h
    }
}

fn frame(body: &[u8], more: bool) -> Vec<u8> {
    let mut f = header(body.len() as u64, more);
    f.extend_from_slice(body);
    f
}

/// A raw TCP connection to a `tcp://` endpoint.
fn raw(endpoint: &str) -> TcpStream {
    let s = TcpStream::connect(endpoint.trim_start_matches("tcp://")).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

/// A raw DEALER that completed the NULL handshake (the server's greeting and READY read).
fn handshaken(endpoint: &str) -> TcpStream {
    handshaken_as(endpoint, "DEALER")
}

fn handshaken_as(endpoint: &str, kind: &str) -> TcpStream {
    let mut s = raw(endpoint);
    s.write_all(&greeting()).unwrap();
    s.write_all(&ready(kind)).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    // 64-byte greeting, then a READY command frame.
    while got.len() < 64 + 2 || got.len() < 64 + 2 + usize::from(got[65]) {
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) => panic!("the server closed during the handshake"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => assert!(Instant::now() < deadline, "no handshake"),
        }
    }
    s
}

/// Writes `bytes` (as much as the peer takes) and waits until it closes the connection.
fn expect_cut_off(s: &mut TcpStream, bytes: &[u8]) {
    let mut at = 0;
    while at < bytes.len() {
        match s.write(&bytes[at..(at + (1 << 20)).min(bytes.len())]) {
            Ok(n) => at += n,
            Err(_) => break, // reset: already cut off
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(_) => assert!(Instant::now() < deadline, "the peer was not cut off"),
        }
    }
}

/// Peak resident set of `pid`, kB.
fn vm_hwm(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A legitimate pyzmq client's `discovery` is answered.
fn pyzmq_answered(ctl: &ControllerProcess) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/pyzmq_ping.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(&ctl.endpoint);
    if let Some(k) = ctl.key {
        cmd.arg(k.to_z85());
    }
    let out = cmd
        .output()
        .expect("python3 with pyzmq (scripts/test installs it)");
    assert!(
        out.status.success(),
        "pyzmq got no answer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
}

/// Connections the controller has seen closed (its libzmq monitor counts them).
fn closed_connections(ctl: &ControllerProcess) -> u64 {
    ctl.metrics()[r#"zonecast_control_connections_total{event="closed"}"#]
}

/// Reads from `s` until what arrived contains `needle`; returns it.
fn read_until(s: &mut TcpStream, needle: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&got).contains(needle) {
        let mut buf = [0u8; 4096];
        if let Ok(n) = s.read(&mut buf) {
            assert!(n > 0, "closed before {needle}");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(Instant::now() < deadline, "no {needle}: {got:?}");
    }
    got
}

fn alive(ctl: &mut ControllerProcess) -> bool {
    ctl.child.try_wait().unwrap().is_none()
}

#[test]
fn the_73_byte_greeting_and_long_frame_header_no_longer_abort_the_controller() {
    let mut ctl = ControllerProcess::start();
    // During the handshake: greeting + a long frame declaring 2^40 bytes (73 bytes in all).
    let mut attack = greeting();
    attack.extend_from_slice(&header(1 << 40, false));
    assert_eq!(attack.len(), 73);
    expect_cut_off(&mut raw(&ctl.endpoint), &attack);
    // After a complete handshake: the same header where a message belongs.
    expect_cut_off(&mut handshaken(&ctl.endpoint), &header(1 << 40, true));
    assert!(alive(&mut ctl), "the controller died");
    pyzmq_answered(&ctl);
    assert!(closed_connections(&ctl) >= 1);
}

#[test]
fn oversized_bodies_and_endless_frames_are_cut_off_within_a_memory_bound() {
    let mut ctl = ControllerProcess::start();
    pyzmq_answered(&ctl);
    let pid = ctl.child.id();
    let before = vm_hwm(pid);

    // A 64 MiB body in one frame: refused from its header.
    let mut body = vec![0x01, 0x00]; // empty delimiter, as REQ sends
    body.extend_from_slice(&header(64 << 20, false));
    body.resize(body.len() + (64 << 20), b' ');
    expect_cut_off(&mut handshaken(&ctl.endpoint), &body);

    // 100,000 frames of one message.
    let frames: Vec<u8> = (0..100_000).flat_map(|_| header(0, true)).collect();
    expect_cut_off(&mut handshaken(&ctl.endpoint), &frames);

    // 64 MiB as 1024 frames of 64 KiB, each under the frame bound.
    let chunk = frame(&vec![b'x'; 64 << 10], true);
    let many: Vec<u8> = (0..1024).flat_map(|_| chunk.iter().copied()).collect();
    expect_cut_off(&mut handshaken(&ctl.endpoint), &many);

    assert!(alive(&mut ctl), "the controller died");
    pyzmq_answered(&ctl);
    let grew = vm_hwm(pid).saturating_sub(before);
    eprintln!("controller peak RSS {before} kB before, grew {grew} kB");
    assert!(
        grew < GROWTH_BOUND_KB,
        "peak RSS grew {grew} kB (bound {GROWTH_BOUND_KB} kB)"
    );
    assert!(closed_connections(&ctl) >= 3);
}

#[test]
fn an_envelope_is_never_reflected_and_a_body_over_the_request_limit_is_answered_too_large() {
    let ctl = ControllerProcess::start();
    let discovery = frame(br#"{"op":"discovery"}"#, false);
    // Ten envelope frames (a DEALER may send any): dropped unanswered, counted.
    let mut s = handshaken(&ctl.endpoint);
    let mut msg: Vec<u8> = (0..10).flat_map(|_| frame(&[b'e'; 100], true)).collect();
    msg.extend_from_slice(&discovery);
    s.write_all(&msg).unwrap();
    let key = r#"zonecast_control_dropped_total{reason="envelope"}"#;
    let deadline = Instant::now() + Duration::from_secs(5);
    while ctl.metrics()[key] < 1 {
        assert!(Instant::now() < deadline, "the envelope was not dropped");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The connection still serves a proper request: [empty, body] -> [empty, reply].
    s.write_all(&[header(0, true), discovery.clone()].concat())
        .unwrap();
    let got = read_until(&mut s, r#""ok":true"#);
    assert!(
        !got.windows(100).any(|w| w == [b'e'; 100]),
        "the envelope came back"
    );
    // 100 KiB: over the 64 KiB request limit, under the 256 KiB message bound.
    let big = frame(&vec![b' '; 100 << 10], false);
    s.write_all(&[header(0, true), big].concat()).unwrap();
    read_until(&mut s, "too_large");
    assert_eq!(
        ctl.metrics()[r#"zonecast_control_errors_total{code="too_large"}"#],
        1
    );
}

#[test]
fn the_pairs_stream_and_the_zeromq_bus_shrug_off_the_same_bytes() {
    let ctl = ControllerProcess::start();
    let mut pair = ctl.pair("eu", &[]);
    ctl.wait_live_pairs("eu", 1);
    let mut attack = greeting();
    attack.extend_from_slice(&header(1 << 40, false));
    expect_cut_off(&mut raw(&pair.bus[0]), &attack);
    assert!(pair.is_alive());
    assert!(pair.wait_metric("zonecast_bus_refused_total", 1) >= 1);
    let scene = ctl.scene("arena", "eu");
    assert_relays(&ctl, scene);

    // A ZeroMQ bus publisher (libzmq PUB) in this process: it must neither abort nor stop
    // serving its subscriber.
    let mut p = ZmqPublisher::bind("tcp://127.0.0.1:0", 64, &Curve::Off).unwrap();
    let endpoint = p.endpoint().to_string();
    expect_cut_off(&mut raw(&endpoint), &attack);
    let mut sub = handshaken_as(&endpoint, "SUB");
    expect_cut_off(&mut sub, &frame(&vec![1u8; 4096], false));
    let mut s = ZmqSubscriber::connect(&endpoint, &[Topic::All], 64, &Curve::Off).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut b = Batch::default();
        b.push(EventKind::Relay(Kind::ObjectUpdate), 1, 7, None, &[9]);
        p.publish(b).unwrap();
        if s.recv(Duration::from_millis(20)).unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the bus stopped serving");
    }
}
