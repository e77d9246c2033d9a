//! End-to-end tests of the command line: `zonecast device` receiving and sending through a real
//! pair, `zonecast sessions`, and `zonecast up` (controller, two pairs, devices) showing updates
//! flowing.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use zonecast::pair::SessionsFile;

fn zonecast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zonecast"))
}

#[test]
fn device_command_prints_what_arrives_and_sends_updates() {
    let pair = PairProcess::start(3, &[]);
    let mut listener = zonecast()
        .args([
            "device",
            "--pair",
            &pair.udp.to_string(),
            "--device",
            "1",
            "--duration-secs",
            "3",
        ])
        .arg("--sessions")
        .arg(&pair.sessions_path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(listener.stdout.take().unwrap()).lines();
    let banner = lines.next().unwrap().unwrap();
    assert!(banner.starts_with("device 1 in scene 1"), "{banner}");
    assert_eq!(
        lines.next().unwrap().unwrap(),
        "snapshot chunk 1/1 objects=0"
    );

    let mut me = pair.joined(2);
    move_to(&mut me, 77, 4.0);
    let line = lines.next().unwrap().unwrap();
    assert!(
        line.starts_with("update object=77 from=2 translation=[4.0, 0.0, 0.0]"),
        "{line}"
    );

    // A sending device: its updates reach ours.
    let status = zonecast()
        .args([
            "device",
            "--pair",
            &pair.udp.to_string(),
            "--device",
            "3",
            "--send-hz",
            "50",
        ])
        .args(["--duration-secs", "1", "--quiet"])
        .arg("--sessions")
        .arg(&pair.sessions_path)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let got = collect_updates(&mut me, 20, Duration::from_secs(5));
    assert!(
        got.len() >= 20,
        "got {} updates from the sending device",
        got.len()
    );
    assert!(got.iter().all(|r| r.origin_device == 3 && r.object == 3));
    let _ = listener.wait();
}

#[test]
fn device_command_refuses_bad_arguments_clearly() {
    let out = zonecast()
        .args(["device", "--device", "1", "--scene", "1", "--key", "zz"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--key must be 64 hex characters"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("s.json");
    std::fs::write(&bad, "{\"devices\": [").unwrap();
    let out = zonecast()
        .args(["pair", "--listen", "127.0.0.1:0", "--sessions"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sessions file is not valid"), "{err}");
}

#[test]
fn sessions_command_writes_a_loadable_file() {
    let out = zonecast()
        .args(["sessions", "--devices", "5", "--scenes", "2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let file = SessionsFile::parse(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(file.devices.len(), 5);
    assert_eq!(file.devices.iter().filter(|d| d.scene == 2).count(), 2);
}

#[test]
fn up_runs_a_local_setup_with_updates_flowing() {
    let out = zonecast()
        .args(["up", "--control", "tcp://127.0.0.1:0"])
        .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .args(["--devices", "3", "--hz", "50", "--duration-secs", "3"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("t="))
        .unwrap_or_else(|| panic!("no rate line in {text}"));
    let received: u64 = line
        .split("devices received")
        .nth(1)
        .and_then(|r| r.trim().split('/').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no received rate in {line}"));
    assert!(received > 0, "{line}");
    assert!(line.contains("joined 3"), "{line}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("  pair ")).count(),
        2,
        "{text}"
    );
}
