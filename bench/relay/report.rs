//! Summaries on the terminal, and docs/BENCHMARKS.md with its SVG plots (plotters).

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde_json::{json, Value};

use super::workload::{Outcome, Workload};

/// Everything one invocation measured.
#[derive(Default)]
pub struct Measured {
    pub latency: Vec<(String, Outcome)>,
    /// (mode, offered datagrams/s, outcome)
    pub throughput: Vec<(String, f64, Outcome)>,
    /// (stuck devices, outcome)
    pub slow: Vec<(u32, Outcome)>,
    pub memory: Option<Value>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

impl Measured {
    fn modes(&self) -> Vec<String> {
        let mut m: Vec<String> = Vec::new();
        for (mode, _) in &self.latency {
            if !m.contains(mode) {
                m.push(mode.clone());
            }
        }
        m
    }

    /// Median over runs of one latency quantile (microseconds) for `mode`.
    pub fn median_us(&self, mode: &str, q: f64) -> f64 {
        median(
            self.latency
                .iter()
                .filter(|(m, _)| m == mode)
                .map(|(_, o)| o.us(q))
                .collect(),
        )
    }

    fn median_max_us(&self, mode: &str) -> f64 {
        median(
            self.latency
                .iter()
                .filter(|(m, _)| m == mode)
                .map(|(_, o)| o.latency.max() as f64 / 1000.0)
                .collect(),
        )
    }

    fn delivered(&self, mode: &str) -> (u64, u64) {
        self.latency
            .iter()
            .filter(|(m, _)| m == mode)
            .fold((0, 0), |(d, e), (_, o)| (d + o.delivered, e + o.expected))
    }

    /// The highest delivered rate among sweep levels that delivered at least 99% of what was
    /// offered (a sender that falls behind its schedule counts as not delivering).
    pub fn ceiling(&self, mode: &str) -> Option<(f64, f64)> {
        self.throughput
            .iter()
            .filter(|(m, offered, o)| m == mode && o.delivered_per_sec() >= 0.99 * offered)
            .map(|(_, offered, o)| (*offered, o.delivered_per_sec()))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    pub fn print_latency_summary(&self) {
        println!("medians of runs:");
        for mode in self.modes() {
            println!(
                "  {mode:>9}: p50 {:>8.1}us  p90 {:>8.1}us  p99 {:>8.1}us  p99.9 {:>8.1}us",
                self.median_us(&mode, 0.5),
                self.median_us(&mode, 0.9),
                self.median_us(&mode, 0.99),
                self.median_us(&mode, 0.999)
            );
        }
        let zc = |q| self.median_us("zonecast", q);
        for base in ["raw", "nats"] {
            if self.modes().iter().any(|m| m == base)
                && self.modes().iter().any(|m| m == "zonecast")
            {
                println!(
                    "  zonecast/{base}: p50 x{:.2}  p99 x{:.2}",
                    zc(0.5) / self.median_us(base, 0.5),
                    zc(0.99) / self.median_us(base, 0.99)
                );
            }
        }
    }
}

pub fn print_row(mode: &str, o: &Outcome) {
    println!(
        "  {mode:>9}: p50 {:>8.1}us  p90 {:>8.1}us  p99 {:>8.1}us  p99.9 {:>8.1}us  max {:>8.1}us  delivered {}/{} ({:.3}%)  {:.0}/s{}",
        o.us(0.5),
        o.us(0.9),
        o.us(0.99),
        o.us(0.999),
        o.latency.max() as f64 / 1000.0,
        o.delivered,
        o.expected,
        100.0 * o.delivered_ratio(),
        o.delivered_per_sec(),
        if o.server_drops.as_object().is_some_and(|m| !m.is_empty()) {
            format!("  server drops {}", o.server_drops)
        } else {
            String::new()
        }
    );
}

/// Cores online (not limited by this thread's affinity, unlike `available_parallelism`).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    n.max(1) as usize
}

/// What machine this is.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown")
        .to_string();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    json!({
        "cpu": cpu,
        "cores": online_cpus(),
        "kernel": kernel.trim(),
        "memory_gib": (mem_kb as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
    })
}

const COLORS: [RGBColor; 8] = [
    RGBColor(90, 90, 90),
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

/// Every mode the bench knows, in palette order: one distinct colour each, the same in every
/// plot (a mode's colour does not depend on which others ran).
const MODES: [&str; 7] = [
    "raw",
    "zonecast",
    "zonecast-busy",
    "zonecast-split",
    "zonecast-mirrored",
    "zonecast-mirrored-encrypted",
    "nats",
];

// Distinct colours for every known mode.
const _: () = assert!(MODES.len() <= COLORS.len());

fn color(mode: &str) -> RGBColor {
    let i = MODES
        .iter()
        .position(|m| *m == mode)
        .unwrap_or(MODES.len() + mode.len());
    COLORS[i % COLORS.len()]
}

fn cdf_plot(m: &Measured, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (860, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut merged: Vec<(String, Outcome)> = Vec::new();
    for mode in m.modes() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
        for (_, o) in m.latency.iter().filter(|(x, _)| *x == mode) {
            h.add(&o.latency)?;
        }
        let mut o = Outcome::new(std::time::Duration::from_secs(1));
        o.latency = h;
        merged.push((mode, o));
    }
    let max_x = merged
        .iter()
        .map(|(_, o)| o.us(0.9999))
        .fold(10.0, f64::max)
        * 1.2;
    let min_x = merged
        .iter()
        .map(|(_, o)| o.us(0.0001))
        .fold(f64::MAX, f64::min)
        .max(1.0)
        * 0.8;
    let mut chart = ChartBuilder::on(&root)
        .caption("One-way latency CDF (all runs)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((min_x..max_x).log_scale(), 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("one-way latency, microseconds (log)")
        .y_desc("fraction of updates")
        .draw()?;
    for (mode, o) in &merged {
        let c = color(mode);
        chart
            .draw_series(LineSeries::new(o.cdf(), c.stroke_width(2)))?
            .label(mode.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn throughput_plot(m: &Measured, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (860, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = m
        .throughput
        .iter()
        .map(|(_, off, o)| off.max(o.delivered_per_sec()))
        .fold(1.0, f64::max)
        * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Delivered vs offered updates per second",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max, 0f64..max)?;
    chart
        .configure_mesh()
        .x_desc("offered (updates/s to receivers)")
        .y_desc("delivered updates/s")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, 0.0), (max, max)],
            BLACK.mix(0.3),
        ))?
        .label("offered = delivered")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.3)));
    let modes: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for (mode, _, _) in &m.throughput {
            if !v.contains(mode) {
                v.push(mode.clone());
            }
        }
        v
    };
    for mode in &modes {
        let c = color(mode);
        let mut pts: Vec<(f64, f64)> = m
            .throughput
            .iter()
            .filter(|(x, _, _)| x == mode)
            .map(|(_, off, o)| (*off, o.delivered_per_sec()))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
            .label(mode.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

/// Writes docs/BENCHMARKS.md and docs/bench/*.svg.
pub fn write(
    m: &Measured,
    w: &Workload,
    runs: usize,
    mach: &Value,
    cmd: &str,
    out: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all("docs/bench")?;
    if !m.latency.is_empty() {
        cdf_plot(m, Path::new("docs/bench/latency-cdf.svg"))?;
    }
    if !m.throughput.is_empty() {
        throughput_plot(m, Path::new("docs/bench/throughput.svg"))?;
    }
    let mut s = String::new();
    writeln!(s, "# Benchmarks\n")?;
    writeln!(s, "Generated by `scripts/bench` (it installs nats-server if missing, then runs `cargo bench --bench relay -- {cmd}`). Every figure below was measured in one invocation, on one machine, with every mode run on the same workload through the same harness; per-run JSON files were written to `{}`. These machines are shared and noisy: read the ratios, and the medians of runs, not any single absolute time.\n", out.display())?;
    writeln!(s, "## Setup\n")?;
    writeln!(
        s,
        "- Machine: {} ({} cores, {} GiB), Linux {}.",
        mach["cpu"].as_str().unwrap_or("?"),
        mach["cores"],
        mach["memory_gib"],
        mach["kernel"].as_str().unwrap_or("?")
    )?;
    writeln!(s, "- Load generator on core 0 (one thread driving every device, as a game client loop would); the server under test on core 1: a `zonecast pair` process, or `nats-server` with GOMAXPROCS=1. The raw floor has no server.")?;
    writeln!(s, "- Workload: {} devices in {} scene(s), each sending {} updates/s (payload {} B), {} s measured after {} s of warm-up, {} run(s) per mode with the order of modes rotated between runs.", w.devices, w.scenes, w.hz, w.payload, w.secs, w.warmup_secs, runs)?;
    writeln!(s, "- Each update reaches every other device of its scene. One-way latency = receiver's clock − the sender's timestamp inside the update (same host clock), recorded in an HdrHistogram. Every received datagram is verified (ChaCha20-Poly1305 tag) in every mode.")?;
    writeln!(s, "- **raw**: the devices send the same sealed datagrams straight to each other over loopback UDP (sendmmsg per sender, one datagram per recipient): the floor. In this harness the raw sender and receivers are the same thread, so the floor never pays a cross-core wake-up; every relay pays two (generator → server → generator). **zonecast**: one send to a `zonecast pair` process (default settings: one thread, sleeping in epoll), which relays. **zonecast-busy**: the same with `--busy-poll`, the pair's lowest-latency mode. **zonecast-mirrored**: the same pair streaming its state to a standby (a subscriber reading the stream), so the cost of replication on the hot path shows. **zonecast-mirrored-encrypted**: the same with the stream encrypted (Noise NK, ChaCha20-Poly1305), as between hosts. **zonecast-split**: `zonecast ingest` and `zonecast fanout`, two processes over an `ipc://` stream, both on core 1. **nats**: NATS core pub/sub (Debian's nats-server, the async-nats client), each device a connection publishing to its scene's subject and subscribed to it (no echo).\n")?;
    if !m.latency.is_empty() {
        writeln!(s, "## Latency (medians of {runs} runs)\n")?;
        writeln!(s, "| mode | p50 | p90 | p99 | p99.9 | max | delivered |")?;
        writeln!(s, "|------|----:|----:|----:|------:|----:|----------:|")?;
        for mode in m.modes() {
            let (d, e) = m.delivered(&mode);
            writeln!(
                s,
                "| {mode} | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs | {d}/{e} |",
                m.median_us(&mode, 0.5),
                m.median_us(&mode, 0.9),
                m.median_us(&mode, 0.99),
                m.median_us(&mode, 0.999),
                m.median_max_us(&mode)
            )?;
        }
        writeln!(s, "\n![latency CDF](bench/latency-cdf.svg)\n")?;
    }
    if !m.throughput.is_empty() {
        writeln!(s, "## Throughput vs offered load\n")?;
        writeln!(s, "Short runs at increasing per-device rates; offered = updates per second the receivers should get; delivered counts updates received (zonecast packs the updates queued for one device in a burst into one datagram, a bundle, so under load it sends fewer datagrams than it delivers updates). Ceiling = the highest delivered rate among levels that delivered ≥ 99% of what was offered; a sender that cannot keep its schedule counts as not delivering.\n")?;
        writeln!(
            s,
            "| mode | offered/s | delivered/s | delivered | p99 | drops inside the server |"
        )?;
        writeln!(
            s,
            "|------|----------:|------------:|----------:|----:|-------------------------|"
        )?;
        for (mode, offered, o) in &m.throughput {
            let drops = match o.server_drops.as_object() {
                Some(d) if d.is_empty() => "0".to_string(),
                Some(_) => o.server_drops.to_string(),
                None => "n/a".to_string(),
            };
            writeln!(
                s,
                "| {mode} | {offered:.0} | {:.0} | {:.2}% | {:.1} µs | {drops} |",
                o.delivered_per_sec(),
                100.0 * o.delivered_per_sec() / offered,
                o.us(0.99)
            )?;
        }
        writeln!(s, "\n![throughput](bench/throughput.svg)\n")?;
    }
    if !m.slow.is_empty() {
        let p99 = |stuck: u32| {
            median(
                m.slow
                    .iter()
                    .filter(|(k, _)| *k == stuck)
                    .map(|(_, o)| o.us(0.99))
                    .collect(),
            )
        };
        writeln!(s, "## Slow device\n")?;
        writeln!(s, "zonecast, the latency workload plus one extra device in the scene that sends nothing: in one case it reads everything, in the other it never reads (its socket buffer fills and the kernel drops what the pair sends it). Both cases fan out to the same number of devices, so the comparison isolates slowness. Medians of {runs} runs of the other devices' p99: extra device reading {:.1} µs, never reading {:.1} µs (x{:.2}).\n", p99(0), p99(1), p99(1) / p99(0))?;
    }
    if let Some(mem) = &m.memory {
        writeln!(s, "## Memory\n")?;
        writeln!(s, "Heap bytes counted by a global allocator while the real structures are filled: {} sessions joined over {} scenes (scene engine + fanout table) and {} objects.\n", mem["sessions"], mem["scenes"], mem["objects"])?;
        writeln!(s, "| what | bytes |")?;
        writeln!(s, "|------|------:|")?;
        writeln!(
            s,
            "| per device session (ingest + fanout) | {:.0} ({:.0} + {:.0}) |",
            mem["bytes_per_session"].as_f64().unwrap_or(0.0),
            mem["bytes_per_session_ingest"].as_f64().unwrap_or(0.0),
            mem["bytes_per_session_fanout"].as_f64().unwrap_or(0.0)
        )?;
        writeln!(
            s,
            "| per object | {:.0} |\n",
            mem["bytes_per_object"].as_f64().unwrap_or(0.0)
        )?;
    }
    // Written by the bus, control, failover, replicas and scale benchmarks (`--report`), which
    // scripts/bench runs first.
    for fragment in [
        "docs/bench/bus.md",
        "docs/bench/control.md",
        "docs/bench/failover.md",
        "docs/bench/replicas.md",
        "docs/bench/scale.md",
    ] {
        if let Ok(text) = std::fs::read_to_string(fragment) {
            s.push_str(&text);
        }
    }
    writeln!(s, "## Targets\n")?;
    writeln!(s, "| target | measured | |")?;
    writeln!(s, "|--------|----------|-|")?;
    let has = |x: &str| m.modes().iter().any(|y| y == x);
    for mode in ["zonecast-busy", "zonecast"] {
        if has(mode) && has("raw") {
            let r = m.median_us(mode, 0.5) / m.median_us("raw", 0.5);
            writeln!(
                s,
                "| p50 ≤ 2.5x raw p50 ({mode}) | x{r:.2} | {} |",
                verdict(r <= 2.5)
            )?;
            let p99 = m.median_us(mode, 0.99);
            writeln!(
                s,
                "| p99 ≤ 100 µs ({mode}) | {p99:.1} µs | {} |",
                verdict(p99 <= 100.0)
            )?;
        }
    }
    if let (Some(zc), Some(raw)) = (m.ceiling("zonecast"), m.ceiling("raw")) {
        let r = zc.1 / raw.1;
        writeln!(
            s,
            "| fanout ceiling ≥ 70% of raw | {:.0}/s vs {:.0}/s = {:.0}% | {} |",
            zc.1,
            raw.1,
            100.0 * r,
            verdict(r >= 0.7)
        )?;
        let half = raw.1 / 2.0;
        let at_half = m
            .throughput
            .iter()
            .filter(|(x, off, _)| x == "zonecast" && *off <= half)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((_, off, o)) = at_half {
            let clean = o.server_drops.as_object().is_some_and(|d| d.is_empty());
            writeln!(s, "| zero drops in the relay at half the raw ceiling | at {off:.0}/s offered: {} | {} |", if clean { "none".to_string() } else { o.server_drops.to_string() }, verdict(clean))?;
        }
        if let Some(nats) = m.ceiling("nats") {
            writeln!(
                s,
                "| ceiling above NATS | {:.0}/s vs {:.0}/s | {} |",
                zc.1,
                nats.1,
                verdict(zc.1 > nats.1)
            )?;
        }
    }
    if has("zonecast") && has("nats") {
        let (a, b) = (m.median_us("zonecast", 0.99), m.median_us("nats", 0.99));
        writeln!(
            s,
            "| p99 below NATS | {a:.1} µs vs {b:.1} µs | {} |",
            verdict(a < b)
        )?;
    }
    if let Some(mem) = &m.memory {
        let ps = mem["bytes_per_session"].as_f64().unwrap_or(f64::MAX);
        let po = mem["bytes_per_object"].as_f64().unwrap_or(f64::MAX);
        writeln!(
            s,
            "| < 512 B per session | {ps:.0} B | {} |",
            verdict(ps < 512.0)
        )?;
        writeln!(
            s,
            "| < 256 B per object | {po:.0} B | {} |",
            verdict(po < 256.0)
        )?;
    }
    if !m.slow.is_empty() {
        let p99 = |stuck: u32| {
            median(
                m.slow
                    .iter()
                    .filter(|(k, _)| *k == stuck)
                    .map(|(_, o)| o.us(0.99))
                    .collect(),
            )
        };
        let r = p99(1) / p99(0);
        writeln!(
            s,
            "| a never-reading device raises p99 ≤ 10% | x{r:.2} | {} |",
            verdict(r <= 1.10)
        )?;
    }
    std::fs::write("docs/BENCHMARKS.md", s)?;
    Ok(())
}
