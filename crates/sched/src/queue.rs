//! Destination queues: one per (transport, next hop), as `qmgr_queue.c`.
//!
//! A queue holds the entries waiting for its destination (`todo`) and
//! counts those being delivered (`busy`). Its concurrency window decides
//! how many may be busy at once. The window moves by feedback from the
//! delivery agents: positive after a delivery that did not blame the
//! destination, negative after one that did. Enough failed cohorts in a
//! row make the destination dead: the window drops to 0, the queue keeps
//! the reason, and it comes back after `minimal_backoff_time` or on `F`.
//!
//! Invariants: a dead queue has a reason (`dsn`); a live one has none and
//! a window of at least 1; a suspended queue (rate delay) is live but
//! hands out nothing until its timer fires. `todo` links exactly the
//! queue's entries that are not being delivered; `busy` counts the others,
//! and `todo_rcpts` the recipients of the `todo` entries. The delivery
//! counters, `last_failure` and `throttled_since` are only read by
//! snapshots ([`crate::snapshot`]); no decision depends on them.
//! `parked` names the peers (job x this queue) that found the queue full
//! when their job looked for work; they are handed back to their jobs as
//! soon as the queue has room again (Postfix's queue `blocker_tag`).

use crate::bytestring::ByteString;
use crate::config::TransportConfig;
use crate::control::DestLimits;
use crate::event::{Dsn, DEST_FLAG_CONN_LOAD, DEST_FLAG_CONN_STORE};
use crate::list::List;
use crate::time::Time;

/// One destination of one transport.
#[derive(Debug)]
pub(crate) struct DestQueue {
    pub transport: usize,
    /// The queue's name: the next hop (or `localpart@nexthop`), ASCII
    /// lower case.
    pub name: ByteString,
    /// The next hop every entry of this queue is delivered to.
    pub nexthop: ByteString,
    /// Concurrency window; 0 while dead.
    pub window: i32,
    pub suspended: bool,
    pub busy: u32,
    pub todo: List,
    /// Peers waiting for room here: (peer, stamp); stale pairs are skipped.
    pub parked: Vec<(u32, u32)>,
    success: f64,
    failure: f64,
    fail_cohorts: f64,
    /// Why the destination is dead; `Some` exactly when `window == 0`.
    pub dsn: Option<Dsn>,
    pub last_done: Option<Time>,
    pub dest_flags: u32,
    /// Set from the scheduler's serial counter whenever the queue is made
    /// or dies, so that a timer meant for an earlier state (or an earlier
    /// queue in the same slab slot) is recognised as stale.
    pub generation: u64,
    /// This queue's share of its transport's `available` count.
    pub contribution: u32,
    /// This queue's share of its transport's `ready_backlog`.
    pub ready_contribution: u32,
    /// The ticket of this queue's slot in its transport's round robin, if
    /// it has one; slots with another ticket are stale.
    pub rr_ticket: Option<u64>,
    /// No clog warning for this destination before this time.
    pub clog_time_to_warn: Time,
    /// Recipients in the `todo` entries, kept as they move so that a
    /// snapshot ranks destinations without walking their entries.
    pub todo_rcpts: usize,
    /// Deliveries that ended without blaming the site (for snapshots only).
    pub ok_deliveries: u64,
    /// Deliveries that blamed the site (for snapshots only).
    pub site_failures: u64,
    /// The most recent site failure (for snapshots only).
    pub last_failure: Option<Dsn>,
    /// When the queue last died; `None` while it is live.
    pub throttled_since: Option<Time>,
    /// When the latest revival or resume timer is due; meaningful only
    /// while the queue is dead or suspended.
    pub wake_at: Option<Time>,
    /// An operator's limits for this destination (control.rs).
    pub limits: DestLimits,
}

impl DestQueue {
    pub(crate) fn new(
        transport: usize,
        name: ByteString,
        nexthop: ByteString,
        cfg: &TransportConfig,
        generation: u64,
    ) -> Self {
        DestQueue {
            transport,
            name,
            nexthop,
            window: to_window(cfg.init_dest_concurrency),
            suspended: false,
            busy: 0,
            todo: List::default(),
            parked: Vec::new(),
            success: 0.0,
            failure: 0.0,
            fail_cohorts: 0.0,
            dsn: None,
            last_done: None,
            dest_flags: 0,
            generation,
            contribution: 0,
            ready_contribution: 0,
            rr_ticket: None,
            clog_time_to_warn: Time::ZERO,
            todo_rcpts: 0,
            ok_deliveries: 0,
            site_failures: 0,
            last_failure: None,
            throttled_since: None,
            wake_at: None,
            limits: DestLimits::default(),
        }
    }

    /// The failed cohorts counted towards death, for snapshots.
    pub(crate) fn fail_cohorts(&self) -> f64 {
        self.fail_cohorts
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.window == 0
    }

    /// Live and not waiting out a rate delay.
    pub(crate) fn is_ready(&self) -> bool {
        self.window > 0 && !self.suspended
    }

    /// Room for one more delivery (`window > busy_refcount`).
    pub(crate) fn has_room(&self) -> bool {
        self.is_ready() && i64::from(self.window) > i64::from(self.busy)
    }

    /// Entries waiting or busy, as `todo_refcount + busy_refcount`.
    pub(crate) fn length(&self) -> u32 {
        self.todo.len.saturating_add(self.busy)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.todo.len == 0 && self.busy == 0
    }

    /// How many more entries this queue could hand out right now.
    pub(crate) fn available(&self) -> u32 {
        if !self.is_ready() {
            return 0;
        }
        let room = u32::try_from(self.window)
            .unwrap_or(0)
            .saturating_sub(self.busy);
        room.min(self.todo.len)
    }

    /// Entries waiting only for an agent: all of `todo` while the window
    /// has room, none behind a full window (see intake.rs).
    pub(crate) fn ready_share(&self) -> u32 {
        if self.has_room() {
            self.todo.len
        } else {
            0
        }
    }

    /// Good news from a delivery (`qmgr_queue_unthrottle()`): revive a dead
    /// queue, or grow the window by positive feedback.
    pub(crate) fn unthrottle(&mut self, cfg: &TransportConfig) {
        self.fail_cohorts = 0.0;
        if self.is_dead() {
            self.dsn = None;
            self.throttled_since = None;
            // Back from the dead the best window is a guess: as many as
            // are still busy, else where a new destination starts.
            self.window = if self.busy > 0 {
                to_window(self.busy)
            } else {
                let limit = self.limits.concurrency(cfg);
                match limit {
                    0 => to_window(cfg.init_dest_concurrency),
                    n => to_window(cfg.init_dest_concurrency.min(n)),
                }
            };
            self.success = 0.0;
            self.failure = 0.0;
            return;
        }
        let limit = to_window(self.limits.concurrency(cfg));
        // Why only below busy + initial: a window far above what is in use
        // says nothing about what the destination can take.
        if (limit == 0 || limit > self.window)
            && i64::from(self.window) < i64::from(self.busy) + i64::from(cfg.init_dest_concurrency)
        {
            let feedback = cfg.positive_feedback.at(self.window);
            self.success += feedback;
            while self.success + feedback / 2.0 >= 1.0 {
                self.window += 1;
                self.success -= 1.0;
                self.failure = 0.0;
            }
            if limit > 0 && self.window > limit {
                self.window = limit;
            }
        }
    }

    /// Bad news about the destination (`qmgr_queue_throttle()`): negative
    /// feedback, and death once `failed_cohort_limit` cohorts failed.
    /// Returns true if the queue just died.
    pub(crate) fn throttle(&mut self, cfg: &TransportConfig, dsn: &Dsn) -> bool {
        if self.window <= 0 {
            return false;
        }
        self.fail_cohorts += 1.0 / f64::from(self.window);
        if cfg.failed_cohort_limit > 0 && self.fail_cohorts >= f64::from(cfg.failed_cohort_limit) {
            self.window = 0;
            self.dsn = Some(dsn.clone());
            self.dest_flags = 0;
            return true;
        }
        let feedback = cfg.negative_feedback.at(self.window);
        self.failure -= feedback;
        while self.failure - feedback / 2.0 < 0.0 {
            self.window -= 1;
            self.success = 0.0;
            self.failure += 1.0;
        }
        if self.window < 1 {
            self.window = 1;
        }
        false
    }

    /// Session-caching hints for the next delivery (`qmgr_entry_select()`):
    /// turn caching on for back-to-back deliveries, and off again only when
    /// deliveries are neither concurrent nor back to back.
    pub(crate) fn update_dest_flags(&mut self, now: Time) {
        let back_to_back = self
            .last_done
            .is_some_and(|done| done + std::time::Duration::from_secs(1) >= now);
        if self.dest_flags & DEST_FLAG_CONN_STORE == 0 {
            if back_to_back {
                self.dest_flags |= DEST_FLAG_CONN_LOAD | DEST_FLAG_CONN_STORE;
            }
        } else if !(self.busy > 1 || back_to_back) {
            self.dest_flags &= !DEST_FLAG_CONN_STORE;
        }
    }
}

/// Postfix keeps windows in an `int`; ours too, so limits convert safely.
fn to_window(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Feedback;

    fn cfg() -> TransportConfig {
        TransportConfig::default()
    }

    #[test]
    fn positive_feedback_grows_window_to_limit() {
        let c = TransportConfig {
            dest_concurrency_limit: 7,
            ..cfg()
        };
        let mut q = DestQueue::new(0, "d".into(), "d".into(), &c, 0);
        assert_eq!(q.window, 5);
        q.busy = 5;
        for _ in 0..10 {
            q.unthrottle(&c);
        }
        assert_eq!(q.window, 7, "never above the limit");
    }

    #[test]
    fn window_grows_only_while_in_use() {
        let c = cfg();
        let mut q = DestQueue::new(0, "d".into(), "d".into(), &c, 0);
        q.busy = 0;
        q.unthrottle(&c);
        q.unthrottle(&c);
        // window 5 < busy 0 + initial 5 is false: no growth.
        assert_eq!(q.window, 5);
    }

    #[test]
    fn one_failed_cohort_kills_at_window_one_per_window() {
        let c = cfg();
        let mut q = DestQueue::new(0, "d".into(), "d".into(), &c, 0);
        let dsn = Dsn::new("4.4.1", "refused");
        // window 5: each failure adds 1/5 of a cohort and shrinks the window.
        let mut deaths = 0;
        let mut failures = 0;
        while !q.is_dead() {
            failures += 1;
            if q.throttle(&c, &dsn) {
                deaths += 1;
            }
        }
        assert_eq!(deaths, 1);
        assert_eq!(q.dsn.as_ref(), Some(&dsn));
        // The first negative feedback takes the window from 5 to 3 (the
        // failure balance starts at zero, as in qmgr_queue.c), the second
        // to 2; 1/5 + 1/3 + 1/2 >= 1, so the third failure kills.
        assert_eq!(failures, 3);
    }

    #[test]
    fn revived_queue_starts_at_busy_or_initial() {
        let c = cfg();
        let mut q = DestQueue::new(0, "d".into(), "d".into(), &c, 0);
        q.window = 0;
        q.dsn = Some(Dsn::new("4.4.1", "x"));
        q.busy = 2;
        q.unthrottle(&c);
        assert_eq!(q.window, 2);
        assert!(q.dsn.is_none());
    }

    #[test]
    fn per_concurrency_feedback_needs_a_window_of_successes() {
        let c = TransportConfig {
            positive_feedback: Feedback {
                value: 1.0,
                per_concurrency: true,
            },
            ..cfg()
        };
        let mut q = DestQueue::new(0, "d".into(), "d".into(), &c, 0);
        q.busy = 5;
        for _ in 0..4 {
            q.unthrottle(&c);
        }
        assert_eq!(q.window, 5);
        q.unthrottle(&c);
        assert_eq!(q.window, 6);
    }

    #[test]
    fn zero_cohort_limit_never_kills() {
        let c = TransportConfig {
            failed_cohort_limit: 0,
            ..cfg()
        };
        let mut q = DestQueue::new(0, "d".into(), "d".into(), &c, 0);
        for _ in 0..100 {
            assert!(!q.throttle(&c, &Dsn::new("4.4.1", "x")));
        }
        assert_eq!(q.window, 1);
    }
}
