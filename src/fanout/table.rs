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
    /// Its interest area is everything: it takes every relay of its scene. Others are sent
    /// what the engine lists for them in `Deliver` events.
    pub everything: bool,
    /// Silent for a while: relays skip it until it is heard again.
    pub paused: bool,
    /// Next sequence number of datagrams to this device.
    pub seq: u64,
}

/// Recipients by device, and per scene the joined ones whose area is everything (they take
/// every relay and every departure; the others are listed by the engine), kept in step by bus
/// events.
#[derive(Default)]
pub struct Table {
    pub devices: HashMap<u32, Recipient>,
    /// Joined devices per scene whose area is everything.
    pub everyone: HashMap<u32, Vec<u32>>,
}

fn remove_from(lists: &mut HashMap<u32, Vec<u32>>, scene: u32, device: u32) {
    if let Some(m) = lists.get_mut(&scene) {
        m.retain(|d| *d != device);
        if m.is_empty() {
            lists.remove(&scene);
        }
    }
}

impl Table {
    pub fn admit(&mut self, device: u32, scene: u32, key: SessionKey, first_seq: u64) {
        self.revoke(device);
        let r = Recipient {
            scene,
            key,
            addr: None,
            joined: false,
            everything: true,
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
            if r.everything {
                self.everyone.entry(r.scene).or_default().push(device);
            }
        }
        true
    }

    /// Notes whether `device`'s area is everything (an `Interest` event).
    pub fn set_everything(&mut self, device: u32, everything: bool) {
        let Some(r) = self.devices.get_mut(&device) else {
            return;
        };
        if r.everything == everything {
            return;
        }
        r.everything = everything;
        if r.joined {
            if everything {
                self.everyone.entry(r.scene).or_default().push(device);
            } else {
                remove_from(&mut self.everyone, r.scene, device);
            }
        }
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
        remove_from(&mut self.everyone, r.scene, device);
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
        assert!(t.devices[&1].joined && t.devices[&2].joined);
        assert_eq!(t.everyone[&7], vec![1, 2]);
        t.set_everything(1, false);
        assert!(
            t.devices[&1].joined,
            "still joined, listed by the engine now"
        );
        assert_eq!(t.everyone[&7], vec![2]);
        t.set_everything(1, true);
        assert_eq!(t.everyone[&7], vec![2, 1]);
        t.leave(1);
        assert!(!t.devices[&1].joined);
        assert_eq!(t.everyone[&7], vec![2]);
        t.set_paused(2, true);
        assert!(t.devices[&2].paused);
        t.revoke(2);
        assert!(!t.everyone.contains_key(&7));
        assert!(!t.devices.contains_key(&2));
    }
}
