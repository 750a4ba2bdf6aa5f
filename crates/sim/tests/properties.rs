//! Property tests: random workloads, random agent behaviour, random
//! configuration; the scheduler must keep its contract in every run.
//!
//! Properties (the driver checks the per-step ones as it runs, see the
//! `rqmgr-sim` crate doc; these tests insist on an empty audit):
//! - no destination exceeds its concurrency limit, nor the bound its
//!   window can have (initial concurrency + positive feedback so far);
//! - the active queue never holds more than `qmgr_message_active_limit`
//!   messages, nor more in-core recipients than the budget allowed;
//! - every recipient handed in is delivered, deferred or sync-deferred
//!   exactly once, and every message completes exactly once;
//! - every run terminates (idle within the virtual time and step bounds);
//! - no destination starves: in a mixed workload with healthy
//!   destinations, each gets its first delivery within a bounded number
//!   of dispatches (every other destination filling its window once);
//! - runs are deterministic.
//!
//! Sources: SCHEDULER_README "Concurrency scheduling" (window limits,
//! dead destinations), qmgr(8) ACTIVE QUEUE CONTROLS
//! (`qmgr_message_active_limit`, `qmgr_message_recipient_limit`,
//! `qmgr_message_recipient_minimum`), `qmgr_transport.c`
//! (QMGR_TRANSPORT_MAX_PEND).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::t0;
use proptest::prelude::*;
use rqmgr_sched::{Config, Dsn, MessageId, Route, Scheduler, Time, TransportConfig};
use rqmgr_sim::{
    AgentOutcome, ConnectOutcome, DestKey, DestProfile, MessageSpec, Sim, Stop, TransportProfile,
    World,
};

const TRANSPORTS: [&str; 3] = ["smtp", "relay", "local"];

/// A generated recipient: (transport index, destination index, user index).
type Rcpt = (usize, usize, u8);

/// One generated scenario.
#[derive(Clone, Debug)]
struct Scenario {
    active_limit: usize,
    rcpt_limit: usize,
    rcpt_minimum: usize,
    preemptive: bool,
    conc_limit: u32,
    init_conc: u32,
    dest_rcpt_limit: u32,
    min_backoff_s: u64,
    retry_time_s: u64,
    dests: Vec<(u64, Vec<AgentOutcome>)>,
    connects: Vec<(Vec<bool>, Option<usize>)>,
    retry_refuses: bool,
    /// Per message: arrival offset in seconds, and recipients as
    /// (transport index, destination index, user index).
    messages: Vec<(u64, Vec<Rcpt>)>,
    flushes: Vec<u64>,
}

fn outcome() -> impl Strategy<Value = AgentOutcome> {
    prop_oneof![
        10 => Just(AgentOutcome::Success),
        3 => Just(AgentOutcome::Defer),
        4 => "[a-z]{1,8}".prop_map(AgentOutcome::SiteFailure),
        3 => Just(AgentOutcome::Crash),
    ]
}

fn scenario(faults: bool) -> impl Strategy<Value = Scenario> {
    let dests = prop::collection::vec(
        (
            1u64..5_000,
            if faults {
                prop::collection::vec(outcome(), 1..6).boxed()
            } else {
                Just(vec![AgentOutcome::Success]).boxed()
            },
        ),
        1..8,
    );
    let connects = prop::collection::vec(
        (
            prop::collection::vec(prop::bool::weighted(if faults { 0.1 } else { 0.0 }), 1..6),
            prop::option::of(1usize..6),
        ),
        3,
    );
    let messages = prop::collection::vec(
        (
            0u64..100,
            prop::collection::vec((0usize..3, 0usize..8, 0u8..4), 0..25),
        ),
        1..40,
    );
    (
        (1usize..25, 5usize..300, 1usize..12, any::<bool>()),
        (1u32..10, 1u32..6, 0u32..6, 10u64..600, 1u64..60),
        dests,
        connects,
        prop::bool::weighted(if faults { 0.2 } else { 0.0 }),
        messages,
        prop::collection::vec(0u64..400, 0..3),
    )
        .prop_map(
            |(
                (active_limit, rcpt_limit, rcpt_minimum, preemptive),
                (conc_limit, init_conc, dest_rcpt_limit, min_backoff_s, retry_time_s),
                dests,
                connects,
                retry_refuses,
                messages,
                flushes,
            )| Scenario {
                active_limit,
                rcpt_limit,
                rcpt_minimum,
                preemptive,
                conc_limit,
                init_conc,
                dest_rcpt_limit,
                min_backoff_s,
                retry_time_s,
                dests,
                connects,
                retry_refuses,
                messages,
                flushes,
            },
        )
}

fn dest_name(j: usize) -> String {
    format!("d{j}.example")
}

impl Scenario {
    fn config(&self) -> Config {
        let (limit, init, rl) = (self.conc_limit, self.init_conc, self.dest_rcpt_limit);
        Config {
            message_active_limit: self.active_limit,
            message_recipient_limit: self.rcpt_limit,
            message_recipient_minimum: self.rcpt_minimum,
            min_backoff: Duration::from_secs(self.min_backoff_s),
            transport_retry_time: Duration::from_secs(self.retry_time_s),
            preemptive: self.preemptive,
            transports: Box::new(move |name| {
                let mut t = TransportConfig {
                    dest_concurrency_limit: limit,
                    init_dest_concurrency: init,
                    dest_recipient_limit: rl,
                    ..TransportConfig::default()
                };
                if name == b"local" {
                    t.dest_concurrency_limit = 2;
                    t.dest_recipient_limit = 1;
                }
                t
            }),
            ..Config::default()
        }
    }

    fn world(&self) -> World {
        let mut w = World::default();
        for (j, (latency_ms, outcomes)) in self.dests.iter().enumerate() {
            w.dests.insert(
                dest_name(j).into(),
                DestProfile {
                    latency: Duration::from_millis(*latency_ms),
                    outcomes: outcomes.clone(),
                },
            );
        }
        w.default_dest = DestProfile::ok(Duration::from_millis(100));
        for (t, (refusals, procs)) in TRANSPORTS.iter().zip(&self.connects) {
            w.transports.insert(
                (*t).into(),
                TransportProfile {
                    connect_latency: Duration::from_millis(5),
                    connects: refusals
                        .iter()
                        .map(|&r| {
                            if r {
                                ConnectOutcome::refused()
                            } else {
                                ConnectOutcome::Ready
                            }
                        })
                        .collect(),
                    process_limit: *procs,
                },
            );
        }
        if self.retry_refuses {
            w.transports.insert(
                "retry".into(),
                TransportProfile {
                    connects: vec![
                        ConnectOutcome::Refused(Dsn::new("4.3.0", "retry unavailable")),
                        ConnectOutcome::Ready,
                    ],
                    ..TransportProfile::default()
                },
            );
        }
        w
    }

    fn messages(&self) -> Vec<MessageSpec> {
        let n_dests = self.dests.len().max(1);
        self.messages
            .iter()
            .enumerate()
            .map(|(i, (offset, rcpts))| MessageSpec {
                id: MessageId(i as u64),
                arrival: t0() + Duration::from_secs(*offset),
                routes: rcpts
                    .iter()
                    .enumerate()
                    .map(|(k, &(t, d, u))| {
                        let nexthop = dest_name(d % n_dests);
                        Route {
                            rcpt: k as u32,
                            transport: TRANSPORTS[t].into(),
                            address: format!("user{u}@{nexthop}").into(),
                            nexthop: nexthop.into(),
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    fn run(&self) -> Sim {
        let mut s = Sim::new(Scheduler::new(self.config()), self.world(), t0());
        s.set_limits(rqmgr_sim::Limits {
            max_time: t0() + Duration::from_secs(7 * 86_400),
            max_steps: 5_000_000,
        });
        s.submit(self.messages());
        for &f in &self.flushes {
            s.flush_dead_at(t0() + Duration::from_secs(f));
        }
        s.drive_and_keep_stop()
    }
}

/// Runs a simulation to its end and keeps why it stopped in the audit.
trait DriveKeep {
    fn drive_and_keep_stop(self) -> Sim;
}

impl DriveKeep for Sim {
    fn drive_and_keep_stop(mut self) -> Sim {
        let stop = self.drive();
        STOP.with(|s| s.set(Some(stop)));
        self
    }
}

thread_local! {
    static STOP: std::cell::Cell<Option<Stop>> = const { std::cell::Cell::new(None) };
}

fn last_stop() -> Option<Stop> {
    STOP.with(|s| s.get())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        // Shrunk cases are reported in the failure message; nothing is
        // written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Concurrency, active-queue and recipient limits hold, every
    /// recipient ends exactly once, every message completes exactly once,
    /// and the run ends — under random faults.
    #[test]
    fn contract_holds_under_random_faults(sc in scenario(true)) {
        let s = sc.run();
        prop_assert_eq!(last_stop(), Some(Stop::Idle), "{:?}", s);
        let problems = s.audit();
        prop_assert!(problems.is_empty(), "{:#?}", problems);
        let entered = s.record().entered.len();
        prop_assert_eq!(entered, sc.messages.len());
        prop_assert!(s.record().max_active_messages <= sc.active_limit);
        prop_assert!(s.sched().recipient_count() == 0 && s.sched().message_count() == 0);
    }

    /// Same input, same run: the simulation is deterministic.
    #[test]
    fn runs_are_deterministic(sc in scenario(true)) {
        let a = sc.run();
        let b = sc.run();
        // Report only where the runs part, not two whole logs.
        let (da, db) = (&a.record().deliveries, &b.record().deliveries);
        let split = da.iter().zip(db.iter()).position(|(x, y)| x != y);
        prop_assert!(
            split.is_none() && da.len() == db.len(),
            "runs part at delivery {:?}: {:?} vs {:?}",
            split,
            split.map(|i| &da[i]),
            split.map(|i| &db[i])
        );
        prop_assert_eq!(&a.record().completions, &b.record().completions);
    }

    /// No destination starves while others have work: with healthy
    /// destinations and everything in core from the start, each queue's
    /// first delivery comes within (sum of all queues' concurrency limits
    /// + number of queues) dispatches — every other queue may fill its
    /// window once before it, no more — plus, under qmgr's preemptive
    /// scheduling, the deliveries of messages that arrived before the
    /// queue's first message: qmgr serves a transport's jobs in arrival
    /// order (SCHEDULER_README, "job list"), so a destination that first
    /// appears in a later message legitimately waits behind earlier jobs,
    /// but never behind later ones. oqmgr round-robins destinations
    /// regardless of message, so it gets the tight bound alone.
    #[test]
    fn no_destination_starves(sc in scenario(false)) {
        // master.cf process limits would delay a queue for reasons of the
        // world, not of the scheduler: none here.
        let sc = Scenario {
            connects: sc.connects.iter().map(|(c, _)| (c.clone(), None)).collect(),
            active_limit: 1_000,
            rcpt_limit: 100_000,
            messages: sc.messages.iter().map(|(_, r)| (0, r.clone())).collect(),
            ..sc
        };
        let s = sc.run();
        prop_assert_eq!(last_stop(), Some(Stop::Idle));
        prop_assert!(s.audit().is_empty(), "{:#?}", s.audit());
        let r = s.record();
        let queues: BTreeSet<&DestKey> = r.dests.keys().collect();
        let limits: u64 = queues
            .iter()
            .map(|k| if k.transport == "local" { 2 } else { u64::from(sc.conc_limit.max(1)) })
            .sum();
        let bound = limits + queues.len() as u64;
        let mut late = BTreeMap::new();
        for (k, st) in &r.dests {
            let first = st.first_dispatch.unwrap_or(usize::MAX) as u64;
            let ahead = if sc.preemptive {
                let first_msg = r
                    .deliveries
                    .iter()
                    .filter(|d| &d.dest == k)
                    .map(|d| d.msg)
                    .min();
                r.deliveries
                    .iter()
                    .filter(|d| first_msg.is_some_and(|m| d.msg < m))
                    .count() as u64
            } else {
                0
            };
            if first > bound + ahead {
                late.insert(k.clone(), (first, bound + ahead));
            }
        }
        prop_assert!(late.is_empty(), "starved past {} dispatches: {:?}", bound, late);
        // Everything was delivered: no faults in this world.
        let total: usize = sc.messages.iter().map(|(_, r)| r.len()).sum();
        prop_assert_eq!(r.recipients_with(rqmgr_sim::Fate::Delivered), total);
    }
}

/// The simulation's time bound: a run always ends well within a week of
/// virtual time even when every destination fails and every transport
/// keeps refusing now and then.
#[test]
fn hostile_world_still_terminates() {
    let sc = Scenario {
        active_limit: 5,
        rcpt_limit: 20,
        rcpt_minimum: 3,
        preemptive: true,
        conc_limit: 3,
        init_conc: 2,
        dest_rcpt_limit: 2,
        min_backoff_s: 300,
        retry_time_s: 60,
        dests: (0..4)
            .map(|_| {
                (
                    1_000,
                    vec![
                        AgentOutcome::SiteFailure("down".into()),
                        AgentOutcome::Crash,
                    ],
                )
            })
            .collect(),
        connects: vec![(vec![true, false, false], Some(2)); 3],
        retry_refuses: true,
        messages: (0..30)
            .map(|i| (i, (0..6).map(|k| (k % 3, k % 4, (k % 4) as u8)).collect()))
            .collect(),
        flushes: vec![50, 200],
    };
    let s = sc.run();
    assert_eq!(last_stop(), Some(Stop::Idle), "{s:?}");
    assert!(s.audit().is_empty(), "{:#?}", s.audit());
    assert!(s.now() < t0() + Duration::from_secs(7 * 86_400));
    let _: Time = s.now();
}
