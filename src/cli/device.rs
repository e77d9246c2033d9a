//! `zonecast device`: join a scene from a terminal, print what arrives, optionally send updates
//! of one object moving on a circle, optionally with an interest area and walking.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use zonecast::client::{Area, Device, Event, Roaming, Session, Shape, View};
use zonecast::net::unix_ns;
use zonecast::pair::SessionsFile;
use zonecast::wire::{Fields, SessionKey, MASK_TRANSLATION};

use super::signals::Signals;
use super::{micros, Failure};

/// How often a walking device reports its anchor.
const ANCHOR_EVERY: Duration = Duration::from_millis(100);

#[derive(Args)]
pub struct DeviceArgs {
    /// Register through this controller (with --scene): it gives the device its id, key and
    /// pair, and tells it where to go when that pair fails.
    #[arg(long, conflicts_with_all = ["sessions", "key", "device"], requires = "scene")]
    control: Option<String>,
    /// Name to register under (with --control).
    #[arg(long, requires = "control")]
    name: Option<String>,
    /// The controller's public key (Z85 or its BASE.key file), if it runs CurveZMQ (with
    /// --control).
    #[arg(long, env = "ZONECAST_CONTROLLER_KEY", requires = "control")]
    controller_key: Option<String>,
    /// Device token, if the controller requires one (with --control).
    #[arg(long, env = "ZONECAST_DEVICE_TOKEN", hide_env_values = true)]
    device_token: Option<String>,
    /// The pair's UDP endpoint (static sessions).
    #[arg(long, default_value = "127.0.0.1:7200")]
    pair: SocketAddr,
    /// This device's id (static sessions).
    #[arg(long)]
    device: Option<u32>,
    /// Take scene and key from this sessions file.
    #[arg(long, conflicts_with_all = ["scene", "key"], requires = "device")]
    sessions: Option<PathBuf>,
    /// Scene id: with --control, the scene to register in; otherwise with --key.
    #[arg(long)]
    scene: Option<u32>,
    /// Session key, 64 hex characters (static sessions, with --device and --scene).
    #[arg(long, requires_all = ["scene", "device"])]
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
    /// Receive only objects within this distance of the anchor (an interest sphere on layer
    /// 0; default: everything).
    #[arg(long, conflicts_with = "box_half")]
    radius: Option<f32>,
    /// Receive only objects within these half-extents of the anchor (an interest box on layer
    /// 0), as HX,HY,HZ.
    #[arg(long = "box", value_name = "HX,HY,HZ", value_parser = parse_vec3)]
    box_half: Option<[f32; 3]>,
    /// The anchor of the interest area, as X,Y,Z; the moved object circles around it. With an
    /// area, the device registers there (a gridded scene homes it on that zone's pair).
    #[arg(long, default_value = "0,0,0", value_parser = parse_vec3)]
    anchor: [f32; 3],
    /// Walk: the anchor (and the moved object with it) moves at this velocity, units per
    /// second, as VX,VY,VZ; the anchor is reported ten times a second.
    #[arg(long, value_parser = parse_vec3)]
    walk: Option<[f32; 3]>,
}

/// `X,Y,Z` as three finite floats.
fn parse_vec3(s: &str) -> Result<[f32; 3], String> {
    match super::parse_floats(s)?[..] {
        [x, y, z] if [x, y, z].iter().all(|c| c.is_finite()) => Ok([x, y, z]),
        _ => Err("three finite numbers separated by commas".into()),
    }
}

impl DeviceArgs {
    pub fn validate(&self) -> Result<(), Failure> {
        if !self.send_hz.is_finite() || !(0.0..=100_000.0).contains(&self.send_hz) {
            return Err(Failure::usage("--send-hz must be 0 to 100000"));
        }
        let bad_extent = |v: f32| !v.is_finite() || v < 0.0;
        if self.radius.is_some_and(bad_extent)
            || self.box_half.is_some_and(|b| b.into_iter().any(bad_extent))
        {
            return Err(Failure::usage(
                "--radius and --box must be finite and not negative",
            ));
        }
        if let Some(c) = &self.control {
            zonecast::control::client::check_endpoint(c.split(',').next().unwrap_or_default())
                .map_err(|m| Failure::usage(format!("--control: {m}")))?;
        }
        Ok(())
    }
}

pub fn run(a: DeviceArgs) -> Result<(), Failure> {
    a.validate()?;
    let signals = Signals::install()?;
    let mut roaming = None;
    let mut epoch = 0;
    let session = match (&a.control, &a.sessions, a.device, a.scene, &a.key) {
        (Some(control), _, _, Some(scene), _) => {
            let mut client =
                super::operator::control_client(control, a.controller_key.as_deref())?;
            // A device with an interest area registers where its anchor is: in a scene whose
            // zones several pairs serve, it is homed on the pair serving that point.
            let anchor = (a.radius.is_some() || a.box_half.is_some()).then_some(a.anchor);
            let reg = client
                .register_device_at(scene, a.name.as_deref(), a.device_token.as_deref(), anchor)
                .map_err(|e| match e {
                    zonecast::control::client::RequestError::Refused(r) => {
                        Failure::refused(format!("registration refused: {r}"))
                    }
                    e => Failure::from(e.to_string()),
                })?;
            roaming = Some(Roaming::new(client));
            epoch = reg.location.epoch;
            Session {
                device: reg.location.device,
                scene,
                key: reg.key,
                pair: reg.location.udp,
            }
        }
        (None, Some(path), Some(device), _, _) => {
            let file = SessionsFile::load(path).map_err(|e| e.to_string())?;
            let entry = file
                .get(device)
                .ok_or_else(|| format!("device {device} is not in {}", path.display()))?;
            Session {
                device,
                scene: entry.scene,
                key: entry.session_key().map_err(|e| e.to_string())?,
                pair: a.pair,
            }
        }
        (None, None, Some(device), Some(scene), Some(key)) => Session {
            device,
            scene,
            key: SessionKey::from_hex(key)
                .ok_or_else(|| Failure::usage("--key must be 64 hex characters"))?,
            pair: a.pair,
        },
        _ => {
            return Err(Failure::usage(
                "give --control and --scene, or --device with --sessions FILE, or --device, --scene and --key",
            ))
        }
    };
    let (device, scene) = (session.device, session.scene);
    let mut dev = Device::connect(session).map_err(|e| e.to_string())?;
    dev.set_epoch(epoch);
    println!(
        "device {} in scene {} via {} (local {})",
        device,
        scene,
        dev.session().pair,
        dev.local_addr().map_err(|e| e.to_string())?
    );
    let area = match (a.radius, a.box_half) {
        (Some(r), _) => Some(Area::sphere(a.anchor, r)),
        (None, Some(h)) => {
            let mut area = Area::sphere(a.anchor, 0.0);
            area.layers[0] = Shape::Box(h);
            Some(area)
        }
        (None, None) => None,
    };
    let joined = match area {
        Some(area) => dev.join_area_until_snapshot(area, Duration::from_secs(5)),
        None => dev.join_until_snapshot(0.0, Duration::from_secs(5)),
    };
    let first = joined
        .map_err(|e| e.to_string())?
        .ok_or("no snapshot from the pair within 5 s: is it running and serving this device?")?;
    if !a.quiet {
        println!("{}", describe(&first));
    }
    let start = Instant::now();
    let stop = (a.duration_secs > 0).then(|| start + Duration::from_secs(a.duration_secs));
    let period = (a.send_hz > 0.0).then(|| Duration::from_secs_f64(1.0 / a.send_hz));
    let object = a.object.unwrap_or(u64::from(device));
    let mut next_send = start;
    let mut next_keepalive = start + Duration::from_secs(1);
    let mut next_summary = start + Duration::from_secs(1);
    let mut next_anchor = start + ANCHOR_EVERY;
    let (mut received, mut sent) = (0u64, 0u64);
    let mut view = View::new();
    view.apply(&first);
    let anchor_at = |t: f32| {
        let v = a.walk.unwrap_or([0.0; 3]);
        [
            a.anchor[0] + v[0] * t,
            a.anchor[1] + v[1] * t,
            a.anchor[2] + v[2] * t,
        ]
    };
    loop {
        let now = Instant::now();
        if signals.received() || stop.is_some_and(|s| now >= s) {
            leave(&mut dev, roaming.as_mut());
            break;
        }
        if let Some(p) = period {
            if now >= next_send {
                let t = start.elapsed().as_secs_f32();
                let c = anchor_at(t);
                let fields = Fields {
                    translation: [c[0] + t.cos() * 5.0, c[1], c[2] + t.sin() * 5.0],
                    ..Fields::default()
                };
                dev.update(object, MASK_TRANSLATION, &fields, &[])
                    .map_err(|e| e.to_string())?;
                sent += 1;
                next_send += p;
            }
        }
        if a.walk.is_some() && now >= next_anchor {
            let anchor = anchor_at(start.elapsed().as_secs_f32());
            if dev.area().is_some() {
                dev.move_anchor(anchor).map_err(|e| e.to_string())?;
            }
            next_anchor += ANCHOR_EVERY;
        }
        match roaming.as_mut() {
            Some(r) => {
                if let Some(loc) = r.poll(&mut dev, now).map_err(|e| e.to_string())? {
                    println!(
                        "re-homed to pair {} at {} (epoch {})",
                        loc.pair, loc.udp, loc.epoch
                    );
                }
                next_keepalive = r.next_wake(&dev);
            }
            None if now >= next_keepalive => {
                dev.keepalive().map_err(|e| e.to_string())?;
                next_keepalive += Duration::from_secs(1);
            }
            None => {}
        }
        if now >= next_summary {
            if a.quiet {
                println!(
                    "sent={sent} received={received} rejected-by-client={} view={}",
                    dev.dropped(),
                    view.len()
                );
            }
            // Advanced in every mode: a summary left in the past would make every wait zero.
            next_summary += Duration::from_secs(1);
        }
        // Short enough to notice a signal promptly.
        let mut wake = next_keepalive
            .min(next_summary)
            .min(now + Duration::from_millis(200));
        if period.is_some() {
            wake = wake.min(next_send);
        }
        if a.walk.is_some() {
            wake = wake.min(next_anchor);
        }
        let wait = wake.saturating_duration_since(Instant::now());
        match dev.recv(wait).map_err(|e| e.to_string())? {
            Some(e) => {
                received += 1;
                view.apply(&e);
                let routine = roaming.is_some() && matches!(e, Event::KeepaliveAck { .. });
                if !a.quiet && !routine {
                    println!("{}", describe(&e));
                }
            }
            None => continue,
        }
    }
    Ok(())
}

/// Ctrl-C / SIGTERM: leave the scene (peers see it go at once) and, when registered through a
/// controller, deregister.
fn leave(dev: &mut Device, roaming: Option<&mut Roaming>) {
    let result = match roaming {
        Some(r) => r.leave(dev),
        None => dev.leave().map(|_| ()),
    };
    match result {
        Ok(()) => println!("left scene {}", dev.session().scene),
        Err(e) => tracing::warn!("leaving: {e}"),
    }
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
        Event::Left(r) => format!("left-interest object={}", r.object),
        Event::Snapshot {
            chunk_index,
            chunk_count,
            incremental,
            objects,
            ..
        } => format!(
            "snapshot{} chunk {}/{} objects={}",
            if *incremental { " (entered)" } else { "" },
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
