//! Operators' holds and destination limits, and learned state across a
//! restart, driven through the public interface.

use super::*;

fn hold_dsn() -> Dsn {
    Dsn::new(
        "4.3.2",
        "delivery to smtp:held.example suspended by operator",
    )
}

/// Deliveries started now, by next hop.
fn deliveries(s: &mut Scheduler, now: Time) -> Vec<(ConnId, ByteString)> {
    let mut out = Vec::new();
    while let Some(a) = s.poll_action() {
        match a {
            Action::Connect { conn, .. } => s.handle(Event::AgentReady { conn }, now),
            Action::Deliver { conn, nexthop, .. } => out.push((conn, nexthop)),
            _ => {}
        }
    }
    out
}

#[test]
fn a_held_destination_defers_what_waits_and_what_comes() {
    let mut s = Scheduler::new(cfg_with(true, |t| t.init_dest_concurrency = 1));
    s.handle(msg_to(1, 1, "held.example"), t0());
    s.handle(msg_to(2, 1, "held.example"), t0());
    s.handle(msg_to(3, 1, "other.example"), t0());
    // One delivery to each destination is under way; one entry waits.
    let busy = deliveries(&mut s, t0());
    assert_eq!(busy.len(), 2);

    let target = Target::new(b"smtp", Some(b"HELD.example"));
    assert_eq!(s.hold(&target, hold_dsn(), t0()), 1);
    let deferred: Vec<Action> = std::iter::from_fn(|| s.poll_action()).collect();
    assert!(
        deferred.iter().any(|a| matches!(a,
            Action::DeferRecipient { msg: MessageId(2), dsn, .. } if *dsn == hold_dsn())),
        "{deferred:?}"
    );
    // New mail for it is deferred on arrival, even when flushed, and
    // other destinations go on.
    s.handle(
        Event::Message {
            msg: MessageId(4),
            routes: vec![
                route(0, "smtp", "held.example"),
                route(1, "smtp", "other.example"),
            ],
            more: false,
            flush_each: true,
            single_rcpt: false,
        },
        t0(),
    );
    let after: Vec<Action> = std::iter::from_fn(|| s.poll_action()).collect();
    assert!(after.iter().any(|a| matches!(
        a,
        Action::DeferRecipient {
            msg: MessageId(4),
            rcpt: 0,
            ..
        }
    )));
    assert!(!after.iter().any(|a| matches!(
        a,
        Action::DeferRecipient {
            msg: MessageId(4),
            rcpt: 1,
            ..
        }
    )));
    assert_eq!(s.holds(), vec![(target.clone(), hold_dsn())]);

    // Released: mail for it is scheduled again.
    assert!(s.release(&target, t0()));
    assert!(!s.release(&target, t0()));
    s.handle(msg_to(5, 1, "held.example"), t0());
    for (conn, _) in busy {
        s.handle(
            Event::Delivered {
                conn,
                outcome: Outcome::Final,
            },
            t0(),
        );
    }
    let hops: Vec<ByteString> = deliveries(&mut s, t0()).into_iter().map(|d| d.1).collect();
    assert!(
        hops.iter().any(|h| h[..] == b"held.example"[..]),
        "{hops:?}"
    );
}

#[test]
fn a_held_transport_defers_every_destination() {
    let mut s = Scheduler::new(cfg_with(false, |_| {}));
    s.hold(&Target::new(b"smtp", None), hold_dsn(), t0());
    s.handle(msg_to(1, 3, "a.example"), t0());
    let all: Vec<Action> = std::iter::from_fn(|| s.poll_action()).collect();
    let deferred = all
        .iter()
        .filter(|a| matches!(a, Action::DeferRecipient { .. }))
        .count();
    assert_eq!(deferred, 3, "{all:?}");
    assert!(all
        .iter()
        .any(|a| matches!(a, Action::MessageDone { deferred: true, .. })));
}

#[test]
fn a_destination_limit_caps_its_window_only_and_outlives_the_queue() {
    let mut s = Scheduler::new(cfg_with(true, |t| t.init_dest_concurrency = 4));
    for id in 1..=6 {
        s.handle(msg_to(id, 1, "small.example"), t0());
        s.handle(msg_to(100 + id, 1, "big.example"), t0());
    }
    s.set_destination_limit(b"smtp", b"Small.Example", LiveLimit::Concurrency(1), t0())
        .unwrap();
    let busy = deliveries(&mut s, t0());
    let small = busy
        .iter()
        .filter(|d| d.1[..] == b"small.example"[..])
        .count();
    let big = busy
        .iter()
        .filter(|d| d.1[..] == b"big.example"[..])
        .count();
    assert_eq!((small, big), (1, 4));
    let v = s.destination_views(
        DestinationSelect::One {
            transport: b"smtp",
            nexthop: b"small.example",
        },
        1,
    );
    assert_eq!((v[0].window, v[0].window_limit), (1, 1));
    // Drained and gone, the queue comes back with the limit.
    let mut busy = busy;
    while !busy.is_empty() {
        for (conn, _) in std::mem::take(&mut busy) {
            s.handle(
                Event::Delivered {
                    conn,
                    outcome: Outcome::Final,
                },
                t0(),
            );
        }
        busy = deliveries(&mut s, t0());
        assert!(
            busy.iter()
                .filter(|d| d.1[..] == b"small.example"[..])
                .count()
                <= 1
        );
    }
    s.handle(msg_to(50, 1, "small.example"), t0());
    let v = s.destination_views(
        DestinationSelect::One {
            transport: b"smtp",
            nexthop: b"small.example",
        },
        1,
    );
    assert_eq!(v[0].window_limit, 1);
    assert!(s.clear_destination_limits(b"smtp", b"small.example"));
    let v = s.destination_views(
        DestinationSelect::One {
            transport: b"smtp",
            nexthop: b"small.example",
        },
        1,
    );
    assert_eq!(v[0].window_limit, 20, "the transport's limit again");
    assert!(s
        .set_destination_limit(b"smtp", b"x", LiveLimit::RecipientLimit(1), t0())
        .is_err());
}

#[test]
fn a_destination_rate_delay_pauses_after_each_delivery() {
    let mut s = Scheduler::new(cfg_with(true, |_| {}));
    let delay = Duration::from_secs(3);
    s.set_destination_limit(b"smtp", b"slow.example", LiveLimit::RateDelay(delay), t0())
        .unwrap();
    for id in 1..=3 {
        s.handle(msg_to(id, 1, "slow.example"), t0());
    }
    let busy = deliveries(&mut s, t0());
    assert_eq!(busy.len(), 1, "one at a time");
    s.handle(
        Event::Delivered {
            conn: busy[0].0,
            outcome: Outcome::Final,
        },
        t0(),
    );
    assert!(deliveries(&mut s, t0()).is_empty(), "paused");
    assert_eq!(s.poll_timeout(), Some(t0() + delay));
    s.handle_timeout(t0() + delay);
    assert_eq!(deliveries(&mut s, t0() + delay).len(), 1);
}

#[test]
fn learned_state_carries_dead_destinations_pauses_and_windows_over() {
    let mut s = Scheduler::new(cfg_with(true, |t| t.init_dest_concurrency = 1));
    s.handle(msg_to(1, 1, "down.example"), t0());
    let busy = deliveries(&mut s, t0());
    let dsn = Dsn::new("4.4.1", "delivery temporarily suspended: refused");
    let later = t0() + Duration::from_secs(100);
    s.handle(
        Event::Delivered {
            conn: busy[0].0,
            outcome: Outcome::Deferred {
                site: Some(dsn.clone()),
            },
        },
        later,
    );
    let learned = s.learned();
    assert_eq!(learned.len(), 1, "{learned:?}");
    assert_eq!(learned[0].dead, Some(dsn.clone()));
    assert_eq!(learned[0].wake_in, Some(Duration::from_secs(300)));

    // A new scheduler takes it over, with a window learned elsewhere.
    let mut warm = learned.clone();
    warm.push(LearnedDestination {
        transport: "smtp".into(),
        queue: "fast.example".into(),
        nexthop: "fast.example".into(),
        window: 7,
        dead: None,
        wake_in: None,
    });
    let mut r = Scheduler::new(cfg_with(true, |t| t.init_dest_concurrency = 1));
    let t1 = Time::from_secs(5_000_000);
    r.restore(warm, t1);
    r.handle(msg_to(1, 1, "down.example"), t1);
    let first: Vec<Action> = std::iter::from_fn(|| r.poll_action()).collect();
    assert!(
        !first.iter().any(
            |a| matches!(a, Action::Deliver { nexthop, .. } if nexthop[..] == b"down.example"[..])
        ),
        "still dead: {first:?}"
    );
    let v = r.destination_views(
        DestinationSelect::One {
            transport: b"smtp",
            nexthop: b"down.example",
        },
        1,
    );
    assert_eq!(v[0].next_retry, Some(t1 + Duration::from_secs(300)));
    r.handle(msg_to(2, 1, "fast.example"), t1);
    let v = r.destination_views(
        DestinationSelect::One {
            transport: b"smtp",
            nexthop: b"fast.example",
        },
        1,
    );
    assert_eq!(v[0].window, 7, "the learned window");
    // Past minimal_backoff_time a restored window is forgotten.
    let mut late = Scheduler::new(cfg_with(true, |t| t.init_dest_concurrency = 1));
    late.restore(r.learned(), t1);
    let t2 = t1 + Duration::from_secs(301);
    late.handle(msg_to(3, 1, "fast.example"), t2);
    let v = late.destination_views(
        DestinationSelect::One {
            transport: b"smtp",
            nexthop: b"fast.example",
        },
        1,
    );
    assert_eq!(v[0].window, 1);
}
