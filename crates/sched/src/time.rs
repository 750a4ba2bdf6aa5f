//! Time as the scheduler sees it: a point passed in by the caller.
//!
//! The core never reads a clock. Every [`crate::Scheduler`] call that can
//! change state takes `now`, so a simulation can run a day of queue time
//! in milliseconds and a test can reproduce any interleaving exactly.
//! Times are microseconds since the Unix epoch, because the daemon has to
//! turn them into file modification times (the deferred queue's retry
//! schedule) and back.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time: microseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    /// The epoch itself; useful as a simulation's starting point.
    pub const ZERO: Time = Time(0);

    /// A time from whole seconds.
    pub const fn from_secs(secs: u64) -> Time {
        Time(secs.saturating_mul(1_000_000))
    }

    /// A time from microseconds.
    pub const fn from_micros(us: u64) -> Time {
        Time(us)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Whole seconds since the epoch (rounded down), as file times use.
    pub const fn as_secs(self) -> u64 {
        self.0 / 1_000_000
    }

    /// The time elapsed since `earlier`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Time(self.0.saturating_add(us))
    }
}

impl Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, d: Duration) -> Time {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Time(self.0.saturating_sub(us))
    }
}
