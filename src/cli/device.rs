//! `zonecast device`: join a scene from a terminal, print what arrives, optionally send updates
//! of one object moving on a circle.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use zonecast::client::{Device, Event, Session};
use zonecast::net::unix_ns;
use zonecast::pair::SessionsFile;
use zonecast::wire::{Fields, SessionKey, MASK_TRANSLATION};

use super::micros;

#[derive(Args)]
pub struct DeviceArgs {
    /// The pair's UDP endpoint.
    #[arg(long, default_value = "127.0.0.1:7200")]
    pair: SocketAddr,
    /// This device's id.
    #[arg(long)]
    device: u32,
    /// Take scene and key from this sessions file.
    #[arg(long, conflicts_with_all = ["scene", "key"])]
    sessions: Option<PathBuf>,
    /// Scene id (without --sessions).
    #[arg(long, requires = "key")]
    scene: Option<u32>,
    /// Session key, 64 hex characters (without --sessions).
    #[arg(long, requires = "scene")]
    key: Option<String>,
    /// Send this many updates per second (0: only listen).
    #[arg(long, default_value_t = 0.0)]
    send_hz: f64,
    /// Object to move (default: the device id).
    #[arg(long)]
    object: Option<u64>,
    /// Stop after this many seconds (0: run until killed).
    #[arg(long, default_value_t = 0)]
    duration_secs: u64,
    /// Print a summary per second instead of every event.
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: DeviceArgs) -> Result<(), String> {
    let (scene, key) = match (&a.sessions, a.scene, &a.key) {
        (Some(path), _, _) => {
            let file = SessionsFile::load(path).map_err(|e| e.to_string())?;
            let entry = file
                .get(a.device)
                .ok_or_else(|| format!("device {} is not in {}", a.device, path.display()))?;
            (entry.scene, entry.session_key().map_err(|e| e.to_string())?)
        }
        (None, Some(scene), Some(key)) => {
            let key = SessionKey::from_hex(key).ok_or("--key must be 64 hex characters")?;
            (scene, key)
        }
        _ => return Err("give --sessions FILE, or --scene and --key".into()),
    };
    let session = Session {
        device: a.device,
        scene,
        key,
        pair: a.pair,
    };
    let mut dev = Device::connect(session).map_err(|e| e.to_string())?;
    dev.join(0.0).map_err(|e| e.to_string())?;
    println!(
        "device {} in scene {} via {} (local {})",
        a.device,
        scene,
        a.pair,
        dev.local_addr().map_err(|e| e.to_string())?
    );
    let start = Instant::now();
    let stop = (a.duration_secs > 0).then(|| start + Duration::from_secs(a.duration_secs));
    let period = (a.send_hz > 0.0).then(|| Duration::from_secs_f64(1.0 / a.send_hz));
    let object = a.object.unwrap_or(u64::from(a.device));
    let mut next_send = start;
    let mut next_keepalive = start + Duration::from_secs(1);
    let mut next_summary = start + Duration::from_secs(1);
    let (mut received, mut sent) = (0u64, 0u64);
    loop {
        let now = Instant::now();
        if stop.is_some_and(|s| now >= s) {
            break;
        }
        if let Some(p) = period {
            if now >= next_send {
                let t = start.elapsed().as_secs_f32();
                let fields = Fields {
                    translation: [t.cos() * 5.0, 0.0, t.sin() * 5.0],
                    ..Fields::default()
                };
                dev.update(object, MASK_TRANSLATION, &fields, &[])
                    .map_err(|e| e.to_string())?;
                sent += 1;
                next_send += p;
            }
        }
        if now >= next_keepalive {
            dev.keepalive().map_err(|e| e.to_string())?;
            next_keepalive += Duration::from_secs(1);
        }
        if a.quiet && now >= next_summary {
            println!(
                "sent={sent} received={received} rejected-by-client={}",
                dev.dropped()
            );
            next_summary += Duration::from_secs(1);
        }
        let mut wake = next_keepalive.min(next_summary);
        if period.is_some() {
            wake = wake.min(next_send);
        }
        let wait = wake.saturating_duration_since(Instant::now());
        match dev.recv(wait).map_err(|e| e.to_string())? {
            Some(e) => {
                received += 1;
                if !a.quiet {
                    println!("{}", describe(&e));
                }
            }
            None => continue,
        }
    }
    Ok(())
}

/// One line per event.
fn describe(e: &Event) -> String {
    let age = |ts: u64| micros(Duration::from_nanos(unix_ns().saturating_sub(ts)));
    match e {
        Event::Update(r) | Event::Overwrite(r) => format!(
            "{} object={} from={} translation={:?} payload={}B latency={}",
            if matches!(e, Event::Update(_)) {
                "update"
            } else {
                "overwrite"
            },
            r.object,
            r.origin_device,
            r.fields.translation,
            r.payload.len(),
            age(r.origin_timestamp_ns)
        ),
        Event::Delete(r) => format!("delete object={} from={}", r.object, r.origin_device),
        Event::Snapshot {
            chunk_index,
            chunk_count,
            objects,
            ..
        } => format!(
            "snapshot chunk {}/{} objects={}",
            chunk_index + 1,
            chunk_count,
            objects.len()
        ),
        Event::KeepaliveAck { rtt, .. } => format!("keepalive-ack rtt={}", micros(*rtt)),
        Event::Redirect { to, epoch } => format!("redirect to={to} epoch={epoch}"),
        Event::Reject {
            reason,
            seq,
            object,
        } => format!("reject reason={reason:?} seq={seq} object={object}"),
        Event::PeerLeft { device, timed_out } => {
            format!("peer-left device={device} timed_out={timed_out}")
        }
    }
}
