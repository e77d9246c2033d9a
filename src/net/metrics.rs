//! The admin HTTP endpoint every long-running process serves (tiny_http, its own thread):
//! `GET /metrics` (Prometheus text format: the process's own metrics, then
//! `zonecast_build_info` and `process_*` from /proc), `/live` (200 while the process's threads
//! run), `/ready` (200 once it serves: a registered pair, an active or following controller,
//! a connected fanout half; 503 with the reason otherwise) and `/status` (JSON).
//!
//! The exposition is written here rather than by `prometheus-client`: that crate's encoder
//! writes OpenMetrics only (counter families without `_total`, `# EOF`), which the
//! distribution's `promtool check metrics` (2.42) misreads; the text format below is the one
//! every Prometheus accepts, and the tests run `promtool` on it.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::Serialize;
use tiny_http::{Header, Response, Server};

/// The fields every process's `/status` starts with: what it is and which build.
#[derive(Serialize)]
pub struct Build {
    pub role: &'static str,
    pub version: &'static str,
    pub commit: &'static str,
}

impl Build {
    pub fn of(role: &'static str) -> Build {
        Build {
            role,
            version: env!("CARGO_PKG_VERSION"),
            commit: env!("ZONECAST_COMMIT"),
        }
    }
}

/// A `/status` body: the build, then the process's own fields.
pub fn status_json<T: Serialize>(role: &'static str, fields: &T) -> String {
    #[derive(Serialize)]
    struct Doc<'a, T> {
        #[serde(flatten)]
        build: Build,
        #[serde(flatten)]
        fields: &'a T,
    }
    serde_json::to_string(&Doc {
        build: Build::of(role),
        fields,
    })
    .unwrap_or_default()
}

/// Renders a body on each request.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// `Ok` when the condition holds, else why not.
pub type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What a process serves on its admin endpoint.
#[derive(Clone)]
pub struct Admin {
    pub metrics: Render,
    pub live: Check,
    pub ready: Check,
    /// A JSON document.
    pub status: Render,
}

impl Admin {
    /// Metrics only: always live and ready, `{}` as status (tools and benchmarks).
    pub fn metrics_only(metrics: Render) -> Admin {
        Admin {
            metrics,
            live: Arc::new(|| Ok(())),
            ready: Arc::new(|| Ok(())),
            status: Arc::new(|| "{}".into()),
        }
    }
}

pub struct MetricsServer {
    server: Arc<Server>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub fn start(addr: SocketAddr, admin: Admin) -> Result<MetricsServer, String> {
        let server = Arc::new(Server::http(addr).map_err(|e| e.to_string())?);
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| "metrics endpoint is not an IP endpoint".to_string())?;
        let srv = server.clone();
        let thread = std::thread::Builder::new()
            .name("zc-admin".into())
            .spawn(move || {
                for request in srv.incoming_requests() {
                    let response = respond(&admin, request.url());
                    let _ = request.respond(response);
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(MetricsServer {
            server,
            addr,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn respond(admin: &Admin, url: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    let header = |v: &str| Header::from_bytes("Content-Type", v).expect("static header is valid");
    let check = |c: &Check, ok: &str| match c() {
        Ok(()) => Response::from_string(format!("{ok}\n")),
        Err(why) => Response::from_string(format!("not {ok}: {why}\n")).with_status_code(503),
    };
    match url.split('?').next().unwrap_or_default() {
        "/metrics" => {
            let mut body = (admin.metrics)();
            process_metrics(&mut body);
            Response::from_string(body).with_header(header("text/plain; version=0.0.4"))
        }
        "/live" => check(&admin.live, "live"),
        "/ready" => check(&admin.ready, "ready"),
        "/status" => {
            Response::from_string((admin.status)()).with_header(header("application/json"))
        }
        _ => {
            Response::from_string("try /metrics, /live, /ready or /status\n").with_status_code(404)
        }
    }
}

/// `zonecast_build_info` and the standard `process_*` metrics (from /proc/self).
fn process_metrics(out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP zonecast_build_info The running build: version and git commit.\n# TYPE zonecast_build_info gauge\nzonecast_build_info{{version=\"{}\",commit=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        env!("ZONECAST_COMMIT")
    );
    // SAFETY: sysconf only reads configuration values.
    let (tick, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
        )
    };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces, inside parentheses).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| -> u64 { fields.get(n - 3).and_then(|f| f.parse().ok()).unwrap_or(0) };
    let cpu = (field(14) + field(15)) as f64 / tick;
    let rss = field(24) * page;
    let boot = std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let start = boot as f64 + field(22) as f64 / tick;
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let threads = field(20);
    let rows: [(&str, &str, &str, String); 5] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, seconds.",
            format!("{cpu}"),
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size, bytes.",
            rss.to_string(),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, seconds.",
            format!("{start}"),
        ),
        (
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            fds.to_string(),
        ),
        ("process_threads", "gauge", "Threads.", threads.to_string()),
    ];
    for (name, kind, help, v) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
