//! The event loop: feed the scheduler, carry out its actions.
//!
//! The life of one message, hop by hop, with the file of each hop:
//! 1. master(8) starts us (main.rs); start-up moves what an earlier queue
//!    manager left in `active/` back to `incoming/` (spool.rs,
//!    `Spool::recover_active`).
//! 2. cleanup(8) writes the file into `incoming/` and wakes us through
//!    `public/qmgr` (triggers.rs reads the letters; scan.rs turns them
//!    into scan requests); a timer does the same for `deferred/`.
//! 3. A pass takes the next file of a scan into `active/`, locks it, reads
//!    it and resolves its recipients with trivial-rewrite (activate.rs,
//!    `Core::feed`; routing.rs decides where each recipient goes).
//! 4. The scheduler (crate rqmgr-sched) asks for an agent connection
//!    (deliver.rs opens it) and picks recipients for it; the request is
//!    encoded from the message (message.rs) and sent.
//! 5. The agent's reply goes back to the scheduler (here,
//!    `Runtime::agent_event`), which may ask to read more recipients
//!    (activate.rs, `Core::refill`).
//! 6. When every recipient was tried, finish.rs runs Postfix's
//!    `qmgr_active_done()`: notices through bounce(8) (notify.rs), then
//!    the file goes to `deferred/` with its next-attempt time or is removed
//!    (disposition.rs decides, spool.rs moves).
//!
//! One pass of the loop mirrors `qmgr_loop()`: carry out every action the
//! scheduler has, import at most one message from the incoming and
//! deferred scans in turn, and keep the in-flow token pipe topped up; then
//! wait for the next event: an agent's announcement or reply, a trigger, a
//! timer, or master going away.
//!
//! Everything runs on one thread, so all state lives here without locks,
//! as in Postfix's single-threaded qmgr. Agent connections are futures
//! this loop polls itself (deliver.rs), one per delivery in progress;
//! trigger readers and notices are tasks on the same thread that report
//! through channels.
//! This loop and the modules it calls are the only places that read the
//! clock, touch queue files or talk to sockets.

use std::sync::Arc;
use std::time::Duration;

use rqmgr_ipc::master::{InFlowPipe, StatusChannel, TriggerEndpoint};
use rqmgr_ipc::rewrite::RewriteClient;
use rqmgr_queue::dirs::{QueueLayout, QueueName};
use rqmgr_sched::{
    Action, ByteString, ConnId, Dsn, Event, FxHashMap, MessageId, Outcome, Scheduler,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::admin::{self, AdminQuery};
use crate::clock::Now;
use crate::deliver::{self, AgentEvent, Agents};
use crate::flow::{After, Change, FlowTokens, Turn};
use crate::logging::{os_error, Logger};
use crate::metrics::{DeliveryStatus, Metrics};
use crate::notify::NoticeDone;
use crate::operator::{Control, Save};
use crate::params::QmgrParams;
use crate::postfix_version::Compat;
use crate::scan::{self, QueueScan, FLUSH_ONCE, SCAN_START};
use crate::spool::Spool;
use crate::state::Core;
use crate::triggers;
use crate::watchdog::Watchdog;

/// Index of the incoming scan in [`Runtime::scans`].
const INCOMING: usize = 0;
/// Index of the deferred scan.
const DEFERRED: usize = 1;
/// Files a pass may look at and pass over before the loop turns.
const SKIPS_PER_PASS: usize = 64;
/// Trigger clients read at once; more wait in the listen queue, so idle
/// clients cannot take every descriptor.
const TRIGGER_READERS: usize = 32;

/// The event loop and what only it touches; see the module documentation.
pub(crate) struct Runtime {
    /// The state the steps of a message's life share.
    core: Core,
    /// The incoming and deferred scans, at [`INCOMING`] and [`DEFERRED`].
    scans: [QueueScan; 2],
    /// The scan the next pass tries first (round robin).
    first_scan: usize,
    /// Connections whose agent announced itself, waiting for a request.
    ready: FxHashMap<ConnId, rqmgr_ipc::deliver::AgentConnection>,
    /// The transport of each open connection, for its error messages.
    transports: FxHashMap<ConnId, ByteString>,
    /// The message and recipients of each request sent and not yet
    /// answered: they are released with the reply. (A connection that
    /// fails first puts its entry back in the scheduler's hands, so they
    /// stay.)
    delivering: FxHashMap<ConnId, (MessageId, Vec<u32>, std::time::Instant)>,
    /// Agent connections connecting, or delivering.
    agents: Agents,
    /// Where trigger readers report the letters they read.
    triggers_tx: UnboundedSender<Vec<u8>>,
    triggers_rx: UnboundedReceiver<Vec<u8>>,
    /// Where notice tasks report the bounce service's answers.
    notices_rx: UnboundedReceiver<NoticeDone>,
    /// The last pass imported a message from `incoming/`.
    fed_incoming: bool,
    /// The in-flow tokens given back for turns that read nothing.
    flow_tokens: FlowTokens,
    /// The last pass read nothing because the active queue holds enough
    /// work ready for agents (`Scheduler::ready_work_suffices`).
    intake_held: bool,
    /// While reading waits: when to ask again if no event comes first. It
    /// stays put until it passes, so that the timer registered at each
    /// turn is never earlier than the one before (an earlier one makes
    /// tokio wake its driver through an `eventfd`).
    intake_recheck: Option<tokio::time::Instant>,
    /// Failures of the trigger endpoint in a row, and until when the loop
    /// stops taking triggers after one.
    trigger_backoff: triggers::Backoff,
    trigger_pause: Option<tokio::time::Instant>,
    /// Trigger clients being read (at most [`TRIGGER_READERS`]).
    trigger_readers: usize,
    /// Questions from the admin endpoints (admin.rs), answered between
    /// events.
    admin_rx: Option<UnboundedReceiver<AdminQuery>>,
}

/// The descriptors master(8) hands us.
pub(crate) struct MasterLink {
    /// fd 5.
    pub status: StatusChannel,
    /// fds 3 and 4.
    pub flow: Option<InFlowPipe>,
    /// fd 6: where triggers arrive.
    pub triggers: TriggerEndpoint,
}

impl Runtime {
    /// A runtime over the queue directory we are in.
    pub(crate) fn new(
        p: QmgrParams,
        compat: Compat,
        log: Arc<Logger>,
        sched: Scheduler,
        metrics: Metrics,
        control: Control,
    ) -> Runtime {
        let layout = QueueLayout::new(
            ".",
            &p.hash_queue_names.join(","),
            usize::try_from(p.hash_queue_depth).unwrap_or(1),
        );
        let rewrite = RewriteClient::new(
            format!("private/{}", p.rewrite_service_name).into(),
            p.qmgr_ipc_timeout,
            p.ipc_idle,
            p.ipc_ttl,
        );
        let (triggers_tx, triggers_rx) = unbounded_channel();
        let (notices, notices_rx) = unbounded_channel();
        let p_daemon_timeout = p.daemon_timeout;
        let core = Core {
            p,
            compat,
            spool: Spool::new(layout, Arc::clone(&log)),
            log,
            sched,
            messages: FxHashMap::default(),
            next_msg: 0,
            rewrite,
            now: Now::read(),
            notices,
            metrics,
            control,
        };
        Runtime {
            core,
            scans: [
                QueueScan::new(QueueName::Incoming),
                QueueScan::new(QueueName::Deferred),
            ],
            first_scan: INCOMING,
            intake_held: false,
            intake_recheck: None,
            ready: FxHashMap::default(),
            transports: FxHashMap::default(),
            delivering: FxHashMap::default(),
            agents: Agents::new(p_daemon_timeout),
            triggers_tx,
            triggers_rx,
            notices_rx,
            fed_incoming: false,
            flow_tokens: FlowTokens::default(),
            trigger_backoff: triggers::Backoff::default(),
            trigger_pause: None,
            trigger_readers: 0,
            admin_rx: None,
        }
    }

    /// Answers the admin endpoints' questions from now on.
    pub(crate) fn serve_admin(&mut self, queries: UnboundedReceiver<AdminQuery>) {
        self.admin_rx = Some(queries);
    }

    /// Start-up (`qmgr_post_init()`): recover what an earlier queue manager
    /// left in `active/`, then scan both queues.
    fn start(&mut self) {
        self.core.spool.recover_active(self.core.now);
        self.core.load_state();
        for idx in [INCOMING, DEFERRED] {
            self.scan_request(idx, SCAN_START);
        }
    }

    fn scan_request(&mut self, idx: usize, flags: u32) {
        if flags & FLUSH_ONCE != 0 {
            self.core
                .sched
                .handle(Event::FlushDead, self.core.now.sched());
        }
        if let Err(e) = self.scans[idx].request(self.core.spool.layout(), flags) {
            let q = self.scans[idx].queue().as_str();
            self.core.log.die(&format!("open {q} queue: {e}"));
        }
    }

    /// Runs until master goes away. Returns the process exit status.
    pub(crate) async fn run(mut self, master: MasterLink) -> i32 {
        let dog = Watchdog::start(self.core.p.qmgr_daemon_timeout, Arc::clone(&self.core.log));
        self.core.now = Now::read();
        self.start();
        // Records are sent in batches, flushed below before every wait
        // (see logging.rs on why the order of lines is kept).
        self.core.log.hold();
        let run_delay = self.core.p.queue_run_delay.max(Duration::from_secs(1));
        let mut deferred_timer =
            tokio::time::interval_at(tokio::time::Instant::now() + run_delay, run_delay);
        // `postfix stop` ends every daemon with SIGTERM; the stock qmgr
        // just dies, and so do we, once the state files are written
        // (operator.rs), so that a planned restart loses no index entry.
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        // The next wake-up, kept registered across turns while its time
        // stays the same: the intake recheck keeps its time until it
        // passes, so a held intake no longer enters and cancels a timer in
        // tokio's wheel every turn. (A scheduler timer is reckoned anew
        // from the clock each turn, so it still resets the timer.)
        let mut wake_timer = WakeTimer::new();
        // The chores' time (the next state save) stays the same for
        // minutes: kept registered too, rather than a new timer entered
        // into tokio's wheel and taken out again on every turn.
        let mut chores_timer = WakeTimer::new();
        loop {
            dog.pet();
            let busy = self.pass().await;
            self.flow_control(&master);
            // The wait is reckoned from the time now, not the pass's.
            self.core.now = Now::read();
            let mut wake =
                self.core.sched.poll_timeout().map(|t| {
                    tokio::time::Instant::now() + t.saturating_since(self.core.now.sched())
                });
            if self.intake_held {
                // Start rates decay with no event at all; ask again soon.
                let now = tokio::time::Instant::now();
                let recheck = match self.intake_recheck {
                    Some(at) if at > now => at,
                    _ => now + rqmgr_sched::RECHECK,
                };
                self.intake_recheck = Some(recheck);
                wake = Some(wake.map_or(recheck, |w| w.min(recheck)));
            } else {
                self.intake_recheck = None;
            }
            if std::mem::take(&mut self.core.control.rescan_incoming) {
                self.scan_request(INCOMING, SCAN_START);
                continue;
            }
            let chores = self
                .core
                .control_deadline()
                .map(tokio::time::Instant::from_std);
            self.core.log.flush();
            tokio::select! {
                biased;
                () = master.status.closed() => {
                    self.core.save_state(Save::All);
                    self.core.log.flush();
                    return 0;
                }
                Some(()) = next_signal(&mut term) => {
                    self.core.save_state(Save::All);
                    self.core.log.flush();
                    return 0;
                }
                event = self.agents.next() => {
                    self.core.now = Now::read();
                    self.agent_event(event);
                }
                Some(done) = self.notices_rx.recv() => {
                    self.core.now = Now::read();
                    self.core.notice_answered(done).await;
                }
                Some(letters) = self.triggers_rx.recv() => {
                    self.core.now = Now::read();
                    self.trigger_readers = self.trigger_readers.saturating_sub(1);
                    self.trigger(&letters, &master);
                }
                () = wake_timer.at(wake) => {
                    self.core.now = Now::read();
                    self.core.sched.handle_timeout(self.core.now.sched());
                }
                _ = deferred_timer.tick() => {
                    self.core.now = Now::read();
                    self.scan_request(DEFERRED, SCAN_START);
                }
                arrival = triggers::next(&master.triggers),
                    if self.trigger_pause.is_none() && self.trigger_readers < TRIGGER_READERS =>
                {
                    self.core.now = Now::read();
                    self.trigger_arrived(arrival, &master);
                }
                () = sleep_until(self.trigger_pause), if self.trigger_pause.is_some() => {
                    self.trigger_pause = None;
                }
                () = chores_timer.at(chores) => {
                    self.core.now = Now::read();
                    self.core.expire_overrides();
                    self.core.save_state(Save::WhenDue);
                }
                Some(query) = next_query(&mut self.admin_rx) => {
                    self.core.now = Now::read();
                    let started = std::time::Instant::now();
                    let answer = admin::answer(&mut self.core, &query.request, query.uid);
                    let spent = started.elapsed().as_secs_f64();
                    self.core.metrics.admin_answer(query.request.endpoint(), spent);
                    // A client that went away needs no answer.
                    let _ = query.reply.send(answer);
                }
                // Busy: like event_loop(0), let the I/O driver and the
                // other tasks run once before the next pass, so that
                // replies are taken in between feeds rather than only when
                // a feed happens to block.
                () = tokio::task::yield_now(), if busy => self.core.now = Now::read(),
            }
            // Take in whatever else already happened before deciding again.
            while let Some(event) = self.agents.next_now() {
                self.agent_event(event);
            }
        }
    }

    /// One pass of `qmgr_loop()`: carry out actions, then feed at most one
    /// message. Returns true if a scan produced a file (so the loop should
    /// come straight back rather than wait).
    async fn pass(&mut self) -> bool {
        self.run_actions().await;
        // Unlike Postfix, no message is read while the agents have plenty
        // of work ready that they are taking quickly (see the scheduler's
        // intake module): it would only wait in `active/`.
        self.intake_held = self.core.sched.ready_work_suffices(self.core.now.sched());
        if self.intake_held {
            self.fed_incoming = false;
            return false;
        }
        let mut found_any = false;
        let mut fed_any = false;
        let mut last = self.first_scan;
        for i in 0..2 {
            if !self.core.sched.can_accept_message() {
                break;
            }
            let idx = (self.first_scan + i) % 2;
            last = idx;
            let (found, fed) = self.feed_one(idx).await;
            found_any |= found;
            if fed {
                fed_any = true;
                break;
            }
        }
        // Round robin between the scans; when the active queue is full,
        // new mail goes first once there is room again.
        self.first_scan = if self.core.sched.can_accept_message() {
            (last + 1) % 2
        } else {
            INCOMING
        };
        self.fed_incoming = fed_any && last == INCOMING;
        self.run_actions().await;
        found_any
    }

    /// Feeds the next file of scan `idx`, passing over up to
    /// [`SKIPS_PER_PASS`] files that are not due (or not ready) on the way.
    /// Postfix turns its event loop once per file looked at; a skipped
    /// file brings no message in, so looking at the next one at once
    /// changes nothing for the scheduler but saves a loop turn per file
    /// of a large deferred queue. Returns (a file was found, a message
    /// entered the active queue).
    async fn feed_one(&mut self, idx: usize) -> (bool, bool) {
        let mut found_any = false;
        for _ in 0..SKIPS_PER_PASS {
            let (found, fed) = self.core.feed(&mut self.scans[idx]).await;
            if let Some(took) = self.scans[idx].take_finished() {
                let queue = self.scans[idx].queue().as_str();
                self.core.metrics.scan_done(queue, took.as_secs_f64());
            }
            found_any |= found;
            if !found || fed {
                return (found_any, fed);
            }
        }
        (found_any, false)
    }

    /// Keeps the in-flow token pipe near `default_process_limit`, so that
    /// cleanup and smtpd never wait `in_flow_delay` while we keep up
    /// (see flow.rs on a turn that waits to read).
    fn flow_control(&mut self, master: &MasterLink) {
        let Some(flow) = &master.flow else {
            return;
        };
        if self.core.p.in_flow_delay.is_zero() {
            return;
        }
        let Ok(pending) = flow.pending() else {
            return;
        };
        let turn = if self.fed_incoming {
            Turn::ReadIncoming
        } else if self.intake_held {
            Turn::Held
        } else {
            Turn::Other
        };
        let change = self.flow_tokens.after_turn(After {
            turn,
            scanning_incoming: self.scans[INCOMING].is_running(),
            pending,
            limit: usize::try_from(self.core.p.default_process_limit).unwrap_or(100),
            active: self.core.sched.message_count(),
            active_limit: self.core.sched.config().message_active_limit,
        });
        let _ = match change {
            Change::Put(n) => flow.put(n),
            Change::Take(n) => flow.take(n),
            Change::Keep => Ok(0),
        };
    }

    async fn run_actions(&mut self) {
        while let Some(action) = self.core.sched.poll_action() {
            match action {
                Action::Connect { conn, transport } => {
                    self.agents.connect(conn, &transport);
                    self.transports.insert(conn, transport);
                }
                Action::Deliver {
                    conn,
                    msg,
                    nexthop,
                    rcpts,
                    dest_flags,
                } => self.deliver(conn, msg, &nexthop, rcpts, dest_flags),
                Action::Close { conn } => {
                    self.ready.remove(&conn);
                    self.transports.remove(&conn);
                }
                Action::DeferRecipient { msg, rcpt, dsn } => {
                    self.core.defer_recipient(msg, rcpt, &dsn).await;
                    self.core.release(msg, &[rcpt]);
                }
                // Postfix's early refill reads more while deliveries are
                // under way and does not finish anything; a refill of a
                // message with nothing left in core goes through
                // qmgr_active_done()'s first steps.
                Action::Refill { msg } if self.core.sched.has_deliveries(msg) => {
                    self.core.refill(msg, true).await
                }
                Action::Refill { msg } => self.core.message_done(msg, false, true).await,
                Action::MessageDone { msg, deferred } => {
                    self.core.message_done(msg, deferred, false).await
                }
                Action::Warning { text } => self.core.log.warning(&text),
            }
        }
    }

    fn deliver(
        &mut self,
        conn: ConnId,
        msg: MessageId,
        nexthop: &[u8],
        rcpts: Vec<u32>,
        dest_flags: u32,
    ) {
        let Some(agent) = self.ready.remove(&conn) else {
            return;
        };
        let held = |m: &crate::message::ActiveMessage| {
            rcpts.iter().all(|&i| m.rcpts.get(i as usize).is_some())
        };
        let Some(m) = self
            .core
            .messages
            .get(&msg)
            .map(|m| &**m)
            .filter(|m| held(m))
        else {
            // Cannot happen: a message stays in core while the scheduler
            // has entries for it, and a recipient until its delivery is
            // answered. Should it happen anyway, the scheduler must hear
            // of it, or the destination's and the transport's slots would
            // never come back.
            let transport = self.transports.remove(&conn).unwrap_or_default();
            self.core.log.warning(
                &[
                    &transport[..],
                    b": no such message or recipients in core: delivery request not sent",
                ]
                .concat(),
            );
            let now = self.core.now.sched();
            let outcome = Outcome::Crashed;
            self.core
                .sched
                .handle(Event::Delivered { conn, outcome }, now);
            return;
        };
        let request = m.request_bytes(
            self.agents.request_buffer(),
            &rcpts,
            nexthop,
            dest_flags,
            self.core.p.smtputf8_enable,
            self.core.compat.dialect,
        );
        self.agents.deliver(conn, agent, request);
        self.delivering
            .insert(conn, (msg, rcpts, std::time::Instant::now()));
    }

    /// The transport's agent cannot be reached or did not take the
    /// request (`qmgr_transport_throttle()` follows in the scheduler).
    fn agent_unavailable(&mut self, conn: ConnId, why: &[u8]) {
        self.core.log.warning(why);
        self.transports.remove(&conn);
        self.delivering.remove(&conn);
        let dsn = Dsn::new("4.3.0", "mail transport unavailable");
        let now = self.core.now.sched();
        self.core
            .sched
            .handle(Event::AgentUnavailable { conn, dsn }, now);
    }

    fn agent_event(&mut self, event: AgentEvent) {
        let now = self.core.now.sched();
        match event {
            AgentEvent::Ready(conn, agent) => {
                self.ready.insert(conn, agent);
                self.core.sched.handle(Event::AgentReady { conn }, now);
            }
            AgentEvent::Unreachable(conn, why) => self.agent_unavailable(conn, &why),
            AgentEvent::NotSent(conn, e) => {
                let transport = self.transports.get(&conn).map_or(&[][..], |t| &t[..]);
                let why = [
                    &b"write to process ("[..],
                    transport,
                    b"): ",
                    e.to_string().as_bytes(),
                ]
                .concat();
                self.agent_unavailable(conn, &why);
            }
            AgentEvent::Replied(conn, reply) => {
                let transport = self.transports.remove(&conn).unwrap_or_default();
                let outcome = match reply {
                    Ok(reply) => deliver::outcome(&reply),
                    Err(e) => {
                        // As qmgr_deliver_final_reply(): attr_scan's own
                        // warning, if it has one, then "malformed response".
                        if !e.scan_is_silent() {
                            self.core.log.warning(&e.to_string());
                        }
                        self.core.log.warning(
                            &[&b"private/"[..], &transport, b" socket: malformed response"]
                                .concat(),
                        );
                        Outcome::Crashed
                    }
                };
                let failed = !matches!(outcome, Outcome::Final);
                let status = match &outcome {
                    Outcome::Final => DeliveryStatus::Sent,
                    Outcome::Deferred { .. } => DeliveryStatus::Deferred,
                    Outcome::Crashed => DeliveryStatus::Failed,
                };
                self.core
                    .sched
                    .handle(Event::Delivered { conn, outcome }, now);
                if let Some((msg, rcpts, sent)) = self.delivering.remove(&conn) {
                    let seconds = sent.elapsed().as_secs_f64();
                    self.core.metrics.delivery(&transport, status, seconds);
                    if let (true, Some(m)) = (failed, self.core.messages.get_mut(&msg)) {
                        m.status |= 1;
                        m.mark_deferred(&rcpts);
                    }
                    self.core.release(msg, &rcpts);
                }
            }
        }
    }

    /// The letters of one trigger connection (`qmgr_trigger_event()`):
    /// scan requests, then tell master we are idle again.
    fn trigger(&mut self, letters: &[u8], master: &MasterLink) {
        for &letter in letters.iter().filter(|&&b| b != 0) {
            self.core.metrics.trigger(letter);
        }
        let (incoming, deferred) = scan::trigger_flags(letters);
        if incoming != 0 {
            self.scan_request(INCOMING, incoming);
        }
        if deferred != 0 {
            self.scan_request(DEFERRED, deferred);
        }
        if master.status.send(true).is_err() {
            self.core.save_state(Save::All);
            self.core.log.flush();
            std::process::exit(0);
        }
    }

    /// A trigger client connected, or letters came through the FIFO: tell
    /// master we are busy, then take the letters (a client's are read by a
    /// task of its own, see triggers.rs). A failure of the endpoint pauses
    /// taking triggers for a while, so it cannot become a busy loop.
    fn trigger_arrived(&mut self, arrival: triggers::Arrival, master: &MasterLink) {
        let failure = match arrival {
            triggers::Arrival::Connection(Ok(stream)) => {
                let _ = master.status.send(false);
                triggers::spawn_reader(stream, self.triggers_tx.clone());
                self.trigger_readers += 1;
                None
            }
            triggers::Arrival::Letters(Ok(letters)) => {
                let _ = master.status.send(false);
                self.trigger(&letters, master);
                None
            }
            triggers::Arrival::Connection(Err(e)) => Some(("accept connection", e)),
            triggers::Arrival::Letters(Err(e)) => Some(("read trigger", e)),
        };
        match failure {
            None => self.trigger_backoff.succeeded(),
            Some((_, e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Some((what, e)) => {
                self.core.log.error(&format!("{what}: {}", os_error(&e)));
                let pause = self.trigger_backoff.failed();
                self.trigger_pause = Some(tokio::time::Instant::now() + pause);
            }
        }
    }
}

/// The next delivery of a signal; never, without a handler.
async fn next_signal(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// The next admin query; never, without admin endpoints.
async fn next_query(rx: &mut Option<UnboundedReceiver<AdminQuery>>) -> Option<AdminQuery> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A timer that stays registered while its deadline stays the same.
struct WakeTimer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// The deadline it is set to; `None` once it fired (or before it was
    /// first set), when it must be set again whatever the deadline.
    armed: Option<tokio::time::Instant>,
}

impl WakeTimer {
    fn new() -> WakeTimer {
        WakeTimer {
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
        }
    }

    /// Waits until `when`; never, for `None`.
    async fn at(&mut self, when: Option<tokio::time::Instant>) {
        let Some(when) = when else {
            return std::future::pending().await;
        };
        if self.armed != Some(when) {
            self.sleep.as_mut().reset(when);
            self.armed = Some(when);
        }
        (&mut self.sleep).await;
        self.armed = None;
    }
}

async fn sleep_until(when: Option<tokio::time::Instant>) {
    match when {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
