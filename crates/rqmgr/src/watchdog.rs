//! The watchdog (`qmgr_daemon_timeout`): a queue manager whose event loop
//! stops turning must die, so that master(8) starts a fresh one, rather
//! than sit on the active queue forever.
//!
//! Postfix arms `alarm()` around each event-loop pass and logs
//! `fatal: watchdog timeout` when it fires three times without being
//! reset. Here a separate thread checks a heartbeat that the event loop
//! updates on every pass; the loop is never idle for long, because the
//! deferred-queue timer (`queue_run_delay`) and master's wake-ups turn it
//! at least that often. The thread only reads an atomic and sleeps: it
//! cannot itself block the queue manager.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::logging::Logger;

/// Checks per timeout period, as Postfix's `WATCHDOG_STEPS`.
const STEPS: u32 = 3;

/// The event loop's side of the watchdog.
#[derive(Debug, Clone)]
pub(crate) struct Watchdog {
    start: Instant,
    /// Milliseconds since `start` at the last pass of the event loop.
    beat: Arc<AtomicU64>,
}

impl Watchdog {
    /// Starts the watchdog thread. `timeout` zero disables it.
    pub(crate) fn start(timeout: Duration, log: Arc<Logger>) -> Watchdog {
        let dog = Watchdog {
            start: Instant::now(),
            beat: Arc::new(AtomicU64::new(0)),
        };
        if timeout.is_zero() {
            return dog;
        }
        let watcher = dog.clone();
        let thread_log = Arc::clone(&log);
        let spawned = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(timeout / STEPS);
                if overdue(watcher.last_beat(), watcher.elapsed(), timeout) {
                    thread_log.fatal("watchdog timeout");
                    std::process::exit(1);
                }
            });
        if let Err(e) = spawned {
            // Without a watchdog rqmgr still delivers mail; say so and go on.
            log.warning(&format!("watchdog thread: {e}"));
        }
        dog
    }

    /// Called by the event loop on every pass.
    pub(crate) fn pet(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.beat.store(now, Ordering::Relaxed);
    }

    fn last_beat(&self) -> Duration {
        Duration::from_millis(self.beat.load(Ordering::Relaxed))
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// The loop has not turned for longer than `timeout`.
fn overdue(last_beat: Duration, now: Duration, timeout: Duration) -> bool {
    now.saturating_sub(last_beat) > timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overdue_only_after_the_timeout() {
        let t = Duration::from_secs(1000);
        assert!(!overdue(
            Duration::from_secs(10),
            Duration::from_secs(1009),
            t
        ));
        assert!(!overdue(
            Duration::from_secs(10),
            Duration::from_secs(1010),
            t
        ));
        assert!(overdue(
            Duration::from_secs(10),
            Duration::from_secs(1011),
            t
        ));
        // A beat "after" now (clock read order) is not overdue.
        assert!(!overdue(
            Duration::from_secs(20),
            Duration::from_secs(10),
            t
        ));
    }

    #[test]
    fn pet_moves_the_beat() {
        let dog = Watchdog {
            start: Instant::now() - Duration::from_secs(5),
            beat: Arc::new(AtomicU64::new(0)),
        };
        dog.pet();
        assert!(dog.last_beat() >= Duration::from_secs(5));
    }
}
