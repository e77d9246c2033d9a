//! Controller replicas behind an etcd lease and election (cargo feature `etcd`), with a real
//! etcd-server (scripts/test installs Debian's `etcd-server`):
//! - on loopback, one etcd: kill -9 of the active (its lease runs out, the passive takes over
//!   under a higher term, writes go on, the pair keeps its identity), then SIGTERM of the new
//!   active (it revokes its lease: the restarted replica takes over);
//! - three hosts (network namespaces, each with an etcd member and a controller replica) and a
//!   partition that isolates the active: its lease lapses, it stops deciding and refuses
//!   writes, another replica takes over under a higher term, devices keep relaying; healed,
//!   the old active follows the new one.
#![cfg(feature = "etcd")]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::netns::Hosts;
use common::replicas::*;
use common::*;
use serde_json::{json, Value};
use zonecast::control::client::{ControlClient, RequestError};

/// An etcd member, killed on drop.
struct Etcd(Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `etcd` (or `cmd`, e.g. inside a namespace) as member `name` of `cluster`, with short raft
/// timers (etcd's lease floor is 1.5 election timeouts) and pre-vote, so a member that comes
/// back from a partition does not depose the leader (etcd 3.5 turns it on by default).
fn etcd(mut cmd: Command, dir: &Path, name: &str, client: &str, peer: &str, cluster: &str) -> Etcd {
    cmd.args(["--name", name, "--data-dir"])
        .arg(dir.join(name))
        .args([
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
        ])
        .args([
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
        ])
        .args([
            "--initial-cluster",
            cluster,
            "--initial-cluster-state",
            "new",
        ])
        .args(["--initial-cluster-token", "zonecast-test"])
        .args([
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--pre-vote",
        ])
        .args(["--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Etcd(
        cmd.spawn()
            .expect("etcd (Debian's etcd-server; scripts/test installs it)"),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What `endpoint` says of itself (`None`: no answer).
fn discovery(endpoint: &str) -> Option<Value> {
    ControlClient::new(endpoint)
        .unwrap()
        .with_timeout(Duration::from_millis(300))
        .with_retries(1)
        .request(&json!({"op": "discovery"}))
        .ok()
}

fn role_and_term(endpoint: &str) -> Option<(String, u64)> {
    let d = discovery(endpoint)?;
    Some((d["role"].as_str()?.to_string(), d["term"].as_u64()?))
}

/// Waits until exactly one of `endpoints` is active; its index and term.
fn wait_one_active(endpoints: &[String]) -> (usize, u64) {
    let mut found = None;
    wait_until("one active replica", || {
        let roles: Vec<_> = endpoints.iter().map(|e| role_and_term(e)).collect();
        let active: Vec<usize> = (0..roles.len())
            .filter(|i| roles[*i].as_ref().is_some_and(|(r, _)| r == "active"))
            .collect();
        if let [i] = active[..] {
            found = Some((i, roles[i].as_ref().unwrap().1));
        }
        found.is_some()
    });
    found.unwrap()
}

fn create_scene(c: &mut ControlClient, name: &str) -> Result<Value, RequestError> {
    c.request(&json!({"op": "scene.create", "token": TOKEN, "name": name, "region": "r"}))
}

/// What a test's replica set serves once one of them is active: a scene, a pair of every
/// replica and two devices in the scene (their relaying is what the tests watch). Destructure it whole, without `..`: a field left out
/// would be dropped at once (the pair process killed).
struct Serving {
    active: usize,
    term: u64,
    writes: ControlClient,
    _pair: PairProcess,
    a: zonecast::client::Device,
    b: zonecast::client::Device,
    before: Facts,
}

/// Waits for the active among `ctl` (bound at `endpoints`), then sets up what it serves.
fn serving(ctl: &[ControllerProcess], endpoints: &[String]) -> Serving {
    let (active, term) = wait_one_active(endpoints);
    let all = endpoints.join(",");
    let mut writes = client(&all);
    let scene = create_scene(&mut writes, "arena").unwrap()["scene"]["id"]
        .as_u64()
        .unwrap() as u32;
    // The pair and devices live in the test's namespace and reach every replica.
    let pair = patient_pair(&all);
    ctl[active].wait_live_pairs("r", 1);
    let a = ctl[active].device(scene);
    let b = ctl[active].device(scene);
    let before = facts(&ctl[active].status());
    Serving {
        active,
        term,
        writes,
        _pair: pair,
        a,
        b,
        before,
    }
}

#[test]
fn the_etcd_lease_hands_over_on_kill_and_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (client_port, peer_port) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let _etcd = etcd(
        Command::new("etcd"),
        dir.path(),
        "e0",
        &client_url,
        &peer_url,
        &format!("e0={peer_url}"),
    );
    let lock = format!("etcd://127.0.0.1:{client_port}/zc-test?ttl=2");
    let endpoints = [free_endpoint(), free_endpoint()];
    let start = |i: usize| {
        let data = dir.path().join(format!("c{i}"));
        replica(&endpoints[i], &data, &["--lock", &lock])
    };
    let mut ctl = [start(0), start(1)];
    let Serving {
        active: first,
        term,
        mut writes,
        _pair,
        mut a,
        mut b,
        before,
    } = serving(&ctl, &endpoints);

    // kill -9: the lease lapses (2 s), the other replica takes over under a higher term.
    signal(&mut ctl[first], libc::SIGKILL);
    wait_exit(&mut ctl[first]);
    relays(&mut a, &mut b, 20, 0.0);
    let (second, term2) = wait_one_active(&endpoints);
    assert_eq!(second, 1 - first);
    assert!(term2 > term, "term {term2} after {term}");
    create_scene(&mut writes, "after-kill").expect("a write to the new active");
    let (pairs, _, devices) = facts(&ctl[second].status());
    assert_eq!(
        (pairs, devices),
        (before.0.clone(), before.2),
        "the pair kept its id"
    );
    relays(&mut a, &mut b, 20, 100.0);

    // The killed replica comes back as a passive and follows.
    ctl[first] = start(first);
    wait_until("the restarted replica follows", || {
        role_and_term(&endpoints[first]).is_some_and(|(r, t)| r == "passive" && t >= term2)
    });
    // SIGTERM: the active revokes its lease and the restarted replica takes over at once.
    signal(&mut ctl[second], libc::SIGTERM);
    assert!(
        wait_exit(&mut ctl[second]).success(),
        "SIGTERM is a clean stop"
    );
    let (third, term3) = wait_one_active(&endpoints);
    assert_eq!(third, first);
    assert!(term3 > term2, "term {term3} after {term2}");
    let st = ctl[third].status();
    assert_eq!(
        st["scenes"].as_array().unwrap().len(),
        2,
        "no write lost: {st}"
    );
    create_scene(&mut writes, "after-sigterm").expect("a write after the hand-over");
    relays(&mut a, &mut b, 20, 200.0);
}

#[test]
fn a_partitioned_active_stops_deciding_and_another_host_takes_over() {
    let hosts = Hosts::new(3);
    let dir = tempfile::tempdir().unwrap();
    let peer = |i: usize| format!("http://{}:2380", hosts.ip(i));
    let cluster: Vec<String> = (0..3).map(|i| format!("e{i}={}", peer(i))).collect();
    let cluster = cluster.join(",");
    let _etcd: Vec<Etcd> = (0..3)
        .map(|i| {
            let client = format!("http://{}:2379", hosts.ip(i));
            let name = format!("e{i}");
            etcd(
                hosts.command(i, "etcd"),
                dir.path(),
                &name,
                &client,
                &peer(i),
                &cluster,
            )
        })
        .collect();
    let members: Vec<String> = (0..3).map(|i| format!("{}:2379", hosts.ip(i))).collect();
    let lock = format!("etcd://{}/zc?ttl=2", members.join(","));
    let endpoints: Vec<String> = (0..3)
        .map(|i| format!("tcp://{}:7100", hosts.ip(i)))
        .collect();
    let ctl: Vec<ControllerProcess> = (0..3)
        .map(|i| {
            let data = dir.path().join(format!("c{i}"));
            let args = [
                "--control",
                &endpoints[i],
                "--data-dir",
                data.to_str().unwrap(),
                "--lock",
                &lock,
            ];
            let zonecast = hosts.command(i, env!("CARGO_BIN_EXE_zonecast"));
            ControllerProcess::launch_with(zonecast, &args, Mode::Plain)
        })
        .collect();
    let Serving {
        active: old,
        term,
        mut writes,
        _pair,
        mut a,
        mut b,
        before,
    } = serving(&ctl, &endpoints);

    hosts.isolate(old);
    // Cut off from etcd's quorum, the old active cannot renew its lease: it stops deciding.
    wait_until("the isolated active steps down", || {
        role_and_term(&endpoints[old]).is_some_and(|(r, _)| r != "active")
    });
    let mut direct = ControlClient::new(&endpoints[old])
        .unwrap()
        .with_timeout(Duration::from_millis(500))
        .with_retries(1);
    match create_scene(&mut direct, "split-brain") {
        Err(RequestError::Refused(e)) => assert_eq!(e.code.as_str(), "not_active", "{e}"),
        other => panic!("the old active took a write: {other:?}"),
    }
    relays(&mut a, &mut b, 20, 0.0);
    // The majority side elects a new active under a higher term.
    let mut new = None;
    wait_until("another replica takes over", || {
        new = (0..3).filter(|i| *i != old).find(|i| {
            role_and_term(&endpoints[*i]).is_some_and(|(r, t)| r == "active" && t > term)
        });
        new.is_some()
    });
    let new = new.unwrap();
    create_scene(&mut writes, "after-partition").expect("a write to the new active");
    let st = ctl[new].status();
    let (pairs, scenes, devices) = facts(&st);
    assert_eq!(
        (pairs, devices),
        (before.0.clone(), before.2),
        "the pair kept its id: {st}"
    );
    assert_eq!(scenes.len(), 2, "{st}");
    relays(&mut a, &mut b, 20, 100.0);
    // The old active still refuses writes; its state did not move.
    assert!(create_scene(&mut direct, "still-split").is_err());
    let old_scenes = ctl[old].status()["scenes"].as_array().unwrap().len();
    assert_eq!(old_scenes, 1, "the fenced old active changed nothing");

    // Healed: the old active follows the active, under its term, and catches up.
    hosts.heal(old);
    let new_term = role_and_term(&endpoints[new]).unwrap().1;
    let (now_active, term_now) = wait_one_active(&endpoints);
    assert!(now_active != old && term_now >= new_term);
    wait_until("the old active follows the active", || {
        let d = discovery(&endpoints[old]);
        let caught_up = ctl[old]
            .client()
            .request(&json!({"op": "scene.list", "token": TOKEN}))
            .is_ok_and(|l| l["scenes"].as_array().is_some_and(|s| s.len() == 2));
        d.is_some_and(|d| {
            d["role"] == "passive"
                && d["term"].as_u64() >= Some(term_now)
                && d["active"] == endpoints[now_active].as_str()
        }) && caught_up
    });
    relays(&mut a, &mut b, 20, 200.0);
}
