//! Deterministic simulations of scheduler behaviour that Postfix 3.7
//! documents, one test per behaviour, each citing its source.
//!
//! Sources: SCHEDULER_README ("Concurrency scheduling" and its summaries
//! of the 2.5 feedback and dead-destination algorithms), qmgr(8)
//! (RATE DELAY / ACTIVE QUEUE CONTROLS), and `qmgr_queue.c`,
//! `qmgr_transport.c`, `qmgr_message.c`, `qmgr_active.c`.
//!
//! Invariants: all assertions are on virtual time and on the record of a
//! run; every run must also pass the driver's contract audit.

mod common;

use std::time::Duration;

use common::{config, run_clean, sim, t0};
use rqmgr_sched::Config;
use rqmgr_sched::{MessageId, Time};
use rqmgr_sim::workload::{domain, list_message, one_recipient_messages, route};
use rqmgr_sim::{AgentOutcome, DestProfile, MessageSpec, Record, World};

const SEC: Duration = Duration::from_secs(1);

/// Slow start: SCHEDULER_README "Summary of the Postfix 2.5 concurrency
/// feedback algorithm" — a destination starts at
/// `initial_destination_concurrency` (5) and each delivery without site
/// trouble raises the window by one (positive feedback 1) up to
/// `_destination_concurrency_limit`.
#[test]
fn slow_start_grows_window_from_initial_to_limit() {
    let cfg = config(|_, t| t.dest_concurrency_limit = 20);
    let mut s = sim(
        cfg,
        World::default().with_dest("d0.example", DestProfile::ok(SEC)),
    );
    s.submit(one_recipient_messages(1, 400, 1, "smtp", t0()));
    run_clean(&mut s);
    let r = s.record();
    let ds: Vec<_> = r.deliveries_to("d0.example").collect();
    assert_eq!(ds.len(), 400);
    // Before the first reply only the initial window's worth went out.
    let first_reply = ds.iter().filter_map(|d| d.done_at).min().expect("replies");
    let first_wave = ds.iter().filter(|d| d.at < first_reply).count();
    assert_eq!(first_wave, 5, "initial destination concurrency");
    // Then the window grows to the limit, never beyond (the driver also
    // checks busy <= 5 + positive feedback at every dispatch).
    let stats = r.dest("smtp", "d0.example").expect("stats");
    assert_eq!(stats.max_busy, 20, "concurrency limit reached and held");
    assert_eq!(Record::max_overlap(ds.iter().copied()), 20);
    // Growth is gradual: within the second second at most 5 + 5 busy.
    let second = ds.iter().filter(|d| d.at < first_reply + SEC).count();
    assert!(
        second <= 5 + 5 + 5,
        "{second} started in the first two rounds"
    );
}

/// Dead destination: SCHEDULER_README "Summary of the Postfix 2.5 'dead
/// destination' detection algorithm" and `qmgr_queue_throttle()`: after
/// `_destination_concurrency_failed_cohort_limit` (1) failed cohorts the
/// destination is dead; `qmgr_defer_todo()` sends its waiting mail to the
/// `retry` transport with next hop "4.4.1 delivery temporarily
/// suspended: <reason>" (`qmgr_error_nexthop()`).
#[test]
fn failed_cohorts_mark_destination_dead_and_pending_mail_goes_to_retry() {
    let reason = "connect to dead.example[192.0.2.1]:25: Connection refused";
    let world = World::default().with_dest(
        "dead.example",
        DestProfile::always(SEC, AgentOutcome::SiteFailure(reason.into())),
    );
    let mut s = sim(Config::default(), world);
    let msgs: Vec<MessageSpec> = (0..20)
        .map(|i| MessageSpec {
            id: MessageId(i),
            arrival: t0(),
            routes: vec![route(0, "smtp", "dead.example")],
        })
        .collect();
    s.submit(msgs);
    run_clean(&mut s);
    let r = s.record();
    let to_site = r.deliveries_to("dead.example").count();
    let retry_hop = format!("4.4.1 delivery temporarily suspended: {reason}");
    let to_retry: Vec<_> = r
        .deliveries
        .iter()
        .filter(|d| d.transport == "retry")
        .collect();
    // Only the initial window's worth was tried; the rest went to retry.
    assert_eq!(to_site, 5);
    assert_eq!(to_retry.len() + to_site, 20, "every recipient tried once");
    assert!(
        to_retry.iter().all(|d| d.nexthop == retry_hop.as_str()),
        "{to_retry:?}"
    );
    assert!(r.completions.iter().all(|c| c.deferred));
    assert_eq!(r.completions.len(), 20);
}

/// Revival: qmgr(8) `minimal_backoff_time` ("the minimal time between
/// attempts to deliver a deferred message; prior to Postfix 2.4 the
/// default value was 1000s", also how long a dead destination stays
/// dead, `qmgr_queue_throttle()` timer) and the `F` trigger
/// (`qmgr_enable_all()`, postqueue -f).
#[test]
fn dead_destination_revives_after_minimal_backoff_time() {
    let world = World::default().with_dest(
        "dead.example",
        DestProfile::always(SEC, AgentOutcome::SiteFailure("refused".into())),
    );
    let mut s = sim(Config::default(), world); // min_backoff 300s
    let msg = |id, at| MessageSpec {
        id: MessageId(id),
        arrival: at,
        routes: vec![route(0, "smtp", "dead.example")],
    };
    s.submit((0..5).map(|i| msg(i, t0())));
    // Dead from t0+1s (the failed cohort's replies).
    s.submit([msg(100, t0() + 100 * SEC), msg(101, t0() + 400 * SEC)]);
    run_clean(&mut s);
    let r = s.record();
    let of = |id| {
        r.deliveries
            .iter()
            .find(|d| d.msg == MessageId(id))
            .expect("delivered")
    };
    assert_eq!(of(100).transport, "retry", "still dead within the backoff");
    assert_eq!(
        of(101).transport,
        "smtp",
        "alive again after minimal_backoff_time"
    );
    assert_eq!(of(101).nexthop, "dead.example");
}

/// The `F` trigger revives dead destinations at once (qmgr(8) "TRIGGERS":
/// `F` — "request to delete the destination status cache"; `qmgr_enable_all()`).
#[test]
fn dead_destination_revives_at_once_on_flush() {
    let world = World::default().with_dest(
        "dead.example",
        DestProfile::always(SEC, AgentOutcome::SiteFailure("refused".into())),
    );
    let mut s = sim(Config::default(), world);
    let msg = |id, at| MessageSpec {
        id: MessageId(id),
        arrival: at,
        routes: vec![route(0, "smtp", "dead.example")],
    };
    s.submit((0..5).map(|i| msg(i, t0())));
    s.submit([msg(100, t0() + 100 * SEC), msg(101, t0() + 151 * SEC)]);
    s.flush_dead_at(t0() + 150 * SEC);
    run_clean(&mut s);
    let r = s.record();
    let of = |id| {
        r.deliveries
            .iter()
            .find(|d| d.msg == MessageId(id))
            .expect("delivered")
    };
    assert_eq!(of(100).transport, "retry");
    assert_eq!(of(101).transport, "smtp", "F revived the destination");
}

/// Destination rate delay: qmgr(8) `default_destination_rate_delay` — "the
/// default amount of delay that is inserted between individual message
/// deliveries to the same destination"; `qmgr_transport_create()` forces
/// concurrency 1 and `qmgr_entry_done()` suspends the queue that long.
#[test]
fn destination_rate_delay_spaces_deliveries_with_concurrency_one() {
    let delay = 10 * SEC;
    let cfg = config(move |_, t| t.dest_rate_delay = delay);
    let mut s = sim(cfg, World::default());
    s.submit(one_recipient_messages(1, 20, 2, "smtp", t0()));
    run_clean(&mut s);
    let r = s.record();
    for j in 0..2 {
        let d = domain(j);
        let ds: Vec<_> = r.deliveries_to(&d).collect();
        assert_eq!(ds.len(), 10);
        assert_eq!(
            Record::max_overlap(ds.iter().copied()),
            1,
            "{d}: one at a time"
        );
        let gap = Record::min_gap(ds.iter().copied()).expect("gaps");
        assert!(gap >= delay, "{d}: gap {gap:?} < {delay:?}");
    }
    // The delay is per destination: the two ran side by side.
    assert_eq!(Record::max_overlap(&r.deliveries), 2);
}

/// Transport rate delay: qmgr(8) `default_transport_rate_delay` (3.1+) —
/// "the default amount of delay that is inserted between individual
/// message deliveries over the same message delivery transport,
/// regardless of destination". `qmgr_transport_select()` sets
/// QMGR_TRANSPORT_STAT_RATE_LOCK at allocation, `qmgr_transport_event()`
/// postpones the hand-off by the delay, and only the end of the delivery
/// (`qmgr_deliver_update()` → `qmgr_transport_unthrottle()`) lifts the
/// lock: one delivery at a time, each starting at least the delay after
/// the previous one ended.
#[test]
fn transport_rate_delay_spaces_all_deliveries_of_the_transport() {
    let delay = 5 * SEC;
    let cfg = config(move |_, t| t.transport_rate_delay = delay);
    let mut s = sim(cfg, World::default());
    s.submit(one_recipient_messages(1, 12, 4, "smtp", t0()));
    run_clean(&mut s);
    let r = s.record();
    assert_eq!(r.deliveries.len(), 12);
    assert_eq!(
        Record::max_overlap(&r.deliveries),
        1,
        "one delivery at a time per transport"
    );
    let gap = Record::min_gap(&r.deliveries).expect("gaps");
    assert!(gap >= delay, "gap {gap:?} < {delay:?}");
}

/// Per-destination recipient limit: qmgr(8)
/// `default_destination_recipient_limit` — "the default maximal number of
/// recipients per message delivery"; `qmgr_message_assign()` starts a new
/// entry when the current one is full.
#[test]
fn destination_recipient_limit_splits_entries() {
    let cfg = config(|name, t| {
        if name == b"smtp" {
            t.dest_recipient_limit = 50;
        }
    });
    let mut s = sim(cfg, World::default());
    s.submit([list_message(1, 120, 1, "smtp", t0())]);
    run_clean(&mut s);
    let mut sizes: Vec<usize> = s
        .record()
        .deliveries
        .iter()
        .map(|d| d.rcpts.len())
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![20, 50, 50]);
    let mut all: Vec<u32> = s
        .record()
        .deliveries
        .iter()
        .flat_map(|d| d.rcpts.iter().copied())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..120).collect::<Vec<u32>>());
}

/// Local delivery: qmgr(8) `local_destination_recipient_limit` (1) and
/// `local_destination_concurrency_limit` (2) — "the maximal number of
/// parallel deliveries via the local mail delivery transport to the same
/// recipient (when the recipient limit is 1)". `qmgr_message_resolve()`
/// names such queues `localpart@nexthop`, cut at `recipient_delimiter`.
#[test]
fn local_transport_gets_per_recipient_queues() {
    let cfg = Config {
        recipient_delimiter: "+".into(),
        ..Config::default()
    };
    let world = World::default().with_dest("host.example", DestProfile::ok(10 * SEC));
    let mut s = sim(cfg, world);
    let rcpt = |i: u32, user: &str| rqmgr_sched::Route {
        rcpt: i,
        transport: "local".into(),
        nexthop: "host.example".into(),
        address: format!("{user}@host.example").into(),
    };
    // Six users in one message, and six more messages for alice, two of
    // them with address extensions.
    let mut msgs = vec![MessageSpec {
        id: MessageId(1),
        arrival: t0(),
        routes: ["alice", "bob", "carol", "dave", "erin", "frank"]
            .iter()
            .enumerate()
            .map(|(i, u)| rcpt(i as u32, u))
            .collect(),
    }];
    for (k, user) in [
        "alice",
        "alice",
        "alice+news",
        "alice",
        "alice+list",
        "alice",
    ]
    .iter()
    .enumerate()
    {
        msgs.push(MessageSpec {
            id: MessageId(10 + k as u64),
            arrival: t0(),
            routes: vec![rcpt(0, user)],
        });
    }
    s.submit(msgs);
    run_clean(&mut s);
    let r = s.record();
    assert!(
        r.deliveries.iter().all(|d| d.rcpts.len() == 1),
        "one recipient per delivery"
    );
    let alice = r
        .dest("local", "alice@host.example")
        .expect("alice's queue");
    assert_eq!(alice.deliveries, 7, "extensions share the user's queue");
    assert_eq!(alice.max_busy, 2, "per-recipient concurrency limit");
    // Per-recipient queues: the host as a whole had more than 2 at once.
    assert!(Record::max_overlap(&r.deliveries) > 2);
    assert!(r.dest("local", "bob@host.example").is_some());
}

/// Active queue limit: qmgr(8) `qmgr_message_active_limit` — "the maximal
/// number of messages in the active queue"; `qmgr_active_feed()` moves a
/// message in only while there is room, so the rest wait in incoming.
#[test]
fn messages_wait_outside_while_active_limit_is_reached() {
    let cfg = Config {
        message_active_limit: 10,
        ..Config::default()
    };
    let mut s = sim(cfg, World::default());
    s.submit(one_recipient_messages(1, 50, 5, "smtp", t0()));
    run_clean(&mut s);
    let r = s.record();
    assert_eq!(r.max_active_messages, 10);
    assert_eq!(r.completions.len(), 50);
    assert_eq!(r.entered.len(), 50);
    let first_done = r.completions[0].at;
    assert!(r.entered[..10].iter().all(|&(at, _)| at == t0()));
    assert!(
        r.entered[10..].iter().all(|&(at, _)| at >= first_done),
        "the 11th message entered before any left"
    );
}

/// A day of queue time runs in the simulation without wall-clock waits:
/// 2,000 messages spaced 40 s apart (a day's trickle) to 50 destinations.
#[test]
fn a_day_of_virtual_time() {
    let mut s = sim(Config::default(), World::default());
    let msgs = rqmgr_sim::workload::spaced(
        one_recipient_messages(1, 2_160, 50, "smtp", t0()),
        t0(),
        40 * SEC,
    );
    s.submit(msgs);
    run_clean(&mut s);
    let last = s.record().completions.last().expect("completions").at;
    assert!(last >= t0() + Duration::from_secs(86_000));
    assert!(last <= Time::from_secs(t0().as_secs() + 86_400 + 2));
}
