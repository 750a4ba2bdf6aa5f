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

pub mod record;
pub mod workload;
pub mod world;

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use rqmgr_sched::{
    Action, ConnId, Dsn, Event, MessageId, Outcome, Route, Scheduler, Time, TransportConfig,
    ERROR_TRANSPORT, RETRY_TRANSPORT,
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
    transport: String,
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
    transports: HashMap<String, SimTransport>,
    /// Attempts per next hop, to cycle through its outcomes.
    attempts: HashMap<String, usize>,
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

    fn transport_cfg(&mut self, name: &str) -> TransportConfig {
        let lookup = &self.sched.config().transports;
        let t = self.transports.entry(name.to_owned()).or_default();
        t.cfg
            .get_or_insert_with(|| lookup(name).normalized())
            .clone()
    }

    /// The scheduler queue a recipient lands in, named as
    /// `qmgr_message_resolve()` names it: the next hop, or `user@nexthop`
    /// for transports with a recipient limit of 1.
    fn dest_key(&mut self, transport: &str, nexthop: &str, address: &str) -> DestKey {
        let per_rcpt = transport != RETRY_TRANSPORT
            && transport != ERROR_TRANSPORT
            && self.transport_cfg(transport).dest_recipient_limit == 1;
        if !per_rcpt {
            return DestKey::new(transport, &nexthop.to_lowercase());
        }
        let local = address.rfind('@').map_or(address, |at| &address[..at]);
        let delims = &self.sched.config().recipient_delimiter;
        let local = match local.find(|c| !delims.is_empty() && delims.contains(c)) {
            Some(cut) if cut > 0 => &local[..cut],
            _ => local,
        };
        DestKey::new(transport, &format!("{local}@{nexthop}").to_lowercase())
    }

    /// Lets waiting messages into the active queue while the leaky bucket
    /// allows (`qmgr_active_feed()`).
    fn feed(&mut self) -> bool {
        let mut did = false;
        while self.incoming.front().is_some_and(|s| s.arrival <= self.now)
            && self.sched.can_accept_message()
        {
            let Some(spec) = self.incoming.pop_front() else {
                break;
            };
            if self.messages.contains_key(&spec.id) {
                self.violate(format!("workload reuses {}", spec.id));
                continue;
            }
            let n = spec.routes.len();
            self.messages.insert(
                spec.id,
                SimMessage {
                    routes: spec.routes,
                    rcpts: vec![RcptState::default(); n],
                    next: 0,
                    in_flight: 0,
                    done: false,
                },
            );
            self.active += 1;
            self.record.entered.push((self.now, spec.id));
            self.hand_batch(spec.id, false);
            let active = self.sched.message_count();
            self.record.max_active_messages = self.record.max_active_messages.max(active);
            let limit = self.sched.config().message_active_limit;
            if active > limit {
                self.violate(format!("{active} active messages, limit {limit}"));
            }
            did = true;
        }
        did
    }

    /// Reads the next batch of a message's recipients into the scheduler:
    /// at most the scheduler's budget, as `qmgr_message_realloc()` reads.
    fn hand_batch(&mut self, msg: MessageId, refill: bool) {
        let budget = if refill {
            self.sched.refill_budget(msg)
        } else {
            self.sched.recipient_budget()
        };
        let Some(m) = self.messages.get_mut(&msg) else {
            return;
        };
        let start = m.next;
        let end = m.routes.len().min(start.saturating_add(budget));
        m.next = end;
        let more = end < m.routes.len();
        for r in &mut m.rcpts[start..end] {
            r.handed_in = true;
        }
        let routes = m.routes[start..end].to_vec();
        let n = end - start;
        if self.shares.is_some() {
            for r in &routes {
                let key = self.dest_key(&r.transport, &r.nexthop, &r.address);
                if let Some(shares) = self.shares.as_mut() {
                    *shares.entry(key).or_default() += 1;
                }
            }
        }
        let before = self.sched.recipient_count();
        self.outstanding += n;
        self.sched.handle(
            Event::Message {
                msg,
                routes,
                more,
                flush_each: false,
                single_rcpt: false,
            },
            self.now,
        );
        if more {
            // What the daemon knows from the size record: how big the job
            // will get, for qmgr's preemption (`rcpt_unread`).
            let unread = u32::try_from(
                self.messages
                    .get(&msg)
                    .map_or(0, |m| m.routes.len() - m.next),
            )
            .unwrap_or(u32::MAX);
            self.sched
                .handle(Event::MessageInfo { msg, unread }, self.now);
        }
        let after = self.sched.recipient_count();
        self.record.max_in_core = self.record.max_in_core.max(after);
        if after > before + n {
            self.violate(format!(
                "{msg}: {n} recipients handed in, in-core count went {before} -> {after}"
            ));
        }
        // qmgr: the global limit, plus the minimum every message may
        // read however full core is. oqmgr reads up to a fudge-factor
        // share of the limit per message, and the global limit only stops
        // it from opening files (oqmgr `qmgr_message_read()`).
        let cfg = self.sched.config();
        let messages = self.sched.message_count();
        let minimum = cfg.message_recipient_minimum.max(1);
        let allowed = if cfg.preemptive {
            // qmgr(8): per-transport pools (`default_recipient_limit` plus
            // `default_extra_recipient_limit` for preempting jobs) bound
            // what jobs may hold; refills read into a job's free slots.
            let pools: usize = self
                .transports
                .values()
                .filter_map(|t| t.cfg.as_ref())
                .map(|c| c.recipient_limit as usize + c.extra_recipient_limit as usize)
                .sum();
            cfg.message_recipient_limit.max(pools) + minimum * messages
        } else {
            let per_message =
                (cfg.message_recipient_limit * cfg.fudge_factor as usize / 100).max(minimum);
            cfg.message_recipient_limit.max(per_message * messages)
        };
        if after > allowed {
            self.violate(format!("{after} recipients in core, allowed {allowed}"));
        }
        self.measure_shares();
    }

    fn measure_shares(&mut self) {
        let Some(shares) = &self.shares else {
            return;
        };
        let total: usize = shares.values().sum();
        let busy_dests = shares.values().filter(|&&n| n > 0).count();
        if total == 0 || busy_dests < 2 {
            return;
        }
        let Some((key, &n)) = shares
            .iter()
            .max_by_key(|(k, &n)| (n, std::cmp::Reverse((*k).clone())))
        else {
            return;
        };
        let pct = 100.0 * n as f64 / total as f64;
        let higher = match &self.record.peak_share {
            Some((p, _)) => pct > *p,
            None => true,
        };
        if higher {
            self.record.peak_share = Some((pct, key.clone()));
        }
    }

    /// One recipient is finished: update the daemon's books.
    fn finish_rcpt(&mut self, msg: MessageId, rcpt: u32, fate: Fate) {
        let mut key = None;
        let mut problem = None;
        match self
            .messages
            .get_mut(&msg)
            .and_then(|m| m.rcpts.get_mut(rcpt as usize).map(|r| (r, &m.routes)))
        {
            Some((r, routes)) => {
                r.fates = r.fates.saturating_add(1);
                if r.fates > 1 {
                    problem = Some(format!("{msg} recipient {rcpt} finished twice"));
                }
                r.fate = Some(fate);
                if let Some(route) = routes.get(rcpt as usize) {
                    key = Some((
                        route.transport.clone(),
                        route.nexthop.clone(),
                        route.address.clone(),
                    ));
                }
            }
            None => problem = Some(format!("{msg} recipient {rcpt} unknown")),
        }
        if let Some(p) = problem {
            self.violate(p);
        }
        self.outstanding = self.outstanding.saturating_sub(1);
        if self.shares.is_some() {
            if let Some((t, nh, addr)) = key {
                let k = self.dest_key(&t, &nh, &addr);
                if let Some(n) = self.shares.as_mut().and_then(|s| s.get_mut(&k)) {
                    *n = n.saturating_sub(1);
                }
            }
        }
    }

    /// Carries out every action the scheduler has; true if there was any.
    fn drain_actions(&mut self) -> bool {
        let mut did = false;
        while let Some(action) = self.sched.poll_action() {
            did = true;
            self.act(action);
        }
        if did {
            let count = self.sched.recipient_count();
            if count != self.outstanding {
                self.violate(format!(
                    "scheduler counts {count} in-core recipients, driver {}",
                    self.outstanding
                ));
            }
            if self.sched.message_count() != self.active {
                self.violate(format!(
                    "scheduler counts {} active messages, driver {}",
                    self.sched.message_count(),
                    self.active
                ));
            }
        }
        did
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Connect { conn, transport } => self.connect(conn, transport),
            Action::Deliver {
                conn,
                msg,
                nexthop,
                rcpts,
                dest_flags,
            } => self.deliver(conn, msg, nexthop, rcpts, dest_flags),
            Action::Close { conn } => {
                self.record.closes += 1;
                match self.conns.get(&conn).map(|c| c.state) {
                    Some(ConnState::Ready) => self.end_conn(conn),
                    other => self.violate(format!("Close {conn:?} in state {other:?}")),
                }
            }
            Action::DeferRecipient { msg, rcpt, dsn } => {
                self.record.sync_deferred.push((self.now, msg, rcpt, dsn));
                let known = self
                    .messages
                    .get_mut(&msg)
                    .and_then(|m| m.rcpts.get_mut(rcpt as usize))
                    .map(|r| {
                        r.dispatched = r.dispatched.saturating_add(1);
                        r.handed_in && r.dispatched == 1
                    });
                if known != Some(true) {
                    self.violate(format!(
                        "DeferRecipient {msg} #{rcpt} not handed in or handed out twice"
                    ));
                }
                self.finish_rcpt(msg, rcpt, Fate::SyncDeferred);
            }
            Action::Refill { msg } => {
                self.record.refills.push((self.now, msg));
                match self.messages.get(&msg) {
                    Some(m) if !m.done && m.next < m.routes.len() => self.hand_batch(msg, true),
                    _ => self.violate(format!("Refill {msg} with nothing left to read")),
                }
            }
            Action::MessageDone { msg, deferred } => self.message_done(msg, deferred),
            Action::Warning { text } => self.record.warnings.push((self.now, text)),
        }
    }

    fn connect(&mut self, conn: ConnId, transport: String) {
        self.record.connects += 1;
        if self.conns.contains_key(&conn) {
            self.violate(format!("Connect reuses {conn:?}"));
            return;
        }
        let limit = self.world.transport(&transport).process_limit;
        let t = self.transports.entry(transport.clone()).or_default();
        t.pending_connects += 1;
        if t.pending_connects > MAX_PENDING_CONNECTS {
            let n = t.pending_connects;
            self.violate(format!("{n} connects pending for {transport}"));
        }
        let t = self.transports.entry(transport.clone()).or_default();
        let queued = limit.is_some_and(|l| t.processes >= l);
        if queued {
            t.waiting.push_back(conn);
        } else {
            t.processes += 1;
        }
        self.conns.insert(
            conn,
            SimConn {
                transport,
                state: ConnState::Queued,
                has_process: !queued,
            },
        );
        if !queued {
            self.start_connect(conn);
        }
    }

    /// An agent process is there for `conn`: it answers after the latency.
    fn start_connect(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.state = ConnState::Connecting;
        let name = c.transport.clone();
        let t = self.transports.entry(name.clone()).or_default();
        let n = t.connect_attempts;
        t.connect_attempts += 1;
        let profile = self.world.transport(&name);
        let at = self.now + profile.connect_latency;
        let event = match profile.connect(n) {
            ConnectOutcome::Ready => WorldEvent::AgentReady(conn),
            ConnectOutcome::Refused(dsn) => WorldEvent::AgentUnavailable(conn, dsn),
        };
        self.push(at, event);
    }

    /// The connection is gone: free its process for a waiting one.
    fn end_conn(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if !c.has_process {
            return;
        }
        let t = self.transports.entry(c.transport).or_default();
        t.processes = t.processes.saturating_sub(1);
        if let Some(next) = t.waiting.pop_front() {
            t.processes += 1;
            if let Some(w) = self.conns.get_mut(&next) {
                w.has_process = true;
            }
            self.start_connect(next);
        }
    }

    fn deliver(
        &mut self,
        conn: ConnId,
        msg: MessageId,
        nexthop: String,
        rcpts: Vec<u32>,
        dest_flags: u32,
    ) {
        let transport = match self.conns.get_mut(&conn) {
            Some(c) if c.state == ConnState::Ready => {
                c.state = ConnState::Busy;
                c.transport.clone()
            }
            other => {
                let state = other.map(|c| c.state);
                self.violate(format!("Deliver on {conn:?} in state {state:?}"));
                return;
            }
        };
        // The queue this entry came from, and the bookkeeping of its recipients.
        let mut address = String::new();
        let mut problems = Vec::new();
        match self.messages.get_mut(&msg) {
            Some(m) if !m.done => {
                m.in_flight += 1;
                for &r in &rcpts {
                    match m.rcpts.get_mut(r as usize) {
                        Some(st) if st.handed_in => {
                            st.dispatched = st.dispatched.saturating_add(1);
                            if st.dispatched > 1 {
                                problems.push(format!("{msg} recipient {r} handed out twice"));
                            }
                        }
                        _ => problems
                            .push(format!("{msg} recipient {r} delivered but never handed in")),
                    }
                }
                if let Some(first) = rcpts.first().and_then(|&r| m.routes.get(r as usize)) {
                    address = first.address.clone();
                }
            }
            _ => problems.push(format!("Deliver for unknown or finished {msg}")),
        }
        for p in problems {
            self.violate(p);
        }
        if rcpts.is_empty() {
            self.violate(format!("Deliver of {msg} with no recipients"));
        }
        let dest = self.dest_key(&transport, &nexthop, &address);
        let cfg = self.transport_cfg(&transport);
        let index = self.record.deliveries.len();
        let stats = self.record.dests.entry(dest.clone()).or_default();
        stats.busy += 1;
        stats.max_busy = stats.max_busy.max(stats.busy);
        stats.deliveries += 1;
        stats.first_dispatch.get_or_insert(index);
        let (busy, positive) = (stats.busy, stats.positive);
        if cfg.dest_concurrency_limit > 0 && busy > cfg.dest_concurrency_limit {
            self.violate(format!(
                "{dest:?}: {busy} busy, limit {}",
                cfg.dest_concurrency_limit
            ));
        }
        // Each positive feedback grows the window by at most one, and a
        // queue (re)starts at the initial concurrency or at what is busy.
        let window_bound = u64::from(cfg.init_dest_concurrency) + positive;
        if u64::from(busy) > window_bound {
            self.violate(format!(
                "{dest:?}: {busy} busy, but the window can be at most {window_bound}"
            ));
        }
        let profile = self.world.dest(&transport, &nexthop);
        let latency = profile.latency;
        let n = self.attempts.entry(nexthop.clone()).or_default();
        let outcome = profile.outcome(*n);
        *n += 1;
        let (outcome, fate) = match outcome {
            AgentOutcome::Success if transport == ERROR_TRANSPORT => {
                (Outcome::Final, Fate::Bounced)
            }
            AgentOutcome::Success => (Outcome::Final, Fate::Delivered),
            AgentOutcome::Defer => (Outcome::Deferred { site: None }, Fate::Deferred),
            AgentOutcome::SiteFailure(reason) => (
                Outcome::Deferred {
                    site: Some(Dsn::new(
                        "4.4.1",
                        format!("delivery temporarily suspended: {reason}"),
                    )),
                },
                Fate::Deferred,
            ),
            AgentOutcome::Crash => (Outcome::Crashed, Fate::Crashed),
        };
        self.record.deliveries.push(DeliveryRecord {
            index,
            at: self.now,
            done_at: None,
            conn,
            msg,
            transport,
            nexthop,
            dest,
            rcpts,
            dest_flags,
            fate: None,
        });
        self.push(
            self.now + latency,
            WorldEvent::Delivered {
                conn,
                delivery: index,
                outcome,
                fate,
            },
        );
    }

    fn message_done(&mut self, msg: MessageId, deferred: bool) {
        self.record.completions.push(Completion {
            at: self.now,
            msg,
            deferred,
        });
        let mut problems = Vec::new();
        match self.messages.get_mut(&msg) {
            Some(m) if !m.done => {
                m.done = true;
                if m.next < m.routes.len() {
                    problems.push(format!(
                        "{msg} done with {} recipients unread",
                        m.routes.len() - m.next
                    ));
                }
                if m.in_flight > 0 {
                    problems.push(format!(
                        "{msg} done with {} deliveries in flight",
                        m.in_flight
                    ));
                }
                let unfinished = m.rcpts.iter().filter(|r| r.fate.is_none()).count();
                if unfinished > 0 {
                    problems.push(format!(
                        "{msg} done with {unfinished} recipients unfinished"
                    ));
                }
                let any_deferred = m.rcpts.iter().any(|r| {
                    matches!(
                        r.fate,
                        Some(Fate::Deferred | Fate::Crashed | Fate::SyncDeferred)
                    )
                });
                if any_deferred != deferred {
                    problems.push(format!(
                        "{msg} done with deferred={deferred}, recipients say {any_deferred}"
                    ));
                }
                self.active = self.active.saturating_sub(1);
            }
            Some(_) => problems.push(format!("{msg} done twice")),
            None => problems.push(format!("{msg} done but never entered")),
        }
        for p in problems {
            self.violate(p);
        }
    }

    /// Reports one world event to the scheduler.
    fn apply(&mut self, event: WorldEvent) {
        match event {
            WorldEvent::AgentReady(conn) => {
                self.connect_answered(conn);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.state = ConnState::Ready;
                }
                self.sched.handle(Event::AgentReady { conn }, self.now);
            }
            WorldEvent::AgentUnavailable(conn, dsn) => {
                self.record.refused += 1;
                self.connect_answered(conn);
                self.end_conn(conn);
                self.sched
                    .handle(Event::AgentUnavailable { conn, dsn }, self.now);
            }
            WorldEvent::Delivered {
                conn,
                delivery,
                outcome,
                fate,
            } => {
                let Some(d) = self.record.deliveries.get_mut(delivery) else {
                    return;
                };
                d.done_at = Some(self.now);
                d.fate = Some(fate);
                let (msg, rcpts, dest) = (d.msg, d.rcpts.clone(), d.dest.clone());
                if let Some(s) = self.record.dests.get_mut(&dest) {
                    s.busy = s.busy.saturating_sub(1);
                    match &outcome {
                        Outcome::Deferred { site: Some(_) } => s.negative += 1,
                        Outcome::Crashed => {}
                        _ => s.positive += 1,
                    }
                }
                if let Some(m) = self.messages.get_mut(&msg) {
                    m.in_flight = m.in_flight.saturating_sub(1);
                }
                for r in rcpts {
                    self.finish_rcpt(msg, r, fate);
                }
                self.end_conn(conn);
                self.sched
                    .handle(Event::Delivered { conn, outcome }, self.now);
            }
            WorldEvent::FlushDead => self.sched.handle(Event::FlushDead, self.now),
        }
    }

    fn connect_answered(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn) {
            if let Some(t) = self.transports.get_mut(&c.transport) {
                t.pending_connects = t.pending_connects.saturating_sub(1);
            }
        }
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
