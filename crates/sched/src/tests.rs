//! Unit tests of the scheduler's bookkeeping through its public interface.

use super::*;
use std::time::Duration;

fn route(rcpt: u32, transport: &str, nexthop: &str) -> Route {
    Route {
        rcpt,
        transport: transport.into(),
        nexthop: nexthop.into(),
        address: format!("user{rcpt}@{nexthop}"),
    }
}

fn actions(s: &mut Scheduler) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn t0() -> Time {
    Time::from_secs(1_000_000)
}

#[test]
fn one_message_one_delivery() {
    let mut s = Scheduler::new(Config::default());
    let m = MessageId(1);
    s.handle(
        Event::Message {
            msg: m,
            routes: vec![route(0, "smtp", "a.example"), route(1, "smtp", "a.example")],
            more: false,
            flush_each: false,
        },
        t0(),
    );
    let a = actions(&mut s);
    assert_eq!(a.len(), 1, "one entry needs one connection: {a:?}");
    let Action::Connect { conn, transport } = &a[0] else {
        panic!("{a:?}")
    };
    assert_eq!(transport, "smtp");
    s.handle(Event::AgentReady { conn: *conn }, t0());
    let a = actions(&mut s);
    assert_eq!(
        a,
        vec![Action::Deliver {
            conn: *conn,
            msg: m,
            nexthop: "a.example".into(),
            rcpts: vec![0, 1],
            dest_flags: 0
        }]
    );
    s.handle(
        Event::Delivered {
            conn: *conn,
            outcome: Outcome::Final,
        },
        t0(),
    );
    assert_eq!(
        actions(&mut s),
        vec![Action::MessageDone {
            msg: m,
            deferred: false
        }]
    );
    assert_eq!(s.message_count(), 0);
    assert_eq!(s.recipient_count(), 0);
}

#[test]
fn recipient_limit_splits_entries_and_local_is_per_recipient() {
    let mut s = Scheduler::new(Config::default());
    let routes = (0..120).map(|i| route(i, "smtp", "b.example")).collect();
    s.handle(
        Event::Message {
            msg: MessageId(1),
            routes,
            more: false,
            flush_each: false,
        },
        t0(),
    );
    // 120 recipients, limit 50: three entries, so two connections at once
    // (at most two pending per transport).
    let a = actions(&mut s);
    assert_eq!(a.len(), 2);
    let mut s = Scheduler::new(Config::default());
    s.handle(
        Event::Message {
            msg: MessageId(1),
            routes: vec![route(0, "local", "host"), route(1, "local", "host")],
            more: false,
            flush_each: false,
        },
        t0(),
    );
    let a = actions(&mut s);
    let Action::Connect { conn, .. } = a[0] else {
        panic!()
    };
    s.handle(Event::AgentReady { conn }, t0());
    let a = actions(&mut s);
    match &a[0] {
        Action::Deliver { rcpts, .. } => assert_eq!(rcpts.len(), 1),
        other => panic!("{other:?}"),
    }
}

/// Drives a scheduler where every agent answers with `outcome`, returning
/// the actions other than connections and deliveries.
fn run_with(s: &mut Scheduler, now: Time, mut outcome: impl FnMut(&str) -> Outcome) -> Vec<Action> {
    let mut rest = Vec::new();
    let mut busy: Vec<(ConnId, String)> = Vec::new();
    loop {
        let mut progressed = false;
        while let Some(a) = s.poll_action() {
            progressed = true;
            match a {
                Action::Connect { conn, .. } => s.handle(Event::AgentReady { conn }, now),
                Action::Deliver { conn, nexthop, .. } => busy.push((conn, nexthop)),
                other => rest.push(other),
            }
        }
        if let Some((conn, nexthop)) = busy.pop() {
            progressed = true;
            s.handle(
                Event::Delivered {
                    conn,
                    outcome: outcome(&nexthop),
                },
                now,
            );
        }
        if !progressed {
            return rest;
        }
    }
}

#[test]
fn failed_cohorts_kill_destination_and_redirect_to_retry() {
    let mut s = Scheduler::new(Config::default());
    for i in 0..10 {
        s.handle(
            Event::Message {
                msg: MessageId(i),
                routes: vec![route(0, "smtp", "dead.example")],
                more: false,
                flush_each: false,
            },
            t0(),
        );
    }
    let mut to_site = 0;
    let mut to_retry = 0;
    let rest = run_with(&mut s, t0(), |nexthop| {
        if nexthop.starts_with("4.4.1 ") {
            to_retry += 1;
            Outcome::Deferred { site: None }
        } else {
            to_site += 1;
            Outcome::Deferred {
                site: Some(Dsn::new("4.4.1", "delivery temporarily suspended: refused")),
            }
        }
    });
    assert_eq!(rest.len(), 10);
    assert!(rest
        .iter()
        .all(|a| matches!(a, Action::MessageDone { deferred: true, .. })));
    // Window 5 dies after 1/5 + 1/4 + 1/3 + 1/2 failed cohorts, but all
    // five first deliveries were already busy when the failures came in.
    assert_eq!(to_site, 5);
    assert_eq!(to_retry, 5);
}

#[test]
fn dead_destination_revives_after_backoff_or_on_flush() {
    let cfg = Config {
        min_backoff: Duration::from_secs(300),
        ..Config::default()
    };
    let mut s = Scheduler::new(cfg);
    let fail = |_: &str| Outcome::Deferred {
        site: Some(Dsn::new("4.4.1", "delivery temporarily suspended: refused")),
    };
    let msg = |id, n| Event::Message {
        msg: MessageId(id),
        routes: (0..n).map(|i| route(i, "smtp", "d.example")).collect(),
        more: false,
        flush_each: false,
    };
    // Three failed deliveries in a row kill it (see queue.rs).
    for id in 10..13 {
        s.handle(msg(id, 1), t0());
    }
    run_with(&mut s, t0(), fail);
    // Dead now: a new message for d.example goes to retry.
    s.handle(msg(2, 1), t0());
    let a = actions(&mut s);
    assert!(
        matches!(&a[..], [Action::Connect { transport, .. }] if transport == "retry"),
        "{a:?}"
    );
    let Action::Connect { conn, .. } = a[0] else {
        panic!()
    };
    s.handle(Event::AgentReady { conn }, t0());
    match &actions(&mut s)[..] {
        [Action::Deliver { nexthop, .. }] => {
            assert_eq!(nexthop, "4.4.1 delivery temporarily suspended: refused")
        }
        other => panic!("{other:?}"),
    }
    s.handle(
        Event::Delivered {
            conn,
            outcome: Outcome::Deferred { site: None },
        },
        t0(),
    );
    let _ = actions(&mut s);
    // After the backoff time it is alive again.
    s.handle_timeout(t0() + Duration::from_secs(300));
    s.handle(msg(3, 1), t0() + Duration::from_secs(300));
    let a = actions(&mut s);
    assert!(
        matches!(&a[..], [Action::Connect { transport, .. }] if transport == "smtp"),
        "{a:?}"
    );

    // And F revives at once.
    let mut s = Scheduler::new(Config::default());
    for id in 10..13 {
        s.handle(msg(id, 1), t0());
    }
    run_with(&mut s, t0(), fail);
    s.handle(msg(1, 1), t0());
    let a = actions(&mut s);
    assert!(
        matches!(&a[..], [Action::Connect { transport, .. }] if transport == "retry"),
        "{a:?}"
    );
    s.handle(Event::FlushDead, t0());
    s.handle(msg(2, 1), t0());
    let a = actions(&mut s);
    assert!(
        matches!(&a[..], [Action::Connect { transport, .. }] if transport == "smtp"),
        "{a:?}"
    );
}

#[test]
fn window_limits_busy_deliveries() {
    let mut s = Scheduler::new(Config::default());
    // 100 one-recipient messages to one destination: initial window 5.
    for i in 0..100 {
        s.handle(
            Event::Message {
                msg: MessageId(i),
                routes: vec![route(0, "smtp", "w.example")],
                more: false,
                flush_each: false,
            },
            t0(),
        );
    }
    let mut busy = 0;
    for _ in 0..10 {
        while let Some(a) = s.poll_action() {
            match a {
                Action::Connect { conn, .. } => s.handle(Event::AgentReady { conn }, t0()),
                Action::Deliver { .. } => busy += 1,
                Action::Close { .. } => {}
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(busy, 5, "initial destination concurrency");
}

#[test]
fn transport_failure_kills_transport_for_retry_time() {
    let mut s = Scheduler::new(Config::default());
    s.handle(
        Event::Message {
            msg: MessageId(1),
            routes: vec![route(0, "smtp", "x.example")],
            more: false,
            flush_each: false,
        },
        t0(),
    );
    let Some(Action::Connect { conn, .. }) = s.poll_action() else {
        panic!()
    };
    s.handle(
        Event::AgentUnavailable {
            conn,
            dsn: Dsn::new("4.3.0", "mail transport unavailable"),
        },
        t0(),
    );
    // The waiting entry went to retry.
    let Some(Action::Connect { conn, transport }) = s.poll_action() else {
        panic!()
    };
    assert_eq!(transport, "retry");
    s.handle(Event::AgentReady { conn }, t0());
    match s.poll_action() {
        Some(Action::Deliver { nexthop, .. }) => {
            assert_eq!(nexthop, "4.3.0 mail transport unavailable")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.poll_timeout(), Some(t0() + Duration::from_secs(60)));
}

#[test]
fn refill_is_asked_for_when_in_core_recipients_are_done() {
    let mut s = Scheduler::new(Config::default());
    s.handle(
        Event::Message {
            msg: MessageId(1),
            routes: vec![route(0, "smtp", "r.example")],
            more: true,
            flush_each: false,
        },
        t0(),
    );
    let rest = run_with(&mut s, t0(), |_| Outcome::Final);
    assert_eq!(rest, vec![Action::Refill { msg: MessageId(1) }]);
    s.handle(
        Event::Message {
            msg: MessageId(1),
            routes: vec![route(1, "smtp", "r.example")],
            more: false,
            flush_each: false,
        },
        t0(),
    );
    let rest = run_with(&mut s, t0(), |_| Outcome::Final);
    assert_eq!(
        rest,
        vec![Action::MessageDone {
            msg: MessageId(1),
            deferred: false
        }]
    );
}

#[test]
fn empty_message_is_done_at_once() {
    let mut s = Scheduler::new(Config::default());
    s.handle(
        Event::Message {
            msg: MessageId(1),
            routes: vec![],
            more: false,
            flush_each: false,
        },
        t0(),
    );
    assert_eq!(
        actions(&mut s),
        vec![Action::MessageDone {
            msg: MessageId(1),
            deferred: false
        }]
    );
}
