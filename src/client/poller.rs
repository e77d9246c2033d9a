//! Waiting for any of several devices to have a datagram queued (ppoll, nanosecond timeouts),
//! for programs that drive many devices from one thread: `up`, the benchmark, games' bots.

use std::os::fd::AsRawFd;
use std::time::Duration;

use super::Device;

/// Readiness of a fixed set of devices, in the order they were given.
pub struct Poller {
    fds: Vec<libc::pollfd>,
}

impl Poller {
    pub fn new(devices: &[Device]) -> Poller {
        let fds = devices
            .iter()
            .map(|d| libc::pollfd {
                fd: d.socket().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        Poller { fds }
    }

    /// Waits up to `timeout` until at least one device is readable; returns how many are.
    pub fn wait(&mut self, timeout: Duration) -> usize {
        for fd in &mut self.fds {
            fd.revents = 0;
        }
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: fds is a valid array of pollfd of the given length; ts a valid timespec.
        let n = unsafe {
            libc::ppoll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        n.max(0) as usize
    }

    /// Whether device `i` was readable after the last `wait`.
    pub fn is_readable(&self, i: usize) -> bool {
        self.fds
            .get(i)
            .is_some_and(|fd| fd.revents & (libc::POLLIN | libc::POLLERR) != 0)
    }
}
