//! The queue manager's scheduler: which recipients go to which delivery
//! agent, and when.
//!
//! # Brief overview
//! This crate is the pure core of rqmgr. It performs no I/O and reads no
//! clock: the daemon feeds it [`Event`]s with the current [`Time`], takes
//! [`Action`]s from [`Scheduler::poll_action`], and wakes it at
//! [`Scheduler::poll_timeout`]. Everything it decides can therefore be
//! replayed in a simulation (see the `rqmgr-sim` crate).
//!
//! The model is Postfix's: a *transport* (master.cf service) owns
//! destination *queues* (one per next hop); a queue holds *entries*, each
//! a group of up to `_destination_recipient_limit` recipients of one
//! message. Deliveries go out round robin across transports and across
//! each transport's destinations, within each destination's concurrency
//! window, which slow start and feedback move (see [`queue`]).
//!
//! # Invariants
//! - A destination never has more deliveries busy than its window.
//! - No transport has more than two connection attempts pending.
//! - Every recipient handed in by [`Event::Message`] leaves in exactly one
//!   [`Action::Deliver`] or [`Action::DeferRecipient`], and every message
//!   handed in ends with exactly one [`Action::MessageDone`] (after any
//!   number of [`Action::Refill`]s).
//!
//! # Failure
//! Events that name unknown connections or messages are ignored (a
//! daemon bug, not bad input, but not worth a crash of the mail system);
//! a broken internal invariant panics with the state it found.
//!
//! # Limits
//! Preemptive job scheduling (Postfix's `qmgr_job.c`) is not here yet:
//! within a transport, destinations are served round robin and each
//! destination's entries first in, first out, which is oqmgr's strategy.

#![forbid(unsafe_code)]

pub mod config;
pub mod event;
mod queue;
pub mod retry;
pub mod time;
mod transport;

use std::collections::{HashMap, VecDeque};

use slab::Slab;

pub use config::{Config, Feedback, TransportConfig};
pub use event::{Action, ConnId, Dsn, Event, MessageId, Outcome, Route};
pub use time::Time;

use queue::DestQueue;
use retry::{Timer, Timers};
use transport::Transport;

/// The `retry` pseudo-transport: error(8) deferring with a saved reason.
pub const RETRY_TRANSPORT: &str = "retry";
/// The `error` pseudo-transport: error(8) bouncing.
pub const ERROR_TRANSPORT: &str = "error";

/// A group of recipients of one message for one destination.
#[derive(Debug)]
struct Entry {
    msg: MessageId,
    queue: usize,
    rcpts: Vec<u32>,
}

/// What the core remembers of a message in the active queue.
#[derive(Debug, Default)]
struct Message {
    /// Entries not yet done.
    entries: u32,
    /// In-core recipients (in entries not yet done).
    rcpts: u32,
    deferred: bool,
    more: bool,
}

/// A connection to a delivery agent.
#[derive(Debug)]
struct Conn {
    transport: usize,
    entry: Option<usize>,
}

/// The scheduler. See the crate documentation.
pub struct Scheduler {
    cfg: Config,
    transports: Vec<Transport>,
    transport_ids: HashMap<String, usize>,
    /// Round-robin position over `transports`.
    transport_cursor: usize,
    queues: Slab<DestQueue>,
    entries: Slab<Entry>,
    messages: HashMap<MessageId, Message>,
    conns: HashMap<ConnId, Conn>,
    next_conn: u64,
    recipients: usize,
    actions: VecDeque<Action>,
    timers: Timers,
    /// Source of queue generations and round-robin tickets.
    serial: u64,
    now: Time,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("messages", &self.messages.len())
            .field("recipients", &self.recipients)
            .field("queues", &self.queues.len())
            .field("entries", &self.entries.len())
            .field("conns", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler with nothing in it.
    pub fn new(cfg: Config) -> Scheduler {
        Scheduler {
            cfg,
            transports: Vec::new(),
            transport_ids: HashMap::new(),
            transport_cursor: 0,
            queues: Slab::new(),
            entries: Slab::new(),
            messages: HashMap::new(),
            conns: HashMap::new(),
            next_conn: 0,
            recipients: 0,
            actions: VecDeque::new(),
            timers: Timers::default(),
            serial: 0,
            now: Time::ZERO,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Messages in the active queue.
    pub fn message_count(&self) -> usize {
        self.messages.len()
    }

    /// Recipients held in core.
    pub fn recipient_count(&self) -> usize {
        self.recipients
    }

    /// The leaky bucket: may another message enter the active queue?
    pub fn can_accept_message(&self) -> bool {
        self.messages.len() < self.cfg.message_active_limit
            && (self.cfg.preemptive || self.recipients < self.cfg.message_recipient_limit)
    }

    /// How many recipients the next read of a message may take into core:
    /// what is left of `qmgr_message_recipient_limit`, but at least
    /// `qmgr_message_recipient_minimum`, so that every message makes
    /// progress however full the active queue is.
    pub fn recipient_budget(&self) -> usize {
        let limit = self.cfg.message_recipient_limit;
        let limit = if self.cfg.preemptive {
            limit
        } else {
            // oqmgr reads a fudge-factor share of the limit per message.
            limit.saturating_mul(self.cfg.fudge_factor as usize) / 100
        };
        limit
            .saturating_sub(self.recipients)
            .max(self.cfg.message_recipient_minimum)
            .max(1)
    }

    /// When [`Scheduler::handle_timeout`] should next be called, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        self.timers.next_deadline()
    }

    /// The next thing to do, if any. Connections are requested lazily here,
    /// so that a burst of events is answered with one round of decisions.
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.actions.is_empty() {
            self.drain();
        }
        self.actions.pop_front()
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = self.now.max(now);
        while let Some(timer) = self.timers.pop_due(self.now) {
            self.fire(timer);
        }
    }

    /// Takes in one event.
    pub fn handle(&mut self, event: Event, now: Time) {
        self.now = self.now.max(now);
        match event {
            Event::Message {
                msg,
                routes,
                more,
                flush_each,
            } => self.message_arrived(msg, routes, more, flush_each),
            Event::AgentReady { conn } => self.agent_ready(conn),
            Event::AgentUnavailable { conn, dsn } => self.agent_unavailable(conn, dsn),
            Event::Delivered { conn, outcome } => self.delivered(conn, outcome),
            Event::FlushDead => self.flush_dead(),
        }
    }

    /// The transport's index, creating it on first use.
    fn transport_id(&mut self, name: &str) -> usize {
        if let Some(&id) = self.transport_ids.get(name) {
            return id;
        }
        let cfg = (self.cfg.transports)(name);
        let id = self.transports.len();
        self.transports.push(Transport::new(name.to_owned(), cfg));
        self.transport_ids.insert(name.to_owned(), id);
        id
    }

    /// The queue's key, creating it on first use.
    fn queue_id(&mut self, transport: usize, name: &str, nexthop: &str) -> usize {
        if let Some(&q) = self.transports[transport].queues.get(name) {
            return q;
        }
        let generation = self.fresh();
        let t = &self.transports[transport];
        let q = self.queues.insert(DestQueue::new(
            transport,
            name.to_owned(),
            nexthop.to_owned(),
            &t.cfg,
            generation,
        ));
        self.transports[transport].queues.insert(name.to_owned(), q);
        q
    }

    fn fresh(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    /// The live `retry` queue for this reason (`qmgr_error_queue()`), or
    /// None when the retry transport or that queue is dead too.
    fn retry_queue(&mut self, dsn: &Dsn) -> Option<usize> {
        let t = self.transport_id(RETRY_TRANSPORT);
        if self.transports[t].is_dead() {
            return None;
        }
        let nexthop = dsn.error_nexthop();
        let q = self.queue_id(t, &nexthop, &nexthop);
        (!self.queues[q].is_dead()).then_some(q)
    }

    /// The queue name for a recipient (`qmgr_message_resolve()`): the next
    /// hop, or for one-recipient transports `localpart@nexthop`, so that
    /// concurrency is limited per recipient; folded to lower case.
    fn queue_name(&self, transport: usize, route: &Route) -> String {
        let t = &self.transports[transport];
        let per_recipient = t.cfg.dest_recipient_limit == 1
            && t.name != ERROR_TRANSPORT
            && t.name != RETRY_TRANSPORT;
        if !per_recipient {
            return route.nexthop.to_lowercase();
        }
        let local = match route.address.rfind('@') {
            Some(at) => &route.address[..at],
            None => &route.address[..],
        };
        let delims = &self.cfg.recipient_delimiter;
        let local = if delims.is_empty() {
            local
        } else {
            match local.find(|c| delims.contains(c)) {
                Some(cut) if cut > 0 => &local[..cut],
                _ => local,
            }
        };
        format!("{}@{}", local, route.nexthop).to_lowercase()
    }

    fn message_arrived(
        &mut self,
        msg: MessageId,
        routes: Vec<Route>,
        more: bool,
        flush_each: bool,
    ) {
        self.messages.entry(msg).or_default().more = more;
        // Recipients with the same destination share entries, up to the
        // transport's per-delivery recipient limit.
        let mut open: HashMap<usize, usize> = HashMap::new();
        for route in routes {
            let Some(q) = self.bind_recipient(msg, &route, flush_each) else {
                continue;
            };
            let limit = self.transports[self.queues[q].transport]
                .cfg
                .dest_recipient_limit as usize;
            let e = match open.get(&q) {
                Some(&e) if limit == 0 || self.entries[e].rcpts.len() < limit => e,
                _ => {
                    let e = self.entries.insert(Entry {
                        msg,
                        queue: q,
                        rcpts: Vec::new(),
                    });
                    open.insert(q, e);
                    self.queues[q].todo.push_back(e);
                    if let Some(m) = self.messages.get_mut(&msg) {
                        m.entries += 1;
                    }
                    e
                }
            };
            self.entries[e].rcpts.push(route.rcpt);
            if let Some(m) = self.messages.get_mut(&msg) {
                m.rcpts += 1;
            }
            self.recipients += 1;
            self.refresh(q);
        }
        self.maybe_message_done(msg);
    }

    /// Finds the live queue for one recipient, redirecting around dead
    /// transports and destinations to `retry`; None if the recipient was
    /// deferred on the spot because even `retry` is dead.
    fn bind_recipient(&mut self, msg: MessageId, route: &Route, flush_each: bool) -> Option<usize> {
        let mut t = self.transport_id(&route.transport);
        if flush_each && self.transports[t].is_dead() {
            self.transport_unthrottle(t);
        }
        let mut nexthop_override = None;
        if let Some(dsn) = self.transports[t].dsn.clone() {
            let retry = self.transport_id(RETRY_TRANSPORT);
            if self.transports[retry].is_dead() {
                self.defer_recipient(msg, route.rcpt, dsn);
                return None;
            }
            t = retry;
            nexthop_override = Some(dsn.error_nexthop());
        }
        let (name, nexthop) = match nexthop_override {
            Some(nh) => (nh.to_lowercase(), nh),
            None => (self.queue_name(t, route), route.nexthop.clone()),
        };
        let q = self.queue_id(t, &name, &nexthop);
        if flush_each && self.queues[q].is_dead() {
            self.queue_unthrottle(q);
        }
        if let Some(dsn) = self.queues[q].dsn.clone() {
            return match self.retry_queue(&dsn) {
                Some(rq) => Some(rq),
                None => {
                    self.defer_recipient(msg, route.rcpt, dsn);
                    None
                }
            };
        }
        Some(q)
    }

    fn defer_recipient(&mut self, msg: MessageId, rcpt: u32, dsn: Dsn) {
        if let Some(m) = self.messages.get_mut(&msg) {
            m.deferred = true;
        }
        self.actions
            .push_back(Action::DeferRecipient { msg, rcpt, dsn });
    }

    /// Recomputes a queue's share of its transport's work and its place in
    /// the transport's round robin. Call after any change to the queue.
    fn refresh(&mut self, q: usize) {
        let ticket = self.serial + 1;
        let queue = &mut self.queues[q];
        let new = queue.available();
        let old = std::mem::replace(&mut queue.contribution, new);
        let t = &mut self.transports[queue.transport];
        t.available = t.available + u64::from(new) - u64::from(old);
        if new > 0 && queue.rr_ticket.is_none() {
            queue.rr_ticket = Some(ticket);
            t.rr.push_back((q, ticket));
            self.serial = ticket;
        }
    }

    /// Asks for agent connections while some transport has work
    /// (`qmgr_active_drain()` / `qmgr_transport_select()`), round robin.
    fn drain(&mut self) {
        let n = self.transports.len();
        let mut idle_in_a_row = 0;
        while n > 0 && idle_in_a_row < n {
            let t = self.transport_cursor % n;
            self.transport_cursor = (t + 1) % n;
            if !self.transports[t].wants_connection() {
                idle_in_a_row += 1;
                continue;
            }
            idle_in_a_row = 0;
            self.transports[t].pending += 1;
            let conn = ConnId(self.next_conn);
            self.next_conn += 1;
            self.conns.insert(
                conn,
                Conn {
                    transport: t,
                    entry: None,
                },
            );
            self.actions.push_back(Action::Connect {
                conn,
                transport: self.transports[t].name.clone(),
            });
        }
    }

    /// Picks the next entry of a transport: the first entry of the next
    /// destination in round-robin order that may take one more delivery.
    fn select_entry(&mut self, t: usize) -> Option<usize> {
        while let Some((q, ticket)) = self.transports[t].rr.pop_front() {
            let Some(queue) = self.queues.get_mut(q) else {
                continue;
            };
            if queue.rr_ticket != Some(ticket) {
                continue;
            }
            queue.rr_ticket = None;
            if queue.available() == 0 {
                continue;
            }
            let e = queue.todo.pop_front()?;
            queue.update_dest_flags(self.now);
            queue.busy += 1;
            self.refresh(q);
            return Some(e);
        }
        None
    }

    fn agent_ready(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let t = c.transport;
        let tr = &mut self.transports[t];
        tr.pending = tr.pending.saturating_sub(1);
        let entry = if tr.is_dead() {
            None
        } else {
            self.select_entry(t)
        };
        let Some(e) = entry else {
            self.conns.remove(&conn);
            self.actions.push_back(Action::Close { conn });
            return;
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.entry = Some(e);
        }
        let delay = self.transports[t].cfg.transport_rate_delay;
        if !delay.is_zero() {
            self.transports[t].rate_locked = true;
            self.timers
                .add(self.now + delay, Timer::TransportUnlock { transport: t });
        }
        let entry = &self.entries[e];
        let queue = &self.queues[entry.queue];
        self.actions.push_back(Action::Deliver {
            conn,
            msg: entry.msg,
            nexthop: queue.nexthop.clone(),
            rcpts: entry.rcpts.clone(),
            dest_flags: queue.dest_flags,
        });
    }

    fn agent_unavailable(&mut self, conn: ConnId, dsn: Dsn) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        let t = c.transport;
        match c.entry {
            // Failed while sending: the entry goes back to the head of its
            // queue, as if never selected (`qmgr_entry_unselect()`).
            Some(e) => {
                let q = self.entries[e].queue;
                let queue = &mut self.queues[q];
                queue.busy = queue.busy.saturating_sub(1);
                queue.todo.push_front(e);
                self.refresh(q);
            }
            None => {
                let tr = &mut self.transports[t];
                tr.pending = tr.pending.saturating_sub(1);
            }
        }
        self.transport_throttle(t, dsn);
    }

    fn delivered(&mut self, conn: ConnId, outcome: Outcome) {
        let Some(Conn {
            transport: t,
            entry: Some(e),
        }) = self.conns.remove(&conn)
        else {
            return;
        };
        let q = self.entries[e].queue;
        let msg = self.entries[e].msg;
        let crashed = matches!(outcome, Outcome::Crashed);
        let mut blamed_site = false;
        if !matches!(outcome, Outcome::Final) {
            if let Some(m) = self.messages.get_mut(&msg) {
                m.deferred = true;
            }
        }
        if let Outcome::Deferred { site: Some(dsn) } = &outcome {
            blamed_site = true;
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
                self.queue_unthrottle(q);
            }
        }
        self.entry_done(e, true);
    }

    /// Removes a finished (or moved-away) entry (`qmgr_entry_done()`).
    fn entry_done(&mut self, e: usize, was_busy: bool) {
        let entry = self.entries.remove(e);
        let q = entry.queue;
        let t = self.queues[q].transport;
        let n = u32::try_from(entry.rcpts.len()).unwrap_or(u32::MAX);
        self.recipients = self.recipients.saturating_sub(entry.rcpts.len());
        if let Some(m) = self.messages.get_mut(&entry.msg) {
            m.rcpts = m.rcpts.saturating_sub(n);
            m.entries = m.entries.saturating_sub(1);
        }
        if was_busy {
            let queue = &mut self.queues[q];
            queue.busy = queue.busy.saturating_sub(1);
            queue.last_done = Some(self.now);
            let delay = self.transports[t].cfg.dest_rate_delay;
            if !delay.is_zero() {
                if self.queues[q].is_dead() {
                    self.queue_unthrottle(q);
                }
                let queue = &mut self.queues[q];
                if queue.window > 0 && !queue.suspended {
                    queue.suspended = true;
                    let generation = queue.generation;
                    self.timers.add(
                        self.now + delay,
                        Timer::QueueResume {
                            queue: q,
                            generation,
                        },
                    );
                }
            }
        }
        self.refresh(q);
        self.maybe_queue_done(q);
        self.maybe_message_done(entry.msg);
    }

    /// Deletes a live, idle, empty queue (`qmgr_queue_done()`); dead and
    /// suspended queues stay until their timers fire, to remember why.
    fn maybe_queue_done(&mut self, q: usize) {
        let queue = &self.queues[q];
        if queue.is_empty() && queue.is_ready() {
            let queue = self.queues.remove(q);
            let t = &mut self.transports[queue.transport];
            t.available -= u64::from(queue.contribution);
            t.queues.remove(&queue.name);
        }
    }

    fn maybe_message_done(&mut self, msg: MessageId) {
        let Some(m) = self.messages.get(&msg) else {
            return;
        };
        if m.entries > 0 {
            return;
        }
        if m.more {
            // The message stays active while its next recipients are read.
            if let Some(m) = self.messages.get_mut(&msg) {
                m.more = false;
            }
            self.actions.push_back(Action::Refill { msg });
            return;
        }
        let deferred = m.deferred;
        self.messages.remove(&msg);
        self.actions
            .push_back(Action::MessageDone { msg, deferred });
    }

    /// A destination just died: move its waiting entries to `retry`
    /// (`qmgr_defer_todo()`), and schedule its revival.
    fn queue_died(&mut self, q: usize) {
        let generation = self.fresh();
        self.queues[q].generation = generation;
        self.timers.add(
            self.now + self.cfg.min_backoff,
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

    fn defer_todo(&mut self, q: usize, dsn: &Dsn) {
        let retry = self.retry_queue(dsn);
        let todo = std::mem::take(&mut self.queues[q].todo);
        self.refresh(q);
        for e in todo {
            match retry {
                Some(rq) if rq != q => {
                    self.entries[e].queue = rq;
                    self.queues[rq].todo.push_back(e);
                    self.refresh(rq);
                }
                _ => {
                    let msg = self.entries[e].msg;
                    for rcpt in self.entries[e].rcpts.clone() {
                        self.defer_recipient(msg, rcpt, dsn.clone());
                    }
                    // Not busy; count it out like a finished todo entry.
                    self.entry_done(e, false);
                }
            }
        }
    }

    fn queue_unthrottle(&mut self, q: usize) {
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
        let queues: Vec<usize> = self.transports[t].queues.values().copied().collect();
        for q in queues {
            self.defer_todo(q, &dsn);
            self.maybe_queue_done(q);
        }
    }

    fn transport_unthrottle(&mut self, t: usize) {
        let tr = &mut self.transports[t];
        if tr.dsn.take().is_some() {
            tr.generation = tr.generation.wrapping_add(1);
        }
    }

    fn fire(&mut self, timer: Timer) {
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
            Timer::TransportUnlock { transport } => {
                self.transports[transport].rate_locked = false;
            }
        }
    }

    /// The `F` trigger (`qmgr_enable_all()`): every dead transport and
    /// destination comes back now.
    fn flush_dead(&mut self) {
        for t in 0..self.transports.len() {
            self.transport_unthrottle(t);
            let queues: Vec<usize> = self.transports[t].queues.values().copied().collect();
            for q in queues {
                if self.queues[q].is_dead() {
                    self.queue_unthrottle(q);
                }
                self.maybe_queue_done(q);
            }
        }
    }
}

#[cfg(test)]
mod tests;
