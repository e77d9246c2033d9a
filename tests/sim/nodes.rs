//! What each simulated node does with its timers and deliveries: the controller answers
//! requests; a pair runs its agent (tracker), ingest (engine, commands), hub and mirrors, and
//! fans its engine's output out to devices; a device roams. The invariants are checked where
//! the state they speak of changes.

use std::collections::BTreeSet;

use zonecast::control::client::RequestError;
use zonecast::control::protocol::{DeviceLocation, Reply, Request};
use zonecast::control::MirrorState;
use zonecast::replication::assignment::{Answer, Call};
use zonecast::replication::peer::{HubPeer, LinkEvent, Role};
use zonecast::replication::SessionCommand;
use zonecast::scene::{parse_deliver, Batch, EventKind};
use zonecast::wire::{parse_exact, Kind, ObjectBody, RedirectBody, RejectBody, RejectReason};

use crate::net::{us, Node, Payload, ToDevice};
use crate::pair::{Applied, Sub, CALL_TIMEOUT, ENGINE_TICK, REDIAL};
use crate::world::World;

/// How long a device waits for a locate answer.
const LOCATE_TIMEOUT: u64 = 200_000;

impl World {
    pub fn controller_receive(&mut self, from: Node, payload: Payload) {
        let Payload::Request { call, req } = payload else {
            return;
        };
        let asker = match &req {
            Request::PairHeartbeat { pair, .. } => Some(*pair),
            _ => None,
        };
        let reply = self.controller.handle(self.instant(), req);
        let assigned_then = asker.map(|p| {
            self.scenes
                .iter()
                .copied()
                .filter(|s| self.controller.serves(*s, p))
                .collect()
        });
        let payload = Payload::Reply {
            call,
            reply,
            assigned_then,
        };
        self.net
            .send(&mut self.rng, self.now, Node::Controller, from, payload);
    }

    pub fn pair_wake(&self, inc: usize) -> u64 {
        let p = &self.pairs[inc];
        if !p.alive || p.tracker.is_done() {
            return u64::MAX;
        }
        if p.frozen_until > self.now {
            return p.frozen_until;
        }
        let mut t = p.next_tick;
        match &p.call {
            Some((_, _, deadline)) => t = t.min(*deadline),
            None => t = t.min(us(p.tracker.poll_timeout() - self.base)),
        }
        for m in p.mirrors.values() {
            match m.retire_at {
                Some(at) => t = t.min(at),
                None if m.link.is_none() => t = t.min(m.redial_at),
                None => {}
            }
        }
        for n in p.neighbours.values().filter(|n| n.link.is_none()) {
            t = t.min(n.redial_at);
        }
        if p.subs.iter().any(|s| s.core.wants_checkpoint()) {
            t = self.now;
        }
        t
    }

    pub fn pair_step(&mut self, inc: usize) -> Result<(), String> {
        let now = self.instant();
        // A call that got no answer in time.
        if let Some((_, _, deadline)) = &self.pairs[inc].call {
            if *deadline <= self.now {
                let (_, call, _) = self.pairs[inc].call.take().unwrap();
                let timeout = RequestError::Unavailable("no reply in time".into());
                self.answer(inc, &call, Err(timeout), None)?;
            }
        }
        self.pairs[inc].note_crossings();
        if self.pairs[inc].call.is_none() {
            let local = self.pairs[inc].local();
            if let Some(call) = self.pairs[inc].tracker.poll_call(now, &local) {
                let id = self.next_call;
                self.next_call += 1;
                let req = call.request().clone();
                self.pairs[inc].call = Some((id, call, self.now + us(CALL_TIMEOUT)));
                let payload = Payload::Request { call: id, req };
                self.net.send(
                    &mut self.rng,
                    self.now,
                    Node::Pair(inc),
                    Node::Controller,
                    payload,
                );
            }
        }
        if self.pairs[inc].next_tick <= self.now {
            let mut out = Batch::default();
            self.pairs[inc].release(now, &mut out);
            self.pairs[inc].engine.tick(now, &mut out);
            self.emit(inc, out);
            self.pairs[inc].next_tick = self.now + us(ENGINE_TICK);
        }
        let retired: Vec<u32> = self.pairs[inc]
            .mirrors
            .iter()
            .filter(|(_, m)| m.retire_at.is_some_and(|t| t <= self.now))
            .map(|(p, _)| *p)
            .collect();
        for primary in retired {
            self.dropped(inc, primary)?;
        }
        self.dial(inc);
        self.send_checkpoints(inc);
        Ok(())
    }

    /// Drops the mirror of `primary` (its link too), then checks that the scenes promoted
    /// out of it hold everything devices saw from that primary.
    fn dropped(&mut self, inc: usize, primary: u32) -> Result<(), String> {
        if let Some(link) = self.pairs[inc].mirrors.get(&primary).and_then(|m| m.link) {
            self.drop_sub(link);
        }
        let clean = self.pairs[inc]
            .mirrors
            .get(&primary)
            .is_some_and(|m| m.clean);
        if let Applied::Dropped { promoted, .. } = self.pairs[inc].drop_mirror(primary) {
            for scene in promoted {
                self.check_adopted(inc, scene, primary, clean)?;
            }
        }
        Ok(())
    }

    /// A standby dials the primaries it mirrors that it is not linked to, and a pair the
    /// neighbours it follows.
    fn dial(&mut self, inc: usize) {
        let due: Vec<u32> = self.pairs[inc]
            .neighbours
            .iter()
            .filter(|(_, n)| n.link.is_none() && n.redial_at <= self.now)
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            let bus = self.pairs[inc].neighbours[&peer].bus.clone();
            let link = self.connect(inc, &bus, Role::Neighbour);
            let n = self.pairs[inc].neighbours.get_mut(&peer).unwrap();
            match link {
                Some(link) => n.link = Some(link),
                None => n.redial_at = self.now + us(REDIAL),
            }
        }
        let due: Vec<u32> = self.pairs[inc]
            .mirrors
            .iter()
            .filter(|(_, m)| m.retire_at.is_none() && m.link.is_none() && m.redial_at <= self.now)
            .map(|(p, _)| *p)
            .collect();
        for primary in due {
            let bus = self.pairs[inc].mirrors[&primary].bus.clone();
            let link = self.connect(inc, &bus, Role::Standby);
            let m = self.pairs[inc].mirrors.get_mut(&primary).unwrap();
            let Some(link) = link else {
                m.redial_at = self.now + us(REDIAL);
                continue;
            };
            m.link = Some(link);
            m.clean = false;
        }
    }

    /// `inc` connects to the stream at `bus` as `role`: the link id, if the pair there is up
    /// and reachable.
    fn connect(&mut self, inc: usize, bus: &str, role: Role) -> Option<u64> {
        {
            let target = self.pair_by_bus(bus).filter(|t| {
                let p = &self.pairs[*t];
                p.alive
                    && !p.tracker.is_done()
                    && p.frozen_until <= self.now
                    && !self.net.is_isolated(Node::Pair(*t), self.now)
            });
            let reachable = target.filter(|t| {
                !self.net.is_isolated(Node::Pair(inc), self.now)
                    && !self
                        .net
                        .is_cut(self.pairs[*t].slot, self.pairs[inc].slot, self.now)
            });
            let t = reachable?;
            let link = self.next_link;
            self.next_link += 1;
            // Connected and greeted: the primary's hub takes a subscriber waiting for its
            // checkpoint (the peer core, fed a real hello).
            let mut core = HubPeer::new(self.instant());
            let session = zonecast::replication::peer::LinkSession::new(
                role,
                crate::world::TOKEN,
                self.instant(),
            )
            .unwrap();
            let mut hello = session.hello().to_vec();
            core.handle_input(self.instant(), &mut hello, crate::world::TOKEN)
                .expect("a well-formed hello");
            self.pairs[t].subs.push(Sub {
                standby: inc,
                link,
                core,
                role,
            });
            self.net.stream(
                &mut self.rng,
                self.now,
                Node::Pair(t),
                Node::Pair(inc),
                link,
                LinkEvent::Up,
            );
            self.log(|| format!("pair #{inc} links to #{t} as {role:?} (link {link})"));
            Some(link)
        }
    }

    fn send_checkpoints(&mut self, inc: usize) {
        if !self.pairs[inc]
            .subs
            .iter()
            .any(|s| s.core.wants_checkpoint())
        {
            return;
        }
        let mut cp = Batch::default();
        self.pairs[inc].engine.checkpoint(&mut cp);
        let targets: Vec<(usize, u64, Role)> = self.pairs[inc]
            .subs
            .iter_mut()
            .filter_map(|s| s.core.take(true).then_some((s.standby, s.link, s.role)))
            .collect();
        for (standby, link, role) in targets {
            let event = LinkEvent::Batch(for_role(&cp, role));
            self.net.stream(
                &mut self.rng,
                self.now,
                Node::Pair(inc),
                Node::Pair(standby),
                link,
                event,
            );
        }
    }

    /// A pair's engine output: streamed first (to subscribers past their checkpoint), then
    /// fanned out to devices.
    pub fn emit(&mut self, inc: usize, out: Batch) {
        if out.is_empty() {
            return;
        }
        let targets: Vec<(usize, u64, Role)> = self.pairs[inc]
            .subs
            .iter_mut()
            .filter_map(|s| s.core.take(false).then_some((s.standby, s.link, s.role)))
            .collect();
        for (standby, link, role) in targets {
            let batch = for_role(&out, role);
            if batch.is_empty() {
                continue;
            }
            let event = LinkEvent::Batch(batch);
            self.net.stream(
                &mut self.rng,
                self.now,
                Node::Pair(inc),
                Node::Pair(standby),
                link,
                event,
            );
        }
        self.fanout(inc, &out);
    }

    fn fanout(&mut self, inc: usize, out: &Batch) {
        let mut last_relay: &[u8] = &[];
        for (e, data) in out.iter() {
            let mut sends: Vec<(usize, ToDevice)> = Vec::new();
            if let EventKind::Relay(_) | EventKind::Proxy(_) = e.kind {
                last_relay = data;
            }
            match e.kind {
                EventKind::Relay(_) | EventKind::Proxy(_) => {
                    let Ok(body) = ObjectBody::parse(data) else {
                        continue;
                    };
                    for (i, d) in self.devices.iter().enumerate() {
                        // An everything-device takes the relay; the others what `Deliver` lists.
                        let member = self.pairs[inc].engine.device(d.id).is_some_and(|s| {
                            s.scene == e.scene
                                && s.joined
                                && !s.quiet
                                && s.addr == Some(d.addr)
                                && s.area.is_everything()
                        });
                        if member && d.id != e.device {
                            let update = ToDevice::Update {
                                scene: e.scene,
                                object: body.object,
                                seq: body.origin_seq,
                            };
                            sends.push((i, update));
                        }
                    }
                }
                EventKind::Deliver(Kind::ObjectUpdate | Kind::ObjectOverwrite) => {
                    let Some((to, body)) = parse_deliver(data) else {
                        continue;
                    };
                    // An empty body: the relay just before it.
                    let body = match body.is_empty() {
                        true => last_relay,
                        false => body,
                    };
                    let Ok(body) = ObjectBody::parse(body) else {
                        continue;
                    };
                    for id in to {
                        let Some(i) = self.devices.iter().position(|d| d.id == id) else {
                            continue;
                        };
                        let d = &self.devices[i];
                        let member = self.pairs[inc]
                            .engine
                            .device(id)
                            .is_some_and(|s| s.joined && !s.quiet && s.addr == Some(d.addr));
                        if member {
                            let update = ToDevice::Update {
                                scene: e.scene,
                                object: body.object,
                                seq: body.origin_seq,
                            };
                            sends.push((i, update));
                        }
                    }
                }
                EventKind::Direct(kind) => {
                    let Some(i) = e.addr.and_then(|a| self.device_at(a)) else {
                        continue;
                    };
                    let msg = match kind {
                        Kind::Snapshot => ToDevice::Snapshot,
                        Kind::KeepaliveAck => ToDevice::KeepaliveAck,
                        Kind::Reject => match parse_exact::<RejectBody>(data) {
                            Ok(r) if r.reason == RejectReason::NotJoined as u8 => {
                                ToDevice::NotJoined
                            }
                            _ => continue,
                        },
                        Kind::Redirect => match parse_exact::<RedirectBody>(data) {
                            Ok(r) => match r.endpoint() {
                                Ok(to) => ToDevice::Redirect {
                                    to,
                                    epoch: r.epoch.get(),
                                },
                                Err(_) => continue,
                            },
                            Err(_) => continue,
                        },
                        _ => continue,
                    };
                    sends.push((i, msg));
                }
                _ => {}
            }
            for (i, msg) in sends {
                self.net.send(
                    &mut self.rng,
                    self.now,
                    Node::Pair(inc),
                    Node::Device(i),
                    Payload::ToDevice(msg),
                );
            }
        }
    }

    pub fn pair_receive(&mut self, inc: usize, from: Node, payload: Payload) -> Result<(), String> {
        if let Payload::Probe { pair } = payload {
            if !self.pairs[inc].alive || self.pairs[inc].frozen_until <= self.now {
                self.probe_received(inc, pair);
                return Ok(());
            }
        }
        if !self.pairs[inc].alive {
            return Ok(());
        }
        if self.pairs[inc].frozen_until > self.now {
            // Frozen: the kernel holds it until the process runs again.
            let at = self.pairs[inc].frozen_until;
            self.net.requeue(at, Node::Pair(inc), from, payload);
            return Ok(());
        }
        let now = self.instant();
        match payload {
            Payload::Reply {
                call,
                reply,
                assigned_then,
            } => {
                let Some(c) = self.pairs[inc].take_call(call) else {
                    return Ok(()); // an answer to an attempt already given up
                };
                let answer = match reply {
                    Ok(r) => Answer::from_reply(&c, r)
                        .ok_or_else(|| RequestError::BadReply("unexpected reply".into())),
                    Err(e) => Err(RequestError::Refused(e)),
                };
                self.answer(inc, &c, answer, assigned_then)?;
            }
            Payload::Datagram { from, bytes } => {
                let mut out = Batch::default();
                self.pairs[inc].receive(now, from, &bytes, &mut out);
                self.emit(inc, out);
            }
            Payload::Stream { link, event } => self.stream_event(inc, link, event)?,
            _ => {}
        }
        Ok(())
    }

    /// Feeds the tracker an answer, applies its commands, and checks fencing.
    fn answer(
        &mut self,
        inc: usize,
        call: &Call,
        answer: Result<Answer, RequestError>,
        assigned_then: Option<BTreeSet<u32>>,
    ) -> Result<(), String> {
        let now = self.instant();
        let before = self.pairs[inc].scenes();
        let stale = matches!(&answer, Err(RequestError::Refused(e))
            if e.code == zonecast::control::ErrorCode::StaleEpoch);
        let heartbeat_ok = matches!(call, Call::Heartbeat(_)) && answer.is_ok();
        self.log(|| match &answer {
            Ok(a) => format!(
                "pair #{inc} answered: {}",
                format!("{a:?}")
                    .chars()
                    .take(if std::env::var_os("SIM_FULL").is_some() {
                        usize::MAX
                    } else {
                        160
                    })
                    .collect::<String>()
            ),
            Err(e) => format!("pair #{inc} answer: {e}"),
        });
        let commands = self.pairs[inc].answer(now, answer);
        let mut out = Batch::default();
        for cmd in commands {
            self.log(|| format!("pair #{inc}: {cmd:?}"));
            let clean = match &cmd {
                SessionCommand::Unmirror { pair } => {
                    self.pairs[inc].mirrors.get(pair).is_some_and(|m| m.clean)
                }
                _ => false,
            };
            let link = match &cmd {
                SessionCommand::Unmirror { pair } => {
                    self.pairs[inc].mirrors.get(pair).and_then(|m| m.link)
                }
                _ => None,
            };
            match self.pairs[inc].apply(now, self.now, cmd, &mut out) {
                Applied::Promoted => self.books.promotions += 1,
                Applied::Dropped { primary, promoted } => {
                    if let Some(link) = link {
                        self.drop_sub(link);
                    }
                    for scene in promoted {
                        self.check_adopted(inc, scene, primary, clean)?;
                    }
                }
                Applied::Unlinked(Some(link)) => self.drop_sub(link),
                Applied::Unlinked(None) | Applied::Nothing => {}
            }
        }
        self.pairs[inc].release(now, &mut out);
        self.emit(inc, out);
        if self.pairs[inc].tracker.is_done() {
            self.exit(inc);
        }
        let after = self.pairs[inc].scenes();
        let epoch = self.pairs[inc].tracker.epoch();
        for scene in after.difference(&before) {
            // (Several pairs serve a zoned scene under one epoch, each its own zones.)
            if Some(*scene) != self.zoned {
                self.books.claim(*scene, epoch, inc)?;
            }
            self.books.tenure(inc, *scene);
        }
        if heartbeat_ok {
            let assigned = assigned_then.unwrap_or_default();
            if !after.is_subset(&assigned) {
                return Err(format!(
                    "fencing: pair #{inc} serves {after:?} after a heartbeat answer that assigned it {assigned:?}"
                ));
            }
        }
        if stale && (!after.is_empty() || self.pairs[inc].engine.sessions() > 0) {
            return Err(format!(
                "fencing: pair #{inc} was told it is stale but keeps scenes {after:?} and {} sessions",
                self.pairs[inc].engine.sessions()
            ));
        }
        Ok(())
    }

    /// No accepted state lost: `scene`, taken over by `inc` from its mirror of the pair with id
    /// `primary_id` (a promotion, checked once the mirror's catch-up is over; or a hand-over)
    /// holds every update devices saw from that primary, if the mirror's stream was intact
    /// (`clean`) and `inc` still serves the scene.
    pub fn check_adopted(
        &mut self,
        inc: usize,
        scene: u32,
        primary_id: u32,
        clean: bool,
    ) -> Result<(), String> {
        let Some(p) = self.pair_with_id(primary_id) else {
            return Ok(());
        };
        let serves = self.pairs[inc].alive && self.pairs[inc].engine.holds(scene);
        if !clean || !serves {
            return Ok(());
        }
        for (object, seq) in self.books.seen(p, scene) {
            let held = self.pairs[inc]
                .engine
                .object(scene, object)
                .map(|o| o.order.1)
                .unwrap_or(0);
            // An object handed over with its owner to a pair serving another zone of the
            // scene is that pair's now: the state is not lost if it holds it as its own.
            let moved = self.pairs.iter().any(|q| {
                q.alive
                    && q.engine
                        .object(scene, object)
                        .is_some_and(|o| o.proxy.is_none() && o.order.1 >= seq)
            });
            if held < seq && !moved {
                return Err(format!(
                    "state lost: pair #{inc} took scene {scene} over from pair #{p}, which relayed seq {seq} of object {object} to a device, but holds seq {held}"
                ));
            }
        }
        Ok(())
    }

    fn stream_event(&mut self, inc: usize, link: u64, event: LinkEvent) -> Result<(), String> {
        let neighbour = self.pairs[inc]
            .neighbours
            .iter()
            .find(|(_, n)| n.link == Some(link))
            .map(|(p, _)| *p);
        if let Some(peer) = neighbour {
            self.neighbour_event(inc, peer, event);
            return Ok(());
        }
        let Some(primary) = self.pairs[inc]
            .mirrors
            .iter()
            .find(|(_, m)| m.link == Some(link))
            .map(|(p, _)| *p)
        else {
            return Ok(()); // a link this pair dropped
        };
        if self.pairs[inc].mirrors[&primary].retire_at.is_some() {
            // Catching up: late writes of the promoted scenes go to the serving engine.
            let mut out = Batch::default();
            let pair = &mut self.pairs[inc];
            let m = pair.mirrors.get_mut(&primary).unwrap();
            let step = m.mirror.handle_link(
                self.base + std::time::Duration::from_micros(self.now),
                event,
                &mut pair.engine,
                &mut out,
            );
            pair.handed_in.extend(&step.adopted);
            self.emit(inc, out);
            if step.ended {
                self.dropped(inc, primary)?;
            }
            return Ok(());
        }
        let now = self.instant();
        let ended = matches!(
            event,
            LinkEvent::Lost | LinkEvent::Bye | LinkEvent::Malformed
        );
        let held_before: BTreeSet<u32> = self
            .scenes
            .iter()
            .copied()
            .filter(|s| self.pairs[inc].engine.holds(*s))
            .collect();
        let mut out = Batch::default();
        let pair = &mut self.pairs[inc];
        let m = pair.mirrors.get_mut(&primary).unwrap();
        let step = m.mirror.handle_link(now, event, &mut pair.engine, &mut out);
        pair.handed_in.extend(&step.adopted);
        if step.changed == Some(MirrorState::Synced) {
            m.clean = true;
        }
        let redial = m.mirror.poll_redial();
        if ended || redial {
            m.link = None;
            m.redial_at = self.now + us(REDIAL);
        }
        if redial {
            self.drop_sub(link);
        }
        let adopted: Vec<u32> = self
            .scenes
            .iter()
            .copied()
            .filter(|s| !held_before.contains(s) && self.pairs[inc].engine.holds(*s))
            .collect();
        self.pairs[inc].release(now, &mut out);
        self.emit(inc, out);
        let clean = self.pairs[inc]
            .mirrors
            .get(&primary)
            .is_some_and(|m| m.clean);
        for scene in adopted {
            self.books.handovers += 1;
            self.check_adopted(inc, scene, primary, clean)?;
            self.books.tenure(inc, scene);
        }
        Ok(())
    }

    /// What a neighbour's stream brought: proxies and hand-overs (`Engine::follow`).
    fn neighbour_event(&mut self, inc: usize, peer: u32, event: LinkEvent) {
        let now = self.instant();
        let mut out = Batch::default();
        match event {
            LinkEvent::Batch(b) => {
                let pair = &mut self.pairs[inc];
                let n = &pair.neighbours[&peer];
                let (me, scenes) = (n.me, n.scenes.clone());
                for (e, data) in b.iter() {
                    let shared = |s: u32| scenes.contains(&s);
                    let _ = pair.engine.follow(now, me, peer, e, data, shared, &mut out);
                }
                pair.release(now, &mut out);
            }
            LinkEvent::Up => {}
            LinkEvent::Bye | LinkEvent::Lost | LinkEvent::Malformed => {
                let n = self.pairs[inc].neighbours.get_mut(&peer).unwrap();
                n.link = None;
                n.redial_at = self.now + us(REDIAL);
            }
        }
        self.emit(inc, out);
    }

    /// The primary's hub forgets the subscriber on `link`.
    pub fn drop_sub(&mut self, link: u64) {
        for p in self.pairs.iter_mut() {
            p.subs.retain(|s| s.link != link);
        }
    }

    /// A drained pair exits on purpose: its streams say bye.
    fn exit(&mut self, inc: usize) {
        self.log(|| format!("pair #{inc} drained and exits"));
        self.pairs[inc].alive = false;
        self.end_streams(inc, true);
    }

    /// `kill -9`: what the process held is gone; what it wrote into its streams still arrives,
    /// then each stream reports lost.
    pub fn crash(&mut self, inc: usize) {
        self.pairs[inc].alive = false;
        self.pairs[inc].crashed_at = Some(self.now);
        self.end_streams(inc, false);
    }

    /// A pair that stopped: each of its streams ends (with a bye, or lost), and it leaves
    /// the streams it followed.
    fn end_streams(&mut self, inc: usize, bye: bool) {
        for s in std::mem::take(&mut self.pairs[inc].subs) {
            let event = if bye { LinkEvent::Bye } else { LinkEvent::Lost };
            self.net.stream(
                &mut self.rng,
                self.now,
                Node::Pair(inc),
                Node::Pair(s.standby),
                s.link,
                event,
            );
        }
        let own: Vec<u64> = self.pairs[inc]
            .mirrors
            .values()
            .filter_map(|m| m.link)
            .chain(self.pairs[inc].neighbours.values().filter_map(|n| n.link))
            .collect();
        for link in own {
            self.drop_sub(link);
        }
    }

    /// The host of `inc` is cut off for `d` µs: its streams break, and what they carried in
    /// flight is lost.
    pub fn isolate(&mut self, inc: usize, d: u64) {
        self.net.isolated.insert(Node::Pair(inc), self.now + d);
        let others: Vec<usize> = (0..self.pairs.len()).filter(|o| *o != inc).collect();
        for o in others {
            self.break_streams(inc, o);
        }
    }

    pub fn cut_streams(&mut self, a: usize, b: usize, d: u64) {
        let key = (
            self.pairs[a].slot.min(self.pairs[b].slot),
            self.pairs[a].slot.max(self.pairs[b].slot),
        );
        self.net.cut.insert(key, self.now + d);
        self.break_streams(a, b);
    }

    /// Every stream between `a` and `b` breaks without a bye; data in flight is lost.
    fn break_streams(&mut self, a: usize, b: usize) {
        for (standby, primary) in [(a, b), (b, a)] {
            let links: Vec<u64> = self.pairs[primary]
                .subs
                .iter()
                .filter(|s| s.standby == standby)
                .map(|s| s.link)
                .collect();
            for link in links {
                self.net.discard_link(link);
                self.drop_sub(link);
                if let Some(m) = self.pairs[standby]
                    .mirrors
                    .values_mut()
                    .find(|m| m.link == Some(link))
                {
                    m.clean = false;
                }
                self.net.stream(
                    &mut self.rng,
                    self.now,
                    Node::Pair(primary),
                    Node::Pair(standby),
                    link,
                    LinkEvent::Lost,
                );
            }
        }
    }

    pub fn device_wake(&self, d: usize) -> u64 {
        let dev = &self.devices[d];
        let roam = us(dev.policy.next_wake(dev.last_answered) - self.base);
        let mut t = roam.min(dev.next_update);
        if let Some((_, deadline)) = dev.locate {
            t = t.min(deadline);
        }
        t
    }

    pub fn device_step(&mut self, d: usize) {
        let now = self.instant();
        let now_ns = self.now_ns();
        if let Some((_, deadline)) = self.devices[d].locate {
            if deadline <= self.now {
                self.devices[d].locate = None;
            }
        }
        let dev = &mut self.devices[d];
        let action = dev.policy.poll(now, dev.last_answered, dev.join_pending);
        let mut out = Vec::new();
        if action.rejoin {
            out.push(dev.join(now, now_ns));
        } else if action.keepalive {
            out.push(dev.keepalive(now_ns));
        }
        if dev.next_update <= self.now {
            out.push(dev.update(now_ns));
            dev.next_update = self.now + 40_000;
            if dev.walks && self.walking && dev.written.is_multiple_of(3) {
                out.extend(dev.walk(now_ns));
            }
        }
        let locate = action.locate && dev.locate.is_none();
        for bytes in out {
            self.send_datagram(d, bytes);
        }
        if locate {
            self.log(|| format!("device {} locates", self.devices[d].id));
            let call = self.next_call;
            self.next_call += 1;
            self.devices[d].locate = Some((call, self.now + LOCATE_TIMEOUT));
            let req = Request::DeviceLocate {
                device: self.devices[d].id,
            };
            self.net.send(
                &mut self.rng,
                self.now,
                Node::Device(d),
                Node::Controller,
                Payload::Request { call, req },
            );
        }
    }

    pub fn send_datagram(&mut self, d: usize, bytes: Vec<u8>) {
        let dev = &self.devices[d];
        let from = dev.addr;
        let to = self.pair_at(dev.pair);
        let Some(inc) = to else {
            return; // nobody listens there any more
        };
        self.net.send(
            &mut self.rng,
            self.now,
            Node::Device(d),
            Node::Pair(inc),
            Payload::Datagram { from, bytes },
        );
    }

    pub fn device_receive(&mut self, d: usize, from: Node, payload: Payload) {
        let now = self.instant();
        let now_ns = self.now_ns();
        match payload {
            Payload::ToDevice(msg) => {
                // A device takes what any pair sends under its session (the tag is what is
                // checked), the pair it left included.
                let dev = &mut self.devices[d];
                match msg {
                    ToDevice::Update { scene, object, seq } => {
                        let e = dev.seen.entry((scene, object)).or_insert((0, 0));
                        *e = (e.0.max(seq), self.now);
                        // (What a pair shows of another's zones is that pair's to keep.)
                        let own = |p: usize| {
                            self.pairs[p]
                                .engine
                                .object(scene, object)
                                .is_none_or(|o| o.proxy.is_none())
                        };
                        if let Node::Pair(p) = from {
                            if own(p) {
                                self.books.saw(p, scene, object, seq);
                            }
                        }
                    }
                    ToDevice::Snapshot => {
                        dev.last_answered = Some(now);
                        dev.join_pending = None;
                        dev.joined = true;
                    }
                    ToDevice::KeepaliveAck => dev.last_answered = Some(now),
                    ToDevice::NotJoined => {
                        // As the client does: join again, once, until answered.
                        if dev.join_pending.is_none() {
                            let join = dev.join(now, now_ns);
                            self.send_datagram(d, join);
                        }
                    }
                    ToDevice::Redirect { to, epoch } => {
                        let id = dev.id;
                        self.log(|| format!("device {id} redirected to {to} (epoch {epoch})"));
                        let dev = &mut self.devices[d];
                        if epoch > dev.epoch {
                            let join = dev.move_to(to, epoch, now, now_ns);
                            self.send_datagram(d, join);
                        }
                    }
                }
            }
            Payload::Reply { call, reply, .. } => {
                if self.devices[d].locate.map(|(c, _)| c) != Some(call) {
                    return;
                }
                self.devices[d].locate = None;
                let id = self.devices[d].id;
                self.log(|| format!("device {id} located: {reply:?}"));
                if let Ok(Reply::Location(DeviceLocation { udp, epoch, .. })) = reply {
                    let Ok(to) = udp.parse() else { return };
                    if to != self.devices[d].pair {
                        let join = self.devices[d].move_to(to, epoch, now, now_ns);
                        self.send_datagram(d, join);
                    }
                }
            }
            _ => {}
        }
    }
}

/// What a subscriber of `role` is sent of `batch` (the hub's filter, `Role::gets`).
fn for_role(batch: &Batch, role: Role) -> Batch {
    if role != Role::Neighbour {
        return batch.clone();
    }
    let mut out = Batch::default();
    for (e, data) in batch.iter().filter(|(e, _)| role.gets(e.kind)) {
        out.push(e.kind, e.scene, e.device, e.addr, data);
    }
    out
}
