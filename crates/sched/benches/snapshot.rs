//! The cost of the read-only views with 100,000 recipients in core.
//!
//! Job: time what the daemon's admin socket and metrics scrape call —
//! `totals()`, `transport_views()`, `destination_views(TopAndThrottled(50),
//! 1000)` and `job_views(None, 100)`, with `TopByTodo(50)` and a `One`
//! lookup besides — on a scheduler holding 100,000 recipients of 1,000
//! messages over 10,000 destinations. Target: each well under 20 ms.
//!
//! Shape: message `i`'s recipient `k` goes to destination
//! `(i * 100 + k) % 10_000`, so every destination holds ten one-recipient
//! entries of ten messages. Destinations start at window 1; every
//! destination gets one delivery; those of every 50th destination fail
//! at the site, which kills it (200 throttled, their waiting entries
//! moved to one `retry` queue), and the others stay busy (9,800 in
//! flight). The `retry` transport's agents never come. Nothing changes
//! while timing: the views only read.
//!
//! Run: `cargo bench -p rqmgr-sched --bench snapshot` (about a minute).
//!
//! Invariant: no wall-clock use outside criterion's timing.
//!
//! Figures measured (release profile with debug info, a 2-core shared
//! development machine, load average 2-3.5; criterion medians, qmgr /
//! oqmgr): `totals` 1.7 ns / 1.7 ns; `transport_views` 272 ns / 281 ns;
//! `destination_views(TopAndThrottled(50), 1000)` 84 µs / 86 µs (250
//! views); `TopByTodo(50)` 37 µs / 38 µs; `One` 109 ns / 114 ns;
//! `job_views(None, 100)` 4.2 µs / 4.6 µs. Every view is more than 200
//! times under the 20 ms target; the ranking pass over the 10,001
//! destinations is most of what the top-N views cost.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use rqmgr_sched::{
    Action, Config, DestinationSelect, Dsn, Event, MessageId, Outcome, Route, Scheduler, Time,
    TransportConfig,
};

const MESSAGES: u32 = 1_000;
const PER_MESSAGE: u32 = 100;
const DESTINATIONS: u32 = 10_000;
/// Every this many destinations one fails.
const FAILING_EVERY: u32 = 50;

fn nexthop(d: u32) -> String {
    format!("d{d}.example")
}

fn config(preemptive: bool) -> Config {
    Config {
        preemptive,
        message_recipient_limit: 1_000_000,
        transports: Box::new(|_| TransportConfig {
            init_dest_concurrency: 1,
            recipient_limit: 1_000_000,
            ..TransportConfig::default()
        }),
        ..Config::default()
    }
}

/// Message `i` with one recipient for each destination number given.
fn message(i: u32, destinations: impl Iterator<Item = u32>) -> Event {
    let routes = destinations
        .zip(0..)
        .map(|(d, k)| {
            let d = nexthop(d);
            Route {
                rcpt: k,
                transport: "smtp".into(),
                address: format!("user{k}@{d}").into(),
                nexthop: d.into(),
            }
        })
        .collect();
    Event::Message {
        msg: MessageId(u64::from(i)),
        routes,
        more: false,
        flush_each: false,
        single_rcpt: false,
    }
}

fn loaded(preemptive: bool) -> Scheduler {
    let mut s = Scheduler::new(config(preemptive));
    let now = Time::from_secs(1_000_000);
    for i in 0..MESSAGES {
        let destinations = (0..PER_MESSAGE).map(|k| (i * PER_MESSAGE + k) % DESTINATIONS);
        s.handle(message(i, destinations), now);
    }
    let failure = Dsn::new(
        "4.4.1",
        "delivery temporarily suspended: connection refused",
    );
    while let Some(a) = s.poll_action() {
        match a {
            Action::Connect { conn, transport } if transport == "smtp" => {
                s.handle(Event::AgentReady { conn }, now);
            }
            Action::Deliver { conn, nexthop, .. } => {
                let d: u32 = std::str::from_utf8(&nexthop)
                    .ok()
                    .and_then(|h| h.strip_prefix('d')?.strip_suffix(".example"))
                    .and_then(|n| n.parse().ok())
                    .expect("a next hop of this benchmark");
                if d.is_multiple_of(FAILING_EVERY) {
                    let site = Some(failure.clone());
                    s.handle(
                        Event::Delivered {
                            conn,
                            outcome: Outcome::Deferred { site },
                        },
                        now,
                    );
                }
            }
            _ => {}
        }
    }
    // The failed deliveries took their recipients out of core: a last
    // message makes the round figure again (no agent is asked for it).
    let lost = (MESSAGES * PER_MESSAGE) as usize - s.recipient_count();
    let lost = u32::try_from(lost).expect("a few hundred");
    s.handle(message(MESSAGES, (0..lost).map(|k| 1 + k)), now);
    let totals = s.totals();
    let throttled = s
        .destination_views(DestinationSelect::TopAndThrottled(0), usize::MAX)
        .len();
    let busy: usize = s.transport_views().iter().map(|t| t.busy).sum();
    println!(
        "setup/{}: {} recipients of {} messages in core, {} destinations, \
         {throttled} throttled, {busy} busy",
        mode(preemptive),
        totals.recipients,
        totals.messages,
        totals.destinations
    );
    assert_eq!(totals.recipients, (MESSAGES * PER_MESSAGE) as usize);
    assert_eq!(throttled, (DESTINATIONS / FAILING_EVERY) as usize);
    s
}

fn mode(preemptive: bool) -> &'static str {
    if preemptive {
        "qmgr"
    } else {
        "oqmgr"
    }
}

fn views(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for preemptive in [true, false] {
        let s = loaded(preemptive);
        let mode = mode(preemptive);
        group.bench_function(BenchmarkId::new("totals", mode), |b| {
            b.iter(|| black_box(s.totals()))
        });
        group.bench_function(BenchmarkId::new("transport_views", mode), |b| {
            b.iter(|| black_box(s.transport_views()))
        });
        group.bench_function(
            BenchmarkId::new("destination_views_top_and_throttled_50_1000", mode),
            |b| {
                b.iter(|| {
                    black_box(s.destination_views(DestinationSelect::TopAndThrottled(50), 1000))
                })
            },
        );
        group.bench_function(
            BenchmarkId::new("destination_views_top_by_todo_50", mode),
            |b| b.iter(|| black_box(s.destination_views(DestinationSelect::TopByTodo(50), 50))),
        );
        group.bench_function(BenchmarkId::new("destination_views_one", mode), |b| {
            let select = DestinationSelect::One {
                transport: b"smtp",
                nexthop: b"D4242.Example",
            };
            b.iter(|| black_box(s.destination_views(select, 10)))
        });
        group.bench_function(BenchmarkId::new("job_views_all_100", mode), |b| {
            b.iter(|| black_box(s.job_views(None, 100)))
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    views(&mut c);
    c.final_summary();
}
