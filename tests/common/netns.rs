//! Simulated hosts for end-to-end tests: one network namespace per host, each linked by a veth
//! pair to a bridge in the test's own namespace (so the test reaches every host), and
//! partitions made of blackhole routes between hosts (the test still reaches both sides).
//! Needs root and iproute2 (`ip`); scripts/test installs iproute2. Everything is removed on
//! drop. Addresses are 10.77.S.1, 10.77.S.2, ... on the bridge's /24, S chosen from the pid;
//! traffic to them never leaves this machine.

use std::process::Command;

/// `ip ARGS...`, which must succeed.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2 (ip)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `n` simulated hosts.
pub struct Hosts {
    tag: String,
    subnet: u32,
    n: usize,
}

impl Hosts {
    pub fn new(n: usize) -> Hosts {
        let pid = std::process::id();
        let hosts = Hosts {
            tag: format!("zc{pid}"),
            subnet: 20 + pid % 200,
            n,
        };
        let bridge = hosts.bridge();
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("10.77.{}.254/24", hosts.subnet),
            "dev",
            &bridge,
        ]);
        ip(&["link", "set", &bridge, "up"]);
        for i in 0..n {
            let (ns, outer, inner) = (hosts.ns(i), hosts.veth(i, 'v'), hosts.veth(i, 'p'));
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ]);
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["link", "set", &outer, "master", &bridge, "up"]);
            let addr = format!("{}/24", hosts.ip(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        hosts
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    fn veth(&self, i: usize, side: char) -> String {
        format!("{}{side}{i}", self.tag)
    }

    /// Host `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("{}h{i}", self.tag)
    }

    /// Host `i`'s address.
    pub fn ip(&self, i: usize) -> String {
        format!("10.77.{}.{}", self.subnet, i + 1)
    }

    /// `ip netns exec NS program`: a command that runs on host `i`.
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(i), program]);
        c
    }

    fn routes(&self, i: usize, verb: &str) {
        for j in (0..self.n).filter(|j| *j != i) {
            ip(&["-n", &self.ns(i), "route", verb, "blackhole", &self.ip(j)]);
            ip(&["-n", &self.ns(j), "route", verb, "blackhole", &self.ip(i)]);
        }
    }

    /// Cuts host `i` off from every other host (not from the test).
    pub fn isolate(&self, i: usize) {
        self.routes(i, "add");
    }

    /// Undoes `isolate(i)`.
    pub fn heal(&self, i: usize) {
        self.routes(i, "del");
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for i in 0..self.n {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(i)])
                .output();
            let _ = Command::new("ip")
                .args(["link", "del", &self.veth(i, 'v')])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .output();
    }
}
