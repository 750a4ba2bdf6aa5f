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
//! decaying average of deliveries handed to its agents per second.
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

/// How much ready work (in time at the start rate) is enough.
pub(crate) const READY_AHEAD: Duration = Duration::from_millis(100);

/// Below this many ready entries, reading always goes on.
pub(crate) const READY_MIN: u64 = 100;

/// A transport's ready backlog must start within this, or reading goes on.
pub(crate) const READY_WITHIN: Duration = Duration::from_millis(500);

/// While reading waits, the daemon asks again at least this often (start
/// rates decay with no event at all).
pub const RECHECK: Duration = Duration::from_millis(20);

/// The start rate's time constant.
const RATE_SPAN: Duration = Duration::from_millis(250);

/// Deliveries started per second, decaying exponentially over
/// [`RATE_SPAN`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct StartRate {
    per_sec: f64,
    at: Time,
}

impl Default for StartRate {
    fn default() -> Self {
        StartRate {
            per_sec: 0.0,
            at: Time::ZERO,
        }
    }
}

impl StartRate {
    /// The rate as of `now`.
    pub(crate) fn at(&self, now: Time) -> f64 {
        let elapsed = now.saturating_since(self.at).as_secs_f64();
        self.per_sec * (-elapsed / RATE_SPAN.as_secs_f64()).exp()
    }

    /// One delivery started at `now`.
    pub(crate) fn record(&mut self, now: Time) {
        self.per_sec = self.at(now) + 1.0 / RATE_SPAN.as_secs_f64();
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
    use crate::{Action, Config, Event, MessageId, Outcome};

    /// A scheduler with `n` one-recipient messages for `discard:host`.
    fn with_messages(n: u64, now: Time) -> Scheduler {
        let mut s = Scheduler::new(Config::default());
        for i in 0..n {
            let msg = MessageId(i);
            let routes = vec![route(0, "discard", "host")];
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
        s
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
        let mut s = with_messages(150, t(0));
        let now = run(&mut s, t(0), 80, Duration::from_millis(1), true);
        assert!(s.ready_backlog() < READY_MIN);
        assert!(!s.ready_work_suffices(now));
    }
}
