//! Timers of the core: when dead things revive and paused things resume,
//! and the deferred queue's backoff rule.
//!
//! Timers are kept in a heap and never cancelled; each carries the
//! generation of the object it belongs to, and a timer whose generation no
//! longer matches is dropped when it fires. That keeps cancellation O(1)
//! and the object free of timer handles.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use crate::time::Time;

/// What a timer does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// A dead destination comes back (`minimal_backoff_time`).
    QueueRevive { queue: usize, generation: u64 },
    /// A destination's rate delay is over.
    QueueResume { queue: usize, generation: u64 },
    /// A dead transport comes back (`transport_retry_time`).
    TransportRevive { transport: usize, generation: u32 },
    /// A ready agent's hand-off, postponed by the transport rate delay.
    TransportHandoff { conn: crate::event::ConnId },
}

/// A heap of timers, earliest first.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Time, u64, Timer)>>,
    seq: u64,
}

impl Timers {
    pub(crate) fn add(&mut self, at: Time, timer: Timer) {
        // The sequence number keeps equal times in insertion order.
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, timer)));
    }

    pub(crate) fn next_deadline(&self) -> Option<Time> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next timer due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Time) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self.heap.pop().map(|Reverse((_, _, t))| t),
            _ => None,
        }
    }
}

/// When a deferred message is next due: Postfix's exponential backoff.
///
/// The wait is the message's age, clamped to the backoff bounds, so the
/// gap between attempts roughly doubles as the message grows older. A
/// message without a creation time waits the minimum.
pub fn next_attempt(now_secs: i64, create_secs: Option<i64>, min: Duration, max: Duration) -> i64 {
    let min = i64::try_from(min.as_secs()).unwrap_or(i64::MAX);
    let max = i64::try_from(max.as_secs()).unwrap_or(i64::MAX).max(min);
    let wait = match create_secs {
        Some(created) if created > 0 => (now_secs - created).clamp(min, max),
        _ => min,
    };
    now_secs.saturating_add(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_age_within_bounds() {
        let min = Duration::from_secs(300);
        let max = Duration::from_secs(4000);
        assert_eq!(next_attempt(1000, Some(1000), min, max), 1300);
        assert_eq!(next_attempt(2000, Some(1000), min, max), 3000);
        assert_eq!(next_attempt(100_000, Some(1000), min, max), 104_000);
        assert_eq!(next_attempt(1000, None, min, max), 1300);
    }

    #[test]
    fn timers_fire_in_order() {
        let mut t = Timers::default();
        t.add(
            Time::from_secs(5),
            Timer::TransportHandoff {
                conn: crate::event::ConnId(1),
            },
        );
        t.add(
            Time::from_secs(3),
            Timer::TransportHandoff {
                conn: crate::event::ConnId(2),
            },
        );
        assert_eq!(t.next_deadline(), Some(Time::from_secs(3)));
        assert_eq!(t.pop_due(Time::from_secs(2)), None);
        assert_eq!(
            t.pop_due(Time::from_secs(10)),
            Some(Timer::TransportHandoff {
                conn: crate::event::ConnId(2)
            })
        );
    }
}
