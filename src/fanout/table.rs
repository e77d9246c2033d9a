//! Fanout's view of the sessions: who is in which scene, where to send, which key to seal
//! with, and each recipient's outgoing sequence number. Built only from bus events.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::wire::SessionKey;

/// One device as fanout sees it.
pub struct Recipient {
    pub scene: u32,
    pub key: SessionKey,
    pub addr: Option<SocketAddr>,
    pub joined: bool,
    /// Silent for a while: relays skip it until it is heard again.
    pub paused: bool,
    /// Next sequence number of datagrams to this device.
    pub seq: u64,
}

/// Recipients by device and scene members, kept in step by bus events.
#[derive(Default)]
pub struct Table {
    pub devices: HashMap<u32, Recipient>,
    pub members: HashMap<u32, Vec<u32>>,
}

impl Table {
    pub fn admit(&mut self, device: u32, scene: u32, key: SessionKey, first_seq: u64) {
        self.revoke(device);
        let r = Recipient {
            scene,
            key,
            addr: None,
            joined: false,
            paused: false,
            seq: first_seq,
        };
        self.devices.insert(device, r);
    }

    pub fn revoke(&mut self, device: u32) {
        self.leave(device);
        self.devices.remove(&device);
    }

    /// Returns false if the device has no session.
    pub fn join(&mut self, device: u32, addr: SocketAddr) -> bool {
        let Some(r) = self.devices.get_mut(&device) else {
            return false;
        };
        r.addr = Some(addr);
        if !r.joined {
            r.joined = true;
            self.members.entry(r.scene).or_default().push(device);
        }
        true
    }

    pub fn set_paused(&mut self, device: u32, paused: bool) {
        if let Some(r) = self.devices.get_mut(&device) {
            r.paused = paused;
        }
    }

    pub fn moved(&mut self, device: u32, addr: SocketAddr) {
        if let Some(r) = self.devices.get_mut(&device) {
            r.addr = Some(addr);
        }
    }

    pub fn leave(&mut self, device: u32) {
        let Some(r) = self.devices.get_mut(&device) else {
            return;
        };
        if !r.joined {
            return;
        }
        r.joined = false;
        r.paused = false;
        if let Some(m) = self.members.get_mut(&r.scene) {
            m.retain(|d| *d != device);
            if m.is_empty() {
                self.members.remove(&r.scene);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_follows_events() {
        let mut t = Table::default();
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        t.admit(1, 7, SessionKey::new([1; 32]), 100);
        t.admit(2, 7, SessionKey::new([2; 32]), 100);
        assert!(!t.join(3, addr), "no session, no join");
        assert!(t.join(1, addr) && t.join(2, addr) && t.join(2, addr));
        assert_eq!(t.members[&7], vec![1, 2]);
        t.leave(1);
        assert_eq!(t.members[&7], vec![2]);
        t.set_paused(2, true);
        assert!(t.devices[&2].paused);
        t.revoke(2);
        assert!(!t.members.contains_key(&7));
        assert!(!t.devices.contains_key(&2));
    }
}
