//! Operating zonecast as a server, with real processes: signals (SIGTERM drains or
//! deregisters a pair and it exits 0, a second signal exits at once, Ctrl-C makes a device
//! leave), permanent errors exit non-zero at once with their reason, the configuration
//! layers (flag > ZONECAST_* > file > default) and `config check`, `/live` and `/ready`
//! transitions, `promtool check metrics` on every process's metrics, a listening device's
//! CPU use, and `systemd-analyze verify` on the shipped units.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use zonecast::client::Event;

fn zonecast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zonecast"))
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a child process this test started and still owns.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// Waits for `child` to exit, at most `within`; its exit status code.
fn exit_code(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s.code().unwrap_or(-1));
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `GET path` on an admin endpoint: status code and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (code, body)
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_deregisters_a_pair_without_standby_and_a_second_signal_exits_at_once() {
    let ctl = ControllerProcess::start();
    // Alone in its region: nobody to drain to, so it deregisters; exit 0.
    let mut lone = ctl.pair("solo", &[]);
    ctl.wait_live_pairs("solo", 1);
    signal(&lone.child, libc::SIGTERM);
    assert_eq!(exit_code(&mut lone.child, Duration::from_secs(5)), Some(0));
    let st = ctl.status();
    assert_eq!(st["pairs"].as_array().unwrap().len(), 0, "{st}");

    // A pair whose drain would take a minute (its grace): the second SIGTERM ends it now.
    let grace = ["--drain-grace-ms", "60000", "--stop-timeout-ms", "60000"];
    let mut slow = ctl.pair("duo", &grace);
    let _other = ctl.pair("duo", &[]);
    ctl.wait_live_pairs("duo", 2);
    signal(&slow.child, libc::SIGTERM);
    wait_for("the drain to start", || {
        get(slow.metrics, "/ready").1.contains("leaving")
    });
    assert!(exit_code(&mut slow.child, Duration::from_millis(300)).is_none());
    signal(&slow.child, libc::SIGTERM);
    assert_eq!(
        exit_code(&mut slow.child, Duration::from_secs(2)),
        Some(128 + libc::SIGTERM)
    );

    // Static sessions: nothing to hand over, exit 0 at once.
    let mut fixed = PairProcess::start(1, &[]);
    signal(&fixed.child, libc::SIGINT);
    assert_eq!(exit_code(&mut fixed.child, Duration::from_secs(2)), Some(0));
}

#[test]
fn a_listening_device_sleeps_and_ctrl_c_makes_it_leave() {
    let pair = PairProcess::start(2, &[]);
    let mut listener = zonecast()
        .args(["device", "--pair", &pair.udp.to_string(), "--device", "1"])
        .arg("--sessions")
        .arg(&pair.sessions_path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(listener.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("device 1"));
    assert!(lines.next().unwrap().unwrap().starts_with("snapshot"));
    let mut peer = pair.joined(2);

    // CPU over 3 s, from /proc: user + system ticks.
    let ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", listener.id())).unwrap();
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (t0, c0) = (Instant::now(), ticks());
    std::thread::sleep(Duration::from_secs(3));
    let share = (ticks() - c0) as f64 / hz / t0.elapsed().as_secs_f64();
    eprintln!(
        "a listening device used {:.2}% of a CPU over 3 s",
        share * 100.0
    );
    assert!(
        share < 0.05,
        "a listening device used {:.1}% of a CPU",
        share * 100.0
    );

    signal(&listener, libc::SIGINT);
    assert_eq!(exit_code(&mut listener, Duration::from_secs(3)), Some(0));
    assert!(lines.any(|l| l.unwrap() == "left scene 1"));
    let events = drain(&mut peer, Duration::from_millis(500));
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::PeerLeft {
                device: 1,
                timed_out: false
            }
        )),
        "{events:?}"
    );
}

#[test]
fn permanent_errors_exit_non_zero_at_once_with_their_reason() {
    let ctl = ControllerProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("ipc://{}/nothing.sock", dir.path().display());
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec![
                "pair",
                "--listen",
                "127.0.0.1:0",
                "--control",
                &ctl.endpoint,
                "--token",
                "wrong",
            ],
            3,
            "wrong token",
        ),
        (
            vec![
                "pair",
                "--control",
                &ctl.endpoint,
                "--token",
                TOKEN,
                "--capacity",
                "0",
            ],
            2,
            "--capacity",
        ),
        (
            vec!["pair", "--control", "garbage", "--token", TOKEN],
            2,
            "not a control endpoint",
        ),
        (vec!["pair", "--listen", "127.0.0.1:0"], 2, "--control"),
        (
            vec!["fanout", "--bus", &missing, "--token", TOKEN],
            1,
            "no ingest half",
        ),
        (
            vec!["controller", "--memory", "--heartbeat-ms", "0"],
            2,
            "--heartbeat-ms",
        ),
        (
            vec![
                "controller",
                "--memory",
                "--heartbeat-ms",
                "100",
                "--dead-after-ms",
                "50",
            ],
            2,
            "two heartbeats",
        ),
        (
            vec!["pair", "--sessions", "x", "--quiet-after-ms", "0"],
            2,
            "--quiet-after-ms",
        ),
    ];
    for (args, code, reason) in cases {
        let mut child = zonecast()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let got = exit_code(&mut child, Duration::from_secs(2));
        if got.is_none() {
            let _ = child.kill();
        }
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(got, Some(code), "zonecast {args:?}: {err}");
        assert!(err.contains(reason), "zonecast {args:?}: {err}");
    }
    // A device refused for want of its token is told which token.
    let guarded = ControllerProcess::launch(
        &["--control", "tcp://127.0.0.1:0", "--device-token", "dt"],
        Mode::Plain,
    );
    let out = zonecast()
        .args(["device", "--control", &guarded.endpoint, "--scene", "1"])
        .env_remove("ZONECAST_DEVICE_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("requires the device token"), "{err}");
}

#[test]
fn configuration_flag_beats_environment_beats_file_and_config_check_judges_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("zonecast.toml");
    std::fs::write(
        &file,
        "[pair]\nlisten = \"127.0.0.11:0\"\nstats_every_secs = 0\n",
    )
    .unwrap();
    let sessions = dir.path().join("sessions.json");
    std::fs::write(
        &sessions,
        zonecast::pair::SessionsFile::generate(1, 1, 1).to_json(),
    )
    .unwrap();
    let bound = |env: Option<&str>, flag: Option<&str>| -> String {
        let mut cmd = zonecast();
        cmd.arg("--config")
            .arg(&file)
            .arg("pair")
            .arg("--sessions")
            .arg(&sessions);
        if let Some(f) = flag {
            cmd.args(["--listen", f]);
        }
        if let Some(e) = env {
            cmd.env("ZONECAST_LISTEN", e);
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let udp = line
            .split("udp=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        udp.rsplit_once(':').unwrap().0.to_string()
    };
    assert_eq!(bound(None, None), "127.0.0.11");
    assert_eq!(bound(Some("127.0.0.12:0"), None), "127.0.0.12");
    assert_eq!(
        bound(Some("127.0.0.12:0"), Some("127.0.0.13:0")),
        "127.0.0.13"
    );

    let check = |text: &str| {
        let f = dir.path().join("check.toml");
        std::fs::write(&f, text).unwrap();
        let out = zonecast()
            .args(["config", "check"])
            .arg(&f)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/zonecast.example.toml"
    ))
    .unwrap();
    assert_eq!(check(&example).0, Some(0), "{}", check(&example).1);
    let (code, err) = check("[pair]\nevict_afer_ms = 5\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("evict_afer_ms"), "{err}");
    let (code, err) = check("[pair]\ncapacity = 0\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("--capacity"), "{err}");
    let (code, err) = check("[controller]\nheartbeat_ms = 100\ndead_after_ms = 150\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("two heartbeats"), "{err}");
    let (code, err) = check("[pear]\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("pear"), "{err}");
}

#[test]
fn ready_follows_registration_and_leaving_and_every_process_passes_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("ipc://{}/control.sock", dir.path().display());
    // The pair starts before its controller: live, not ready.
    let mut pair = PairProcess::start(
        0,
        &[
            "--control",
            &endpoint,
            "--token",
            TOKEN,
            "--region",
            "r",
            "--no-bus",
        ],
    );
    assert_eq!(get(pair.metrics, "/live").0, 200);
    let (code, body) = get(pair.metrics, "/ready");
    assert_eq!(code, 503);
    assert!(body.contains("not registered"), "{body}");
    let ctl = ControllerProcess::start_at(&endpoint);
    wait_for("the pair to be ready", || {
        get(pair.metrics, "/ready").0 == 200
    });
    let admin = ctl.metrics.unwrap();
    assert_eq!(get(admin, "/ready").0, 200);
    let status: serde_json::Value = serde_json::from_str(&get(admin, "/status").1).unwrap();
    assert_eq!(status["active"], true);
    assert_eq!(status["pairs_alive"], 1);
    let status: serde_json::Value = serde_json::from_str(&get(pair.metrics, "/status").1).unwrap();
    assert_eq!(status["controller"]["registered"], true, "{status}");

    // Traffic, so that histograms and counters are not empty, then promtool on each.
    let scene = ctl.scene("s", "r");
    assert_relays(&ctl, scene);
    for (who, addr) in [("pair", pair.metrics), ("controller", admin)] {
        let text = get(addr, "/metrics").1;
        assert!(text.contains("zonecast_build_info{version="), "{who}");
        promtool(who, &text);
    }
    let text = get(pair.metrics, "/metrics").1;
    assert!(
        text.contains("zonecast_burst_latency_seconds_count"),
        "{text}"
    );
    let text = get(admin, "/metrics").1;
    assert!(
        text.contains("zonecast_control_request_duration_seconds_bucket{op=\"device.register\"")
    );

    signal(&pair.child, libc::SIGTERM);
    assert_eq!(exit_code(&mut pair.child, Duration::from_secs(5)), Some(0));
}

/// `promtool check metrics` on `text` (installed by scripts/test from the distribution's
/// `prometheus` package).
fn promtool(who: &str, text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`) is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool on the {who}'s metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_shipped_systemd_units_verify() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/systemd");
    let tmp = tempfile::tempdir().unwrap();
    for unit in ["zonecast-controller.service", "zonecast-pair@.service"] {
        // As shipped, but running the binary under test (verify checks that it exists).
        let text = std::fs::read_to_string(format!("{dir}/{unit}")).unwrap();
        assert!(
            text.contains("ExecStart=/usr/local/bin/zonecast "),
            "{unit}"
        );
        let text = text.replace("/usr/local/bin/zonecast", env!("CARGO_BIN_EXE_zonecast"));
        let path = tmp.path().join(unit);
        std::fs::write(&path, text).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .env("SYSTEMD_LOG_LEVEL", "warning")
            .output()
            .expect("systemd-analyze");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{unit}: {err}");
        // Warnings about our own unit (not about the host's) fail the check.
        assert!(!err.contains(unit), "{unit}: {err}");
    }
}
