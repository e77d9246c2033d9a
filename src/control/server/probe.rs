//! The controller's probes of suspect pairs: the I/O around `Controller::due_probes` and
//! `Controller::probe_ended`. One connected UDP socket per probe (probes are rare: only
//! suspects get one), so an ICMP port unreachable from the pair's host comes back on it as
//! `ECONNREFUSED`: no process holds the port, the pair is gone. An authentic answer from the
//! pair probed that serves is proof of life; one from another pair, or "not serving", is a
//! death; silence until the timeout says nothing (the heartbeat window decides). A probe in
//! flight is sent again every [`RESEND`] on the same socket: a crashed process's port can
//! still swallow the first copy while the kernel tears it down (seen: a standby reports the
//! stream lost before the dead pair's UDP socket is gone), and a copy may be lost.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::control::ProbeOutcome;
use crate::wire::probe::{read_ack, write_probe, Probe, ProbeKey, PROBE_LEN};
use crate::wire::MAX_SEQ;

/// How often a probe in flight is sent again.
pub const RESEND: Duration = Duration::from_millis(10);

struct InFlight {
    pair: u32,
    socket: UdpSocket,
    nonce: u64,
    sent: Instant,
    last_sent: Instant,
    datagram: [u8; PROBE_LEN],
}

/// The probes in flight.
pub struct Probes {
    key: ProbeKey,
    timeout: Duration,
    next_nonce: u64,
    inflight: Vec<InFlight>,
}

impl Probes {
    /// Probes signed with the cluster `token`'s probe key, given up after `timeout`.
    pub fn new(token: &str, timeout: Duration) -> Probes {
        let mut seed = [0u8; 8];
        // Nonces only need to differ between probes in flight; the OS seed keeps two
        // controllers sharing a token apart.
        let _ = getrandom::getrandom(&mut seed);
        Probes {
            key: ProbeKey::from_token(token),
            timeout,
            next_nonce: u64::from_le_bytes(seed) & MAX_SEQ,
            inflight: Vec::new(),
        }
    }

    /// Sends a probe to `pair` at `addr`; the outcome at once when it cannot even be sent.
    pub fn send(&mut self, now: Instant, pair: u32, addr: SocketAddr) -> Option<ProbeOutcome> {
        self.next_nonce = (self.next_nonce + 1) & MAX_SEQ;
        let nonce = self.next_nonce;
        let timestamp_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let probe = write_probe(
            &self.key,
            &Probe {
                pair,
                nonce,
                timestamp_ns,
            },
        );
        let sent = (|| -> io::Result<UdpSocket> {
            let local: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse().expect("a literal address")
            } else {
                "[::]:0".parse().expect("a literal address")
            };
            let socket = UdpSocket::bind(local)?;
            socket.connect(addr)?;
            socket.set_nonblocking(true)?;
            socket.send(&probe)?;
            Ok(socket)
        })();
        match sent {
            Ok(socket) => {
                self.inflight.push(InFlight {
                    pair,
                    socket,
                    nonce,
                    sent: now,
                    last_sent: now,
                    datagram: probe,
                });
                None
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Some(ProbeOutcome::Refused),
            Err(_) => Some(ProbeOutcome::TimedOut),
        }
    }

    /// Outcomes known by `now`: answers, refusals, timeouts; probes still waiting whose
    /// last copy is [`RESEND`] old are sent again.
    pub fn collect(&mut self, now: Instant) -> Vec<(u32, ProbeOutcome)> {
        let mut done = Vec::new();
        let key = &self.key;
        let timeout = self.timeout;
        self.inflight.retain_mut(|p| match outcome(key, p) {
            Some(o) => {
                done.push((p.pair, o));
                false
            }
            None if now.saturating_duration_since(p.sent) >= timeout => {
                done.push((p.pair, ProbeOutcome::TimedOut));
                false
            }
            None if now.saturating_duration_since(p.last_sent) >= RESEND => {
                p.last_sent = now;
                match p.socket.send(&p.datagram) {
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        done.push((p.pair, ProbeOutcome::Refused));
                        false
                    }
                    _ => true,
                }
            }
            None => true,
        });
        done
    }

    /// When something is next due: a copy sent again, or a probe given up.
    pub fn deadline(&self) -> Option<Instant> {
        self.inflight
            .iter()
            .map(|p| (p.sent + self.timeout).min(p.last_sent + RESEND))
            .min()
    }

    /// The sockets to wait on, for `zmq::poll`.
    pub fn poll_items(&self) -> Vec<zmq::PollItem<'static>> {
        self.inflight
            .iter()
            .map(|p| zmq::PollItem::from_fd(p.socket.as_raw_fd(), zmq::POLLIN))
            .collect()
    }
}

/// What one probe's socket says now (`None`: nothing yet). Datagrams that are not an
/// authentic answer to this probe are read and ignored.
fn outcome(key: &ProbeKey, p: &InFlight) -> Option<ProbeOutcome> {
    let mut buf = [0u8; PROBE_LEN + 1];
    loop {
        match p.socket.recv(&mut buf) {
            Ok(n) => match read_ack(key, &buf[..n]) {
                Some(ack) if ack.nonce == p.nonce => {
                    return Some(if ack.pair == p.pair && ack.serving {
                        ProbeOutcome::Answered
                    } else {
                        ProbeOutcome::NotServing
                    });
                }
                _ => continue,
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Some(ProbeOutcome::Refused)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Host or network unreachable and the like: no conclusion about the process.
            Err(_) => return Some(ProbeOutcome::TimedOut),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::probe::{read_probe, write_ack};

    fn wait_for(probes: &mut Probes) -> Vec<(u32, ProbeOutcome)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let done = probes.collect(Instant::now());
            if !done.is_empty() || Instant::now() > deadline {
                return done;
            }
            let mut items = probes.poll_items();
            let due = probes.deadline().map_or(100, |d| {
                d.saturating_duration_since(Instant::now()).as_millis() as i64 + 1
            });
            let _ = zmq::poll(&mut items, due.min(100));
        }
    }

    #[test]
    fn a_closed_port_is_refused_an_answer_is_life_and_silence_times_out() {
        let mut probes = Probes::new("t", Duration::from_secs(5));
        // Closed: bind a port, then free it.
        let free = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert_eq!(probes.send(Instant::now(), 1, free), None);
        assert_eq!(wait_for(&mut probes), vec![(1, ProbeOutcome::Refused)]);

        // A pair that answers, first as another pair, then as itself.
        let pair = UdpSocket::bind("127.0.0.1:0").unwrap();
        let key = ProbeKey::from_token("t");
        for (answer_as, serving, expect) in [
            (9, true, ProbeOutcome::NotServing),
            (2, false, ProbeOutcome::NotServing),
            (2, true, ProbeOutcome::Answered),
        ] {
            assert_eq!(
                probes.send(Instant::now(), 2, pair.local_addr().unwrap()),
                None
            );
            let mut buf = [0u8; 64];
            let (n, from) = pair.recv_from(&mut buf).unwrap();
            let probe = read_probe(&key, &buf[..n]).expect("an authentic probe");
            assert_eq!(probe.pair, 2);
            // Garbage and a stale answer first: ignored.
            pair.send_to(b"garbage", from).unwrap();
            let mut stale = probe;
            stale.nonce ^= 1;
            pair.send_to(&write_ack(&key, &stale, 2, true), from)
                .unwrap();
            pair.send_to(&write_ack(&key, &probe, answer_as, serving), from)
                .unwrap();
            assert_eq!(wait_for(&mut probes), vec![(2, expect)]);
        }

        // Silence.
        let mut probes = Probes::new("t", Duration::from_millis(1));
        assert_eq!(
            probes.send(Instant::now(), 3, pair.local_addr().unwrap()),
            None
        );
        assert!(probes.deadline().is_some());
        assert_eq!(wait_for(&mut probes), vec![(3, ProbeOutcome::TimedOut)]);
        assert_eq!(probes.deadline(), None);
    }
}
