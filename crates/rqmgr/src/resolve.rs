//! Resolving a message's recipients (`qmgr_message_resolve()`): ask
//! trivial-rewrite where each goes (a few at once), or take the content
//! filter's route, then apply Postfix's routing rules (routing.rs) and
//! carry out what they decide.
//!
//! [`Resolving`] borrows from [`Core`] only what resolving uses, so that
//! the message being resolved can stay in the active queue's map while it
//! is changed (its recipients' rewritten addresses, released recipients).
//!
//! trivial-rewrite is retried until it answers, as Postfix's resolve client
//! does: a queue manager cannot route anything without it.

use std::fs::File;
use std::time::Duration;

use rqmgr_ipc::error::IpcError;
use rqmgr_ipc::rewrite::{ResolveReply, RewriteClient, RESOLVE_CONNECTIONS};
use rqmgr_sched::{MessageId, Route};

use crate::adhoc;
use crate::clock;
use crate::logging::{os_error, Logger};
use crate::message::{ActiveMessage, DEL_REQ_FLAG_MTA_VRFY, DEL_REQ_TRACE_ONLY_MASK};
use crate::params::QmgrParams;
use crate::routing::{self, Routing, RoutingConfig, Source};
use crate::scan::{FLUSH_DFXP, FORCE_EXPIRE};
use crate::state::Core;

impl Core {
    /// Resolves the recipients of `msg` from index `first` on; returns
    /// their routes for the scheduler.
    pub(crate) async fn resolve(
        &mut self,
        msg: MessageId,
        file: &mut File,
        first: usize,
    ) -> Vec<Route> {
        let Core {
            messages,
            rewrite,
            p,
            log,
            ..
        } = self;
        let Some(m) = messages.get_mut(&msg) else {
            return Vec::new();
        };
        Resolving { rewrite, p, log }
            .resolve_all(m, file, first)
            .await
    }
}

/// What resolving borrows from [`Core`].
struct Resolving<'a> {
    rewrite: &'a mut RewriteClient,
    p: &'a QmgrParams,
    log: &'a Logger,
}

fn set_rewritten(m: &mut ActiveMessage, i: usize, address: Vec<u8>) {
    if let Some(held) = m.rcpts.get_mut(i) {
        held.rewritten = Some(address);
    }
}

impl Resolving<'_> {
    /// Resolves the recipients from index `first` on
    /// (`qmgr_message_resolve()`): asks trivial-rewrite (or not, under a
    /// content filter), then routes each as routing.rs decides.
    async fn resolve_all(
        &mut self,
        m: &mut ActiveMessage,
        file: &mut File,
        first: usize,
    ) -> Vec<Route> {
        let mut routes = Vec::with_capacity(m.rcpts.end().saturating_sub(first));
        let tflags = m.tflags();
        let (redirect_to, filter) = (m.env.redirect.clone(), m.env.filter.clone());
        let source = routing::source(
            redirect_to.as_deref(),
            filter.as_deref(),
            tflags & DEL_REQ_TRACE_ONLY_MASK != 0,
        );
        let state = routing::MessageState {
            force_expire: m.qflags & FORCE_EXPIRE != 0,
            defer_transports_lifted: m.qflags & FLUSH_DFXP != 0,
        };
        let mut batch = std::collections::VecDeque::new();
        for i in first..m.rcpts.end() {
            let Some(held) = m.rcpts.get(i) else {
                continue;
            };
            let address = held.rcpt.address.clone();
            let reply = match source {
                Source::Resolver => {
                    if batch.is_empty() {
                        batch = self.resolve_batch(m, i, tflags).into();
                    }
                    match batch.pop_front().flatten() {
                        Some(r) => routing::resolver_verdict(r),
                        None => self.resolve_one(m, &address, tflags).await,
                    }
                }
                Source::Redirect(to) => {
                    // Only the first recipient survives a redirect.
                    if i > 0 {
                        m.rcpts.release(i);
                        continue;
                    }
                    let canonical = self.rewrite_canonical(to).await;
                    set_rewritten(m, i, canonical.clone());
                    self.resolve_one(m, &canonical, tflags).await
                }
                Source::Filter(filter) => routing::filter_route(
                    filter,
                    &address,
                    &self.p.default_filter_nexthop,
                    &self.p.myhostname,
                ),
            };
            if reply.recipient != m.address(i) {
                set_rewritten(m, i, reply.recipient.clone());
            }
            let config = RoutingConfig {
                double_bounce_sender: &self.p.double_bounce_sender,
                defer_transports: &self.p.defer_transports,
            };
            match routing::route(reply, state, &config) {
                Routing::DiscardDoubleBounce => {
                    self.discard_double_bounce(m, i, file);
                    m.rcpts.release(i);
                }
                // Byte for byte: agents must get the next hop as
                // trivial-rewrite gave it, and queues are named after it.
                Routing::Deliver(reply) => routes.push(Route {
                    rcpt: u32::try_from(i).unwrap_or(u32::MAX),
                    transport: reply.transport.into(),
                    nexthop: reply.nexthop.into(),
                    address: reply.recipient.into(),
                }),
            }
        }
        routes
    }

    /// One resolve, retried until trivial-rewrite answers, as Postfix's
    /// resolve client does; then the FAIL and ERROR redirections of
    /// `qmgr_resolve_one()`.
    async fn resolve_one(
        &mut self,
        m: &ActiveMessage,
        address: &[u8],
        tflags: i32,
    ) -> ResolveReply {
        let verify = tflags & DEL_REQ_FLAG_MTA_VRFY != 0;
        let mut trouble = RewriteTrouble::default();
        let reply = loop {
            match self.rewrite.resolve(verify, &m.env.sender, address) {
                Ok(r) => break r,
                Err(e) => {
                    let pause = self.rewrite_trouble(&e, &mut trouble);
                    tokio::time::sleep(pause).await;
                }
            }
        };
        routing::resolver_verdict(reply)
    }

    /// Asks trivial-rewrite about the recipients from index `first` on, a
    /// few at once (see `rqmgr_ipc::rewrite` on why that is faster and
    /// changes nothing). `None`: resolve that one with [`Self::resolve_one`].
    fn resolve_batch(
        &mut self,
        m: &ActiveMessage,
        first: usize,
        tflags: i32,
    ) -> Vec<Option<ResolveReply>> {
        let verify = tflags & DEL_REQ_FLAG_MTA_VRFY != 0;
        let addresses: Vec<&[u8]> = (first..m.rcpts.end())
            .filter_map(|i| m.rcpts.get(i))
            .take(RESOLVE_CONNECTIONS)
            .map(|h| h.rcpt.address.as_slice())
            .collect();
        self.rewrite
            .resolve_several(verify, &m.env.sender, &addresses)
    }

    async fn rewrite_canonical(&mut self, address: &[u8]) -> Vec<u8> {
        let mut trouble = RewriteTrouble::default();
        loop {
            match self.rewrite.rewrite("canonicalize", address) {
                Ok(r) => return r,
                Err(e) => {
                    let pause = self.rewrite_trouble(&e, &mut trouble);
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Logs a failed trivial-rewrite request as Postfix's clients do and
    /// returns the pause before the next try. A connection that cannot be
    /// made is `mail_connect_wait()`: a warning per attempt, ten seconds
    /// apart, fatal at the eleventh. A request that fails on a connection
    /// is the resolve/rewrite client loop: quiet the first time unless
    /// the error is a real one, then a warning every second.
    fn rewrite_trouble(&mut self, e: &IpcError, t: &mut RewriteTrouble) -> Duration {
        if let IpcError::Connect { service, source } = e {
            t.connects += 1;
            let text = format!(
                "connect #{} to subsystem {}: {}",
                t.connects,
                service,
                os_error(source)
            );
            if t.connects > 10 {
                self.log.die(&text);
            }
            self.log.warning(&text);
            self.log.flush();
            return Duration::from_secs(10);
        }
        t.connects = 0;
        t.requests += 1;
        if t.requests > 1 || !e.quiet_on_first_attempt() {
            self.log.warning(&format!(
                "problem talking to service {}: {}",
                self.p.rewrite_service_name, e
            ));
        }
        self.log.flush();
        Duration::from_secs(1)
    }

    /// Mail to the double-bounce address is discarded here, logged as
    /// sent, and marked done in the file.
    fn discard_double_bounce(&mut self, m: &ActiveMessage, i: usize, file: &mut File) {
        let Some(held) = m.rcpts.get(i) else {
            return;
        };
        let r = &held.rcpt;
        let line = adhoc::status_line(
            m.queue_id.as_str(),
            m.address(i),
            &r.orig_rcpt,
            adhoc::Stamps {
                incoming_arrival: m.env.arrival,
                active_arrival: rqmgr_ipc::deliver::timeval(m.active_arrival),
            },
            clock::precise(),
            "2.0.0",
            "sent",
            b"undeliverable postmaster notification discarded",
            u32::try_from(self.p.delay_logging_resolution_limit).unwrap_or(2),
        );
        self.log.info(&line);
        if let Err(e) = rqmgr_queue::update::mark_done(file, r.offset) {
            self.log.die(&format!(
                "update queue file active/{}: {}",
                m.queue_id,
                os_error(&e)
            ));
        }
    }
}

/// Failed tries of one trivial-rewrite request (see
/// `Resolving::rewrite_trouble`).
#[derive(Debug, Default)]
struct RewriteTrouble {
    /// Connection attempts that failed in a row.
    connects: u32,
    /// Requests that failed on an established connection.
    requests: u32,
}
