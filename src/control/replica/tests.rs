//! Replicas without sockets: a passive follows the active batch by batch and holds the same
//! state; it serves reads and refuses writes naming the active; replies wait for a passive's
//! acknowledgement in `Replica` mode (every live passive's); only a passive in sync with the lock's last term campaigns at once, a stale
//! one waits, one holding nothing never; an active that stops leading says which replies
//! must not report success; a take-over needs a higher term, and an old active or
//! its answers are fenced by it; a passive whose history diverged is sent a snapshot.

use std::time::{Duration, Instant};

use super::*;
use crate::control::protocol::ErrorCode;
use crate::control::Config;

const TOKEN: &str = "t";

fn node(name: &str, ack: AckMode) -> Node {
    Node::new(Controller::new(Config::new(TOKEN)), name, 0, ack)
}

fn tok() -> Option<String> {
    Some(TOKEN.into())
}

fn reply(n: &mut Node, now: Instant, req: Request) -> Result<Reply, ControlError> {
    match n.serve(now, Source::Local, req) {
        Served::Reply(r) => r,
        Served::Park { .. } => panic!("parked"),
    }
}

fn scene(name: &str) -> Request {
    Request::SceneCreate {
        token: tok(),
        name: name.into(),
        region: "r".into(),
        grid: None,
        layers: Vec::new(),
        reserved: Vec::new(),
    }
}

/// One follow round trip from `passive` to `active`; whether it was parked.
fn follow(active: &mut Node, passive: &mut Node, now: Instant) -> bool {
    let answer = match active.serve(now, Source::Local, passive.follow_request(tok())) {
        Served::Park { after } => {
            let _ = active.follow_answer(now, after, true);
            return true;
        }
        Served::Reply(Ok(Reply::Followed(a))) => *a,
        other => panic!("follow: {other:?}"),
    };
    passive.on_follow(now, answer).expect("applies");
    false
}

#[test]
fn a_passive_follows_serves_reads_and_names_the_active_for_writes() {
    let now = Instant::now();
    let mut a = node("tcp://a", AckMode::Local);
    let mut p = node("tcp://p", AckMode::Local);
    assert!(a.take_over(now, 1).is_some());
    p.learn_active(1, Some("tcp://a".into()));
    for i in 0..5 {
        reply(&mut a, now, scene(&format!("s{i}"))).unwrap();
        a.commit().expect("a batch");
        assert!(
            !follow(&mut a, &mut p, now),
            "something new: answered at once"
        );
    }
    assert!(follow(&mut a, &mut p, now), "nothing new: parked");
    assert_eq!(p.controller().image(), a.controller().image());
    assert_eq!(p.seq(), a.seq());
    let listed = reply(&mut p, now, Request::SceneList { token: tok() }).unwrap();
    assert_eq!(listed.to_json()["scenes"].as_array().unwrap().len(), 5);
    let e = reply(&mut p, now, scene("w")).unwrap_err();
    assert_eq!(e.code, ErrorCode::NotActive);
    assert_eq!(e.active.as_deref(), Some("tcp://a"));
    let status = reply(&mut a, now, Request::ClusterStatus { token: tok() }).unwrap();
    let controllers = &status.to_json()["controllers"];
    assert_eq!(controllers[1]["endpoint"], "tcp://p");
    assert_eq!(controllers[1]["lag"], 0);
}

#[test]
fn with_replica_acks_a_reply_waits_for_a_live_passive() {
    let now = Instant::now();
    let mut a = node("tcp://a", AckMode::Replica);
    let mut p = node("tcp://p", AckMode::Replica);
    a.take_over(now, 1).unwrap();
    assert_eq!(a.released(now), a.seq(), "no passive yet: local durability");
    follow(&mut a, &mut p, now);
    follow(&mut a, &mut p, now);
    reply(&mut a, now, scene("s")).unwrap();
    a.commit().unwrap();
    assert!(
        a.released(now) < a.seq(),
        "the passive has not acknowledged it"
    );
    follow(&mut a, &mut p, now); // brings the batch
    assert!(a.released(now) < a.seq(), "brought, not yet acknowledged");
    follow(&mut a, &mut p, now); // asks after it: acknowledged
    assert_eq!(a.released(now), a.seq());
    reply(&mut a, now, scene("t")).unwrap();
    a.commit().unwrap();
    let later = now + FOLLOWER_TIMEOUT + Duration::from_millis(1);
    assert_eq!(
        a.released(later),
        a.seq(),
        "the passive went silent: local again"
    );
}

#[test]
fn with_replica_acks_a_reply_waits_for_every_live_passive() {
    let now = Instant::now();
    let mut a = node("tcp://a", AckMode::Replica);
    let mut p = node("tcp://p", AckMode::Replica);
    let mut q = node("tcp://q", AckMode::Replica);
    a.take_over(now, 1).unwrap();
    for _ in 0..2 {
        follow(&mut a, &mut p, now);
        follow(&mut a, &mut q, now);
    }
    reply(&mut a, now, scene("s")).unwrap();
    a.commit().unwrap();
    follow(&mut a, &mut p, now);
    follow(&mut a, &mut p, now);
    assert!(
        a.released(now) < a.seq(),
        "p holds it, q does not yet: whichever takes over must hold it"
    );
    follow(&mut a, &mut q, now);
    follow(&mut a, &mut q, now);
    assert_eq!(a.released(now), a.seq());
}

#[test]
fn only_a_passive_in_sync_campaigns_at_once_and_a_stale_one_waits_while_the_lock_is_free() {
    let now = Instant::now();
    let mut a = node("tcp://a", AckMode::Local);
    let mut fresh = node("tcp://f", AckMode::Local);
    let mut empty = node("tcp://e", AckMode::Local);
    assert!(
        empty.may_campaign(now, 0, true),
        "a lock never held: nothing to lose"
    );
    assert!(!empty.may_campaign(now, 0, false), "held by someone else");
    a.take_over(now, 1).unwrap();
    follow(&mut a, &mut fresh, now);
    // The active dies; `fresh` followed it until then.
    let freed = now + Duration::from_millis(300);
    assert!(fresh.may_campaign(freed, 1, true), "in sync: at once");
    assert!(
        !empty.may_campaign(freed + 10 * FOLLOWER_TIMEOUT, 1, true),
        "holding nothing of a set that was led: never"
    );
    // In sync with term 1 is not in sync once the lock records term 2.
    assert!(!fresh.may_campaign(freed, 2, true));
    // The in-sync window ends before the active would stop counting it live.
    let late = now + FOLLOWER_TIMEOUT;
    let mut stale = node("tcp://s", AckMode::Local);
    follow(&mut a, &mut stale, now);
    assert!(!stale.may_campaign(late, 1, true), "out of sync: waits");
    // Holding the last term's batches, it waits one follower timeout of free lock time;
    // time with the lock held by someone does not count.
    assert!(!stale.may_campaign(late + FOLLOWER_TIMEOUT / 2, 1, true));
    assert!(!stale.may_campaign(late + FOLLOWER_TIMEOUT / 2, 1, false));
    assert!(
        !stale.may_campaign(late + FOLLOWER_TIMEOUT, 1, true),
        "the wait starts again"
    );
    assert!(
        stale.may_campaign(late + 2 * FOLLOWER_TIMEOUT, 1, true),
        "then it takes what it has"
    );
    // Without the last term's batches (the lock records term 2): twice as long.
    let mut older = node("tcp://o", AckMode::Local);
    follow(&mut a, &mut older, now);
    assert!(!older.may_campaign(late, 2, true));
    assert!(!older.may_campaign(late + FOLLOWER_TIMEOUT, 2, true));
    assert!(older.may_campaign(late + 2 * FOLLOWER_TIMEOUT, 2, true));
    // An etcd lease outlives its holder: the windows grow with the lock's lapse.
    let mut slow = node("tcp://l", AckMode::Local);
    slow.set_lock_lapse(Duration::from_secs(4));
    follow(&mut a, &mut slow, now);
    assert!(slow.may_campaign(now + Duration::from_secs(4), 1, true));
}

#[test]
fn an_active_that_stops_leading_reports_what_its_passives_did_not_hold() {
    let now = Instant::now();
    let mut a = node("tcp://a", AckMode::Replica);
    let mut p = node("tcp://p", AckMode::Replica);
    a.take_over(now, 1).unwrap();
    follow(&mut a, &mut p, now);
    follow(&mut a, &mut p, now);
    let held = a.seq();
    reply(&mut a, now, scene("committed")).unwrap();
    a.commit().unwrap();
    // Decided in the burst the lock was lost in, not yet committed.
    reply(&mut a, now, scene("decided")).unwrap();
    a.become_passive(now);
    assert_eq!(
        a.take_demotion(),
        Some(held),
        "replies after this batch must not report success"
    );
    assert_eq!(a.take_demotion(), None, "once");
    let tail = a
        .commit()
        .expect("the decided change still goes to the log");
    assert_eq!(tail.seq, held + 2);
    assert!(a.commit().is_none());
    // A passive becoming passive again reports nothing.
    p.become_passive(now);
    assert_eq!(p.take_demotion(), None);
}

/// An active under term 1 and a passive that followed it, then one more write on the active
/// (not yet followed).
fn active_and_passive(now: Instant) -> (Node, Node) {
    let mut a = node("tcp://a", AckMode::Local);
    let mut p = node("tcp://p", AckMode::Local);
    a.take_over(now, 1).unwrap();
    follow(&mut a, &mut p, now);
    reply(&mut a, now, scene("s")).unwrap();
    a.commit().unwrap();
    (a, p)
}

#[test]
fn terms_fence_an_old_active_and_its_answers() {
    let now = Instant::now();
    let (mut a, mut b) = active_and_passive(now);
    let stale = a.follow_answer(now, 0, false);
    // b takes over under term 2 (a lost the lock without knowing it yet).
    assert!(b.take_over(now, 2).is_some());
    assert!(b.take_over(now, 2).is_none(), "not the same term twice");
    // a's late answer is refused by anyone who saw term 2.
    let mut c = node("tcp://c", AckMode::Local);
    c.learn_active(2, Some("tcp://p".into()));
    assert!(c.on_follow(now, stale).is_err());
    // A follower that saw term 2 asking a turns it passive: it decides nothing any more.
    let ask = c.follow_request(tok());
    match a.serve(now, Source::Local, ask) {
        Served::Reply(Err(e)) => assert_eq!(e.code, ErrorCode::NotActive),
        other => panic!("{other:?}"),
    }
    assert_eq!(a.role(), Role::Passive);
    assert!(a.commit().is_none());
    assert_eq!(
        reply(&mut a, now, scene("late")).unwrap_err().code,
        ErrorCode::NotActive
    );
    // a rejoins as b's passive: its batch from term 1 (never on b) diverges, so b sends the
    // whole state and a ends up with b's.
    follow(&mut b, &mut a, now);
    assert_eq!(a.controller().image(), b.controller().image());
    assert_eq!(a.term(), 2);
}

#[test]
fn a_leaving_active_refuses_writes_until_its_passives_caught_up() {
    let now = Instant::now();
    let (mut a, mut p) = active_and_passive(now);
    let r = reply(&mut a, now, Request::ControllerStepDown { token: tok() }).unwrap();
    assert_eq!(r.to_json()["seq"], a.seq());
    assert_eq!(a.role(), Role::Leaving);
    assert_eq!(
        reply(&mut a, now, scene("t")).unwrap_err().code,
        ErrorCode::NotActive
    );
    assert!(!a.caught_up(now));
    follow(&mut a, &mut p, now);
    follow(&mut a, &mut p, now);
    assert!(a.caught_up(now));
    assert!(p.take_over(now, 2).is_some());
    assert_eq!(p.controller().image().counts().1, 1, "the scene is there");
}
