//! Deterministic simulation of the scheduler (`rqmgr-sched`).
//!
//! Job: play everything around the pure scheduler core — the daemon that
//! reads queue files, master(8) with its delivery agents, the clock — so
//! that hours of queue manager life run in milliseconds and any run can be
//! replayed exactly. The shape is that of quinn's test `Pair`: a virtual
//! clock, an event queue ordered by virtual time, [`Sim::step`] to do one
//! thing and [`Sim::drive`] to run until nothing is left.
//!
//! The driver honours the scheduler's contract:
//! - `Connect` → after the transport's connect latency, `AgentReady` (or
//!   `AgentUnavailable` if the world refuses it); with a process limit a
//!   connection first waits for a free agent process;
//! - `Deliver` → after the destination's latency, `Delivered` with the
//!   world's outcome; `Close` frees the connection;
//! - `Refill` → the next batch of that message's recipients, at most
//!   [`Scheduler::refill_budget`] of them (the driver keeps each
//!   message's full recipient list, as the queue file does), followed by
//!   `MessageInfo` with the count still unread while more remain;
//! - `MessageDone` → the message leaves; new messages enter only while
//!   [`Scheduler::can_accept_message`] (the leaky bucket), and the first
//!   batch of each is also at most the budget;
//! - `handle_timeout` whenever `poll_timeout` is due.
//!
//! Invariants checked as it runs (breaches go to
//! [`Record::violations`], never panics): deliveries only on ready idle
//! connections; each recipient handed out once and finished once; no
//! queue above its concurrency limit, nor above its initial concurrency
//! plus the positive feedback it has had (a bound on its window); at most
//! two connection attempts pending per transport; the active queue within
//! `qmgr_message_active_limit`; in-core recipients as the driver counts
//! them; a message done only once, with all recipients read and finished
//! and the right deferred flag.
//!
//! Limits: one outcome per request for all its recipients; deferred
//! messages are not re-queued (a run is one pass through the active
//! queue); no I/O latency for queue-file reads.

mod actions;
mod feeding;
pub mod record;
pub mod workload;
pub mod world;

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use rqmgr_sched::{
    Action, ByteString, ConnId, Dsn, Event, MessageId, Outcome, Route, Scheduler, Time,
    TransportConfig, ERROR_TRANSPORT, RETRY_TRANSPORT,
};

pub use record::{Completion, DeliveryRecord, DestKey, DestStats, Fate, Record};
pub use workload::MessageSpec;
pub use world::{AgentOutcome, ConnectOutcome, DestProfile, TransportProfile, World};

/// Postfix's `QMGR_TRANSPORT_MAX_PEND`: connection attempts a transport
/// may have outstanding (see qmgr_transport.c).
pub const MAX_PENDING_CONNECTS: usize = 2;

/// Why [`Sim::drive`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Every message arrived, entered, and completed; nothing is pending.
    Idle,
    /// Nothing more can happen, yet work remains: a hang.
    Stuck,
    /// The virtual time limit was reached.
    TimeLimit,
    /// The step limit was reached.
    StepLimit,
}

/// Bounds on a run, so that a scheduler bug cannot hang a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Stop once the clock passes this.
    pub max_time: Time,
    /// Stop after this many steps.
    pub max_steps: u64,
}

impl Default for Limits {
    /// Thirty virtual days and a hundred million steps.
    fn default() -> Self {
        Limits {
            max_time: Time::from_secs(30 * 86_400),
            max_steps: 100_000_000,
        }
    }
}

/// Something the world will tell the scheduler at a given time.
#[derive(Debug)]
enum WorldEvent {
    AgentReady(ConnId),
    AgentUnavailable(ConnId, Dsn),
    Delivered {
        conn: ConnId,
        delivery: usize,
        outcome: Outcome,
        fate: Fate,
    },
    FlushDead,
}

/// A world event with its time; ordered earliest first, then FIFO.
#[derive(Debug)]
struct Pending {
    at: Time,
    seq: u64,
    event: WorldEvent,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, we want the earliest.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Per-recipient bookkeeping of the simulated queue file.
#[derive(Clone, Copy, Debug, Default)]
struct RcptState {
    handed_in: bool,
    dispatched: u8,
    fate: Option<Fate>,
    fates: u8,
}

/// A message as the simulated daemon holds it.
#[derive(Debug)]
struct SimMessage {
    routes: Vec<Route>,
    rcpts: Vec<RcptState>,
    /// Recipients read so far (the queue file's read offset).
    next: usize,
    in_flight: u32,
    done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    /// Waiting for an agent process (process limit reached).
    Queued,
    Connecting,
    Ready,
    Busy,
}

#[derive(Debug)]
struct SimConn {
    transport: ByteString,
    state: ConnState,
    /// Whether it holds an agent process.
    has_process: bool,
}

/// Per-transport state of the world.
#[derive(Debug, Default)]
struct SimTransport {
    cfg: Option<TransportConfig>,
    pending_connects: usize,
    processes: usize,
    waiting: VecDeque<ConnId>,
    connect_attempts: usize,
}

/// The simulation: a scheduler, the world around it, and the record.
pub struct Sim {
    sched: Scheduler,
    world: World,
    now: Time,
    limits: Limits,
    steps: u64,
    seq: u64,
    events: BinaryHeap<Pending>,
    incoming: VecDeque<MessageSpec>,
    messages: HashMap<MessageId, SimMessage>,
    conns: HashMap<ConnId, SimConn>,
    transports: HashMap<ByteString, SimTransport>,
    /// Attempts per next hop, to cycle through its outcomes.
    attempts: HashMap<ByteString, usize>,
    /// Recipients handed in and not finished: what the scheduler's
    /// `recipient_count()` must say whenever its actions are drained.
    outstanding: usize,
    /// Messages entered and not done.
    active: usize,
    /// In-core recipients per destination, kept only with share tracking.
    shares: Option<HashMap<DestKey, usize>>,
    record: Record,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .field("steps", &self.steps)
            .field("events", &self.events.len())
            .field("incoming", &self.incoming.len())
            .field("active", &self.active)
            .field("outstanding", &self.outstanding)
            .field("sched", &self.sched)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// A simulation of `sched` in `world`, starting at `start`.
    pub fn new(sched: Scheduler, world: World, start: Time) -> Sim {
        Sim {
            sched,
            world,
            now: start,
            limits: Limits {
                max_time: start + std::time::Duration::from_secs(30 * 86_400),
                ..Limits::default()
            },
            steps: 0,
            seq: 0,
            events: BinaryHeap::new(),
            incoming: VecDeque::new(),
            messages: HashMap::new(),
            conns: HashMap::new(),
            transports: HashMap::new(),
            attempts: HashMap::new(),
            outstanding: 0,
            active: 0,
            shares: None,
            record: Record::default(),
        }
    }

    /// Replaces the run's bounds.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Tracks each destination's share of the in-core recipients (for
    /// site hog tests); costs a pass over destinations per batch read.
    pub fn track_shares(&mut self) {
        self.shares = Some(HashMap::new());
    }

    /// The virtual clock.
    pub fn now(&self) -> Time {
        self.now
    }

    /// The scheduler, to read its public counters.
    pub fn sched(&self) -> &Scheduler {
        &self.sched
    }

    /// The world, to change behaviour mid-run.
    pub fn world_mut(&mut self) -> &mut World {
        &mut self.world
    }

    /// What happened so far.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Puts messages into the incoming queue (kept in arrival order;
    /// equal arrival times keep submission order).
    pub fn submit(&mut self, specs: impl IntoIterator<Item = MessageSpec>) {
        for spec in specs {
            let pos = self.incoming.partition_point(|s| s.arrival <= spec.arrival);
            self.incoming.insert(pos, spec);
        }
    }

    /// Sends the `F` trigger (`postqueue -f`/`postfix flush`) at `at`.
    pub fn flush_dead_at(&mut self, at: Time) {
        self.push(at, WorldEvent::FlushDead);
    }

    /// Nothing pending anywhere: all mail arrived, entered and left.
    pub fn is_idle(&self) -> bool {
        self.events.is_empty()
            && self.incoming.is_empty()
            && self.active == 0
            && self.sched.message_count() == 0
    }

    /// Runs until idle or a limit, and says which.
    pub fn drive(&mut self) -> Stop {
        loop {
            if self.now > self.limits.max_time {
                return Stop::TimeLimit;
            }
            if self.steps >= self.limits.max_steps {
                return Stop::StepLimit;
            }
            if !self.step_bounded(None) {
                return if self.is_idle() {
                    Stop::Idle
                } else {
                    Stop::Stuck
                };
            }
        }
    }

    /// Runs everything due up to `until`, then sets the clock to it.
    /// Returns false if the step limit stopped it first.
    pub fn run_until(&mut self, until: Time) -> bool {
        while self.step_bounded(Some(until)) {
            if self.steps >= self.limits.max_steps {
                return false;
            }
        }
        self.now = self.now.max(until);
        true
    }

    /// Does one thing: feeds waiting messages, carries out the
    /// scheduler's actions, then reports one due world event or fires due
    /// timers, else moves the clock to the next thing to happen. Returns
    /// false when nothing can happen any more.
    pub fn step(&mut self) -> bool {
        self.step_bounded(None)
    }

    fn step_bounded(&mut self, horizon: Option<Time>) -> bool {
        self.steps += 1;
        let mut did = self.feed();
        did |= self.drain_actions();
        if did {
            return true;
        }
        if self.events.peek().is_some_and(|p| p.at <= self.now) {
            if let Some(p) = self.events.pop() {
                self.apply(p.event);
            }
            return true;
        }
        if self.sched.poll_timeout().is_some_and(|t| t <= self.now) {
            self.sched.handle_timeout(self.now);
            if self.sched.poll_timeout().is_some_and(|t| t <= self.now) {
                self.violate(format!(
                    "handle_timeout({:?}) left a deadline due: {:?}",
                    self.now,
                    self.sched.poll_timeout()
                ));
            }
            return true;
        }
        let next = [
            self.events.peek().map(|p| p.at),
            self.sched.poll_timeout().filter(|&t| t > self.now),
            self.incoming
                .front()
                .map(|s| s.arrival)
                .filter(|&t| t > self.now),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(t) if within(t, horizon) => {
                self.now = t;
                true
            }
            _ => false,
        }
    }

    fn push(&mut self, at: Time, event: WorldEvent) {
        self.seq += 1;
        self.events.push(Pending {
            at,
            seq: self.seq,
            event,
        });
    }

    fn violate(&mut self, what: String) {
        // Keep the log bounded: a broken invariant usually repeats.
        if self.record.violations.len() < 1000 {
            self.record
                .violations
                .push(format!("at {}us: {what}", self.now.as_micros()));
        }
    }

    fn transport_cfg(&mut self, name: &[u8]) -> TransportConfig {
        let lookup = &self.sched.config().transports;
        let t = self.transports.entry(name.into()).or_default();
        t.cfg
            .get_or_insert_with(|| lookup(name).normalized())
            .clone()
    }

    /// The scheduler queue a recipient lands in, named as
    /// `qmgr_message_resolve()` names it: the next hop, or `user@nexthop`
    /// for transports with a recipient limit of 1; ASCII letters folded.
    fn dest_key(&mut self, transport: &[u8], nexthop: &[u8], address: &[u8]) -> DestKey {
        let per_rcpt = transport != RETRY_TRANSPORT.as_bytes()
            && transport != ERROR_TRANSPORT.as_bytes()
            && self.transport_cfg(transport).dest_recipient_limit == 1;
        if !per_rcpt {
            return DestKey::new(transport, nexthop.to_ascii_lowercase());
        }
        let local = address
            .iter()
            .rposition(|&b| b == b'@')
            .map_or(address, |at| &address[..at]);
        let delims = self.sched.config().recipient_delimiter.as_bytes();
        let local = match local.iter().position(|b| delims.contains(b)) {
            Some(cut) if cut > 0 => &local[..cut],
            _ => local,
        };
        let mut queue = [local, b"@", nexthop].concat();
        queue.make_ascii_lowercase();
        DestKey::new(transport, queue)
    }

    /// Checks the end state of a finished run: every message that entered
    /// completed exactly once, every recipient was read, handed out once
    /// and finished once. Returns the problems found (empty if none),
    /// together with [`Record::violations`].
    pub fn audit(&self) -> Vec<String> {
        let mut problems = self.record.violations.clone();
        let mut ids: Vec<_> = self.messages.keys().copied().collect();
        ids.sort();
        for id in ids {
            let Some(m) = self.messages.get(&id) else {
                continue;
            };
            if !m.done {
                problems.push(format!("{id} never completed"));
            }
            for (i, r) in m.rcpts.iter().enumerate() {
                if !r.handed_in || r.dispatched != 1 || r.fates != 1 {
                    problems.push(format!(
                        "{id} recipient {i}: handed in {}, handed out {}x, finished {}x",
                        r.handed_in, r.dispatched, r.fates
                    ));
                }
            }
        }
        let mut done: HashMap<MessageId, usize> = HashMap::new();
        for c in &self.record.completions {
            *done.entry(c.msg).or_default() += 1;
        }
        for (id, n) in done {
            if n != 1 {
                problems.push(format!("{id} completed {n} times"));
            }
        }
        if !self.incoming.is_empty() {
            problems.push(format!("{} messages never entered", self.incoming.len()));
        }
        problems
    }
}

/// Whether `t` is at or before the horizon (no horizon: always).
fn within(t: Time, horizon: Option<Time>) -> bool {
    match horizon {
        Some(h) => t <= h,
        None => true,
    }
}
