//! The event loop: feed the scheduler, carry out its actions.
//!
//! This is the only place that reads the clock, touches queue files and
//! talks to sockets (through the modules it calls). One pass of the loop
//! mirrors `qmgr_loop()`: carry out every action the scheduler has,
//! import at most one message from the incoming and deferred scans in
//! turn, and keep the in-flow token pipe topped up; then wait for the next
//! event — an agent's announcement or reply, a trigger, a timer, or
//! master going away.
//!
//! Everything runs on one thread. Agent connections are tasks on the same
//! thread that report through a channel, so all state lives here without
//! locks, as in Postfix's single-threaded qmgr.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rqmgr_ipc::master::{InFlowPipe, StatusChannel};
use rqmgr_ipc::rewrite::RewriteClient;
use rqmgr_queue::dirs::{QueueLayout, QueueName};
use rqmgr_sched::{Action, ConnId, Dsn, Event, MessageId, Outcome, Scheduler, Time};
use tokio::net::UnixListener;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::deliver::{self, AgentEvent};
use crate::logging::Logger;
use crate::message::ActiveMessage;
use crate::params::QmgrParams;
use crate::postfix_version::Compat;
use crate::scan::{self, QueueScan, FLUSH_ONCE, SCAN_START};
use crate::watchdog::Watchdog;

/// Index of the incoming scan in [`Runtime::scans`].
const INCOMING: usize = 0;
/// Index of the deferred scan.
const DEFERRED: usize = 1;
/// Files a pass may look at and pass over before the loop turns.
const SKIPS_PER_PASS: usize = 64;

/// The daemon's state.
pub struct Runtime {
    pub(crate) p: QmgrParams,
    /// What differs with the Postfix release we serve.
    pub(crate) compat: Compat,
    pub(crate) log: Arc<Logger>,
    pub(crate) layout: QueueLayout,
    pub(crate) sched: Scheduler,
    pub(crate) scans: [QueueScan; 2],
    first_scan: usize,
    pub(crate) messages: HashMap<MessageId, ActiveMessage>,
    pub(crate) next_msg: u64,
    pub(crate) rewrite: RewriteClient,
    /// Connections whose agent announced itself, waiting for a request.
    ready: HashMap<ConnId, deliver::RequestSender>,
    transports: HashMap<ConnId, String>,
    /// The message and recipients of each request sent and not yet
    /// answered: they are released with the reply. (A connection that
    /// fails first puts its entry back in the scheduler's hands, so they
    /// stay.)
    delivering: HashMap<ConnId, (MessageId, Vec<u32>)>,
    tx: UnboundedSender<AgentEvent>,
    rx: UnboundedReceiver<AgentEvent>,
    /// The last pass imported a message from `incoming/`.
    fed_incoming: bool,
}

/// The descriptors master(8) hands us.
pub struct MasterLink {
    /// fd 5.
    pub status: StatusChannel,
    /// fds 3 and 4.
    pub flow: Option<InFlowPipe>,
    /// fd 6.
    pub listener: UnixListener,
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The current time as the scheduler counts it.
pub fn sched_now() -> Time {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    Time::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl Runtime {
    /// A runtime over the queue directory we are in.
    pub fn new(p: QmgrParams, compat: Compat, log: Arc<Logger>, sched: Scheduler) -> Runtime {
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
        let (tx, rx) = unbounded_channel();
        Runtime {
            p,
            compat,
            log,
            layout,
            sched,
            scans: [
                QueueScan::new(QueueName::Incoming),
                QueueScan::new(QueueName::Deferred),
            ],
            first_scan: INCOMING,
            messages: HashMap::new(),
            next_msg: 0,
            rewrite,
            ready: HashMap::new(),
            transports: HashMap::new(),
            delivering: HashMap::new(),
            tx,
            rx,
            fed_incoming: false,
        }
    }

    /// Logs a fatal error and exits, as Postfix's `msg_fatal()`.
    pub(crate) fn fatal(&self, text: &str) -> ! {
        self.log.fatal(text);
        std::process::exit(1);
    }

    /// Start-up (`qmgr_post_init()`): recover what an earlier queue manager
    /// left in `active/`, then scan both queues.
    fn start(&mut self) {
        self.recover_active();
        for (idx, flags) in [(INCOMING, SCAN_START), (DEFERRED, SCAN_START)] {
            self.scan_request(idx, flags);
        }
    }

    /// Moves every file in `active/` back to `incoming/`, stamped now, so
    /// that it is read afresh: its in-core state died with its qmgr.
    fn recover_active(&mut self) {
        let mut walk = match rqmgr_queue::scan::Scanner::new(&self.layout, QueueName::Active) {
            Ok(w) => w,
            Err(e) => self.fatal(&format!("open active queue: {e}")),
        };
        let now = now_secs();
        loop {
            match walk.next_id() {
                Ok(Some(id)) => {
                    let _ = self.layout.set_times(QueueName::Active, &id, now);
                    if let Err(e) = self
                        .layout
                        .rename(QueueName::Active, QueueName::Incoming, &id)
                    {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            self.fatal(&format!(
                                "qmgr_move: rename {} from active to incoming: {}",
                                id,
                                crate::activate::os_error(&e)
                            ));
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => self.fatal(&format!("scan active queue: {e}")),
            }
        }
    }

    fn scan_request(&mut self, idx: usize, flags: u32) {
        if flags & FLUSH_ONCE != 0 {
            self.sched.handle(Event::FlushDead, sched_now());
        }
        if let Err(e) = self.scans[idx].request(&self.layout, flags) {
            let q = self.scans[idx].queue().as_str();
            self.fatal(&format!("open {q} queue: {e}"));
        }
    }

    /// Runs until master goes away. Returns the process exit status.
    pub async fn run(mut self, master: MasterLink) -> i32 {
        let dog = Watchdog::start(self.p.qmgr_daemon_timeout, Arc::clone(&self.log));
        self.start();
        // Records are sent in batches, flushed below before every wait
        // (see logging.rs on why the order of lines is kept).
        self.log.hold();
        let run_delay = self.p.queue_run_delay.max(Duration::from_secs(1));
        let mut deferred_timer =
            tokio::time::interval_at(tokio::time::Instant::now() + run_delay, run_delay);
        loop {
            dog.pet();
            let busy = self.pass().await;
            self.flow_control(&master, busy);
            let wake = self.sched.poll_timeout().map(|t| {
                let now = sched_now();
                let wait = t.saturating_since(now);
                tokio::time::Instant::now() + wait
            });
            self.log.flush();
            tokio::select! {
                biased;
                () = master.status.closed() => return 0,
                Some(event) = self.rx.recv() => self.agent_event(event, &master),
                () = sleep_until(wake) => self.sched.handle_timeout(sched_now()),
                _ = deferred_timer.tick() => self.scan_request(DEFERRED, SCAN_START),
                accepted = master.listener.accept() => self.trigger_accepted(accepted, &master),
                // Busy: like event_loop(0), let the I/O driver and the
                // connection tasks run once before the next pass, so that
                // replies are taken in between feeds rather than only when
                // a feed happens to block.
                () = tokio::task::yield_now(), if busy => {}
            }
            // Take in whatever else already happened before deciding again.
            while let Ok(event) = self.rx.try_recv() {
                self.agent_event(event, &master);
            }
        }
    }

    /// One pass of `qmgr_loop()`: carry out actions, then feed at most one
    /// message. Returns true if a scan produced a file (so the loop should
    /// come straight back rather than wait).
    async fn pass(&mut self) -> bool {
        self.run_actions().await;
        let mut found_any = false;
        let mut fed_any = false;
        let mut last = self.first_scan;
        for i in 0..2 {
            if !self.sched.can_accept_message() {
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
        self.first_scan = if self.sched.can_accept_message() {
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
            let (found, fed) = self.feed(idx).await;
            found_any |= found;
            if !found || fed {
                return (found_any, fed);
            }
        }
        (found_any, false)
    }

    /// Keeps the in-flow token pipe near `default_process_limit`, so that
    /// cleanup and smtpd never wait `in_flow_delay` while we keep up.
    fn flow_control(&mut self, master: &MasterLink, _busy: bool) {
        let Some(flow) = &master.flow else {
            return;
        };
        if self.p.in_flow_delay.is_zero() {
            return;
        }
        let limit = usize::try_from(self.p.default_process_limit).unwrap_or(100);
        let Ok(count) = flow.pending() else {
            return;
        };
        if count < limit {
            if self.fed_incoming {
                let _ = flow.put(1);
            } else if !self.scans[INCOMING].is_running() {
                let _ = flow.put(limit - count);
            }
        } else if count > limit {
            let _ = flow.take(count - limit);
        }
    }

    async fn run_actions(&mut self) {
        while let Some(action) = self.sched.poll_action() {
            match action {
                Action::Connect { conn, transport } => {
                    deliver::spawn_connection(
                        self.tx.clone(),
                        conn,
                        &transport,
                        self.p.daemon_timeout,
                    );
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
                    self.defer_recipient(msg, rcpt, &dsn).await
                }
                // Postfix's early refill reads more while deliveries are
                // under way and does not finish anything; a refill of a
                // message with nothing left in core goes through
                // qmgr_active_done()'s first steps.
                Action::Refill { msg } if self.sched.has_deliveries(msg) => {
                    self.refill(msg, true).await
                }
                Action::Refill { msg } => self.message_done(msg, false, true).await,
                Action::MessageDone { msg, deferred } => {
                    self.message_done(msg, deferred, false).await
                }
                Action::Warning { text } => self.log.warning(&text),
            }
        }
    }

    fn deliver(
        &mut self,
        conn: ConnId,
        msg: MessageId,
        nexthop: &str,
        rcpts: Vec<u32>,
        dest_flags: u32,
    ) {
        let Some(request_tx) = self.ready.remove(&conn) else {
            return;
        };
        let Some(m) = self.messages.get(&msg) else {
            return;
        };
        let request = m.request_bytes(
            &rcpts,
            nexthop,
            dest_flags,
            self.p.smtputf8_enable,
            self.compat.dialect,
        );
        // The task is gone only if it failed, which it reports itself.
        let _ = request_tx.send(request);
        self.delivering.insert(conn, (msg, rcpts));
    }

    fn agent_event(&mut self, event: AgentEvent, master: &MasterLink) {
        let now = sched_now();
        match event {
            AgentEvent::Ready(conn, request_tx) => {
                self.ready.insert(conn, request_tx);
                self.sched.handle(Event::AgentReady { conn }, now);
            }
            AgentEvent::Unavailable(conn, why) => {
                self.log.warning(&why);
                self.transports.remove(&conn);
                self.delivering.remove(&conn);
                self.sched.handle(
                    Event::AgentUnavailable {
                        conn,
                        dsn: Dsn::new("4.3.0", "mail transport unavailable"),
                    },
                    now,
                );
            }
            AgentEvent::Replied(conn, reply) => {
                let transport = self.transports.remove(&conn).unwrap_or_default();
                let outcome = match reply {
                    Ok(reply) => deliver::outcome(&reply),
                    Err(e) => {
                        // As qmgr_deliver_final_reply(): attr_scan's own
                        // warning, if it has one, then "malformed response".
                        if !e.scan_is_silent() {
                            self.log.warning(&e.to_string());
                        }
                        self.log
                            .warning(&format!("private/{transport} socket: malformed response"));
                        Outcome::Crashed
                    }
                };
                self.sched.handle(Event::Delivered { conn, outcome }, now);
                if let Some((msg, rcpts)) = self.delivering.remove(&conn) {
                    self.release(msg, &rcpts);
                }
            }
            AgentEvent::Trigger(bytes) => {
                let (incoming, deferred) = scan::trigger_flags(&bytes);
                if incoming != 0 {
                    self.scan_request(INCOMING, incoming);
                }
                if deferred != 0 {
                    self.scan_request(DEFERRED, deferred);
                }
                if master.status.send(true).is_err() {
                    self.log.flush();
                    std::process::exit(0);
                }
            }
        }
    }

    /// A trigger client connected: tell master we are busy, read its
    /// bytes in a task of their own (a slow client must not stall
    /// deliveries), and report them to the loop.
    fn trigger_accepted(
        &mut self,
        accepted: std::io::Result<(tokio::net::UnixStream, tokio::net::unix::SocketAddr)>,
        master: &MasterLink,
    ) {
        let mut stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    self.log.error(&format!(
                        "accept connection: {}",
                        crate::activate::os_error(&e)
                    ));
                }
                return;
            }
        };
        let _ = master.status.send(false);
        let tx = self.tx.clone();
        tokio::task::spawn_local(async move {
            let bytes = rqmgr_ipc::trigger::read_trigger(&mut stream)
                .await
                .unwrap_or_default();
            let _ = tx.send(AgentEvent::Trigger(bytes));
        });
    }

    /// Defers one recipient through the defer service, because even the
    /// `retry` transport is down (`qmgr_defer_recipient()`).
    async fn defer_recipient(&mut self, msg: MessageId, rcpt: u32, dsn: &Dsn) {
        let Some(m) = self.messages.get(&msg) else {
            return;
        };
        let Some(rcpt_out) = m.recipient_out(rcpt as usize) else {
            return;
        };
        let queue_id = m.queue_id.clone();
        let stamps = crate::adhoc::Stamps {
            incoming_arrival: m.env.arrival,
            active_arrival: crate::adhoc::timeval(m.active_arrival),
        };
        let flags = m.tflags();
        let wire_dsn =
            rqmgr_ipc::deliver::Dsn::simple(dsn.status.as_bytes(), dsn.reason.as_bytes());
        let path = std::path::PathBuf::from(format!("private/{}", self.p.defer_service_name));
        // The defer service logs about this message too: ours first.
        self.log.flush();
        let status = rqmgr_ipc::bounce::defer_append(
            &path,
            flags,
            queue_id.as_str().as_bytes(),
            &rcpt_out,
            &wire_dsn,
            self.p.qmgr_ipc_timeout,
        )
        .await
        .unwrap_or(-1);
        if status == 0 {
            let line = crate::adhoc::status_line(
                queue_id.as_str(),
                &rcpt_out.address,
                &rcpt_out.orig_rcpt,
                stamps,
                SystemTime::now(),
                &dsn.status,
                "deferred",
                &dsn.reason,
                u32::try_from(self.p.delay_logging_resolution_limit).unwrap_or(2),
            );
            self.log.info(&line);
        }
        self.release(msg, &[rcpt]);
    }

    /// Frees in-core recipients the scheduler can no longer name.
    fn release(&mut self, msg: MessageId, rcpts: &[u32]) {
        if let Some(m) = self.messages.get_mut(&msg) {
            for &r in rcpts {
                m.rcpts.release(r as usize);
            }
        }
    }
}

async fn sleep_until(when: Option<tokio::time::Instant>) {
    match when {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
