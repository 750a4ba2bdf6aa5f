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
//! The model is Postfix's, and the modules are named after its concepts:
//! a *transport* (master.cf service, [`transport`]) owns destination
//! *queues* (one per next hop, [`queue`]); a queue holds *entries*
//! ([`entry`]), each a group of up to `_destination_recipient_limit`
//! recipients of one message ([`message`]). Connections are requested
//! round robin across transports. Within a transport the next entry is
//! chosen either as Postfix's qmgr does ([`Config::preemptive`]: *jobs*,
//! one per message and transport, served in arrival order with small jobs
//! preempting large ones, [`job`]; a job's share of a destination is a
//! *peer*, [`peer`]) or as oqmgr does (destinations round robin, each
//! destination first in, first out). Either way each destination's
//! concurrency window, which slow start and feedback move ([`feedback`]),
//! limits its busy deliveries. Messages leave or are refilled in
//! [`active`]. Names (transports, next hops, queues) are bytes
//! ([`ByteString`]), compared and passed on exactly, as Postfix does.
//! Operators see this state through read-only views of bounded cost
//! ([`Scheduler::totals`], [`Scheduler::transport_views`],
//! [`Scheduler::destination_views`], [`Scheduler::job_views`]; see
//! [`snapshot`]), and steer it with holds and limits of their own, and a
//! restarted daemon hands back what an earlier one learned
//! ([`Scheduler::hold`], [`Scheduler::set_destination_limit`],
//! [`Scheduler::learned`], [`Scheduler::restore`]; see [`control`]).
//! One question goes back to the daemon: whether reading another message
//! would only make it wait ([`Scheduler::ready_work_suffices`], from the
//! work ready for agents and the rate they take it; see `intake`).
//!
//! # Invariants
//! - A destination never has more deliveries busy than its window.
//! - No transport has more than two connection attempts pending.
//! - Every recipient handed in by [`Event::Message`] leaves in exactly one
//!   [`Action::Deliver`] or [`Action::DeferRecipient`], and every message
//!   handed in ends with exactly one [`Action::MessageDone`] (after any
//!   number of [`Action::Refill`]s, at most one outstanding at a time).
//!
//! # Failure
//! Events that name unknown connections or messages are ignored (a
//! daemon bug, not bad input, but not worth a crash of the mail system);
//! a broken internal invariant panics with the state it found.

#![forbid(unsafe_code)]

mod active;
mod bytestring;
mod config;
mod conn;
mod control;
mod entry;
mod event;
mod feedback;
mod hash;
mod intake;
mod job;
mod list;
mod message;
mod order;
mod peer;
mod queue;
mod retry;
mod snapshot;
mod time;
mod transport;

use std::collections::{HashMap, VecDeque};

use slab::Slab;

pub use bytestring::ByteString;
pub use config::{Config, Feedback, LiveLimit, TransportConfig, TransportLookup};
pub use control::{LearnedDestination, Target};
pub use event::{Action, ConnId, Dsn, Event, MessageId, Outcome, Route};
pub use hash::{FxHashMap, FxHasher};
pub use intake::RECHECK;
pub use retry::next_attempt;
pub use snapshot::{
    DestinationCounts, DestinationSelect, DestinationState, DestinationView, JobView, Totals,
    TransportView,
};
pub use time::Time;

use conn::{Conn, Conns};
use control::Controls;
use entry::Entry;
use job::Job;
use list::{ix, NIL};
use message::Message;
use peer::Peer;
use queue::DestQueue;
use retry::{Timer, Timers};
use transport::Transport;

/// The `retry` pseudo-transport: error(8) deferring with a saved reason.
pub const RETRY_TRANSPORT: &str = "retry";
/// The `error` pseudo-transport: error(8) bouncing.
pub const ERROR_TRANSPORT: &str = "error";

/// The scheduler. See the crate documentation.
pub struct Scheduler {
    cfg: Config,
    /// Refills may be asked for while deliveries are busy.
    early_refill: bool,
    transports: Vec<Transport>,
    transport_ids: HashMap<ByteString, usize>,
    /// Round-robin position over `transports`.
    transport_cursor: usize,
    queues: Slab<DestQueue>,
    entries: Slab<Entry>,
    peers: Slab<Peer>,
    jobs: Slab<Job>,
    messages: Slab<Message>,
    message_ids: FxHashMap<MessageId, u32>,
    conns: Conns,
    next_conn: u64,
    recipients: usize,
    actions: VecDeque<Action>,
    timers: Timers,
    /// Source of queue generations and round-robin tickets.
    serial: u64,
    /// Source of peer stamps.
    stamp: u32,
    /// State of the job trees' priority generator.
    prio_state: u64,
    now: Time,
    /// Operators' holds and limits, and restored windows.
    controls: Controls,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("messages", &self.messages.len())
            .field("recipients", &self.recipients)
            .field("queues", &self.queues.len())
            .field("entries", &self.entries.len())
            .field("jobs", &self.jobs.len())
            .field("peers", &self.peers.len())
            .field("conns", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler with nothing in it.
    pub fn new(cfg: Config) -> Scheduler {
        Scheduler {
            cfg,
            early_refill: false,
            transports: Vec::new(),
            transport_ids: HashMap::new(),
            transport_cursor: 0,
            queues: Slab::new(),
            entries: Slab::new(),
            peers: Slab::new(),
            jobs: Slab::new(),
            messages: Slab::new(),
            message_ids: FxHashMap::default(),
            conns: Conns::default(),
            next_conn: 0,
            recipients: 0,
            actions: VecDeque::new(),
            timers: Timers::default(),
            serial: 0,
            stamp: 0,
            prio_state: 0x9e37_79b9_7f4a_7c15,
            now: Time::ZERO,
            controls: Controls::default(),
        }
    }

    /// Lets the scheduler ask for a message's next recipients
    /// ([`Action::Refill`]) while some of its deliveries are still busy, as
    /// Postfix does (see the `active` module). Off by default: the caller
    /// must then keep recipient indexes unique across the batches of one
    /// message, and must not finish the message (bounce flush) on such a
    /// refill; [`Scheduler::has_deliveries`] tells the two kinds apart.
    pub fn set_early_refill(&mut self, on: bool) {
        self.early_refill = on;
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// An operator's `rqmgrctl unthrottle`: the dead `transport`, or its
    /// dead destination `nexthop`, comes back now, as with the `F` trigger
    /// but for that one only. Returns how many were dead (0: nothing to
    /// do, or unknown).
    pub fn unthrottle(&mut self, transport: &[u8], nexthop: Option<&[u8]>, now: Time) -> usize {
        self.now = self.now.max(now);
        self.unthrottle_one(transport, nexthop)
    }

    /// An operator's `rqmgrctl set TRANSPORT ...`: a new limit for the
    /// transport, in force at once. A lower concurrency limit shrinks the
    /// windows above it (what is in flight finishes); a recipient limit
    /// applies to entries made from now on. A transport not used yet is
    /// made with the limit. An error, and no change, for a change the
    /// queues in core cannot follow.
    pub fn set_transport_limit(
        &mut self,
        transport: &[u8],
        limit: LiveLimit,
        now: Time,
    ) -> Result<(), String> {
        self.now = self.now.max(now);
        self.set_limit(transport, limit)
    }

    /// Messages in the active queue.
    pub fn message_count(&self) -> usize {
        self.messages.len()
    }

    /// Recipients held in core.
    pub fn recipient_count(&self) -> usize {
        self.recipients
    }

    /// The message still has in-core entries (waiting or being delivered);
    /// false for a message the scheduler does not know.
    pub fn has_deliveries(&self, msg: MessageId) -> bool {
        self.message_ids
            .get(&msg)
            .is_some_and(|&m| self.messages[m as usize].refcount > 0)
    }

    /// The leaky bucket: may another message enter the active queue?
    /// qmgr limits messages only; oqmgr also stops at
    /// `qmgr_message_recipient_limit` in-core recipients.
    pub fn can_accept_message(&self) -> bool {
        self.messages.len() < self.cfg.message_active_limit
            && (self.cfg.preemptive || self.recipients < self.cfg.message_recipient_limit)
    }

    /// How many recipients the first read of a new message may take into
    /// core. qmgr: what is left of `qmgr_message_recipient_limit`, but at
    /// least `qmgr_message_recipient_minimum` (so that every message makes
    /// progress however full the active queue is), and at most 5000 at a
    /// time. oqmgr: fudge-factor percent of the limit, per message.
    pub fn recipient_budget(&self) -> usize {
        self.first_read_budget()
    }

    /// How many recipients a refill of `msg` may read: under qmgr, the
    /// message's free recipient slots (at most 5000); under oqmgr as
    /// [`Scheduler::recipient_budget`]. For an unknown message, the
    /// first-read budget.
    pub fn refill_budget(&self, msg: MessageId) -> usize {
        self.message_budget(msg)
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
                single_rcpt,
            } => self.message_arrived(msg, routes, more, flush_each, single_rcpt),
            Event::MessageInfo { msg, unread } => self.message_info(msg, unread),
            Event::MessageAbandoned { msg } => self.message_abandoned(msg),
            Event::AgentReady { conn } => self.agent_ready(conn),
            Event::AgentUnavailable { conn, dsn } => self.agent_unavailable(conn, dsn),
            Event::Delivered { conn, outcome } => self.delivered(conn, outcome),
            Event::FlushDead => self.flush_dead(),
        }
    }

    /// The transport's index, creating it on first use.
    fn transport_id(&mut self, name: &[u8]) -> usize {
        if let Some(&id) = self.transport_ids.get(name) {
            return id;
        }
        let cfg = (self.cfg.transports)(name);
        let id = self.transports.len();
        self.transports.push(Transport::new(name.into(), cfg));
        self.transport_ids.insert(name.into(), id);
        id
    }

    /// The queue's key, creating it on first use.
    fn queue_id(&mut self, transport: usize, name: &[u8], nexthop: &[u8]) -> usize {
        if let Some(&q) = self.transports[transport].queues.get(name) {
            return q;
        }
        let generation = self.fresh();
        let t = &self.transports[transport];
        let q = self.queues.insert(DestQueue::new(
            transport,
            name.into(),
            nexthop.into(),
            &t.cfg,
            generation,
        ));
        ix(q);
        self.transports[transport].queues.insert(name.into(), q);
        self.dress_new_queue(q);
        q
    }

    fn fresh(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    /// The live `retry` queue for this reason (`qmgr_error_queue()`), or
    /// None when the retry transport or that queue is dead too.
    fn retry_queue(&mut self, dsn: &Dsn) -> Option<usize> {
        let t = self.transport_id(RETRY_TRANSPORT.as_bytes());
        if self.transports[t].is_dead() {
            return None;
        }
        let nexthop = dsn.error_nexthop();
        let q = self.queue_id(t, &nexthop, &nexthop);
        (!self.queues[q].is_dead()).then_some(q)
    }

    /// Recomputes a queue's share of its transport's work, its place in
    /// the transport's round robin (oqmgr), and wakes the peers parked on
    /// it (qmgr). Call after any change to the queue.
    fn refresh(&mut self, q: usize) {
        let ticket = self.serial + 1;
        let queue = &mut self.queues[q];
        let new = queue.available();
        let old = std::mem::replace(&mut queue.contribution, new);
        let ready = queue.ready_share();
        let old_ready = std::mem::replace(&mut queue.ready_contribution, ready);
        let t = &mut self.transports[queue.transport];
        t.available = t.available + u64::from(new) - u64::from(old);
        t.ready_backlog = t.ready_backlog + u64::from(ready) - u64::from(old_ready);
        if self.cfg.preemptive {
            self.queue_wake(q);
        } else if new > 0 && queue.rr_ticket.is_none() {
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
            // With a transport rate delay there is one delivery at a time:
            // no further connection until this one's delivery is over
            // (`qmgr_transport_alloc()`).
            if !self.transports[t].cfg.transport_rate_delay.is_zero() {
                self.transports[t].rate_locked = true;
            }
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

    /// The transport's next entry, selected and marked busy.
    fn select_entry(&mut self, t: usize) -> Option<u32> {
        if !self.cfg.preemptive {
            return self.queue_rr_select(t);
        }
        if let Some(e) = self.job_entry_select(t) {
            return Some(e);
        }
        if self.transports[t].available == 0 {
            return None;
        }
        // Some destination has room and work, yet no job found it: the
        // parking bookkeeping is out of step. Recover rather than leave
        // the transport asking for connections it cannot use.
        debug_assert!(false, "transport {t}: work available but no job selects it");
        self.transport_unpark_all(t);
        self.job_entry_select(t)
    }

    /// oqmgr's selection (`qmgr_queue_select()` + `qmgr_entry_select()`):
    /// the first entry of the next destination in round-robin order that
    /// may take one more delivery.
    fn queue_rr_select(&mut self, t: usize) -> Option<u32> {
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
            let e = queue.todo.head;
            if e == NIL {
                panic!("queue_rr_select: queue {q} available with empty todo");
            }
            self.entry_select(e);
            return Some(e);
        }
        None
    }

    fn agent_ready(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        let t = c.transport;
        let tr = &mut self.transports[t];
        tr.pending = tr.pending.saturating_sub(1);
        // The hand-off waits out the transport rate delay
        // (`qmgr_transport_event()`); the entry is chosen only then.
        let delay = tr.cfg.transport_rate_delay;
        if !delay.is_zero() {
            self.timers
                .add(self.now + delay, Timer::TransportHandoff { conn });
            return;
        }
        self.hand_off(conn);
    }

    /// Gives a ready agent its entry (`qmgr_deliver()`), or closes it.
    pub(crate) fn hand_off(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        let t = c.transport;
        let entry = if self.transports[t].is_dead() {
            None
        } else {
            self.select_entry(t)
        };
        let Some(e) = entry else {
            self.conns.remove(conn);
            // Nothing to send: release the rate lock, or the transport
            // would never be selected again.
            self.transports[t].rate_locked = false;
            self.actions.push_back(Action::Close { conn });
            return;
        };
        if let Some(c) = self.conns.get_mut(conn) {
            c.entry = Some(e);
        }
        self.transports[t].start_rate.record(self.now);
        let entry = &self.entries[e as usize];
        let queue = &self.queues[entry.queue as usize];
        self.actions.push_back(Action::Deliver {
            conn,
            msg: self.messages[entry.msg as usize].id,
            nexthop: queue.nexthop.clone(),
            rcpts: entry.rcpts.as_slice().to_vec(),
            dest_flags: queue.dest_flags,
        });
    }

    /// Deletes a live, idle, empty queue (`qmgr_queue_done()`); dead and
    /// suspended queues stay until their timers fire, to remember why.
    fn maybe_queue_done(&mut self, q: usize) {
        let Some(queue) = self.queues.get(q) else {
            return;
        };
        if queue.is_empty() && queue.is_ready() {
            let queue = self.queues.remove(q);
            let t = &mut self.transports[queue.transport];
            t.available -= u64::from(queue.contribution);
            t.ready_backlog -= u64::from(queue.ready_contribution);
            t.queues.remove(&queue.name);
        }
    }
}

#[cfg(test)]
mod tests;
