//! `GET /metrics` in the Prometheus text format, served by tiny_http on its own thread; what it
//! serves is whatever `render` returns (a pair's counters, the controller's).

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tiny_http::{Header, Response, Server};

/// Renders the metrics text on each scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

pub struct MetricsServer {
    server: Arc<Server>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub fn start(addr: SocketAddr, render: Render) -> Result<MetricsServer, String> {
        let server = Arc::new(Server::http(addr).map_err(|e| e.to_string())?);
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| "metrics endpoint is not an IP endpoint".to_string())?;
        let srv = server.clone();
        let thread = std::thread::Builder::new()
            .name("zc-metrics".into())
            .spawn(move || {
                for request in srv.incoming_requests() {
                    let response = if request.url() == "/metrics" {
                        let ctype = Header::from_bytes("Content-Type", "text/plain; version=0.0.4")
                            .expect("static header is valid");
                        Response::from_string(render()).with_header(ctype)
                    } else {
                        Response::from_string("try /metrics\n").with_status_code(404)
                    };
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

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
