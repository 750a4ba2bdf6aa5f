//! The read-only views, driven through events.

use super::*;

fn one_message(id: u64, routes: Vec<Route>, more: bool) -> Event {
    Event::Message {
        msg: MessageId(id),
        routes,
        more,
        flush_each: false,
        single_rcpt: false,
    }
}

fn site_failure() -> Dsn {
    Dsn::new(
        "4.4.1",
        "delivery temporarily suspended: connect to down.example: refused",
    )
}

/// The one view of `nexthop` on `transport`.
fn dest(s: &Scheduler, transport: &str, nexthop: &str) -> DestinationView {
    let views = s.destination_views(
        DestinationSelect::One {
            transport: transport.as_bytes(),
            nexthop: nexthop.as_bytes(),
        },
        10,
    );
    match <[DestinationView; 1]>::try_from(views) {
        Ok([view]) => view,
        Err(views) => panic!("{transport}/{nexthop}: {views:?}"),
    }
}

fn transport(s: &Scheduler, name: &str) -> TransportView {
    s.transport_views()
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no transport {name}"))
}

fn names(views: &[DestinationView]) -> Vec<String> {
    views.iter().map(|v| v.name.to_string()).collect()
}

/// Hands every connection of `transport` its agent and answers each
/// delivery with `outcome`, until nothing moves; other transports'
/// connections stay pending.
fn serve(s: &mut Scheduler, now: Time, transport: &str, outcome: Outcome) {
    let mut ours = Vec::new();
    loop {
        let mut moved = false;
        while let Some(a) = s.poll_action() {
            match a {
                Action::Connect { conn, transport: t } if t == transport => {
                    ours.push(conn);
                    moved = true;
                    s.handle(Event::AgentReady { conn }, now);
                }
                Action::Deliver { conn, .. } => {
                    moved = true;
                    s.handle(
                        Event::Delivered {
                            conn,
                            outcome: outcome.clone(),
                        },
                        now,
                    );
                }
                _ => {}
            }
        }
        if !moved {
            return;
        }
    }
}

#[test]
fn failed_destination_is_throttled_with_its_reason_and_revival() {
    // One failed cohort at window 1 kills the destination at once.
    let mut s = Scheduler::new(cfg_with(true, |t| t.init_dest_concurrency = 1));
    s.handle(msg_to(1, 1, "down.example"), t0());
    s.handle(msg_to(2, 1, "down.example"), t0());
    let Some(Action::Connect { conn, .. }) = s.poll_action() else {
        panic!()
    };
    s.handle(Event::AgentReady { conn }, t0());
    assert!(matches!(s.poll_action(), Some(Action::Deliver { .. })));
    let before = dest(&s, "smtp", "down.example");
    assert_eq!(before.state, DestinationState::Ready);
    assert_eq!((before.window, before.todo, before.busy), (1, 1, 1));
    let now = t0() + Duration::from_secs(7);
    s.handle(
        Event::Delivered {
            conn,
            outcome: Outcome::Deferred {
                site: Some(site_failure()),
            },
        },
        now,
    );

    let v = dest(&s, "smtp", "down.example");
    assert_eq!(v.state, DestinationState::Throttled);
    assert_eq!(v.window, 0);
    assert_eq!(v.last_failure, Some(site_failure()));
    assert_eq!((v.successes, v.failures), (0, 1));
    assert_eq!(v.failed_cohorts, 1.0);
    assert_eq!(v.throttled_since, Some(now));
    assert_eq!(v.next_retry, Some(now + Duration::from_secs(300)));
    // The waiting entry went to retry, under the reason.
    assert_eq!((v.todo, v.todo_recipients, v.busy), (0, 0, 0));
    let retry = s.destination_views(DestinationSelect::Transport(b"retry"), 10);
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].nexthop[..], site_failure().error_nexthop()[..]);
    assert_eq!(retry[0].todo_recipients, 1);
    let smtp = transport(&s, "smtp");
    assert_eq!(smtp.throttles, 1);
    assert!(
        !smtp.dead,
        "a site failure is the destination's, not the agent's"
    );

    // Metrics see it without asking for it by name, and the top too.
    let m = s.destination_views(DestinationSelect::TopAndThrottled(0), 10);
    assert_eq!(names(&m), ["down.example"]);
    let m = s.destination_views(DestinationSelect::TopAndThrottled(5), 10);
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!(m[0].transport, "retry", "most waiting first");

    // Back after minimal_backoff_time, and with nothing to do it leaves
    // (its counters with it); the transport's count stays.
    s.handle_timeout(now + Duration::from_secs(300));
    assert!(s
        .destination_views(DestinationSelect::Transport(b"smtp"), 10)
        .is_empty());
    assert_eq!(transport(&s, "smtp").throttles, 1);
}

#[test]
fn revived_destination_keeps_its_history_while_busy() {
    let mut s = Scheduler::new(Config::default());
    for id in 0..5 {
        s.handle(msg_to(id, 1, "d.example"), t0());
    }
    let mut busy = Vec::new();
    for _ in 0..5 {
        while let Some(a) = s.poll_action() {
            match a {
                Action::Connect { conn, .. } => s.handle(Event::AgentReady { conn }, t0()),
                Action::Deliver { conn, .. } => busy.push(conn),
                _ => {}
            }
        }
    }
    assert_eq!(busy.len(), 5);
    // Window 5 dies at the third failure (see queue.rs), two still busy.
    for conn in busy.drain(..3) {
        let site = Some(site_failure());
        s.handle(
            Event::Delivered {
                conn,
                outcome: Outcome::Deferred { site },
            },
            t0(),
        );
    }
    let v = dest(&s, "smtp", "d.example");
    assert_eq!(v.state, DestinationState::Throttled);
    assert_eq!((v.busy, v.failures, v.window), (2, 3, 0));
    assert!(v.failed_cohorts >= 1.0, "{v:?}");
    s.handle(Event::FlushDead, t0());
    let v = dest(&s, "smtp", "d.example");
    assert_eq!(v.state, DestinationState::Ready);
    assert_eq!((v.window, v.failures, v.failed_cohorts), (2, 3, 0.0));
    assert_eq!(v.last_failure, Some(site_failure()));
    assert_eq!((v.throttled_since, v.next_retry), (None, None));
    assert_eq!(transport(&s, "smtp").throttles, 1);
}

#[test]
fn live_destination_shows_window_todo_and_busy() {
    let mut s = Scheduler::new(Config::default());
    for id in 0..10 {
        s.handle(msg_to(id, 3, "live.example"), t0());
    }
    let mut busy = Vec::new();
    for _ in 0..10 {
        while let Some(a) = s.poll_action() {
            match a {
                Action::Connect { conn, .. } => s.handle(Event::AgentReady { conn }, t0()),
                Action::Deliver { conn, .. } => busy.push(conn),
                _ => {}
            }
        }
    }
    let v = dest(&s, "smtp", "live.example");
    assert_eq!(v.state, DestinationState::Ready);
    assert_eq!((v.window, v.window_limit), (5, 20));
    assert_eq!((v.todo, v.todo_recipients, v.busy), (5, 15, 5));
    assert_eq!((v.successes, v.failures, v.failed_cohorts), (0, 0, 0.0));
    assert_eq!(
        (v.last_failure, v.throttled_since, v.next_retry),
        (None, None, None)
    );
    let smtp = transport(&s, "smtp");
    assert_eq!((smtp.busy, smtp.pending, smtp.destinations), (5, 0, 1));
    assert_eq!(
        (smtp.dest_concurrency_limit, smtp.initial_concurrency),
        (20, 5)
    );
    assert_eq!(
        (smtp.recipient_limit, smtp.rate_delay),
        (50, Duration::ZERO)
    );
    assert_eq!(smtp.feedback, "positive 1, negative 1, cohorts 1");
    assert_eq!(
        (smtp.dead, smtp.dead_reason, smtp.throttles),
        (false, None, 0)
    );

    s.handle(
        Event::Delivered {
            conn: busy[0],
            outcome: Outcome::Final,
        },
        t0(),
    );
    let v = dest(&s, "smtp", "live.example");
    assert_eq!((v.successes, v.busy), (1, 4));
    assert_eq!(v.window, 6, "positive feedback");
}

#[test]
fn rate_delayed_destination_is_suspended_after_a_delivery() {
    let mut s = Scheduler::new(cfg_with(true, |t| {
        t.dest_rate_delay = Duration::from_secs(10);
    }));
    s.handle(msg_to(1, 1, "slow.example"), t0());
    s.handle(msg_to(2, 1, "slow.example"), t0());
    assert_eq!(
        dest(&s, "smtp", "slow.example").state,
        DestinationState::Ready
    );
    let Some(Action::Connect { conn, .. }) = s.poll_action() else {
        panic!()
    };
    s.handle(Event::AgentReady { conn }, t0());
    assert!(matches!(s.poll_action(), Some(Action::Deliver { .. })));
    s.handle(
        Event::Delivered {
            conn,
            outcome: Outcome::Final,
        },
        t0(),
    );
    let v = dest(&s, "smtp", "slow.example");
    assert_eq!(v.state, DestinationState::Suspended);
    assert_eq!(v.next_retry, Some(t0() + Duration::from_secs(10)));
    assert_eq!(v.throttled_since, None);
    assert_eq!(
        (v.window, v.window_limit, v.todo, v.successes),
        (1, 1, 1, 1)
    );
    let smtp = transport(&s, "smtp");
    assert_eq!(smtp.rate_delay, Duration::from_secs(10));
    assert_eq!(smtp.dest_concurrency_limit, 1, "a rate delay forces 1");
    assert_eq!(smtp.throttles, 0);

    s.handle_timeout(t0() + Duration::from_secs(10));
    let v = dest(&s, "smtp", "slow.example");
    assert_eq!((v.state, v.next_retry), (DestinationState::Ready, None));
}

#[test]
fn top_by_todo_picks_the_n_with_most_waiting_recipients() {
    let mut s = Scheduler::new(Config::default());
    // Destination d{i} gets i + 1 recipients; nothing is delivered.
    for i in 0..10u32 {
        let nexthop = format!("d{i}.example");
        s.handle(msg_to(u64::from(i), i + 1, &nexthop), t0());
    }
    let top = s.destination_views(DestinationSelect::TopByTodo(3), 100);
    assert_eq!(names(&top), ["d9.example", "d8.example", "d7.example"]);
    let todo: Vec<usize> = top.iter().map(|v| v.todo_recipients).collect();
    assert_eq!(todo, [10, 9, 8]);
    assert_eq!(top[0].todo, 1, "one entry of ten recipients");

    let capped = s.destination_views(DestinationSelect::TopByTodo(3), 2);
    assert_eq!(names(&capped), ["d9.example", "d8.example"]);
    let all = s.destination_views(DestinationSelect::TopByTodo(usize::MAX), usize::MAX);
    assert_eq!(all.len(), 10);
    assert!(all
        .windows(2)
        .all(|w| w[0].todo_recipients > w[1].todo_recipients));
    let smtp = s.destination_views(DestinationSelect::Transport(b"smtp"), 4);
    assert_eq!(names(&smtp), names(&all[..4]));
    assert!(s
        .destination_views(DestinationSelect::Transport(b"relay"), 4)
        .is_empty());
    assert!(s
        .destination_views(DestinationSelect::TopByTodo(3), 0)
        .is_empty());
}

#[test]
fn top_and_throttled_adds_every_throttled_destination_within_the_limit() {
    // `bad` destinations die at their first failure; `smtp` agents never
    // come, so its destinations keep what they hold.
    let cfg = Config {
        transports: Box::new(|name| {
            let mut t = TransportConfig::default();
            if name == b"bad" {
                t.init_dest_concurrency = 1;
            }
            t
        }),
        ..Config::default()
    };
    let mut s = Scheduler::new(cfg);
    for i in 0..5u32 {
        let routes = (0..=i)
            .map(|r| route(r, "smtp", &format!("live{i}.example")))
            .collect();
        s.handle(one_message(u64::from(i), routes, false), t0());
    }
    for i in 0..3u32 {
        let routes = vec![route(0, "bad", &format!("dead{i}.example"))];
        s.handle(one_message(100 + u64::from(i), routes, false), t0());
    }
    let failed = Outcome::Deferred {
        site: Some(site_failure()),
    };
    serve(&mut s, t0(), "bad", failed);
    assert_eq!(transport(&s, "bad").throttles, 3);

    let m = s.destination_views(DestinationSelect::TopAndThrottled(2), 100);
    assert_eq!(
        names(&m)[..2],
        ["live4.example".to_string(), "live3.example".to_string()]
    );
    let mut dead = names(&m[2..]);
    dead.sort();
    assert_eq!(dead, ["dead0.example", "dead1.example", "dead2.example"]);
    assert!(m[2..]
        .iter()
        .all(|v| v.state == DestinationState::Throttled && v.transport == "bad"));
    // Still within the limit, top first.
    let m = s.destination_views(DestinationSelect::TopAndThrottled(2), 3);
    assert_eq!(m.len(), 3);
    assert_eq!(m[2].state, DestinationState::Throttled);
    // A throttled one among the top is listed once.
    let m = s.destination_views(DestinationSelect::TopAndThrottled(8), 100);
    let mut listed = names(&m);
    listed.sort();
    listed.dedup();
    assert_eq!((m.len(), listed.len()), (8, 8), "{:?}", names(&m));
}

#[test]
fn one_finds_a_destination_by_next_hop_ignoring_ascii_case() {
    let mut s = Scheduler::new(Config::default());
    s.handle(
        one_message(
            1,
            vec![
                route(0, "smtp", "Mixed.Example"),
                route(1, "local", "Host"),
                route(2, "local", "Host"),
            ],
            false,
        ),
        t0(),
    );
    let v = dest(&s, "smtp", "mIXED.example");
    assert_eq!(
        (&v.nexthop[..], &v.name[..]),
        (&b"Mixed.Example"[..], &b"mixed.example"[..])
    );
    assert_eq!(
        (v.transport.to_string(), v.todo_recipients),
        ("smtp".into(), 1)
    );
    let one = |transport: &'static [u8], nexthop: &'static [u8], limit| {
        s.destination_views(DestinationSelect::One { transport, nexthop }, limit)
    };
    assert!(
        one(b"SMTP", b"mixed.example", 10).is_empty(),
        "transport names are exact"
    );
    assert!(one(b"smtp", b"other.example", 10).is_empty());
    assert!(one(b"smtp", b"mixed.example", 0).is_empty());
    // `local` has one queue per recipient: all of that next hop, or one by
    // its queue name.
    let mut local = names(&one(b"local", b"HOST", 10));
    local.sort();
    assert_eq!(local, ["user1@host", "user2@host"]);
    assert_eq!(one(b"local", b"host", 1).len(), 1);
    assert_eq!(names(&one(b"local", b"User2@Host", 10)), ["user2@host"]);
}

#[test]
fn job_views_report_recipients_unread_and_slots() {
    for preemptive in [true, false] {
        let mut s = Scheduler::new(Config {
            preemptive,
            ..Config::default()
        });
        s.handle(message(1, 0..3, "a.example", true), t0());
        s.handle(
            Event::MessageInfo {
                msg: MessageId(1),
                unread: 7,
            },
            t0(),
        );
        let routes = (0..2).map(|r| route(r, "relay", "b.example")).collect();
        s.handle(one_message(2, routes, false), t0());

        let jobs = s.job_views(None, 10);
        assert_eq!(jobs.len(), 2, "{jobs:?}");
        let first = &jobs[0];
        assert_eq!(
            (first.msg, first.transport.to_string()),
            (MessageId(1), "smtp".into())
        );
        assert_eq!((first.recipients_in_core, first.unread), (3, 7));
        assert_eq!((first.selected_entries, first.slots_used), (0, 0));
        assert!(!first.blocker);
        let relay = s.job_views(Some(b"relay"), 10);
        assert_eq!(relay.len(), 1);
        assert_eq!(
            (relay[0].msg, relay[0].recipients_in_core, relay[0].unread),
            (MessageId(2), 2, 0)
        );
        assert_eq!(s.job_views(None, 1).len(), 1);
        assert!(s.job_views(Some(b"nope"), 10).is_empty());
        assert!(s.job_views(None, 0).is_empty());

        // One delivery of message 1's entry.
        while let Some(a) = s.poll_action() {
            match a {
                Action::Connect { conn, transport } if transport == "smtp" => {
                    s.handle(Event::AgentReady { conn }, t0())
                }
                Action::Deliver { msg, .. } => assert_eq!(msg, MessageId(1)),
                _ => {}
            }
        }
        let smtp = s.job_views(Some(b"smtp"), 10);
        assert_eq!(smtp.len(), 1);
        assert_eq!(smtp[0].recipients_in_core, 3, "still in core while busy");
        assert_eq!(smtp[0].selected_entries, 1);
        if preemptive {
            assert_eq!((smtp[0].slots_used, smtp[0].slots_available), (1, 1));
        }
    }
}

#[test]
fn totals_match_the_counts() {
    let mut s = Scheduler::new(Config {
        message_active_limit: 50,
        message_recipient_limit: 500,
        ..Config::default()
    });
    assert_eq!(
        s.totals(),
        Totals {
            messages: 0,
            message_limit: 50,
            recipients: 0,
            recipient_limit: 500,
            transports: 0,
            destinations: 0,
        }
    );
    for id in 0..4 {
        s.handle(msg_to(id, 5, &format!("t{}.example", id % 3)), t0());
    }
    s.handle(message(9, 0..2, "t0.example", true), t0());
    let totals = s.totals();
    assert_eq!(totals.messages, s.message_count());
    assert_eq!(totals.recipients, s.recipient_count());
    assert_eq!((totals.messages, totals.recipients), (5, 22));
    assert_eq!((totals.transports, totals.destinations), (1, 3));
    let todo: usize = s
        .destination_views(DestinationSelect::TopByTodo(10), 10)
        .iter()
        .map(|v| v.todo_recipients)
        .sum();
    assert_eq!(todo, totals.recipients, "nothing busy yet");
}

#[test]
fn feedback_summary_reads_as_main_cf_would() {
    let s = {
        let mut s = Scheduler::new(cfg_with(true, |t| {
            t.positive_feedback = Feedback {
                value: 1.0,
                per_concurrency: true,
            };
            t.negative_feedback = Feedback {
                value: 0.125,
                per_concurrency: false,
            };
            t.failed_cohort_limit = 0;
        }));
        s.handle(msg_to(1, 1, "f.example"), t0());
        s
    };
    assert_eq!(
        transport(&s, "smtp").feedback,
        "positive 1/concurrency, negative 1/8, cohorts 0"
    );
}

#[test]
fn dead_transport_shows_its_reason() {
    let mut s = Scheduler::new(Config::default());
    s.handle(msg_to(1, 1, "x.example"), t0());
    let Some(Action::Connect { conn, .. }) = s.poll_action() else {
        panic!()
    };
    assert_eq!(transport(&s, "smtp").pending, 1);
    let dsn = Dsn::new("4.3.0", "mail transport unavailable");
    s.handle(
        Event::AgentUnavailable {
            conn,
            dsn: dsn.clone(),
        },
        t0(),
    );
    let smtp = transport(&s, "smtp");
    assert_eq!(
        (smtp.dead, smtp.dead_reason, smtp.pending),
        (true, Some(dsn), 0)
    );
    assert_eq!(smtp.throttles, 0, "the transport died, no destination");
}

#[test]
fn an_operator_unthrottles_one_destination_only() {
    let mut s = Scheduler::new(cfg_with(true, |t| t.init_dest_concurrency = 1));
    let now = t0() + Duration::from_secs(7);
    s.handle(msg_to(1, 1, "down.example"), t0());
    s.handle(msg_to(2, 1, "also-down.example"), t0());
    let mut conns = Vec::new();
    while let Some(action) = s.poll_action() {
        if let Action::Connect { conn, .. } = action {
            conns.push(conn);
        }
    }
    assert_eq!(conns.len(), 2);
    for conn in conns {
        s.handle(Event::AgentReady { conn }, t0());
        // Earlier deliveries' actions (deferrals, closes) may come first.
        let delivered = std::iter::from_fn(|| s.poll_action())
            .any(|a| matches!(a, Action::Deliver { conn: c, .. } if c == conn));
        assert!(delivered);
        let site = Some(site_failure());
        s.handle(
            Event::Delivered {
                conn,
                outcome: Outcome::Deferred { site },
            },
            now,
        );
    }
    let states = |s: &Scheduler| {
        let mut v: Vec<(String, DestinationState)> = s
            .destination_views(DestinationSelect::Transport(b"smtp"), 10)
            .iter()
            .map(|d| (d.nexthop.to_string(), d.state))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(
        states(&s),
        [
            ("also-down.example".into(), DestinationState::Throttled),
            ("down.example".into(), DestinationState::Throttled),
        ]
    );
    assert_eq!(s.unthrottle(b"smtp", Some(b"DOWN.example"), now), 1);
    // Revived with nothing to do, it leaves the active queue; the other
    // stays dead.
    assert_eq!(
        states(&s),
        [("also-down.example".into(), DestinationState::Throttled)]
    );
    assert_eq!(s.unthrottle(b"smtp", Some(b"down.example"), now), 0);
    assert_eq!(s.unthrottle(b"nosuch", None, now), 0);
    assert_eq!(s.unthrottle(b"smtp", None, now), 1);
    assert!(states(&s).is_empty());
}

#[test]
fn an_operator_lowers_a_transports_concurrency_live() {
    let mut s = Scheduler::new(cfg_with(true, |t| t.init_dest_concurrency = 4));
    for id in 1..=8 {
        s.handle(msg_to(id, 1, "big.example"), t0());
    }
    // At most two connections are asked for at a time: answer each.
    let mut conns = Vec::new();
    while let Some(action) = s.poll_action() {
        match action {
            Action::Connect { conn, .. } => s.handle(Event::AgentReady { conn }, t0()),
            Action::Deliver { conn, .. } => conns.push(conn),
            _ => {}
        }
    }
    assert_eq!(conns.len(), 4);
    assert_eq!(dest(&s, "smtp", "big.example").window, 4);

    s.set_transport_limit(b"smtp", LiveLimit::Concurrency(2), t0())
        .unwrap();
    let v = dest(&s, "smtp", "big.example");
    assert_eq!(
        (v.window, v.window_limit, v.busy),
        (2, 2, 4),
        "nothing in flight is cut"
    );
    // Two deliveries end: still two busy, at the limit, so none starts.
    for &conn in &conns[..2] {
        let outcome = Outcome::Final;
        s.handle(Event::Delivered { conn, outcome }, t0());
    }
    let started = std::iter::from_fn(|| s.poll_action())
        .filter(|a| matches!(a, Action::Connect { .. } | Action::Deliver { .. }))
        .count();
    assert_eq!(started, 0);
    // A third ends: one may start.
    let outcome = Outcome::Final;
    s.handle(
        Event::Delivered {
            conn: conns[2],
            outcome,
        },
        t0(),
    );
    let started = std::iter::from_fn(|| s.poll_action())
        .filter(|a| matches!(a, Action::Connect { .. } | Action::Deliver { .. }))
        .count();
    assert_eq!(started, 1);

    // A transport not seen yet keeps the limit for when it is.
    s.set_transport_limit(b"relay", LiveLimit::Concurrency(2), t0())
        .unwrap();
    assert_eq!(transport(&s, "relay").dest_concurrency_limit, 2);
    assert!(s
        .set_transport_limit(b"smtp", LiveLimit::RecipientLimit(1), t0())
        .is_err());
    s.set_transport_limit(b"smtp", LiveLimit::RecipientLimit(10), t0())
        .unwrap();
    assert_eq!(transport(&s, "smtp").recipient_limit, 10);
}

#[test]
fn destination_counts_agree_with_the_views() {
    let mut s = Scheduler::new(cfg_with(true, |t| t.init_dest_concurrency = 1));
    s.handle(msg_to(1, 1, "down.example"), t0());
    s.handle(msg_to(2, 1, "up.example"), t0());
    let mut conns = Vec::new();
    while let Some(action) = s.poll_action() {
        match action {
            Action::Connect { conn, .. } => s.handle(Event::AgentReady { conn }, t0()),
            Action::Deliver { conn, nexthop, .. } => conns.push((conn, nexthop)),
            _ => {}
        }
    }
    let (down, _) = conns
        .iter()
        .find(|(_, hop)| &hop[..] == b"down.example")
        .expect("a delivery to down.example");
    let site = Some(site_failure());
    s.handle(
        Event::Delivered {
            conn: *down,
            outcome: Outcome::Deferred { site },
        },
        t0(),
    );
    let views = s.destination_views(DestinationSelect::Transport(b"smtp"), 10);
    let count = |state| views.iter().filter(|d| d.state == state).count();
    let counts = s.destination_counts(b"smtp");
    assert_eq!(counts.ready, count(DestinationState::Ready));
    assert_eq!(counts.throttled, count(DestinationState::Throttled));
    assert_eq!(counts.suspended, count(DestinationState::Suspended));
    assert_eq!((counts.ready, counts.throttled), (1, 1));
    assert_eq!(
        s.destination_counts(b"nosuch"),
        DestinationCounts::default()
    );
}
