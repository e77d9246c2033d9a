//! The UDP load generator for the raw floor and zonecast: one thread drives every device, sends
//! on schedule, receives with recvmmsg, verifies and times every update.
//!
//! Raw floor: each update is sealed for each other member of the scene (as a pair's fanout
//! would seal it) and sent straight from the sender's socket, in one sendmmsg per sender.
//! Relay: each update is sent once to the pair, which relays it.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use zonecast::client::{Device, Poller, Session};
use zonecast::net::mmsg::{RecvBatch, SendBatch};
use zonecast::net::unix_ns;
use zonecast::pair::SessionsFile;
use zonecast::wire::bundle;
use zonecast::wire::{seal, Datagram, Direction, HeaderFields, Kind, ObjectBody, HEADER_LEN};

use super::progress::Progress;
use super::workload::{update, Outcome, Workload};

/// Where updates go.
#[derive(Clone, Copy, Debug)]
pub enum Path {
    Raw,
    Relay(SocketAddr),
}

/// Runs the workload once and returns what the receivers measured.
pub fn run(w: &Workload, path: Path, sessions: &SessionsFile, progress: &mut Progress) -> Outcome {
    let total = (w.devices + w.stuck) as usize;
    let pair = match path {
        Path::Relay(a) => a,
        Path::Raw => "127.0.0.1:9".parse().expect("literal"),
    };
    let mut devices: Vec<Device> = sessions.devices[..total]
        .iter()
        .map(|s| {
            Device::connect(Session {
                device: s.device,
                scene: s.scene,
                key: s.session_key().expect("generated key"),
                pair,
            })
            .expect("device socket")
        })
        .collect();
    for d in devices.iter().take(w.devices as usize) {
        // Room for bursts at high rates; the kernel clamps to rmem_max. Extra devices keep the
        // default, as a real client's socket would.
        let _ = socket2::SockRef::from(d.socket()).set_recv_buffer_size(4 << 20);
    }
    if let Path::Relay(_) = path {
        for d in devices.iter_mut() {
            let snap = d
                .join_until_snapshot(0.0, Duration::from_secs(5))
                .expect("join");
            assert!(snap.is_some(), "the pair did not answer a join");
        }
    }
    let live = w.devices as usize;
    // Scene members, by device index; stuck devices are members that never read.
    let members: Vec<Vec<usize>> = (0..total)
        .map(|i| {
            (0..total)
                .filter(|j| *j != i && w.scene_of(*j) == w.scene_of(i))
                .collect()
        })
        .collect();
    let keys: Vec<_> = devices.iter().map(|d| d.session().key.clone()).collect();
    let addrs: Vec<SocketAddr> = devices
        .iter()
        .map(|d| d.local_addr().expect("bound"))
        .collect();
    let ids: Vec<u32> = devices.iter().map(|d| d.session().device).collect();
    // Raw floor: the sequence each receiver expects from "its pair".
    let mut inbound_seq = vec![unix_ns() / 1000; total];

    let period = Duration::from_secs_f64(1.0 / w.hz);
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + Duration::from_secs_f64(w.warmup_secs);
    let end = measure_from + Duration::from_secs_f64(w.secs);
    let warmup_x = measure_from.duration_since(start).as_secs_f32();
    let drain_until = end + Duration::from_millis(300);
    let mut outcome = Outcome::new(end - measure_from);
    let mut next: Vec<Instant> = (0..live)
        .map(|i| start + period.mul_f64(i as f64 / live as f64))
        .collect();
    let payload = vec![0x42u8; w.payload];
    let mask = w.mask();
    let readers = if w.extra_reads { total } else { live };
    let mut poller = Poller::new(&devices[..readers]);
    let mut discarded = Outcome::new(Duration::from_secs(1));
    // Extra devices that read also keepalive, as a live client does; one that never reads is a
    // frozen client: it sends nothing either.
    let mut next_keepalive = Instant::now();
    let mut rx = RecvBatch::new(64);
    let mut tx = SendBatch::new(256);
    let mut body = [0u8; 1200];
    loop {
        let now = Instant::now();
        if now >= drain_until {
            break;
        }
        for i in 0..live {
            while next[i] <= now && next[i] < end {
                let x = next[i].duration_since(start).as_secs_f32();
                if x >= warmup_x {
                    outcome.expected += w.receivers(i);
                }
                let b = update(ids[i], x, mask, &payload);
                match path {
                    Path::Relay(_) => {
                        let _ = devices[i].update(b.object, mask, &b.fields, &payload);
                    }
                    Path::Raw => {
                        let Ok(len) = b.emit(&mut body) else { continue };
                        for &j in &members[i] {
                            if tx.is_full() {
                                tx.flush(devices[i].socket().as_raw_fd());
                            }
                            let buf = tx.next_buf();
                            buf[HEADER_LEN..HEADER_LEN + len].copy_from_slice(&body[..len]);
                            let f = HeaderFields {
                                kind: Kind::ObjectUpdate,
                                device: ids[j],
                                scene: w.scene_of(j),
                                seq: inbound_seq[j],
                                timestamp_ns: b.origin_timestamp_ns,
                            };
                            inbound_seq[j] += 1;
                            if let Ok(n) = seal(buf, &f, len, &keys[j], Direction::ToDevice) {
                                tx.commit(n, addrs[j]);
                            }
                        }
                        tx.flush(devices[i].socket().as_raw_fd());
                    }
                }
                next[i] += period;
            }
        }
        if w.extra_reads && now >= next_keepalive {
            for d in devices[live..].iter_mut() {
                let _ = d.keepalive();
            }
            next_keepalive = now + Duration::from_millis(500);
        }
        let wake = next
            .iter()
            .copied()
            .filter(|t| *t < end)
            .min()
            .unwrap_or(drain_until);
        if poller.wait(wake.saturating_duration_since(Instant::now())) > 0 {
            for i in 0..readers {
                if poller.is_readable(i) {
                    let out = if i < live {
                        &mut outcome
                    } else {
                        &mut discarded
                    };
                    receive(&devices[i], &keys[i], ids[i], &mut rx, warmup_x, out);
                }
            }
        }
        progress.tick(&outcome, start);
    }
    outcome
}

/// Drains one device's socket: verify, decode, time.
fn receive(
    dev: &Device,
    key: &zonecast::wire::SessionKey,
    id: u32,
    rx: &mut RecvBatch,
    warmup_x: f32,
    out: &mut Outcome,
) {
    let fd = dev.socket().as_raw_fd();
    while let Ok(n) = rx.recv(fd) {
        let now = unix_ns();
        for k in 0..n {
            let d = rx.get(k);
            let Ok(dg) = Datagram::parse(d.bytes) else {
                continue;
            };
            if dg.device() != id || dg.verify(key, Direction::ToDevice).is_err() {
                continue;
            }
            let mut record = |body: &[u8]| {
                let Ok(body) = ObjectBody::parse(body) else {
                    return;
                };
                if body.fields.translation[0] >= warmup_x {
                    out.delivered += 1;
                    let _ = out
                        .latency
                        .record(now.saturating_sub(body.origin_timestamp_ns).max(1));
                }
            };
            match dg.kind() {
                Kind::ObjectUpdate => record(dg.body()),
                Kind::Bundle => {
                    for (kind, body) in bundle::entries(dg.body()).flatten() {
                        if kind == Kind::ObjectUpdate {
                            record(body);
                        }
                    }
                }
                _ => {}
            }
        }
        if n < rx.capacity() {
            break;
        }
    }
}
