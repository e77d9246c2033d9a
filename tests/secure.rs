//! The control plane encrypted and authenticated, and its abuse limits, with real processes:
//! `zonecast keygen` key files, a CurveZMQ controller that refuses plain clients and clients
//! holding the wrong key, the warnings for plain endpoints other hosts can reach, and
//! device registration refused past its rate and scene limits, counted in metrics.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;
use zonecast::control::client::{ControlClient, RequestError};
use zonecast::control::ErrorCode;
use zonecast::security::{KeyPair, PublicKey};

fn discovery(client: &mut ControlClient) -> Result<serde_json::Value, RequestError> {
    client.request(&json!({"op": "discovery"}))
}

#[test]
fn keygen_writes_a_public_file_and_a_private_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("ctl");
    let out = zonecast_ok(&["keygen", "--out", base.to_str().unwrap()]);
    let public = PublicKey::from_arg(dir.path().join("ctl.key").to_str().unwrap()).unwrap();
    assert!(out.contains(&public.to_z85()), "{out}");
    let secret = dir.path().join("ctl.key_secret");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(KeyPair::load(&secret).unwrap().public(), public);
    // Never overwritten.
    let again = Command::new(env!("CARGO_BIN_EXE_zonecast"))
        .args(["keygen", "--out", base.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success());
}

#[test]
fn an_encrypted_controller_refuses_plain_clients_and_wrong_keys() {
    let ctl = ControllerProcess::start_in(Mode::Encrypted);
    let quick = |c: ControlClient| c.with_timeout(Duration::from_millis(300)).with_retries(1);
    // The right key: served.
    assert_eq!(discovery(&mut ctl.client()).unwrap()["ok"], true);
    // Plain ZMTP, and CURVE with another server key: no answer, ever.
    let mut plain = quick(ControlClient::new(&ctl.endpoint).unwrap());
    assert!(matches!(
        discovery(&mut plain),
        Err(RequestError::Unavailable(_))
    ));
    let impostor = KeyPair::generate().public();
    let mut wrong = quick(
        ControlClient::new(&ctl.endpoint)
            .unwrap()
            .with_server_key(Some(impostor)),
    );
    assert!(matches!(
        discovery(&mut wrong),
        Err(RequestError::Unavailable(_))
    ));
    // libzmq reports a failed handshake on its own time: wait for both to be counted.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = ctl.metrics();
        let failed: u64 = m
            .iter()
            .filter(|(k, _)| k.contains("handshake_failed"))
            .map(|(_, v)| v)
            .sum();
        if failed >= 2 || std::time::Instant::now() >= deadline {
            assert!(failed >= 2, "{m:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Operators use the key through the CLI; a pair with it registers (streams encrypted).
    let pair = ctl.pair("eu", &[]);
    ctl.wait_live_pairs("eu", 1);
    let mut args = vec!["status"];
    let operator = ctl.cli_args();
    args.extend(operator.iter().map(String::as_str));
    let text = zonecast_ok(&args);
    assert!(text.contains(&pair.udp.to_string()), "{text}");
    let st = ctl.status();
    assert!(st["pairs"][0]["bus_key"].is_string(), "{st}");
    // A plain operator gets a clear failure, not a hang.
    let out = Command::new(env!("CARGO_BIN_EXE_zonecast"))
        .args(["status", "--control", &ctl.endpoint, "--token", TOKEN])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unavailable"));
}

/// The stderr line of a process that contains `needle`, within a few lines.
fn stderr_mentions(args: &[&str], needle: &str) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zonecast"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let found = lines.take(5).any(|l| l.is_ok_and(|l| l.contains(needle)));
    let _ = child.kill();
    let _ = child.wait();
    found
}

#[test]
fn plain_endpoints_other_hosts_can_reach_are_warned_about() {
    assert!(stderr_mentions(
        &[
            "controller",
            "--memory",
            "--control",
            "tcp://0.0.0.0:0",
            "--token",
            TOKEN
        ],
        "NOT encrypted"
    ));
    let ctl = ControllerProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let sessions = dir.path().join("s.json");
    zonecast_ok(&["sessions", "--out", sessions.to_str().unwrap()]);
    assert!(stderr_mentions(
        &[
            "pair",
            "--listen",
            "127.0.0.1:0",
            "--sessions",
            sessions.to_str().unwrap(),
            "--token",
            TOKEN,
            "--bus",
            "tcp://0.0.0.0:0",
            "--stats-every-secs",
            "0",
        ],
        "NOT encrypted"
    ));
    drop(ctl);
}

#[test]
fn registration_floods_are_refused_past_the_limits_and_counted() {
    let ctl = ControllerProcess::launch(
        &[
            "--control",
            "tcp://127.0.0.1:0",
            "--register-burst",
            "12",
            "--register-rate",
            "0.5",
            "--max-devices-per-scene",
            "8",
        ],
        Mode::Plain,
    );
    let _pair = ctl.pair("eu", &[]);
    ctl.wait_live_pairs("eu", 1);
    let scene = ctl.scene("arena", "eu");
    let mut client = ctl.client();
    let mut codes = Vec::new();
    for _ in 0..60 {
        match client.register_device(scene, None, None) {
            Ok(_) => codes.push("ok"),
            Err(RequestError::Refused(e)) if e.code == ErrorCode::SceneFull => {
                codes.push("scene_full")
            }
            Err(RequestError::Refused(e)) if e.code == ErrorCode::RateLimited => {
                codes.push("rate_limited")
            }
            Err(e) => panic!("{e}"),
        }
    }
    let count = |c: &str| codes.iter().filter(|x| **x == c).count();
    assert_eq!(count("ok"), 8, "{codes:?}");
    assert!(count("scene_full") >= 4, "{codes:?}");
    assert!(count("rate_limited") >= 40, "{codes:?}");
    assert_eq!(ctl.status()["devices"], 8, "the state stays bounded");
    let m = ctl.metrics();
    assert_eq!(
        m[r#"zonecast_control_errors_total{code="rate_limited"}"#] as usize,
        count("rate_limited")
    );
    assert_eq!(
        m[r#"zonecast_control_errors_total{code="scene_full"}"#] as usize,
        count("scene_full")
    );
    assert_eq!(
        m[r#"zonecast_control_requests_total{op="device.register"}"#],
        60
    );
}
