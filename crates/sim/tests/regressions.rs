//! Minimal reproductions of scheduler bugs the simulation found, written
//! straight against the public API so the lead can step through them.
//!
//! Each test states the Postfix behaviour it expects, and is kept (not
//! ignored) so that a fix is seen and stays fixed. Status at 9e8fa9f: the
//! two `retry`-unavailable panics are fixed (they failed at e031b94); the
//! replay-determinism test still fails.
//!
//! Sources: `qmgr_defer.c` (`qmgr_defer_transport()`, `qmgr_defer_todo()`:
//! with the retry transport dead too, recipients are deferred through the
//! defer service and their entries finished), `qmgr_enable.c`.

use rqmgr_sched::{
    Action, ByteString, Config, ConnId, Dsn, Event, MessageId, Route, Scheduler, Time,
};

fn t0() -> Time {
    Time::from_secs(1_700_000_000)
}

fn route(rcpt: u32, nexthop: &str) -> Route {
    Route {
        rcpt,
        transport: "smtp".into(),
        nexthop: nexthop.into(),
        address: format!("user{rcpt}@{nexthop}").into(),
    }
}

fn actions(s: &mut Scheduler) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn connects(a: &[Action]) -> Vec<(ConnId, ByteString)> {
    a.iter()
        .filter_map(|a| match a {
            Action::Connect { conn, transport } => Some((*conn, transport.clone())),
            _ => None,
        })
        .collect()
}

fn unavailable(conn: ConnId) -> Event {
    Event::AgentUnavailable {
        conn,
        dsn: Dsn::new("4.3.0", "mail transport unavailable"),
    }
}

/// smtp breaks, its entry goes to `retry`, then `retry` breaks too: the
/// recipient must be deferred synchronously and the message finish.
/// Found: panics with "invalid key" — `transport_throttle()` calls
/// `maybe_queue_done(q)` after `defer_todo(q)` already removed queue `q`
/// (its last entry's `entry_done()` deleted it).
#[test]
fn smtp_then_retry_unavailable_defers_one_recipient() {
    let mut s = Scheduler::new(Config::default());
    let msg = MessageId(1);
    s.handle(
        Event::Message {
            msg,
            routes: vec![route(0, "a.example")],
            more: false,
            flush_each: false,
            single_rcpt: false,
        },
        t0(),
    );
    let c = connects(&actions(&mut s));
    s.handle(unavailable(c[0].0), t0());
    let c = connects(&actions(&mut s));
    assert_eq!(c[0].1, "retry");
    s.handle(unavailable(c[0].0), t0());
    let a = actions(&mut s);
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::DeferRecipient { rcpt: 0, .. })),
        "{a:?}"
    );
    assert!(
        a.contains(&Action::MessageDone {
            msg,
            deferred: true
        }),
        "{a:?}"
    );
}

/// As above with two entries in the retry queue. Found: panics with
/// "invalid key" in `entry_done()` — `defer_todo()` takes the queue's
/// `todo` list first, so the first synchronously deferred entry leaves the
/// queue looking empty and `maybe_queue_done()` deletes it under the loop.
#[test]
fn smtp_then_retry_unavailable_defers_two_entries() {
    let mut s = Scheduler::new(Config::default());
    let msg = MessageId(1);
    s.handle(
        Event::Message {
            msg,
            routes: vec![route(0, "a.example"), route(1, "b.example")],
            more: false,
            flush_each: false,
            single_rcpt: false,
        },
        t0(),
    );
    let c = connects(&actions(&mut s));
    s.handle(unavailable(c[0].0), t0());
    let c = connects(&actions(&mut s));
    let retry = c
        .iter()
        .find(|(_, t)| t == "retry")
        .expect("retry connect")
        .0;
    s.handle(unavailable(retry), t0());
    let a = actions(&mut s);
    let deferred = a
        .iter()
        .filter(|a| matches!(a, Action::DeferRecipient { .. }))
        .count();
    assert_eq!(deferred, 2, "{a:?}");
    assert!(
        a.contains(&Action::MessageDone {
            msg,
            deferred: true
        }),
        "{a:?}"
    );
}

/// The core promises exact replay ("Everything it decides can therefore be
/// replayed in a simulation"). Found: when a transport dies
/// (`transport_throttle()`) or on `F` (`flush_dead()`), queues are walked
/// in `HashMap` order, which differs between two `Scheduler`s (random
/// hash seeds), so the order in which entries reach `retry` — and hence
/// every later decision — differs between identical runs.
#[test]
fn identical_runs_decide_identically_after_transport_death() {
    let run = || {
        let mut s = Scheduler::new(Config::default());
        s.handle(
            Event::Message {
                msg: MessageId(1),
                routes: (0..12)
                    .map(|i| route(i, &format!("d{i}.example")))
                    .collect(),
                more: false,
                flush_each: false,
                single_rcpt: false,
            },
            t0(),
        );
        let c = connects(&actions(&mut s));
        s.handle(unavailable(c[0].0), t0());
        s.handle(unavailable(c[1].0), t0());
        // Give every retry connection an agent and collect the requests.
        let mut order = Vec::new();
        for _ in 0..50 {
            for a in actions(&mut s) {
                match a {
                    Action::Connect { conn, .. } => s.handle(Event::AgentReady { conn }, t0()),
                    Action::Deliver { rcpts, .. } => order.extend(rcpts),
                    _ => {}
                }
            }
        }
        order
    };
    let first = run();
    // The retry queue (one reason) hands out its initial window of 5.
    assert_eq!(first.len(), 5);
    for _ in 0..5 {
        assert_eq!(run(), first, "same input, different decisions");
    }
}
