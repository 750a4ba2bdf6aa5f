//! Whether reading one more message into the active queue helps now.
//!
//! Postfix's queue manager brings in one message per turn of its loop,
//! held back by nothing but `qmgr_message_active_limit`. Whenever it reads
//! faster than the delivery agents take work, the active queue grows
//! towards that limit. In a long drain through fast local agents that is
//! pure cost: every waiting message is memory and a name in `active/`
//! (directory search in each rename and unlink), and none of them starts
//! a moment sooner for having been read early.
//!
//! A transport's *ready backlog* counts the entries of its destination
//! queues that have room in their window: they wait only for an agent to
//! take them, not for the destination (an entry behind a full window or a
//! dead or suspended destination is not counted). Its *start rate* is a
//! decaying average of deliveries handed to its agents per second,
//! corrected for the first moments of a run of starts (see [`StartRate`]).
//!
//! The ready work *suffices* when the live transports together hold at
//! least [`READY_AHEAD`] of work at their start rates (and at least
//! [`READY_MIN`] entries), and each of them will have started all of its
//! ready backlog within [`READY_WITHIN`]. Then reading waits; the daemon
//! asks again at every event and at least every [`RECHECK`]. The second
//! condition bounds what waiting can cost a message behind the backlog
//! that is for another transport: a transport whose agents start slowly
//! (a process limit below its concurrency, a rate delay, a new transport
//! not yet measured) makes the ready work not suffice, and reading goes
//! on as Postfix's would. Nothing here changes which recipient goes where
//! or in what order; only when the next message is read.
//!
//! Invariants: a transport's `ready_backlog` is the sum of its queues'
//! `ready_contribution`, kept by `Scheduler::refresh` together with
//! `available`.

use std::time::Duration;

use crate::time::Time;
use crate::Scheduler;

/// How much ready work (in time at the start rate) is enough. A few
/// milliseconds suffice because every event (a delivery started or done)
/// asks again at once: in a fast drain the stock qmgr's active queue holds
/// about 15 messages on average, and a larger backlog only kept `active/`
/// fuller than stock's without starting anything sooner (with 100 ms and
/// 100 entries, rqmgr's held about 115 on average over the same drains).
pub(crate) const READY_AHEAD: Duration = Duration::from_millis(5);

/// Below this many ready entries, reading always goes on.
pub(crate) const READY_MIN: u64 = 10;

/// A transport's ready backlog must start within this, or reading goes on.
pub(crate) const READY_WITHIN: Duration = Duration::from_millis(500);

/// While reading waits, the daemon asks again at least this often (start
/// rates decay with no event at all).
pub const RECHECK: Duration = Duration::from_millis(20);

/// The start rate's time constant.
const RATE_SPAN: Duration = Duration::from_millis(250);

/// A pause in starts this long ends a run: what came before has decayed
/// to under 2% of the rate, and the next start begins a new measurement.
const RUN_GAP: Duration = Duration::from_secs(1);

/// A run this long has a weight of 1 within 1e-8 (`e^-20`), so the rate
/// needs no correction.
const RUN_SETTLED: Duration = Duration::from_secs(5);

/// The shortest run the rate is worked out over, so that the first
/// starts of a run do not claim an absurd rate.
const RUN_MIN: Duration = Duration::from_millis(25);

/// Deliveries started per second: a decaying average over [`RATE_SPAN`],
/// corrected for how long the current run of starts has lasted.
///
/// The plain decaying average starts at zero and reaches a steady rate
/// only after a few time constants. While it lags, a transport seems to
/// start its ready backlog far more slowly than it does, and a backlog
/// built in that time (a drain of many-recipient messages adds several
/// entries per message read) never looks short enough to hold reading
/// back: the active queue then grows as long as `incoming/` has mail.
/// Dividing by the weight the average has had time to gather, `1 -
/// e^(-run/RATE_SPAN)`, measures a steady rate as that rate from the
/// first starts on; it changes nothing once a run is long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StartRate {
    /// The uncorrected average as of `at`.
    per_sec: f64,
    /// The latest start.
    at: Time,
    /// The first start of the current run.
    since: Time,
}

impl Default for StartRate {
    fn default() -> Self {
        StartRate {
            per_sec: 0.0,
            at: Time::ZERO,
            since: Time::ZERO,
        }
    }
}

impl StartRate {
    /// The uncorrected average as of `now`.
    fn decayed(&self, now: Time) -> f64 {
        let elapsed = now.saturating_since(self.at);
        // Asked at every turn of the loop, often in the same instant as
        // the latest start.
        if elapsed.is_zero() {
            return self.per_sec;
        }
        self.per_sec * (-elapsed.as_secs_f64() / RATE_SPAN.as_secs_f64()).exp()
    }

    /// The rate as of `now`.
    pub(crate) fn at(&self, now: Time) -> f64 {
        // RUN_MIN keeps the weight above zero.
        let run = now.saturating_since(self.since).max(RUN_MIN);
        if run >= RUN_SETTLED {
            return self.decayed(now);
        }
        let weight = 1.0 - (-run.as_secs_f64() / RATE_SPAN.as_secs_f64()).exp();
        self.decayed(now) / weight
    }

    /// One delivery started at `now`.
    pub(crate) fn record(&mut self, now: Time) {
        if self.per_sec == 0.0 || now.saturating_since(self.at) >= RUN_GAP {
            self.per_sec = 0.0;
            self.since = now;
        }
        self.per_sec = self.decayed(now) + 1.0 / RATE_SPAN.as_secs_f64();
        self.at = self.at.max(now);
    }
}

impl Scheduler {
    /// True when the active queue holds enough ready work that reading
    /// another message now would only make it wait longer (see the module
    /// doc); the daemon then waits for an event or [`RECHECK`].
    pub fn ready_work_suffices(&self, now: Time) -> bool {
        let now = self.now.max(now);
        let mut backlog = 0u64;
        let mut ahead = 0.0f64;
        for t in self.transports.iter().filter(|t| !t.is_dead()) {
            let rate = t.start_rate.at(now);
            if t.ready_backlog > 0 {
                let within = rate * READY_WITHIN.as_secs_f64();
                // Precision: counts far below 2^52.
                #[allow(clippy::cast_precision_loss)]
                if (t.ready_backlog as f64) > within {
                    return false;
                }
                backlog += t.ready_backlog;
            }
            ahead += rate * READY_AHEAD.as_secs_f64();
        }
        #[allow(clippy::cast_precision_loss)]
        let enough = backlog as f64 >= ahead;
        backlog >= READY_MIN && enough
    }

    /// Entries ready for an agent, over all transports (for snapshots and
    /// tests).
    pub fn ready_backlog(&self) -> u64 {
        self.transports.iter().map(|t| t.ready_backlog).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::route;
    use crate::{Action, Config, Event, MessageId, Outcome, Route};

    /// A scheduler with `n` one-recipient messages for `discard:host`.
    fn with_messages(n: u64, now: Time) -> Scheduler {
        let mut s = Scheduler::new(Config::default());
        for i in 0..n {
            let msg = MessageId(i);
            arrive(&mut s, msg, vec![route(0, "discard", "host")], now);
        }
        s
    }

    /// A whole message, all its recipients routed, arrives at `now`.
    fn arrive(s: &mut Scheduler, msg: MessageId, routes: Vec<Route>, now: Time) {
        s.handle(
            Event::Message {
                msg,
                routes,
                more: false,
                flush_each: false,
                single_rcpt: false,
            },
            now,
        );
    }

    /// Agents that announce at once; `finish` says whether deliveries
    /// end. One delivery starts every `step` until `starts` have; returns
    /// the time then.
    fn run(s: &mut Scheduler, mut now: Time, starts: u32, step: Duration, finish: bool) -> Time {
        let mut started = 0;
        while started < starts {
            let Some(action) = s.poll_action() else {
                break;
            };
            match action {
                Action::Connect { conn, .. } => s.handle(Event::AgentReady { conn }, now),
                Action::Deliver { conn, .. } => {
                    started += 1;
                    now = now + step;
                    if finish {
                        let outcome = Outcome::Final;
                        s.handle(Event::Delivered { conn, outcome }, now);
                    }
                }
                _ => {}
            }
        }
        now
    }

    fn t(ms: u64) -> Time {
        Time::from_micros(ms * 1000)
    }

    #[test]
    fn a_steady_stream_is_measured_at_its_rate() {
        let mut r = StartRate::default();
        for i in 0..5000 {
            r.record(t(1_000 + i)); // 1000 per second for 5 s
        }
        let rate = r.at(t(6_000));
        assert!((900.0..1100.0).contains(&rate), "{rate}");
    }

    #[test]
    fn the_rate_decays_when_nothing_starts() {
        let mut r = StartRate::default();
        for i in 0..1000 {
            r.record(t(i));
        }
        let before = r.at(t(1_000));
        let after = r.at(t(2_000));
        assert!(after < before / 50.0, "{before} -> {after}");
    }

    #[test]
    fn an_earlier_time_does_not_move_the_rate_back() {
        let mut r = StartRate::default();
        r.record(t(100));
        r.record(t(50));
        assert!(r.at(t(100)) > 0.0);
        assert_eq!(r.at, t(100));
    }

    #[test]
    fn a_run_is_measured_at_its_rate_from_its_first_starts() {
        let mut r = StartRate::default();
        for i in 0..50 {
            r.record(t(10_000 + i)); // 1000 per second, for 50 ms only
        }
        let rate = r.at(t(10_050));
        assert!((800.0..1200.0).contains(&rate), "{rate}");
        // The first start alone does not claim a huge rate.
        let mut one = StartRate::default();
        one.record(t(10_000));
        assert!(one.at(t(10_000)) < 50.0, "{}", one.at(t(10_000)));
        // After a pause a new run is measured afresh.
        r.record(t(20_000));
        for i in 1..50 {
            r.record(t(20_000 + 2 * i)); // 500 per second
        }
        let rate = r.at(t(20_100));
        assert!((400.0..600.0).contains(&rate), "{rate}");
    }

    /// Reading far faster than agents start, messages of five recipients
    /// in five domains: the backlog stays near what the agents start in
    /// [`READY_AHEAD`] from the first deliveries on, instead of growing
    /// while the start rate is being measured.
    #[test]
    fn many_recipient_messages_are_held_back_from_the_first_starts() {
        let mut s = Scheduler::new(Config::default());
        let mut waiting = std::collections::VecDeque::new();
        let (mut read, mut started, mut peak) = (0u64, 0u32, 0u64);
        // One step is 0.1 ms: a message may be read at every step, an
        // agent announces itself at every fourth (2,500 per second).
        for step in 0..3_000u64 {
            let now = Time::from_micros(step * 100);
            if !s.ready_work_suffices(now) {
                let routes = (0..5)
                    .map(|j| route(j, "discard", &format!("d{j}.example")))
                    .collect();
                arrive(&mut s, MessageId(read), routes, now);
                read += 1;
            }
            if step % 4 == 0 {
                if let Some(conn) = waiting.pop_front() {
                    s.handle(Event::AgentReady { conn }, now);
                }
            }
            while let Some(action) = s.poll_action() {
                match action {
                    Action::Connect { conn, .. } => waiting.push_back(conn),
                    Action::Deliver { conn, .. } => {
                        started += 1;
                        let outcome = Outcome::Final;
                        s.handle(Event::Delivered { conn, outcome }, now);
                    }
                    _ => {}
                }
            }
            peak = peak.max(s.ready_backlog());
        }
        assert!(started >= 700, "{started} deliveries started");
        // At 2,500 starts per second, 5 ms of work is 13 entries; one
        // message read adds five, and the first starts are measured
        // before the rate is known.
        assert!(peak < 100, "the ready backlog reached {peak}");
        assert!(read < 400, "{read} messages read");
    }

    #[test]
    fn fast_agents_with_work_queued_suffice() {
        let mut s = with_messages(1000, t(0));
        assert!(!s.ready_work_suffices(t(0)), "nothing measured yet");
        let now = run(&mut s, t(0), 800, Duration::from_millis(1), true);
        // About 200 entries left, starting at about 1000 per second.
        assert!(
            (150..=200).contains(&s.ready_backlog()),
            "{}",
            s.ready_backlog()
        );
        assert!(s.ready_work_suffices(now));
        // Without a start for a while the rate decays and reading resumes.
        assert!(!s.ready_work_suffices(now + Duration::from_secs(1)));
    }

    #[test]
    fn slow_agents_never_hold_reading_back() {
        let mut s = with_messages(1000, t(0));
        let now = run(&mut s, t(0), 800, Duration::from_millis(20), true);
        // 200 entries at 50 per second would wait 4 s.
        assert!(s.ready_backlog() >= 150);
        assert!(!s.ready_work_suffices(now));
    }

    #[test]
    fn work_behind_a_full_window_is_not_ready() {
        let mut s = with_messages(1000, t(0));
        // Deliveries never end: the window (initially 5) fills.
        let now = run(&mut s, t(0), 50, Duration::from_millis(1), false);
        assert_eq!(s.ready_backlog(), 0);
        assert!(!s.ready_work_suffices(now));
    }

    #[test]
    fn a_small_backlog_never_holds_reading_back() {
        // Fast agents, and one entry fewer left than the minimum.
        let mut s = with_messages(80 + READY_MIN - 1, t(0));
        let now = run(&mut s, t(0), 80, Duration::from_millis(1), true);
        assert_eq!(s.ready_backlog(), READY_MIN - 1);
        assert!(!s.ready_work_suffices(now));
    }
}
