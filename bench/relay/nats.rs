//! The NATS baseline: the same devices, each a NATS core connection (no echo) publishing its
//! sealed updates to its scene's subject and subscribed to it; receivers verify the sender's
//! tag and time each update exactly as the UDP modes do. Runs on one tokio current-thread
//! runtime on the benchmark's core.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use zonecast::net::unix_ns;
use zonecast::pair::SessionsFile;
use zonecast::wire::{
    seal, Datagram, Direction, HeaderFields, Kind, ObjectBody, SessionKey, HEADER_LEN, MAX_DATAGRAM,
};

use super::progress::Progress;
use super::workload::{update, Outcome, Workload};

pub fn run(
    w: &Workload,
    server: SocketAddr,
    sessions: &SessionsFile,
    progress: &mut Progress,
) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(drive(w, server, sessions, progress))
}

async fn drive(
    w: &Workload,
    server: SocketAddr,
    sessions: &SessionsFile,
    progress: &mut Progress,
) -> Outcome {
    let total = (w.devices + w.stuck) as usize;
    let live = w.devices as usize;
    let entries = &sessions.devices[..total];
    let keys: Arc<Vec<(u32, SessionKey)>> = Arc::new(
        entries
            .iter()
            .map(|s| (s.device, s.session_key().expect("key")))
            .collect(),
    );
    let mut clients = Vec::new();
    for _ in 0..total {
        let c = async_nats::ConnectOptions::new()
            .no_echo()
            .subscription_capacity(1 << 20)
            .connect(server.to_string())
            .await
            .expect("NATS connects");
        clients.push(c);
    }
    let period = Duration::from_secs_f64(1.0 / w.hz);
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + Duration::from_secs_f64(w.warmup_secs);
    let end = measure_from + Duration::from_secs_f64(w.secs);
    let warmup_x = measure_from.duration_since(start).as_secs_f32();
    let shared = Arc::new(Mutex::new(Outcome::new(end - measure_from)));
    let mut subs = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let sub = c
            .subscribe(format!("zc.scene.{}", w.scene_of(i)))
            .await
            .expect("subscribe");
        if i >= live {
            subs.push(sub); // stuck: subscribed, never read
            continue;
        }
        let shared = shared.clone();
        let keys = keys.clone();
        tokio::spawn(async move {
            let mut sub = sub;
            while let Some(msg) = sub.next().await {
                let now = unix_ns();
                let Ok(dg) = Datagram::parse(&msg.payload) else {
                    continue;
                };
                let Some((_, key)) = keys.iter().find(|(id, _)| *id == dg.device()) else {
                    continue;
                };
                if dg.verify(key, Direction::ToServer).is_err() {
                    continue;
                }
                let Ok(body) = ObjectBody::parse(dg.body()) else {
                    continue;
                };
                if body.fields.translation[0] >= warmup_x {
                    let mut o = shared.lock().expect("not poisoned");
                    o.delivered += 1;
                    let _ = o
                        .latency
                        .record(now.saturating_sub(body.origin_timestamp_ns).max(1));
                }
            }
        });
    }
    for c in &clients {
        c.flush().await.expect("flush");
    }
    let payload = vec![0x42u8; w.payload];
    let mask = w.mask();
    let mut next: Vec<Instant> = (0..live)
        .map(|i| start + period.mul_f64(i as f64 / live as f64))
        .collect();
    let mut seq: Vec<u64> = vec![unix_ns() / 1000; live];
    let mut buf = [0u8; MAX_DATAGRAM];
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        for i in 0..live {
            while next[i] <= now && next[i] < end {
                let x = next[i].duration_since(start).as_secs_f32();
                if x >= warmup_x {
                    shared.lock().expect("not poisoned").expected += w.receivers(i);
                }
                let (id, key) = &keys[i];
                let b = update(*id, x, mask, &payload);
                let Ok(len) = b.emit(&mut buf[HEADER_LEN..]) else {
                    continue;
                };
                let f = HeaderFields {
                    kind: Kind::ObjectUpdate,
                    device: *id,
                    scene: w.scene_of(i),
                    seq: seq[i],
                    timestamp_ns: b.origin_timestamp_ns,
                };
                seq[i] += 1;
                if let Ok(n) = seal(&mut buf, &f, len, key, Direction::ToServer) {
                    let subject = format!("zc.scene.{}", w.scene_of(i));
                    let _ = clients[i]
                        .publish(subject, Bytes::copy_from_slice(&buf[..n]))
                        .await;
                }
                next[i] += period;
            }
        }
        {
            let o = shared.lock().expect("not poisoned");
            progress.tick(&o, start);
        }
        let wake = next
            .iter()
            .copied()
            .filter(|t| *t < end)
            .min()
            .unwrap_or(end);
        tokio::time::sleep_until(wake.into()).await;
    }
    for c in &clients {
        let _ = c.flush().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(subs);
    let o = shared.lock().expect("not poisoned");
    let mut out = Outcome::new(o.elapsed);
    out.latency = o.latency.clone();
    out.delivered = o.delivered;
    out.expected = o.expected;
    out
}
