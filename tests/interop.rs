//! Interoperability: a device written in Python from docs/PROTOCOL.md alone
//! (tests/interop/zc_client.py) talks to a real pair next to a Rust device, both ways.
//! Also pyzmq (libzmq) driving the controller. Needs python3 with `cryptography` and `pyzmq`;
//! scripts/test installs them when missing.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn python_client_from_the_protocol_doc_interoperates() {
    let pair = PairProcess::start(2, &[]);
    let mut rust_dev = pair.joined(2);
    let py = pair.sessions.get(1).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/zc_client.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(pair.udp.to_string())
        .args(["1", &py.scene.to_string(), &py.key, "50", "1.5"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 must be installed (scripts/test installs it)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines
        .next()
        .expect("python client printed nothing")
        .unwrap();
    assert!(first.contains(r#""event": "snapshot""#), "{first}");

    // Python -> pair -> Rust.
    let got = collect_updates(&mut rust_dev, 1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "the Rust device never got the Python update");
    assert_eq!((got[0].object, got[0].origin_device), (50, 1));
    assert_eq!(got[0].fields.translation, [1.5, 0.0, 0.0]);

    // Rust -> pair -> Python.
    move_to(&mut rust_dev, 60, 2.5);
    let second = lines.next().expect("python client got no update").unwrap();
    let v: serde_json::Value = serde_json::from_str(&second).unwrap();
    assert_eq!(v["event"], "update");
    assert_eq!(v["object"], 60);
    assert_eq!(v["origin_device"], 2);
    assert_eq!(v["translation"][0], 2.5);
    assert!(child.wait().unwrap().success(), "python client failed");
}

#[test]
fn python_client_with_an_interest_area_from_the_protocol_doc_interoperates() {
    let pair = PairProcess::start(2, &[]);
    let mut rust_dev = pair.joined(2);
    let py = pair.sessions.get(1).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/zc_interest.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(pair.udp.to_string())
        .args(["1", &py.scene.to_string(), &py.key, "10"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 must be installed (scripts/test installs it)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || -> serde_json::Value {
        let line = lines
            .next()
            .expect("python client printed nothing")
            .unwrap();
        serde_json::from_str(&line).unwrap()
    };
    let first = next();
    assert_eq!(
        (&first["event"], &first["incremental"]),
        (&"snapshot".into(), &false.into())
    );
    // Far away first (never sent), then into the sphere: the full state; then out: a notice.
    move_to(&mut rust_dev, 70, 500.0);
    move_to(&mut rust_dev, 70, 3.0);
    let entered = next();
    assert_eq!(entered["event"], "overwrite");
    assert_eq!(
        (&entered["object"], &entered["translation"][0]),
        (&70.into(), &3.0.into())
    );
    assert_eq!(
        entered["mask"], 7,
        "translation, rotation and scale: the whole state"
    );
    move_to(&mut rust_dev, 70, 40.0);
    let left = next();
    assert_eq!(
        (&left["event"], &left["object"]),
        (&"left".into(), &70.into())
    );
    // The Python side moves its area to x=40 and gets 70 back in an incremental snapshot.
    use std::io::Write;
    writeln!(child.stdin.as_mut().unwrap(), "40").unwrap();
    let snap = next();
    assert_eq!(snap["incremental"], true);
    assert_eq!(snap["objects"][0]["object"], 70);
    assert_eq!(snap["objects"][0]["translation"][0], 40.0);
    assert!(child.wait().unwrap().success(), "python client failed");
}

#[test]
fn pyzmq_drives_the_controller() {
    pyzmq_drives(Mode::Plain);
}

#[test]
fn pyzmq_with_curve_keys_drives_an_encrypted_controller() {
    pyzmq_drives(Mode::Encrypted);
}

fn pyzmq_drives(mode: Mode) {
    let ctl = ControllerProcess::start_in(mode);
    let _pair = ctl.pair("eu", &[]);
    ctl.wait_live_pairs("eu", 1);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/pyzmq_control.py"
    );
    let mut cmd = Command::new("python3");
    cmd.args([script, &ctl.endpoint, TOKEN]);
    if let Some(k) = ctl.key {
        cmd.arg(k.to_z85());
    }
    let out = cmd
        .output()
        .expect("python3 must be installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "pyzmq client failed (scripts/test installs pyzmq): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // What pyzmq created is there for Rust clients too.
    let st = ctl.status();
    assert!(st["scenes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "from-pyzmq"));
    assert_eq!(st["devices"], 1);
    let device = v["device"].as_u64().unwrap() as u32;
    let loc = ctl.client().locate(device).unwrap();
    assert_eq!(loc.scene as u64, v["scene"].as_u64().unwrap());
}
