//! The assignment tracker on a virtual clock, against typed answers: registration, applying an
//! assignment, fencing, outages, fast polls while a primary looks dead, drains, split pairs.

use std::time::{Duration, Instant};

use super::*;
use crate::control::protocol::{HandoverOrder, MirrorTarget, SessionGrant};
use crate::control::ControlError;

const KEY: &str = "0707070707070707070707070707070707070707070707070707070707070707";

fn config() -> TrackerConfig {
    TrackerConfig {
        token: "t".into(),
        region: "eu".into(),
        advertise: "127.0.0.1:7201".parse().unwrap(),
        capacity: 10,
        version: "test".into(),
        bus: Some("tcp://127.0.0.1:7301".into()),
        bus_key: None,
        requires_fanout: false,
        drain_grace: Duration::from_millis(500),
    }
}

fn registered(now: Instant) -> Tracker {
    let mut t = Tracker::new(config(), now);
    let local = Local::default();
    let call = t.poll_call(now, &local).unwrap();
    assert!(matches!(call, Call::Register(_)));
    assert!(t.poll_call(now, &local).is_none(), "one call at a time");
    let answer = Answer::Registered(PairRegistered {
        pair: 3,
        epoch: 1,
        heartbeat_ms: 50,
        dead_after_ms: 250,
    });
    t.handle_answer(now, Ok(answer), &local);
    assert_eq!(t.pair(), Some(3));
    assert!(matches!(
        t.take_notes()[..],
        [Note::Registered { pair: 3, .. }]
    ));
    t
}

fn heartbeat(
    t: &mut Tracker,
    now: Instant,
    local: &Local,
    reply: HeartbeatReply,
) -> Vec<SessionCommand> {
    let call = t.poll_call(now, local).expect("a heartbeat is due");
    assert!(matches!(call, Call::Heartbeat(_)), "{call:?}");
    t.handle_answer(now, Ok(Answer::Heartbeat(reply)), local);
    t.take_commands()
}

fn assignment(scenes: &[u32], devices: &[(u32, u32)]) -> Assignment {
    Assignment {
        scenes: scenes.to_vec(),
        sessions: devices
            .iter()
            .map(|(device, scene)| SessionGrant {
                device: *device,
                scene: *scene,
                key: KEY.into(),
            })
            .collect(),
        ..Assignment::default()
    }
}

#[test]
fn a_pair_registers_then_applies_its_assignment_in_order() {
    let t0 = Instant::now();
    let mut t = registered(t0);
    let local = Local::default();
    let reply = HeartbeatReply {
        term: 0,
        epoch: 9,
        assignment: Some(assignment(&[1], &[(7, 1), (8, 1)])),
    };
    let cmds = heartbeat(&mut t, t0, &local, reply);
    let key = SessionKey::from_hex(KEY).unwrap();
    assert_eq!(
        cmds,
        vec![
            SessionCommand::Promote {
                scene: 1,
                to: config().advertise,
                epoch: 9,
                serving: Vec::new(),
            },
            SessionCommand::Admit {
                device: 7,
                scene: 1,
                key: key.clone()
            },
            SessionCommand::Admit {
                device: 8,
                scene: 1,
                key
            },
        ],
        "promote before admitting, so a mirror's sessions are the ones kept"
    );
    assert_eq!(t.epoch(), 9);
    // Not due before the interval; then an unchanged epoch changes nothing.
    assert!(t
        .poll_call(t0 + Duration::from_millis(49), &local)
        .is_none());
    let same = HeartbeatReply {
        term: 0,
        epoch: 9,
        assignment: None,
    };
    assert!(heartbeat(&mut t, t0 + Duration::from_millis(50), &local, same).is_empty());
    // A device leaves: only it is revoked.
    let reply = HeartbeatReply {
        term: 0,
        epoch: 10,
        assignment: Some(assignment(&[1], &[(7, 1)])),
    };
    let cmds = heartbeat(&mut t, t0 + Duration::from_millis(100), &local, reply);
    assert_eq!(cmds, vec![SessionCommand::Revoke { device: 8 }]);
}

#[test]
fn a_stale_pair_drops_everything_and_registers_again_at_once() {
    let t0 = Instant::now();
    let mut t = registered(t0);
    let local = Local::default();
    let mut a = assignment(&[1], &[(7, 1)]);
    a.mirrors = vec![MirrorTarget {
        pair: 4,
        bus: "tcp://127.0.0.1:7302".into(),
        key: None,
    }];
    let reply = HeartbeatReply {
        term: 0,
        epoch: 5,
        assignment: Some(a),
    };
    heartbeat(&mut t, t0, &local, reply);
    let later = t0 + Duration::from_millis(50);
    t.poll_call(later, &local).unwrap();
    let stale = ControlError::new(ErrorCode::StaleEpoch, "declared dead");
    t.handle_answer(later, Err(RequestError::Refused(stale)), &local);
    assert_eq!(
        t.take_commands(),
        vec![SessionCommand::Reset, SessionCommand::Unmirror { pair: 4 }],
        "everything goes, not only what it admitted"
    );
    assert_eq!((t.pair(), t.epoch()), (None, 0));
    assert!(matches!(t.take_notes()[..], [Note::Stale(_)]));
    assert!(matches!(
        t.poll_call(later, &local),
        Some(Call::Register(_))
    ));
}

#[test]
fn an_outage_keeps_the_assignment_and_is_noted_once() {
    let t0 = Instant::now();
    let mut t = registered(t0);
    let local = Local::default();
    heartbeat(
        &mut t,
        t0,
        &local,
        HeartbeatReply {
            term: 0,
            epoch: 5,
            assignment: Some(assignment(&[1], &[(7, 1)])),
        },
    );
    let mut now = t0;
    for _ in 0..3 {
        now += Duration::from_millis(50);
        t.poll_call(now, &local).unwrap();
        t.handle_answer(
            now,
            Err(RequestError::Unavailable("timeout".into())),
            &local,
        );
    }
    assert!(t.take_commands().is_empty(), "nothing revoked in an outage");
    assert!(matches!(t.take_notes()[..], [Note::Unreachable(_)]));
    now += Duration::from_millis(50);
    let ok = HeartbeatReply {
        term: 0,
        epoch: 5,
        assignment: None,
    };
    heartbeat(&mut t, now, &local, ok);
    assert_eq!(t.take_notes(), vec![Note::Reachable]);
}

#[test]
fn a_lost_primary_is_reported_at_once_then_every_tenth_of_the_interval() {
    let t0 = Instant::now();
    let mut t = registered(t0);
    let reply = HeartbeatReply {
        term: 0,
        epoch: 1,
        assignment: None,
    };
    let synced = Local {
        mirrors: vec![(4, MirrorState::Synced)],
        ..Local::default()
    };
    t.poll_call(t0, &synced).unwrap();
    t.handle_answer(t0, Ok(Answer::Heartbeat(reply.clone())), &synced);
    let t1 = t0 + Duration::from_millis(3);
    assert!(t.poll_call(t1, &synced).is_none(), "not due");
    // The stream breaks 3 ms after a beat: reported right away, not 47 ms later.
    let lost = Local {
        mirrors: vec![(4, MirrorState::Lost)],
        ..Local::default()
    };
    let call = t.poll_call(t1, &lost).expect("a loss is reported at once");
    let Call::Heartbeat(Request::PairHeartbeat { mirrors, .. }) = call else {
        panic!("{call:?}")
    };
    assert_eq!(mirrors[0].state, MirrorState::Lost, "reported");
    t.handle_answer(t1, Ok(Answer::Heartbeat(reply)), &lost);
    assert_eq!(t.poll_timeout(), t1 + Duration::from_millis(5));
    assert!(
        t.poll_call(t1 + Duration::from_millis(1), &lost).is_none(),
        "the same loss is not reported twice ahead of time"
    );
}

#[test]
fn a_drain_hands_over_waits_out_its_grace_then_deregisters() {
    let t0 = Instant::now();
    let mut t = registered(t0);
    let local = Local::default();
    heartbeat(
        &mut t,
        t0,
        &local,
        HeartbeatReply {
            term: 0,
            epoch: 5,
            assignment: Some(assignment(&[1], &[(7, 1)])),
        },
    );
    let mut drained = assignment(&[], &[(7, 1)]);
    drained.draining = true;
    drained.handovers = vec![HandoverOrder {
        scene: 1,
        pair: 4,
        udp: "127.0.0.1:7202".into(),
        epoch: 6,
    }];
    let at = t0 + Duration::from_millis(50);
    let cmds = heartbeat(
        &mut t,
        at,
        &local,
        HeartbeatReply {
            term: 0,
            epoch: 6,
            assignment: Some(drained),
        },
    );
    assert_eq!(
        cmds,
        vec![SessionCommand::Handover {
            scene: 1,
            to: "127.0.0.1:7202".parse().unwrap(),
            epoch: 6
        }],
        "the session stays: stragglers are forwarded"
    );
    assert_eq!(
        t.take_notes(),
        vec![Note::Draining(Duration::from_millis(500))]
    );
    // Heartbeats go on during the grace period; then the deregistration, whatever its fate.
    let mut now = at;
    loop {
        now += Duration::from_millis(50);
        match t.poll_call(now, &local).unwrap() {
            Call::Heartbeat(_) => {
                let same = HeartbeatReply {
                    term: 0,
                    epoch: 6,
                    assignment: None,
                };
                t.handle_answer(now, Ok(Answer::Heartbeat(same)), &local);
            }
            Call::Deregister(_) => break,
            c => panic!("{c:?}"),
        }
    }
    assert!(now >= at + Duration::from_millis(500));
    t.handle_answer(now, Err(RequestError::Unavailable("gone".into())), &local);
    assert!(t.is_done());
    assert_eq!(t.take_notes(), vec![Note::Drained(3)]);
    assert!(t.poll_call(now + Duration::from_secs(1), &local).is_none());
}

#[test]
fn an_incoming_scene_waits_for_its_handover_and_a_split_pair_needs_its_fanout() {
    let t0 = Instant::now();
    let mut t = registered(t0);
    let mut a = assignment(&[1, 2], &[(7, 1), (8, 2)]);
    a.incoming = vec![2];
    let cmds = heartbeat(
        &mut t,
        t0,
        &Local::default(),
        HeartbeatReply {
            term: 0,
            epoch: 3,
            assignment: Some(a),
        },
    );
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    assert!(
        matches!(cmds[0], SessionCommand::Promote { scene: 1, .. }),
        "only scene 1 is promoted now"
    );
    assert!(
        matches!(cmds[1], SessionCommand::Admit { device: 7, .. }),
        "device 8's session comes with scene 2's handover"
    );
    // Handed over: the next assignment no longer lists it as incoming; device 8 is admitted
    // (a no-op in the engine, which has it from the handover).
    let a = assignment(&[1, 2], &[(7, 1), (8, 2)]);
    let cmds = heartbeat(
        &mut t,
        t0 + Duration::from_millis(50),
        &Local::default(),
        HeartbeatReply {
            term: 0,
            epoch: 4,
            assignment: Some(a),
        },
    );
    assert!(
        matches!(
            cmds[..],
            [
                SessionCommand::Promote { scene: 2, .. },
                SessionCommand::Admit { device: 8, .. }
            ]
        ),
        "{cmds:?}"
    );

    let mut split = Tracker::new(
        TrackerConfig {
            requires_fanout: true,
            ..config()
        },
        t0,
    );
    let alone = Local::default();
    assert!(split.poll_call(t0, &alone).is_none());
    assert_eq!(split.take_notes(), vec![Note::FanoutMissing]);
    let whole = Local {
        fanout_alive: true,
        ..Local::default()
    };
    let later = t0 + Duration::from_millis(50);
    assert!(matches!(
        split.poll_call(later, &whole),
        Some(Call::Register(_))
    ));
    assert_eq!(split.take_notes(), vec![Note::FanoutBack]);
}

#[test]
fn a_scene_handed_over_before_it_was_taken_is_promoted_then_its_sessions_forwarded() {
    // A failover moved scene 1 here while the heartbeats went unanswered, then a drain moved it
    // on: the first reply heard both takes the scene (from the mirror) and hands it over.
    let t0 = Instant::now();
    let mut t = registered(t0);
    let mut a = assignment(&[], &[(7, 1)]);
    a.draining = true;
    a.handovers = vec![HandoverOrder {
        scene: 1,
        pair: 4,
        udp: "127.0.0.1:7202".into(),
        epoch: 6,
    }];
    let cmds = heartbeat(
        &mut t,
        t0,
        &Local::default(),
        HeartbeatReply {
            term: 0,
            epoch: 6,
            assignment: Some(a),
        },
    );
    let to: SocketAddr = "127.0.0.1:7202".parse().unwrap();
    assert!(
        matches!(
            cmds[..],
            [
                SessionCommand::Promote { scene: 1, to: p, epoch: 6, .. },
                SessionCommand::Admit { device: 7, .. },
                SessionCommand::Handover { scene: 1, to: h, epoch: 6 },
            ] if p == to && h == to
        ),
        "the session is admitted before the hand-over, so it is forwarded: {cmds:?}"
    );
}

#[test]
fn an_answer_from_an_older_controller_term_is_ignored() {
    let now = Instant::now();
    let mut t = registered(now);
    let local = Local::default();
    let new = HeartbeatReply {
        term: 5,
        epoch: 2,
        assignment: Some(assignment(&[1], &[(10, 1)])),
    };
    assert!(!heartbeat(&mut t, now, &local, new).is_empty());
    // A partitioned old active (term 4) would take the scene away: ignored.
    let later = now + Duration::from_millis(50);
    let old = HeartbeatReply {
        term: 4,
        epoch: 3,
        assignment: Some(assignment(&[], &[])),
    };
    assert!(heartbeat(&mut t, later, &local, old).is_empty());
    assert_eq!(t.epoch(), 2);
    assert!(t.scenes().contains(&1));
    assert!(matches!(t.take_notes()[..], [Note::Failed(_)]));
    // A hand-over in progress (`not_active`) is an outage, retried at the heartbeat pace.
    let again = later + Duration::from_millis(50);
    t.poll_call(again, &local).expect("due");
    let refused = ControlError::not_active(None, "handing over");
    t.handle_answer(again, Err(RequestError::Refused(refused)), &local);
    assert!(t.take_commands().is_empty(), "nothing dropped");
    assert!(t.poll_timeout() <= again + Duration::from_millis(50));
}

#[test]
fn a_scene_served_here_stays_served_when_it_is_listed_as_incoming_again() {
    let t0 = Instant::now();
    let mut t = registered(t0);
    let local = Local::default();
    // Scene 1 was taken over here (its draining pair was declared dead meanwhile).
    let reply = HeartbeatReply {
        term: 0,
        epoch: 40,
        assignment: Some(assignment(&[1], &[(7, 1)])),
    };
    heartbeat(&mut t, t0, &local, reply);
    // That pair is heard again, still draining toward here: scene 1 is listed as incoming.
    let mut a = assignment(&[1], &[(7, 1)]);
    a.incoming = vec![1];
    let reply = HeartbeatReply {
        term: 0,
        epoch: 48,
        assignment: Some(a),
    };
    let cmds = heartbeat(&mut t, t0 + Duration::from_millis(50), &local, reply);
    assert!(cmds.is_empty(), "no drop, no second promotion: {cmds:?}");
    assert_eq!(t.scenes().iter().copied().collect::<Vec<_>>(), vec![1]);
}

#[test]
fn a_scene_adopted_from_a_handover_is_dropped_when_the_assignment_moved_it_on() {
    let t0 = Instant::now();
    let mut t = registered(t0);
    // The engine adopted scene 1 from a drain's handover in a stream; meanwhile the
    // controller, which had declared this pair dead, gave the scene to another pair.
    let local = Local {
        served: vec![1],
        ..Local::default()
    };
    let reply = HeartbeatReply {
        term: 0,
        epoch: 48,
        assignment: Some(assignment(&[], &[])),
    };
    let cmds = heartbeat(&mut t, t0, &local, reply);
    assert_eq!(cmds, vec![SessionCommand::Drop { scene: 1 }]);
    // Given to it after all: kept, not promoted again.
    let mut t = registered(t0);
    let reply = HeartbeatReply {
        term: 0,
        epoch: 49,
        assignment: Some(assignment(&[1], &[(7, 1)])),
    };
    let cmds = heartbeat(&mut t, t0, &local, reply);
    assert!(
        matches!(cmds[..], [SessionCommand::Admit { device: 7, .. }]),
        "{cmds:?}"
    );
}

#[test]
fn a_revived_pair_drops_the_scenes_that_moved_and_keeps_the_rest() {
    let t0 = Instant::now();
    let mut t = registered(t0);
    let local = Local::default();
    let reply = HeartbeatReply {
        term: 0,
        epoch: 5,
        assignment: Some(assignment(&[1, 2], &[(7, 1), (8, 2)])),
    };
    heartbeat(&mut t, t0, &local, reply);
    // Declared dead while alive, revived: scene 1 moved to its standby meanwhile.
    let reply = HeartbeatReply {
        term: 0,
        epoch: 9,
        assignment: Some(assignment(&[2], &[(8, 2)])),
    };
    let cmds = heartbeat(&mut t, t0 + Duration::from_millis(50), &local, reply);
    assert_eq!(
        cmds,
        vec![
            SessionCommand::Drop { scene: 1 },
            SessionCommand::Revoke { device: 7 }
        ],
        "the moved scene goes, with its sessions; scene 2 and its state stay"
    );
    assert_eq!(t.pair(), Some(3), "same identity");
    assert_eq!(t.scenes().iter().copied().collect::<Vec<_>>(), vec![2]);
}

fn refusal(code: ErrorCode) -> Result<Answer, RequestError> {
    Err(RequestError::Refused(ControlError::new(code, "no")))
}

#[test]
fn a_leaving_pair_asks_for_its_own_drain_and_keeps_heartbeating_while_the_standby_catches_up() {
    let t0 = Instant::now();
    let mut t = registered(t0);
    let local = Local::default();
    t.leave(t0, t0 + Duration::from_secs(10));
    let call = t.poll_call(t0, &local).unwrap();
    assert!(
        matches!(call, Call::Drain(Request::PairDrain { pair: 3, .. })),
        "{call:?}"
    );
    // The standby is not in sync yet: a heartbeat now, the drain again 100 ms later.
    t.handle_answer(t0, refusal(ErrorCode::Conflict), &local);
    assert!(matches!(t.poll_call(t0, &local), Some(Call::Heartbeat(_))));
    t.handle_answer(
        t0,
        Ok(Answer::Heartbeat(HeartbeatReply {
            term: 0,
            epoch: 1,
            assignment: None,
        })),
        &local,
    );
    assert!(t
        .poll_call(t0 + Duration::from_millis(40), &local)
        .is_none());
    let again = t0 + Duration::from_millis(100);
    assert!(matches!(t.poll_call(again, &local), Some(Call::Drain(_))));
    let accepted = PairDraining {
        pair: 3,
        draining: true,
        moved: vec![],
        epoch: 2,
    };
    t.handle_answer(again, Ok(Answer::Draining(accepted)), &local);
    assert_eq!(t.take_notes(), vec![Note::Leaving(0)]);
    // From here it is the drain of the test above: heartbeats carry the handovers.
    assert!(matches!(
        t.poll_call(again, &local),
        Some(Call::Heartbeat(_))
    ));
    assert!(!t.is_done());
}

#[test]
fn a_leaving_pair_without_a_standby_deregisters_and_a_late_one_gives_up_at_its_deadline() {
    let t0 = Instant::now();
    let local = Local::default();
    for code in [ErrorCode::NoPair, ErrorCode::InvalidValue] {
        let mut t = registered(t0);
        t.leave(t0, t0 + Duration::from_secs(10));
        assert!(matches!(t.poll_call(t0, &local), Some(Call::Drain(_))));
        t.handle_answer(t0, refusal(code), &local);
        assert!(matches!(
            t.take_notes()[..],
            [Note::LeavingWithoutStandby(_)]
        ));
        assert!(matches!(t.poll_call(t0, &local), Some(Call::Deregister(_))));
        t.handle_answer(t0, refusal(ErrorCode::NotActive), &local);
        assert!(t.is_done(), "{code:?}");
    }
    // A controller that never answers: done at the deadline, not later.
    let mut t = registered(t0);
    let by = t0 + Duration::from_secs(2);
    t.leave(t0, by);
    let mut now = t0;
    while !t.is_done() {
        if t.poll_call(now, &local).is_some() {
            t.handle_answer(now, Err(RequestError::Unavailable("down".into())), &local);
        }
        assert!(now <= by, "still leaving past the deadline");
        now = t.poll_timeout().max(now + Duration::from_millis(1));
    }
    assert!(t.take_notes().contains(&Note::LeaveTimedOut));
    // An unregistered pair has nothing to hand over.
    let mut t = Tracker::new(config(), t0);
    t.leave(t0, by);
    assert!(t.is_done());
}

#[test]
fn a_registration_refused_for_a_wrong_token_is_fatal_not_retried() {
    let t0 = Instant::now();
    let local = Local::default();
    let mut t = Tracker::new(config(), t0);
    assert!(matches!(t.poll_call(t0, &local), Some(Call::Register(_))));
    t.handle_answer(t0, refusal(ErrorCode::Unauthorized), &local);
    assert!(t.is_done());
    assert!(matches!(t.take_notes()[..], [Note::Fatal(_)]));
    assert!(t.poll_call(t0 + Duration::from_secs(5), &local).is_none());
}
