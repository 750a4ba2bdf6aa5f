//! The simulated world's side of the scheduler's actions and of the
//! world's own events: connections to fake agents, deliveries and their
//! outcomes, finished messages.

use super::*;

impl Sim {
    /// Carries out every action the scheduler has; true if there was any.
    pub(crate) fn drain_actions(&mut self) -> bool {
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

    pub(crate) fn act(&mut self, action: Action) {
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

    pub(crate) fn connect(&mut self, conn: ConnId, transport: ByteString) {
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
    pub(crate) fn start_connect(&mut self, conn: ConnId) {
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
    pub(crate) fn end_conn(&mut self, conn: ConnId) {
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

    pub(crate) fn deliver(
        &mut self,
        conn: ConnId,
        msg: MessageId,
        nexthop: ByteString,
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
        let mut address = ByteString::default();
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

    pub(crate) fn message_done(&mut self, msg: MessageId, deferred: bool) {
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
    pub(crate) fn apply(&mut self, event: WorldEvent) {
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

    pub(crate) fn connect_answered(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn) {
            if let Some(t) = self.transports.get_mut(&c.transport) {
                t.pending_connects = t.pending_connects.saturating_sub(1);
            }
        }
    }
}
