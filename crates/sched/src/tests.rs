//! Unit tests of the scheduler's bookkeeping through its public interface.

use super::*;
use std::collections::VecDeque;
use std::time::Duration;

pub(super) fn route(rcpt: u32, transport: &str, nexthop: &str) -> Route {
    Route {
        rcpt,
        transport: transport.into(),
        nexthop: nexthop.into(),
        address: format!("user{rcpt}@{nexthop}").into(),
    }
}

fn actions(s: &mut Scheduler) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

pub(super) fn t0() -> Time {
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
            single_rcpt: false,
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
            single_rcpt: false,
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
            single_rcpt: false,
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
fn run_with(s: &mut Scheduler, now: Time, outcome: impl FnMut(&[u8]) -> Outcome) -> Vec<Action> {
    run_recording(s, now, outcome, &mut Vec::new())
}

/// [`run_with`], also noting how many recipients each delivery carried.
fn run_recording(
    s: &mut Scheduler,
    now: Time,
    mut outcome: impl FnMut(&[u8]) -> Outcome,
    sizes: &mut Vec<usize>,
) -> Vec<Action> {
    let mut rest = Vec::new();
    let mut busy: Vec<(ConnId, ByteString)> = Vec::new();
    loop {
        let mut progressed = false;
        while let Some(a) = s.poll_action() {
            progressed = true;
            match a {
                Action::Connect { conn, .. } => s.handle(Event::AgentReady { conn }, now),
                Action::Deliver {
                    conn,
                    nexthop,
                    rcpts,
                    ..
                } => {
                    sizes.push(rcpts.len());
                    busy.push((conn, nexthop));
                }
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
                single_rcpt: false,
            },
            t0(),
        );
    }
    let mut to_site = 0;
    let mut to_retry = 0;
    let rest = run_with(&mut s, t0(), |nexthop| {
        if nexthop.starts_with(b"4.4.1 ") {
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
    let fail = |_: &[u8]| Outcome::Deferred {
        site: Some(Dsn::new("4.4.1", "delivery temporarily suspended: refused")),
    };
    let msg = |id, n| Event::Message {
        msg: MessageId(id),
        routes: (0..n).map(|i| route(i, "smtp", "d.example")).collect(),
        more: false,
        flush_each: false,
        single_rcpt: false,
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
                single_rcpt: false,
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
            single_rcpt: false,
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
            single_rcpt: false,
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
            single_rcpt: false,
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
            single_rcpt: false,
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

// ---------------------------------------------------------------------
// Preemptive scheduling (qmgr) versus round robin (oqmgr).

fn cfg_with(preemptive: bool, tweak: impl Fn(&mut TransportConfig) + 'static) -> Config {
    Config {
        preemptive,
        transports: Box::new(move |_| {
            let mut t = TransportConfig::default();
            tweak(&mut t);
            t
        }),
        ..Config::default()
    }
}

fn msg_to(id: u64, n: u32, nexthop: &str) -> Event {
    Event::Message {
        msg: MessageId(id),
        routes: (0..n).map(|i| route(i, "smtp", nexthop)).collect(),
        more: false,
        flush_each: false,
        single_rcpt: false,
    }
}

/// Runs one delivery at a time (one agent), every delivery final, and
/// returns the message of each delivery in order.
fn serial_deliveries(s: &mut Scheduler, now: Time) -> Vec<u64> {
    let mut order = Vec::new();
    loop {
        let mut next = None;
        while let Some(a) = s.poll_action() {
            match a {
                Action::Connect { conn, .. } if next.is_none() => {
                    s.handle(Event::AgentReady { conn }, now);
                }
                Action::Connect { conn, .. } => s.handle(
                    Event::AgentUnavailable {
                        conn,
                        dsn: Dsn::new("4.3.0", "unused"),
                    },
                    now,
                ),
                Action::Deliver { conn, msg, .. } if next.is_none() => {
                    order.push(msg.0);
                    next = Some(conn);
                }
                Action::Deliver { .. } => panic!("two deliveries at once"),
                _ => {}
            }
        }
        match next {
            Some(conn) => s.handle(
                Event::Delivered {
                    conn,
                    outcome: Outcome::Final,
                },
                now,
            ),
            None => return order,
        }
    }
}

/// Where the small message's deliveries came in the serial order.
fn positions(order: &[u64], id: u64) -> Vec<usize> {
    order
        .iter()
        .enumerate()
        .filter(|(_, &m)| m == id)
        .map(|(i, _)| i)
        .collect()
}

/// Feeds a single-destination list of `list` recipients (message 1),
/// then a `small`-recipient message (2) to the same destination, both in
/// the same second, and returns the positions of message 2's deliveries.
fn overtake(
    preemptive: bool,
    list: u32,
    small: u32,
    tweak: impl Fn(&mut TransportConfig) + 'static,
) -> Vec<usize> {
    // Window 1: everything is serialised through one destination, which is
    // where oqmgr is strictly first in, first out.
    let mut s = Scheduler::new(cfg_with(preemptive, move |t| {
        t.init_dest_concurrency = 1;
        t.dest_concurrency_limit = 1;
        tweak(t);
    }));
    s.handle(msg_to(1, list, "list.example"), t0());
    s.handle(msg_to(2, small, "list.example"), t0());
    let order = serial_deliveries(&mut s, t0());
    assert_eq!(s.message_count(), 0);
    positions(&order, 2)
}

/// SCHEDULER_README ("Preemptive scheduling"): a one-recipient message
/// overtakes a 5,000-recipient mailing list; oqmgr (preemptive=false)
/// serves the destination first in, first out, so it waits behind all
/// 100 entries of the list.
#[test]
fn one_recipient_mail_overtakes_list_under_preemption_not_oqmgr() {
    let qmgr = overtake(true, 5000, 1, |_| {});
    // Default cost 5, loan 3, discount 50: after the list's first
    // delivery, 1/5 + 3 >= 1 x 50% — the small job preempts at once.
    assert_eq!(qmgr, vec![1]);
    let oqmgr = overtake(false, 5000, 1, |_| {});
    assert_eq!(oqmgr, vec![100], "5000 recipients / 50 per entry go first");
}

/// qmgr_job_preempt(): the current job must have earned
/// (slots_available / cost + loan) >= needed entries x (100 - discount)%.
#[test]
fn slot_cost_loan_and_discount_arithmetic() {
    // No loan, no discount, cost 5: five list deliveries buy one entry.
    let p = overtake(true, 1000, 1, |t| {
        t.delivery_slot_loan = 0;
        t.delivery_slot_discount = 0;
    });
    assert_eq!(p, vec![5]);
    // Cost 2: two deliveries.
    let p = overtake(true, 1000, 1, |t| {
        t.delivery_slot_cost = 2;
        t.delivery_slot_loan = 0;
        t.delivery_slot_discount = 0;
    });
    assert_eq!(p, vec![2]);
    // Three entries (150 recipients), discount 50: 1.5 entries' worth,
    // and slots count in whole entries (integer division), so 10.
    let p = overtake(true, 5000, 150, |t| {
        t.delivery_slot_loan = 0;
        t.delivery_slot_discount = 50;
    });
    assert_eq!(p, vec![10, 11, 12]);
    // Cost 1 (below 2) turns preemption off: first in, first out.
    let p = overtake(true, 1000, 1, |t| t.delivery_slot_cost = 1);
    assert_eq!(p, vec![20]);
    // minimum_delivery_slots: a list too small to earn that many slots
    // (3 x 5 = 15 entries) is never preempted.
    let p = overtake(true, 500, 1, |t| t.minimum_delivery_slots = 11);
    assert_eq!(p, vec![10]);
}

/// qmgr_job_pop(): a preempting job pays for its slots in full, so a
/// second small message must wait for the list to earn them again.
#[test]
fn preempting_jobs_pay_for_their_slots() {
    let mut s = Scheduler::new(cfg_with(true, |t| {
        t.init_dest_concurrency = 1;
        t.dest_concurrency_limit = 1;
        t.delivery_slot_loan = 0;
        t.delivery_slot_discount = 0;
    }));
    s.handle(msg_to(1, 1000, "list.example"), t0());
    s.handle(msg_to(2, 1, "list.example"), t0());
    s.handle(msg_to(3, 1, "list.example"), t0());
    let order = serial_deliveries(&mut s, t0());
    assert_eq!(positions(&order, 2), vec![5]);
    assert_eq!(positions(&order, 3), vec![11]);
}

/// Without preemption, qmgr still schedules jobs in arrival order but a
/// job whose destinations are all at their window (a blocker) lets the
/// next job go (qmgr_job_entry_select()).
#[test]
fn blocker_job_lets_next_job_use_other_destinations() {
    let mut s = Scheduler::new(cfg_with(true, |t| {
        t.init_dest_concurrency = 1;
        t.dest_concurrency_limit = 1;
    }));
    s.handle(msg_to(1, 500, "slow.example"), t0());
    s.handle(msg_to(2, 1, "other.example"), t0());
    let mut delivered = Vec::new();
    for _ in 0..10 {
        while let Some(a) = s.poll_action() {
            match a {
                Action::Connect { conn, .. } => s.handle(Event::AgentReady { conn }, t0()),
                Action::Deliver { msg, nexthop, .. } => delivered.push((msg.0, nexthop)),
                _ => {}
            }
        }
    }
    assert_eq!(
        delivered,
        vec![
            (1, ByteString::from("slow.example")),
            (2, ByteString::from("other.example"))
        ]
    );
}

// ---------------------------------------------------------------------
// Recipient slots and refills.

fn message(id: u64, range: std::ops::Range<u32>, nexthop: &str, more: bool) -> Event {
    Event::Message {
        msg: MessageId(id),
        routes: range.map(|i| route(i, "smtp", nexthop)).collect(),
        more,
        flush_each: false,
        single_rcpt: false,
    }
}

/// qmgr_job_link() / qmgr_job_move_limits(): the first job still reading
/// takes the transport's whole recipient pool; later ones get only
/// qmgr_message_recipient_minimum until slots come back.
#[test]
fn transport_recipient_pool_goes_to_jobs_in_arrival_order() {
    let mut s = Scheduler::new(cfg_with(true, |t| t.recipient_limit = 100));
    s.handle(message(1, 0..50, "a.example", true), t0());
    // 10 (minimum) + 100 (pool) - 50 in core.
    assert_eq!(s.refill_budget(MessageId(1)), 60);
    s.handle(message(2, 0..5, "b.example", true), t0());
    assert_eq!(
        s.refill_budget(MessageId(2)),
        5,
        "pool empty: minimum 10 - 5"
    );
    // Message 1 is fully read with its next batch: its job's unused slots
    // (100 lent - 60 in core; the message's own minimum is not the
    // job's) pass to message 2, the next job still reading.
    s.handle(message(1, 50..60, "a.example", false), t0());
    assert_eq!(s.refill_budget(MessageId(2)), 5 + 40);
}

/// qmgr_job_peer_select(): refill when `_recipient_refill_limit` slots are
/// free, or some are free and `_recipient_refill_delay` has passed.
#[test]
fn early_refill_by_limit_or_delay() {
    let run = |refill_limit: u32, at: Duration| {
        let mut s = Scheduler::new(cfg_with(true, move |t| {
            t.recipient_limit = 100;
            t.recipient_refill_limit = refill_limit;
            t.recipient_refill_delay = Duration::from_secs(5);
        }));
        s.set_early_refill(true);
        s.handle(message(1, 0..200, "a.example", true), t0());
        s.handle(
            Event::MessageInfo {
                msg: MessageId(1),
                unread: 800,
            },
            t0(),
        );
        // 200 read against 110 slots. Deliver two entries of 50 (100
        // left in core, 10 free), then see what the next selection asks.
        let mut pending = VecDeque::new();
        let mut busy = VecDeque::new();
        let mut delivered = 0;
        let mut refill = None;
        for _ in 0..20 {
            let now = if delivered >= 2 { t0() + at } else { t0() };
            while let Some(a) = s.poll_action() {
                match a {
                    Action::Connect { conn, .. } => pending.push_back(conn),
                    Action::Deliver { conn, .. } => busy.push_back(conn),
                    Action::Refill { msg } => {
                        assert!(s.has_deliveries(msg), "an early refill, not a dry one");
                        refill = Some((delivered, s.refill_budget(msg)));
                    }
                    _ => {}
                }
            }
            if refill.is_some() {
                break;
            }
            if delivered < 2 {
                if let Some(conn) = busy.pop_front() {
                    delivered += 1;
                    s.handle(
                        Event::Delivered {
                            conn,
                            outcome: Outcome::Final,
                        },
                        now,
                    );
                    continue;
                }
            }
            if let Some(conn) = pending.pop_front() {
                s.handle(Event::AgentReady { conn }, now);
            }
        }
        refill
    };
    // 10 free, limit 100, no time passed: no refill.
    assert_eq!(run(100, Duration::ZERO), None);
    // 10 free and the 5 s refill delay passed: refill 10.
    assert_eq!(run(100, Duration::from_secs(5)), Some((2, 10)));
    // Refill limit 10: 10 free slots are enough at once.
    assert_eq!(run(10, Duration::ZERO), Some((2, 10)));
}

/// Without early refill (the default), Refill comes only when the
/// message's in-core entries are all done.
#[test]
fn dry_refill_only_by_default() {
    let mut s = Scheduler::new(cfg_with(true, |t| t.recipient_limit = 10));
    s.handle(message(1, 0..100, "a.example", true), t0());
    let rest = run_with(&mut s, t0() + Duration::from_secs(60), |_| Outcome::Final);
    assert_eq!(rest, vec![Action::Refill { msg: MessageId(1) }]);
    assert!(!s.has_deliveries(MessageId(1)));
}

/// oqmgr (qmgr_message_read(), qmgr.c, qmgr_entry.c there): read up to
/// fudge-factor percent of qmgr_message_recipient_limit per message; stop
/// taking messages at the limit; refill early below fudged limit - 100.
#[test]
fn oqmgr_fudge_factor_and_recipient_limit() {
    let cfg = Config {
        preemptive: false,
        message_recipient_limit: 1000,
        fudge_factor: 50,
        ..Config::default()
    };
    let mut s = Scheduler::new(cfg);
    s.set_early_refill(true);
    assert_eq!(s.recipient_budget(), 500);
    s.handle(message(1, 0..500, "a.example", true), t0());
    assert!(s.can_accept_message());
    s.handle(message(2, 0..500, "b.example", false), t0());
    assert!(!s.can_accept_message(), "1000 in core: the limit");
    // Deliver until in-core recipients drop below 500 - 100: then message
    // 1 asks for more while its other deliveries continue.
    let mut refill_at = None;
    let mut busy = VecDeque::new();
    'outer: loop {
        while let Some(a) = s.poll_action() {
            match a {
                Action::Connect { conn, .. } => s.handle(Event::AgentReady { conn }, t0()),
                Action::Deliver { conn, .. } => busy.push_back(conn),
                Action::Refill { msg } => {
                    refill_at = Some(s.recipient_count());
                    assert_eq!(msg, MessageId(1));
                    assert_eq!(s.refill_budget(msg), 500);
                    break 'outer;
                }
                _ => {}
            }
        }
        let Some(conn) = busy.pop_front() else { break };
        s.handle(
            Event::Delivered {
                conn,
                outcome: Outcome::Final,
            },
            t0(),
        );
    }
    let n = refill_at.expect("an early refill");
    // Checked when one of message 1's own entries finishes.
    assert!(n < 400, "refilled at {n} in core");
}

// ---------------------------------------------------------------------
// qmgr_site_hog_factor (early Postfix qmgr_message_resolve()).

fn hog_run(preemptive: bool, hog: u32) -> (usize, Vec<Action>) {
    let cfg = Config {
        preemptive,
        site_hog_factor: hog,
        message_active_limit: 10,
        ..Config::default()
    };
    let mut s = Scheduler::new(cfg);
    for id in 0..10 {
        s.handle(msg_to(id, 1, "hog.example"), t0());
    }
    s.handle(msg_to(10, 1, "other.example"), t0());
    let a = actions(&mut s);
    let deferred: Vec<Action> = a
        .into_iter()
        .filter(|a| matches!(a, Action::DeferRecipient { .. }))
        .collect();
    (s.recipient_count(), deferred)
}

/// A destination holding more than hog-factor percent of the active
/// queue (here 50% of qmgr_message_active_limit 10, since the in-core
/// recipients are far below 80% of their limit) gets no more: the excess
/// is deferred as "site destination queue overflow".
#[test]
fn site_hog_factor_limits_one_destinations_share() {
    for preemptive in [true, false] {
        let (in_core, deferred) = hog_run(preemptive, 50);
        // Six entries fit (5 is not more than 50% of 10), four deferred;
        // the other destination is unaffected.
        assert_eq!(in_core, 7, "preemptive={preemptive}");
        assert_eq!(deferred.len(), 4);
        for d in &deferred {
            let Action::DeferRecipient { dsn, msg, .. } = d else {
                unreachable!()
            };
            assert!(msg.0 >= 6 && msg.0 < 10);
            assert_eq!(dsn.reason, "site destination queue overflow");
        }
        let (in_core, deferred) = hog_run(preemptive, 100);
        assert_eq!((in_core, deferred.len()), (11, 0), "100 = no limit");
    }
}

mod snapshot;
mod traffic;

#[test]
fn abandoned_refill_frees_the_active_slot() {
    let mut s = Scheduler::new(Config::default());
    s.handle(
        Event::Message {
            msg: MessageId(1),
            routes: vec![route(0, "smtp", "r.example")],
            more: true,
            flush_each: false,
            single_rcpt: false,
        },
        t0(),
    );
    let rest = run_with(&mut s, t0(), |_| Outcome::Final);
    assert_eq!(rest, vec![Action::Refill { msg: MessageId(1) }]);
    assert_eq!(s.message_count(), 1);
    s.handle(Event::MessageAbandoned { msg: MessageId(1) }, t0());
    assert_eq!(s.message_count(), 0);
    assert_eq!(s.poll_action(), None);
}

/// VERP mail goes out one recipient per delivery request, whatever the
/// transport's recipient limit (`qmgr_message_assign()`, `single_rcpt`).
#[test]
fn verp_message_gets_one_recipient_per_entry() {
    let mut s = Scheduler::new(Config::default());
    s.handle(
        Event::Message {
            msg: MessageId(1),
            routes: (0..3).map(|i| route(i, "smtp", "v.example")).collect(),
            more: false,
            flush_each: false,
            single_rcpt: true,
        },
        t0(),
    );
    let mut sizes = Vec::new();
    let rest = run_recording(&mut s, t0(), |_| Outcome::Final, &mut sizes);
    assert_eq!(sizes, vec![1, 1, 1]);
    assert_eq!(rest.len(), 1);
}

/// One destination holding more than a fifth of the active queue gets
/// Postfix's clog warning, once per `qmgr_clog_warn_time`
/// (`qmgr_entry_create()`).
#[test]
fn clog_warning_once_per_period() {
    let cfg = Config {
        message_active_limit: 10,
        clog_warn_time: Duration::from_secs(300),
        ..Config::default()
    };
    let mut s = Scheduler::new(cfg);
    let warnings = |s: &mut Scheduler| -> Vec<ByteString> {
        std::iter::from_fn(|| s.poll_action())
            .filter_map(|a| match a {
                Action::Warning { text } => Some(text),
                _ => None,
            })
            .collect()
    };
    for id in 0..3 {
        s.handle(
            Event::Message {
                msg: MessageId(id),
                routes: vec![route(0, "smtp", "clog.example")],
                more: false,
                flush_each: false,
                single_rcpt: false,
            },
            t0(),
        );
    }
    let w = warnings(&mut s);
    assert_eq!(
        w.first(),
        Some(&"mail for clog.example is using up 3 of 3 active queue entries".into())
    );
    assert_eq!(
        w.last(),
        Some(&"to turn off these warnings specify: qmgr_clog_warn_time = 0".into())
    );
    // Not again within the period.
    s.handle(
        Event::Message {
            msg: MessageId(9),
            routes: vec![route(0, "smtp", "clog.example")],
            more: false,
            flush_each: false,
            single_rcpt: false,
        },
        t0() + Duration::from_secs(10),
    );
    assert!(warnings(&mut s).is_empty());
}

// ---------------------------------------------------------------------
// Names are bytes.

/// A recipient routed to `nexthop`, given as bytes.
fn route_to(rcpt: u32, transport: &str, nexthop: &[u8], address: &[u8]) -> Route {
    Route {
        rcpt,
        transport: transport.into(),
        nexthop: nexthop.into(),
        address: address.into(),
    }
}

/// One message with these routes: the names of the queues the scheduler
/// made for it, then every delivery's (next hop, recipients).
fn deliveries_of(
    cfg: Config,
    routes: Vec<Route>,
) -> (Vec<(ByteString, Vec<u32>)>, Vec<ByteString>) {
    let mut s = Scheduler::new(cfg);
    s.handle(
        Event::Message {
            msg: MessageId(1),
            routes,
            more: false,
            flush_each: false,
            single_rcpt: false,
        },
        t0(),
    );
    // Empty queues go away: look before anything is delivered.
    let mut names: Vec<ByteString> = s.queues.iter().map(|(_, q)| q.name.clone()).collect();
    names.sort();
    let mut out = Vec::new();
    let mut busy = Vec::new();
    loop {
        while let Some(a) = s.poll_action() {
            match a {
                Action::Connect { conn, .. } => s.handle(Event::AgentReady { conn }, t0()),
                Action::Deliver {
                    conn,
                    nexthop,
                    rcpts,
                    ..
                } => {
                    out.push((nexthop, rcpts));
                    busy.push(conn);
                }
                _ => {}
            }
        }
        let Some(conn) = busy.pop() else { break };
        let outcome = Outcome::Final;
        s.handle(Event::Delivered { conn, outcome }, t0());
    }
    (out, names)
}

#[test]
fn next_hops_differing_in_one_8bit_byte_are_two_queues_with_exact_bytes() {
    let routes = vec![
        route_to(0, "smtp", b"b\xe4d.example", b"u@b\xe4d.example"),
        route_to(1, "smtp", b"b\xe5d.example", b"u@b\xe5d.example"),
        route_to(2, "smtp", b"B\xe4D.example", b"u@B\xe4D.example"),
    ];
    let (mut out, names) = deliveries_of(Config::default(), routes);
    out.sort();
    // The third folds onto the first: ASCII letters only are folded, and
    // the queue keeps the next hop it was made with.
    assert_eq!(
        out,
        vec![
            (ByteString::from(&b"b\xe4d.example"[..]), vec![0, 2]),
            (ByteString::from(&b"b\xe5d.example"[..]), vec![1]),
        ]
    );
    assert_eq!(
        names,
        vec![
            ByteString::from(&b"b\xe4d.example"[..]),
            ByteString::from(&b"b\xe5d.example"[..]),
        ]
    );
}

#[test]
fn only_ascii_letters_fold_in_queue_names() {
    let routes = vec![
        route_to(0, "smtp", "ÄX.example".as_bytes(), b"u@x"),
        route_to(1, "smtp", "äx.example".as_bytes(), b"u@x"),
        route_to(2, "smtp", b"AX.example", b"u@x"),
        route_to(3, "smtp", b"ax.example", b"u@x"),
    ];
    let (mut out, names) = deliveries_of(Config::default(), routes);
    out.sort();
    assert_eq!(
        out,
        vec![
            (ByteString::from("AX.example"), vec![2, 3]),
            (ByteString::from("ÄX.example"), vec![0]),
            (ByteString::from("äx.example"), vec![1]),
        ]
    );
    assert_eq!(
        names,
        vec![
            ByteString::from("ax.example"),
            ByteString::from("Äx.example"),
            ByteString::from("äx.example"),
        ]
    );
}

#[test]
fn per_recipient_queue_names_keep_8bit_local_parts() {
    let cfg = Config {
        recipient_delimiter: "+".into(),
        ..Config::default()
    };
    // `local` has a recipient limit of 1: one queue per local part.
    let routes = vec![
        route_to(0, "local", b"Host", b"J\xfcrgen+a@host"),
        route_to(1, "local", b"Host", b"j\xfcrgen+b@host"),
        route_to(2, "local", b"Host", b"j\xdcrgen@host"),
    ];
    let (mut out, names) = deliveries_of(cfg, routes);
    out.sort();
    assert_eq!(
        out,
        vec![
            (ByteString::from("Host"), vec![0]),
            (ByteString::from("Host"), vec![1]),
            (ByteString::from("Host"), vec![2]),
        ]
    );
    assert_eq!(
        names,
        vec![
            ByteString::from(&b"j\xdcrgen@host"[..]),
            ByteString::from(&b"j\xfcrgen@host"[..]),
        ]
    );
}

#[test]
fn retry_next_hop_keeps_the_reason_bytes() {
    let mut s = Scheduler::new(Config::default());
    let reason = &b"connect to b\xe4d.example: refused"[..];
    let dsn = Dsn::new("4.4.1", reason);
    assert_eq!(
        &*dsn.error_nexthop(),
        &b"4.4.1 connect to b\xe4d.example: refused"[..]
    );
    s.handle(
        Event::Message {
            msg: MessageId(1),
            routes: vec![route(0, "smtp", "x.example")],
            more: false,
            flush_each: false,
            single_rcpt: false,
        },
        t0(),
    );
    // The transport is down: the recipient goes to `retry` with the
    // reason as its next hop.
    let Some(Action::Connect { conn, .. }) = s.poll_action() else {
        panic!("no connect")
    };
    s.handle(Event::AgentUnavailable { conn, dsn }, t0());
    let mut nexthops = Vec::new();
    while let Some(a) = s.poll_action() {
        match a {
            Action::Connect { conn, .. } => s.handle(Event::AgentReady { conn }, t0()),
            Action::Deliver { nexthop, .. } => nexthops.push(nexthop),
            _ => {}
        }
    }
    assert_eq!(
        nexthops,
        vec![ByteString::from(
            &b"4.4.1 connect to b\xe4d.example: refused"[..]
        )]
    );
}

#[test]
fn clog_warning_names_the_next_hop_by_its_bytes() {
    let cfg = Config {
        message_active_limit: 10,
        ..Config::default()
    };
    let mut s = Scheduler::new(cfg);
    for id in 0..3 {
        let routes = vec![route_to(0, "smtp", b"b\xe4d.example", b"u@b\xe4d.example")];
        let (msg, more, flush_each, single_rcpt) = (MessageId(id), false, false, false);
        let event = Event::Message {
            msg,
            routes,
            more,
            flush_each,
            single_rcpt,
        };
        s.handle(event, t0());
    }
    let first = std::iter::from_fn(|| s.poll_action()).find_map(|a| match a {
        Action::Warning { text } => Some(text),
        _ => None,
    });
    assert_eq!(
        first,
        Some(ByteString::from(
            &b"mail for b\xe4d.example is using up 3 of 3 active queue entries"[..]
        ))
    );
}
mod control;
