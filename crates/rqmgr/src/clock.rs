//! The daemon's clock: every time the daemon uses comes from here.
//!
//! Postfix decides with `event_time()`, the time its event loop read when
//! the current event began, so every decision made for one event sees one
//! time: whether a deferred file is due, when a message expired, a file's
//! next-attempt time, the scheduler's timers. [`Now`] is that snapshot,
//! taken by the runtime when an event begins and passed down. Message
//! statistics (arrival in the active queue, the `delays=` of log lines)
//! are the exception, as in Postfix (`GETTIMEOFDAY`): they read the precise
//! time with [`precise`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rqmgr_sched::Time;

/// One reading of the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Now(Duration);

impl Now {
    /// Reads the clock (a clock before 1970 reads as 1970).
    pub(crate) fn read() -> Now {
        Now(precise()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO))
    }

    /// Whole seconds since the epoch, as queue file times count.
    pub(crate) fn secs(self) -> i64 {
        i64::try_from(self.0.as_secs()).unwrap_or(i64::MAX)
    }

    /// The time as the scheduler counts it.
    pub(crate) fn sched(self) -> Time {
        Time::from_micros(u64::try_from(self.0.as_micros()).unwrap_or(u64::MAX))
    }
}

/// The precise time now, for message statistics.
pub(crate) fn precise() -> SystemTime {
    SystemTime::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_reading_in_both_units() {
        let now = Now(Duration::new(1_700_000_000, 250_000_000));
        assert_eq!(now.secs(), 1_700_000_000);
        assert_eq!(now.sched(), Time::from_micros(1_700_000_000_250_000));
        let read = Now::read();
        assert!(read.secs() > 1_700_000_000);
    }
}
