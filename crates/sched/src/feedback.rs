//! What delivery outcomes do to destinations and transports
//! (`qmgr_deliver.c`, `qmgr_queue.c`, `qmgr_transport.c`, `qmgr_defer.c`).
//!
//! A reply that does not blame the site is positive feedback for its queue
//! and revives a dead transport; one that blames the site is negative
//! feedback and may kill the destination, whose waiting entries then move
//! to the `retry` transport (or are deferred on the spot when `retry` is
//! dead too). A transport whose agent cannot be reached is dead for
//! `transport_retry_time`, its waiting entries likewise moved. Dead things
//! come back by timer or on the `F` trigger.
//!
//! Invariant: every timer carries the generation of its object, so one
//! meant for an earlier life of the object does nothing.

use crate::event::{ConnId, Dsn, Outcome};
use crate::list::NIL;
use crate::retry::Timer;
use crate::LiveLimit;
use crate::{Conn, Scheduler};

impl Scheduler {
    pub(crate) fn agent_unavailable(&mut self, conn: ConnId, dsn: Dsn) {
        let Some(c) = self.conns.remove(conn) else {
            return;
        };
        let t = c.transport;
        match c.entry {
            // Failed while sending: the entry is put back as if never
            // selected (`qmgr_entry_unselect()`).
            Some(e) => self.entry_unselect(e),
            None => {
                let tr = &mut self.transports[t];
                tr.pending = tr.pending.saturating_sub(1);
            }
        }
        self.transport_throttle(t, dsn);
    }

    pub(crate) fn delivered(&mut self, conn: ConnId, outcome: Outcome) {
        let Some(Conn {
            transport: t,
            entry: Some(e),
        }) = self.conns.remove(conn)
        else {
            return;
        };
        let q = self.entries[e as usize].queue as usize;
        let m = self.entries[e as usize].msg as usize;
        let crashed = matches!(outcome, Outcome::Crashed);
        let mut blamed_site = false;
        if !matches!(outcome, Outcome::Final) {
            self.messages[m].deferred = true;
        }
        if let Outcome::Deferred { site: Some(dsn) } = &outcome {
            blamed_site = true;
            let queue = &mut self.queues[q];
            queue.site_failures += 1;
            // Most failures repeat the last one: no allocation then.
            if queue.last_failure.as_ref() != Some(dsn) {
                queue.last_failure = Some(dsn.clone());
            }
            if self.queues[q].window > 0 {
                let cfg = &self.transports[t].cfg;
                if self.queues[q].throttle(cfg, dsn) {
                    self.queue_died(q);
                }
            }
        }
        if !crashed {
            self.transport_unthrottle(t);
            if !blamed_site {
                self.queues[q].ok_deliveries += 1;
                self.queue_unthrottle(q);
            }
        } else {
            // A crash says nothing about the transport, but the one
            // delivery a rate-limited transport allows is over.
            self.transports[t].rate_locked = false;
        }
        self.entry_done(e);
    }

    /// A destination just died: move its waiting entries to `retry`
    /// (`qmgr_defer_todo()`), and schedule its revival.
    fn queue_died(&mut self, q: usize) {
        let generation = self.fresh();
        let revive = self.now + self.cfg.min_backoff;
        let queue = &mut self.queues[q];
        queue.generation = generation;
        queue.throttled_since = Some(self.now);
        queue.wake_at = Some(revive);
        self.transports[queue.transport].throttles += 1;
        self.timers.add(
            revive,
            Timer::QueueRevive {
                queue: q,
                generation,
            },
        );
        let Some(dsn) = self.queues[q].dsn.clone() else {
            return;
        };
        self.defer_todo(q, &dsn);
    }

    pub(crate) fn defer_todo(&mut self, q: usize, dsn: &Dsn) {
        let retry = self.retry_queue(dsn);
        // Moving the last entry may delete a live queue.
        while let Some(queue) = self.queues.get(q) {
            let e = queue.todo.head;
            if e == NIL {
                break;
            }
            match retry {
                Some(rq) if rq != q => self.entry_move_todo(rq, e),
                _ => self.entry_defer(e, dsn),
            }
        }
    }

    pub(crate) fn queue_unthrottle(&mut self, q: usize) {
        let t = self.queues[q].transport;
        let was_dead = self.queues[q].is_dead();
        let cfg = &self.transports[t].cfg;
        self.queues[q].unthrottle(cfg);
        if was_dead {
            self.queues[q].generation = self.fresh();
        }
        self.refresh(q);
    }

    /// A transport broke (`qmgr_transport_throttle()` and
    /// `qmgr_defer_transport()`): it is dead for `transport_retry_time`,
    /// and what waits for it goes to `retry`.
    fn transport_throttle(&mut self, t: usize, dsn: Dsn) {
        if self.transports[t].is_dead() {
            return;
        }
        let tr = &mut self.transports[t];
        tr.rate_locked = false;
        tr.dsn = Some(dsn.clone());
        tr.generation = tr.generation.wrapping_add(1);
        let generation = tr.generation;
        self.timers.add(
            self.now + self.cfg.transport_retry_time,
            Timer::TransportRevive {
                transport: t,
                generation,
            },
        );
        let mut queues: Vec<usize> = self.transports[t].queues.values().copied().collect();
        // HashMap order differs between runs; sorted, every run of the
        // same events makes the same decisions.
        queues.sort_unstable();
        for q in queues {
            if self.queues.contains(q) {
                self.defer_todo(q, &dsn);
                self.maybe_queue_done(q);
            }
        }
    }

    /// A delivery went through without the agent failing
    /// (`qmgr_transport_unthrottle()`): a dead transport lives again, and
    /// the rate lock is always released.
    pub(crate) fn transport_unthrottle(&mut self, t: usize) {
        let tr = &mut self.transports[t];
        tr.rate_locked = false;
        if tr.dsn.take().is_some() {
            tr.generation = tr.generation.wrapping_add(1);
        }
    }

    pub(crate) fn fire(&mut self, timer: Timer) {
        match timer {
            Timer::QueueRevive { queue, generation } => {
                if self
                    .queues
                    .get(queue)
                    .is_some_and(|q| q.generation == generation && q.is_dead())
                {
                    self.queue_unthrottle(queue);
                    self.maybe_queue_done(queue);
                }
            }
            Timer::QueueResume { queue, generation } => {
                if let Some(q) = self.queues.get_mut(queue) {
                    if q.generation == generation && q.suspended {
                        q.suspended = false;
                        self.refresh(queue);
                        self.maybe_queue_done(queue);
                    }
                }
            }
            Timer::TransportRevive {
                transport,
                generation,
            } => {
                if self.transports[transport].generation == generation {
                    self.transport_unthrottle(transport);
                }
            }
            Timer::TransportHandoff { conn } => self.hand_off(conn),
        }
    }

    /// Like the `F` trigger for one transport, or one of its destinations
    /// (`nexthop`, matched as [`crate::DestinationSelect::One`] matches):
    /// what is dead comes back now. Returns how many destinations were
    /// dead, plus one if the transport was.
    pub(crate) fn unthrottle_one(&mut self, transport: &[u8], nexthop: Option<&[u8]>) -> usize {
        let Some(&t) = self.transport_ids.get(transport) else {
            return 0;
        };
        let mut revived = 0;
        let queues: Vec<usize> = match nexthop {
            None => {
                if self.transports[t].is_dead() {
                    self.transport_unthrottle(t);
                    revived += 1;
                }
                let mut all: Vec<usize> = self.transports[t].queues.values().copied().collect();
                all.sort_unstable();
                all
            }
            Some(hop) => self.find_destinations(transport, hop, usize::MAX),
        };
        for q in queues {
            if self.queues[q].is_dead() {
                self.queue_unthrottle(q);
                revived += 1;
            }
            self.maybe_queue_done(q);
        }
        revived
    }

    /// An operator's new limit for `transport`; see
    /// [`crate::Scheduler::set_transport_limit`].
    pub(crate) fn set_limit(&mut self, transport: &[u8], limit: LiveLimit) -> Result<(), String> {
        // A transport not used yet gets the limit for when it is (an
        // override restored at start-up comes before any mail).
        let t = self.transport_id(transport);
        let configured = (self.cfg.transports)(transport);
        let cfg = &mut self.transports[t].cfg;
        match limit {
            LiveLimit::Concurrency(n) => {
                if !cfg.dest_rate_delay.is_zero() && n != 1 {
                    return Err("a rate-delayed transport delivers one at a time".to_owned());
                }
                cfg.dest_concurrency_limit = n;
            }
            LiveLimit::RateDelay(d) => {
                // Without a delay the configured concurrency applies again.
                if d.is_zero() && !cfg.dest_rate_delay.is_zero() {
                    cfg.dest_concurrency_limit = configured.dest_concurrency_limit;
                    cfg.init_dest_concurrency = configured.init_dest_concurrency;
                }
                cfg.dest_rate_delay = d;
            }
            LiveLimit::RecipientLimit(n) => {
                // One recipient per delivery also means one queue per
                // recipient: queues in core could not follow the change.
                if (n == 1) != (cfg.dest_recipient_limit == 1) {
                    return Err("a recipient limit cannot be changed to or from 1 live".to_owned());
                }
                cfg.dest_recipient_limit = n;
            }
        }
        *cfg = cfg.clone().normalized();
        let mut queues: Vec<usize> = self.transports[t].queues.values().copied().collect();
        queues.sort_unstable();
        for q in queues {
            self.cap_window(q);
        }
        Ok(())
    }

    /// Defers every waiting entry of queue `q` on the spot, with `dsn`
    /// (an operator's hold: not by way of `retry`, whose agent would
    /// only defer them too, and later).
    pub(crate) fn defer_todo_here(&mut self, q: usize, dsn: &Dsn) {
        // Deferring the last entry may delete a live queue.
        while let Some(queue) = self.queues.get(q) {
            let e = queue.todo.head;
            if e == NIL {
                break;
            }
            self.entry_defer(e, dsn);
        }
    }

    /// The `F` trigger (`qmgr_enable_all()`): every dead transport and
    /// destination comes back now.
    pub(crate) fn flush_dead(&mut self) {
        for t in 0..self.transports.len() {
            self.transport_unthrottle(t);
            let mut queues: Vec<usize> = self.transports[t].queues.values().copied().collect();
            // HashMap order differs between runs; sorted, every run of the
            // same events makes the same decisions.
            queues.sort_unstable();
            for q in queues {
                if self.queues[q].is_dead() {
                    self.queue_unthrottle(q);
                }
                self.maybe_queue_done(q);
            }
        }
    }
}
