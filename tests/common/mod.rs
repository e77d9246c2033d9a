//! Shared helpers of the end-to-end tests: a real `zonecast pair` process on loopback with a
//! generated sessions file, devices from the client library, and the pair's metrics.

#![allow(dead_code)]

pub mod netns;
pub mod replicas;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zonecast::client::{Area, Device, Event, ObjectRecord, Session};
use zonecast::control::client::ControlClient;
use zonecast::pair::SessionsFile;
use zonecast::security::PublicKey;
use zonecast::wire::{Fields, MASK_TRANSLATION};

/// A `zonecast pair` child process, killed on drop.
pub struct PairProcess {
    pub child: Child,
    pub udp: SocketAddr,
    pub metrics: SocketAddr,
    pub sessions: SessionsFile,
    pub sessions_path: std::path::PathBuf,
    /// The replication stream endpoints it printed (empty: none).
    pub bus: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

impl PairProcess {
    /// Starts a pair with `devices` sessions in scene 1 and the given extra arguments.
    pub fn start(devices: u32, extra: &[&str]) -> PairProcess {
        let dir = tempfile::tempdir().unwrap();
        let sessions = SessionsFile::generate(1, devices, 1);
        let path = dir.path().join("sessions.json");
        std::fs::write(&path, sessions.to_json()).unwrap();
        let mut p = PairProcess::start_with(&path, sessions, extra);
        p._dir = Some(dir);
        p
    }

    /// Starts a pair serving the sessions file at `path` (which holds `sessions`).
    pub fn start_with(
        path: &std::path::Path,
        sessions: SessionsFile,
        extra: &[&str],
    ) -> PairProcess {
        PairProcess::launch("pair", path, sessions, extra)
    }

    /// Starts `zonecast <command>` (`pair` or `ingest`) serving the sessions file at `path`.
    pub fn launch(
        command: &str,
        path: &std::path::Path,
        sessions: SessionsFile,
        extra: &[&str],
    ) -> PairProcess {
        let path = path.to_path_buf();
        let mut child = Command::new(env!("CARGO_BIN_EXE_zonecast"))
            .args([
                command,
                "--listen",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
            ])
            .arg("--sessions")
            .arg(&path)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "zonecast pair: udp=ADDR metrics=http://ADDR/metrics sessions=N"
        let field = |name: &str| -> String {
            let start = line
                .find(name)
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                + name.len();
            line[start..]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string()
        };
        let udp = field("udp=").parse().unwrap();
        let metrics = field("metrics=http://")
            .trim_end_matches("/metrics")
            .parse()
            .unwrap();
        let bus = field("bus=")
            .split(',')
            .filter(|b| !b.is_empty())
            .map(String::from)
            .collect();
        PairProcess {
            child,
            udp,
            metrics,
            sessions,
            sessions_path: path,
            bus,
            _dir: None,
        }
    }

    /// A connected (not yet joined) device for session `device`.
    pub fn device(&self, device: u32) -> Device {
        let s = self.sessions.get(device).unwrap();
        Device::connect(Session {
            device,
            scene: s.scene,
            key: s.session_key().unwrap(),
            pair: self.udp,
        })
        .unwrap()
    }

    /// A device that has joined and received its snapshot.
    pub fn joined(&self, device: u32) -> Device {
        let mut d = self.device(device);
        d.join(0.0).unwrap();
        match d.recv(Duration::from_secs(5)).unwrap() {
            Some(Event::Snapshot { .. }) => d,
            other => panic!("device {device} expected a snapshot, got {other:?}"),
        }
    }

    /// The pair's metrics, `name{labels}` to value.
    pub fn metrics(&self) -> HashMap<String, u64> {
        scrape(self.metrics)
    }

    pub fn dropped(&self, reason: &str) -> u64 {
        self.metrics()[&format!("zonecast_ingest_dropped_total{{reason=\"{reason}\"}}")]
    }

    /// Waits until the metric reaches `at_least` (counters are published once per burst).
    pub fn wait_metric(&self, key: &str, at_least: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.metrics().get(key).copied().unwrap_or(0);
            if v >= at_least || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// Prometheus metrics at `addr`, `name{labels}` to value.
pub fn scrape(addr: SocketAddr) -> HashMap<String, u64> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with("zonecast_"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

pub const TOKEN: &str = "test-token";

/// Controller counters of failure detection: deaths a probe confirmed, deaths of a pair
/// silent for its window, pairs that came back after being declared dead.
pub const DEATHS_PROBE: &str = "zonecast_control_pair_deaths_total{cause=\"probe\"}";
pub const DEATHS_SILENT: &str = "zonecast_control_pair_deaths_total{cause=\"silent\"}";
pub const REVIVALS: &str = "zonecast_control_pair_revivals_total{pair=\"any\"}";

/// How the cluster under test protects what would leave the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Plain,
    /// CurveZMQ on the control plane (the controller's key from `zonecast keygen`), Noise on
    /// the pairs' replication streams.
    Encrypted,
}

/// A `zonecast controller` child process, killed on drop.
pub struct ControllerProcess {
    pub child: Child,
    pub endpoint: String,
    /// Its public key, when it runs CurveZMQ.
    pub key: Option<PublicKey>,
    /// Its metrics endpoint, when started with one.
    pub metrics: Option<SocketAddr>,
    _dir: Option<tempfile::TempDir>,
}

impl ControllerProcess {
    pub fn start() -> ControllerProcess {
        ControllerProcess::start_at("tcp://127.0.0.1:0")
    }

    /// A controller bound at `endpoint` (tcp:// or ipc://).
    pub fn start_at(endpoint: &str) -> ControllerProcess {
        ControllerProcess::launch(&["--control", endpoint], Mode::Plain)
    }

    /// A controller on loopback in `mode`.
    pub fn start_in(mode: Mode) -> ControllerProcess {
        ControllerProcess::launch(&["--control", "tcp://127.0.0.1:0"], mode)
    }

    /// `zonecast controller --token TOKEN --metrics 127.0.0.1:0 args...`; in encrypted mode
    /// with a key pair made by `zonecast keygen`.
    pub fn launch(args: &[&str], mode: Mode) -> ControllerProcess {
        ControllerProcess::launch_with(Command::new(env!("CARGO_BIN_EXE_zonecast")), args, mode)
    }

    /// The same, with `cmd` as the way to run `zonecast` (e.g. inside a network namespace:
    /// `ip netns exec NS zonecast`).
    pub fn launch_with(mut cmd: Command, args: &[&str], mode: Mode) -> ControllerProcess {
        let dir = tempfile::tempdir().unwrap();
        cmd.args(["controller", "--token", TOKEN, "--metrics", "127.0.0.1:0"])
            .args(args);
        if !args.iter().any(|a| *a == "--data-dir" || *a == "--memory") {
            cmd.arg("--data-dir").arg(dir.path().join("data"));
        }
        if mode == Mode::Encrypted {
            let base = dir.path().join("controller");
            zonecast_ok(&["keygen", "--out", base.to_str().unwrap()]);
            cmd.arg("--key")
                .arg(dir.path().join("controller.key_secret"));
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let field = |name: &str| {
            let start = line.find(name)? + name.len();
            line[start..].split_whitespace().next().map(str::to_string)
        };
        let endpoint = field("control=").unwrap_or_else(|| panic!("no endpoint in {line:?}"));
        let key = field("curve=").map(|k| PublicKey::from_z85(&k).unwrap());
        assert_eq!(key.is_some(), mode == Mode::Encrypted, "{line}");
        let metrics =
            field("metrics=http://").and_then(|m| m.trim_end_matches("/metrics").parse().ok());
        ControllerProcess {
            child,
            endpoint,
            key,
            metrics,
            _dir: Some(dir),
        }
    }

    pub fn client(&self) -> ControlClient {
        ControlClient::new(&self.endpoint)
            .unwrap()
            .with_server_key(self.key)
    }

    /// `--control ENDPOINT --token TOKEN [--controller-key KEY]`, for CLI commands.
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = vec![
            "--control".to_string(),
            self.endpoint.clone(),
            "--token".into(),
            TOKEN.into(),
        ];
        if let Some(k) = self.key {
            // One argument: a Z85 key may start with `-`, which clap would take for a flag
            // (a CI run drew one: "unexpected argument '-9'").
            args.push(format!("--controller-key={}", k.to_z85()));
        }
        args
    }

    /// A `zonecast pair` registered in `region` (in this controller's mode), with `extra`
    /// arguments.
    pub fn pair(&self, region: &str, extra: &[&str]) -> PairProcess {
        let mut args = self.cli_args();
        args.extend(["--region".to_string(), region.to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        PairProcess::start(0, &args)
    }

    /// The controller's metrics, `name{labels}` to value.
    pub fn metrics(&self) -> HashMap<String, u64> {
        scrape(self.metrics.expect("started with --metrics"))
    }

    /// One controller metric, `name{labels}` (0 when absent).
    pub fn metric(&self, key: &str) -> u64 {
        self.metrics().get(key).copied().unwrap_or(0)
    }

    /// Creates a scene in `region` and returns its id.
    pub fn scene(&self, name: &str, region: &str) -> u32 {
        let reply = self
            .client()
            .request(&json!({"op": "scene.create", "token": TOKEN, "name": name, "region": region}))
            .unwrap();
        reply["scene"]["id"].as_u64().unwrap() as u32
    }

    pub fn status(&self) -> Value {
        self.client()
            .request(&json!({"op": "cluster.status", "token": TOKEN}))
            .unwrap()
    }

    /// Waits until `region` has `live` live pairs.
    pub fn wait_live_pairs(&self, region: &str, live: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let st = self.status();
            let n = st["regions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == region)
                .map(|r| r["live_pairs"].as_u64().unwrap())
                .unwrap_or(0);
            if n == live {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "region {region} never had {live} live pairs: {}",
            self.status()
        );
    }

    /// Registers a device in `scene` and joins it at its pair (snapshot received).
    pub fn device(&self, scene: u32) -> Device {
        self.device_at(scene, None, None).0
    }

    /// Registers a device in `scene` at `anchor` and joins it with `area` (none: everything)
    /// at the pair it was homed on (snapshot received); that pair's id.
    pub fn device_at(
        &self,
        scene: u32,
        anchor: Option<[f32; 3]>,
        area: Option<Area>,
    ) -> (Device, u32) {
        let reg = self
            .client()
            .register_device_at(scene, None, None, anchor)
            .unwrap();
        let mut d = Device::connect(Session {
            device: reg.location.device,
            scene,
            key: reg.key,
            pair: reg.location.udp,
        })
        .unwrap();
        d.set_epoch(reg.location.epoch);
        let wait = Duration::from_secs(5);
        let snap = match area {
            Some(area) => d.join_area_until_snapshot(area, wait),
            None => d.join_until_snapshot(0.0, wait),
        };
        assert!(
            snap.unwrap().is_some(),
            "device {} got no snapshot",
            reg.location.device
        );
        (d, reg.location.pair)
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `zonecast pair` registered with a controller.
pub fn controlled_pair(control: &str, region: &str) -> PairProcess {
    PairProcess::start(
        0,
        &["--control", control, "--region", region, "--token", TOKEN],
    )
}

impl Drop for PairProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn drop_key(reason: &str) -> String {
    format!("zonecast_ingest_dropped_total{{reason=\"{reason}\"}}")
}

/// Everything `d` receives until `quiet` passes with nothing new.
pub fn drain(d: &mut Device, quiet: Duration) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(e) = d.recv(quiet).unwrap() {
        out.push(e);
    }
    out
}

/// The object updates among `events`.
pub fn updates(events: &[Event]) -> Vec<ObjectRecord> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Update(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// Moves `object` to x.
pub fn move_to(d: &mut Device, object: u64, x: f32) -> u64 {
    let f = Fields {
        translation: [x, 0.0, 0.0],
        ..Fields::default()
    };
    d.update(object, MASK_TRANSLATION, &f, &[]).unwrap()
}

/// Receives until `n` updates arrived or `timeout` passed.
pub fn collect_updates(d: &mut Device, n: usize, timeout: Duration) -> Vec<ObjectRecord> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        if let Some(Event::Update(r)) = d.recv(left).unwrap() {
            got.push(r);
        }
    }
    got
}

/// Runs `zonecast args...` to completion; panics with its stderr unless it succeeds; returns
/// its stdout.
pub fn zonecast_ok(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_zonecast"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "zonecast {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Registers two devices in `scene` and checks that an update of one reaches the other.
pub fn assert_relays(ctl: &ControllerProcess, scene: u32) {
    let mut a = ctl.device(scene);
    let mut b = ctl.device(scene);
    move_to(&mut a, 1, 1.0);
    assert_eq!(collect_updates(&mut b, 1, Duration::from_secs(5)).len(), 1);
}
