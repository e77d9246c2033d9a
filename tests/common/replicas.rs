//! Helpers of the tests that run controller replicas as processes: endpoints, signals,
//! deadline waits, patient clients, the durable facts of a status, and a relay check.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zonecast::control::client::ControlClient;

use super::*;

/// A pair of `control` (one or several replicas) that keeps relaying to devices that only
/// listen for as long as the test runs (they send no keepalives between checks).
pub fn patient_pair(control: &str) -> PairProcess {
    PairProcess::start(
        0,
        &[
            "--control",
            control,
            "--region",
            "r",
            "--token",
            TOKEN,
            "--quiet-after-ms",
            "600000",
            "--evict-after-ms",
            "600000",
        ],
    )
}

pub fn free_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp://{}", l.local_addr().unwrap())
}

pub fn signal(ctl: &mut ControllerProcess, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(ctl.child.id() as i32, sig) };
}

/// Waits until `done` holds (20 s at most).
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn wait_exit(ctl: &mut ControllerProcess) -> std::process::ExitStatus {
    let mut status = None;
    wait_until("the controller exits", || {
        status = ctl.child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

pub fn replica(endpoint: &str, data: &std::path::Path, extra: &[&str]) -> ControllerProcess {
    let data = data.to_str().unwrap();
    let mut args = vec!["--control", endpoint, "--data-dir", data];
    args.extend_from_slice(extra);
    ControllerProcess::launch(&args, Mode::Plain)
}

/// A patient client of every replica in `endpoints` (comma-separated).
pub fn client(endpoints: &str) -> ControlClient {
    ControlClient::new(endpoints)
        .unwrap()
        .with_timeout(Duration::from_secs(2))
        .with_retries(10)
}

/// Waits until the controller at `endpoint` says it is active.
pub fn wait_active(endpoint: &str) {
    let mut c = ControlClient::new(endpoint)
        .unwrap()
        .with_timeout(Duration::from_millis(500))
        .with_retries(1);
    wait_until(&format!("{endpoint} is active"), || {
        c.request(&json!({"op": "discovery"}))
            .is_ok_and(|d| d["role"] == "active")
    });
}

/// The durable facts of a status: pairs (id, alive), scenes (id, pair), device count.
pub type Facts = (Vec<(u64, bool)>, Vec<(u64, Value)>, u64);

pub fn facts(st: &Value) -> Facts {
    let pairs = st["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_u64().unwrap(), p["alive"].as_bool().unwrap()))
        .collect();
    let scenes = st["scenes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_u64().unwrap(), s["pair"].clone()))
        .collect();
    (pairs, scenes, st["devices"].as_u64().unwrap())
}

/// `a` sends `n` updates (of an object of its own) while `b` receives them all.
#[track_caller]
pub fn relays(
    a: &mut zonecast::client::Device,
    b: &mut zonecast::client::Device,
    n: usize,
    x: f32,
) {
    let object = u64::from(a.session().device);
    for i in 0..n {
        move_to(a, object, x + i as f32);
    }
    let got = collect_updates(b, n, Duration::from_secs(10));
    assert_eq!(got.len(), n, "updates relayed");
}
