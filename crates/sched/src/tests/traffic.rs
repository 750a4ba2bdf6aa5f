//! Invariants under random traffic, and a throughput check.

use super::*;
use std::collections::HashMap;

// ---------------------------------------------------------------------
// Invariants under random traffic, both strategies.

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

fn random_traffic(preemptive: bool, early: bool, seed: u64) {
    let cfg = Config {
        preemptive,
        message_recipient_limit: 400,
        site_hog_factor: if seed.is_multiple_of(2) { 100 } else { 60 },
        transports: Box::new(|name| {
            let mut t = TransportConfig {
                recipient_limit: 300,
                extra_recipient_limit: 50,
                recipient_refill_limit: 20,
                ..TransportConfig::default()
            };
            if name == b"local" {
                t.dest_concurrency_limit = 2;
                t.dest_recipient_limit = 1;
            } else {
                t.dest_recipient_limit = 7;
                t.init_dest_concurrency = 2;
                t.dest_concurrency_limit = 4;
            }
            t
        }),
        ..Config::default()
    };
    let mut s = Scheduler::new(cfg);
    s.set_early_refill(early);
    let mut rng = Lcg(seed);
    let mut now = t0();
    // Per message: total recipients, next unread index, seen recipients.
    let mut files: HashMap<u64, (u32, u32, Vec<u8>)> = HashMap::new();
    let mut done: HashMap<u64, u32> = HashMap::new();
    let mut busy: Vec<(ConnId, u64, ByteString)> = Vec::new();
    let mut busy_per_dest: HashMap<ByteString, u32> = HashMap::new();
    let mut ready: Vec<ConnId> = Vec::new();
    let mut conn_transport: HashMap<ConnId, ByteString> = HashMap::new();
    let mut next_id = 0u64;
    let dests = [
        "a.example",
        "b.example",
        "c.example",
        "d.example",
        "e.example",
    ];
    let read = |s: &mut Scheduler,
                files: &mut HashMap<u64, (u32, u32, Vec<u8>)>,
                id: u64,
                budget: usize,
                now: Time,
                rng: &mut Lcg| {
        let f = files.get_mut(&id).expect("known file");
        let end = (f.1 + u32::try_from(budget).unwrap_or(u32::MAX)).min(f.0);
        let routes = (f.1..end)
            .map(|i| {
                let transport = if (i + id as u32).is_multiple_of(5) {
                    "local"
                } else {
                    "smtp"
                };
                let nexthop = dests[((i as u64 * 7 + id) % 5) as usize];
                route(i, transport, nexthop)
            })
            .collect();
        f.1 = end;
        let more = end < f.0;
        s.handle(
            Event::Message {
                msg: MessageId(id),
                routes,
                more,
                flush_each: rng.next(10) == 0,
                single_rcpt: false,
            },
            now,
        );
        if more {
            s.handle(
                Event::MessageInfo {
                    msg: MessageId(id),
                    unread: f.0 - end,
                },
                now,
            );
        }
    };
    for _step in 0..4000 {
        match rng.next(10) {
            0 | 1 if s.can_accept_message() && next_id < 150 => {
                let id = next_id;
                next_id += 1;
                let n = if rng.next(6) == 0 {
                    1 + rng.next(600) as u32
                } else {
                    1 + rng.next(4) as u32
                };
                files.insert(id, (n, 0, vec![0; n as usize]));
                let budget = s.recipient_budget();
                read(&mut s, &mut files, id, budget, now, &mut rng);
            }
            2 => now = now + Duration::from_secs(rng.next(30)),
            3 => s.handle_timeout(now),
            4 if !busy.is_empty() => {
                let (conn, _, dest) = busy.swap_remove(rng.next(busy.len() as u64) as usize);
                *busy_per_dest.get_mut(&dest).expect("busy dest") -= 1;
                let outcome = match rng.next(8) {
                    0 => Outcome::Deferred {
                        site: Some(Dsn::new("4.4.1", "refused")),
                    },
                    1 => Outcome::Deferred { site: None },
                    2 => Outcome::Crashed,
                    _ => Outcome::Final,
                };
                s.handle(Event::Delivered { conn, outcome }, now);
            }
            5 if !ready.is_empty() => {
                let conn = ready.swap_remove(0);
                if rng.next(15) == 0 {
                    s.handle(
                        Event::AgentUnavailable {
                            conn,
                            dsn: Dsn::new("4.3.0", "down"),
                        },
                        now,
                    );
                } else {
                    s.handle(Event::AgentReady { conn }, now);
                }
            }
            6 if rng.next(20) == 0 => s.handle(Event::FlushDead, now),
            _ => {}
        }
        while let Some(a) = s.poll_action() {
            match a {
                Action::Connect { conn, transport } => {
                    conn_transport.insert(conn, transport);
                    ready.push(conn);
                }
                Action::Deliver {
                    conn,
                    msg,
                    nexthop,
                    rcpts,
                    ..
                } => {
                    let f = files.get_mut(&msg.0).expect("delivery of a known message");
                    for r in rcpts {
                        assert_eq!(
                            f.2[r as usize], 0,
                            "recipient {r} of {msg} handed out twice"
                        );
                        f.2[r as usize] = 1;
                    }
                    // smtp's window limit is 4 (local queues are per
                    // recipient, retry queues per reason: not counted).
                    let key = if conn_transport.get(&conn).is_some_and(|t| t == "smtp") {
                        nexthop
                    } else {
                        ByteString::default()
                    };
                    let b = busy_per_dest.entry(key.clone()).or_default();
                    *b += 1;
                    assert!(*b <= 4 || key.is_empty(), "{key}: {b} busy");
                    busy.push((conn, msg.0, key));
                }
                Action::Warning { .. } => {}
                Action::DeferRecipient { msg, rcpt, .. } => {
                    let f = files.get_mut(&msg.0).expect("known message");
                    assert_eq!(
                        f.2[rcpt as usize], 0,
                        "recipient {rcpt} of {msg} deferred twice"
                    );
                    f.2[rcpt as usize] = 1;
                }
                Action::Refill { msg } => {
                    let budget = s.refill_budget(msg);
                    read(&mut s, &mut files, msg.0, budget, now, &mut rng);
                }
                Action::MessageDone { msg, .. } => {
                    *done.entry(msg.0).or_default() += 1;
                    let f = &files[&msg.0];
                    assert_eq!(f.1, f.0, "{msg} done with unread recipients");
                    assert!(
                        f.2.iter().all(|&x| x == 1),
                        "{msg} done with recipients left"
                    );
                }
                Action::Close { .. } => {}
            }
        }
        s.audit_snapshot_counts();
    }
    // Drain: everything succeeds from here on.
    for _ in 0..100_000 {
        now = now + Duration::from_secs(1000);
        s.handle_timeout(now);
        s.handle(Event::FlushDead, now);
        let mut progressed = false;
        while let Some(a) = s.poll_action() {
            progressed = true;
            match a {
                Action::Connect { conn, .. } => ready.push(conn),
                Action::Deliver {
                    conn, msg, rcpts, ..
                } => {
                    let f = files.get_mut(&msg.0).expect("known message");
                    for r in rcpts {
                        assert_eq!(
                            f.2[r as usize], 0,
                            "recipient {r} of {msg} handed out twice"
                        );
                        f.2[r as usize] = 1;
                    }
                    busy.push((conn, msg.0, ByteString::default()));
                }
                Action::Warning { .. } => {}
                Action::DeferRecipient { msg, rcpt, .. } => {
                    let f = files.get_mut(&msg.0).expect("known message");
                    assert_eq!(f.2[rcpt as usize], 0);
                    f.2[rcpt as usize] = 1;
                }
                Action::Refill { msg } => {
                    let budget = s.refill_budget(msg);
                    read(&mut s, &mut files, msg.0, budget, now, &mut rng);
                }
                Action::MessageDone { msg, .. } => *done.entry(msg.0).or_default() += 1,
                Action::Close { .. } => {}
            }
        }
        for conn in std::mem::take(&mut ready) {
            progressed = true;
            s.handle(Event::AgentReady { conn }, now);
        }
        for (conn, _, _) in std::mem::take(&mut busy) {
            progressed = true;
            s.handle(
                Event::Delivered {
                    conn,
                    outcome: Outcome::Final,
                },
                now,
            );
        }
        s.audit_snapshot_counts();
        if !progressed && s.message_count() == 0 {
            break;
        }
    }
    assert_eq!(s.message_count(), 0, "{s:?}");
    assert_eq!(s.recipient_count(), 0);
    for id in 0..next_id {
        assert_eq!(done.get(&id), Some(&1), "message {id} done exactly once");
    }
}

#[test]
fn random_traffic_keeps_invariants() {
    for seed in 1..=12 {
        random_traffic(true, seed % 3 != 0, seed);
        random_traffic(false, seed % 3 != 0, seed);
    }
}
