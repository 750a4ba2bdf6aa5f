//! Bringing a message into the active queue (`qmgr_active_feed()` and
//! `qmgr_message_alloc()`): move the file, lock it, read it, resolve each
//! recipient, and hand the routes to the scheduler.
//!
//! Order matters and follows Postfix: the rename to `active/` comes first
//! (so a crash leaves the file where the next start-up recovers it); the
//! exclusive lock is taken only on the first read and only to detect a
//! delivery agent of an earlier qmgr still at work; the `defer/` log is
//! unlinked only after the file read cleanly, because from then on the
//! queue file's `D` records, not the old log, say what is left to do.
//!
//! A file that cannot be read goes to `corrupt/` with Postfix's warning;
//! nothing else ever deletes or rewrites a queue file here.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use rqmgr_ipc::error::IpcError;
use rqmgr_ipc::rewrite::{resolve_flags, ResolveReply, RESOLVE_CONNECTIONS};
use rqmgr_queue::dirs::{mtime_secs, QueueName};
use rqmgr_queue::message::{read_message, ReadLimits};
use rqmgr_queue::queue_id::QueueId;
use rqmgr_sched::{Event, MessageId, Route};

use crate::adhoc;
use crate::message::{ActiveMessage, InCore, DEL_REQ_FLAG_MTA_VRFY, DEL_REQ_TRACE_ONLY_MASK};
use crate::runtime::{now_secs, Runtime};
use crate::scan::{FLUSH_DFXP, FLUSH_EACH, FORCE_EXPIRE, SCAN_ALL};

/// Group-read: fast flush asked for this file (`MAIL_QUEUE_STAT_UNTHROTTLE`).
const MODE_UNTHROTTLE: u32 = 0o040;
/// Group-execute: force-expire this file (`MAIL_QUEUE_STAT_EXPIRE`).
const MODE_EXPIRE: u32 = 0o010;

fn set_rewritten(m: &mut ActiveMessage, i: usize, address: Vec<u8>) {
    if let Some(held) = m.rcpts.get_mut(i) {
        held.rewritten = Some(address);
    }
}

/// The FAIL and ERROR redirections of `qmgr_resolve_one()`.
fn qmgr_resolve_redirects(mut reply: ResolveReply) -> ResolveReply {
    if reply.flags & resolve_flags::FAIL != 0 {
        redirect(&mut reply, "retry", "4.3.0 address resolver failure");
    } else if reply.flags & resolve_flags::ERROR != 0 {
        redirect(&mut reply, "error", "5.1.3 bad address syntax");
    }
    reply
}

impl Runtime {
    /// Tries to feed the next file of scan `idx`. Returns (a file was
    /// found, a message entered the active queue).
    pub(crate) async fn feed(&mut self, idx: usize) -> (bool, bool) {
        let next = self.scans[idx].next(&self.layout);
        let id = match next {
            Ok(Some(id)) => id,
            Ok(None) => return (false, false),
            Err(e) => {
                let q = self.scans[idx].queue().as_str();
                self.fatal(&format!("scan_dir_next: {q}: {e}"));
            }
        };
        let queue = self.scans[idx].queue();
        let md = match self.layout.open_ok(queue, &id) {
            Ok(Some(md)) => md,
            _ => return (true, false),
        };
        let flags = self.scans[idx].flags();
        if flags & SCAN_ALL == 0 && mtime_secs(&md) > now_secs() + 1 {
            return (true, false);
        }
        if let Err(e) = self.layout.rename(queue, QueueName::Active, &id) {
            let text = format!(
                "qmgr_active_feed: {}: rename from {} to {}: {}",
                id,
                queue.as_str(),
                "active",
                os_error(&e)
            );
            if e.kind() != io::ErrorKind::NotFound {
                self.fatal(&text);
            }
            self.log.warning(&text);
            return (true, false);
        }
        let mode = md.permissions().mode();
        let mut qflags = flags;
        let mut new_mode = 0;
        if mode & MODE_UNTHROTTLE != 0 {
            qflags |= FLUSH_EACH | FLUSH_DFXP;
            new_mode = mode & 0o7777 & !MODE_UNTHROTTLE;
        }
        if mode & MODE_EXPIRE != 0 {
            qflags |= FORCE_EXPIRE;
        }
        let fed = self.activate(id, qflags, new_mode).await;
        (true, fed)
    }

    /// Reads a file just moved to `active/` (`qmgr_message_alloc()`).
    async fn activate(&mut self, id: QueueId, qflags: u32, new_mode: u32) -> bool {
        let path = self.layout.path(QueueName::Active, &id);
        let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) => {
                self.log
                    .warning(&format!("open active {}: {}", id, os_error(&e)));
                self.save_corrupt(&id);
                return false;
            }
        };
        match rqmgr_queue::lock::lock_exclusive_nb(&file) {
            Ok(true) => {}
            Ok(false) => {
                self.log
                    .info(&format!("{id}: skipped, still being delivered"));
                drop(file);
                self.move_to(&id, QueueName::Incoming, 60);
                return false;
            }
            Err(e) => self.fatal(&format!("lock {}: {}", path.display(), os_error(&e))),
        }
        let limits = ReadLimits {
            resume_offset: None,
            max_recipients: self.sched.recipient_budget(),
            max_length_bytes: self.compat.record_length_bytes,
            ..ReadLimits::default()
        };
        let mut env = match read_message(&mut file, &limits) {
            Ok(env) => env,
            Err(e) => {
                for line in e.postfix_warnings(id.as_str(), &path.display().to_string()) {
                    self.log.warning(&line);
                }
                drop(file);
                self.save_corrupt(&id);
                return false;
            }
        };
        env.size.sendopts = self.compat.sendopts(env.size.sendopts);
        for w in &env.warnings {
            self.log.warning(&w.postfix_line(id.as_str()));
        }
        // Postfix logs this when it reads the sender record, with what it
        // knows of the message at that point.
        let (size, nrcpt) = match &env.opened {
            Some(o) => (o.size, o.nrcpt),
            None => (env.size.content_length, env.size.rcpt_count),
        };
        self.log.info(&format!(
            "{}: from=<{}>, size={}, nrcpt={} (queue active)",
            id,
            String::from_utf8_lossy(&env.sender),
            size,
            nrcpt
        ));
        if new_mode != 0 {
            if let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(new_mode)) {
                self.fatal(&format!("fchmod {}: {}", path.display(), os_error(&e)));
            }
        }
        let msg = MessageId(self.next_msg);
        self.next_msg += 1;
        let mut message = ActiveMessage {
            queue_id: id.clone(),
            qflags,
            env,
            active_arrival: SystemTime::now(),
            status: 0,
            rcpts: InCore::default(),
        };
        let batch = std::mem::take(&mut message.env.recipients);
        message.rcpts.extend(batch);
        // A force-expired message that already has a defer log bounces
        // with that log's reasons; it is not delivered again.
        if qflags & FORCE_EXPIRE != 0 && self.has_log(QueueName::Defer, &id) {
            message.status = 1;
            self.messages.insert(msg, message);
            self.sched_message(msg, Vec::new(), false, false);
            return true;
        }
        if let Err(e) = self.layout.remove(QueueName::Defer, &id) {
            if e.kind() != io::ErrorKind::NotFound {
                self.fatal(&format!(
                    "qmgr_message_alloc: {}: remove defer {}: {}",
                    id,
                    id,
                    os_error(&e)
                ));
            }
        }
        let more = message.env.resume_offset.is_some() && message.env.redirect.is_none();
        let routes = self.resolve_all(&mut message, &mut file, 0).await;
        self.messages.insert(msg, message);
        self.sched_message(msg, routes, more, qflags & FLUSH_EACH != 0);
        true
    }

    /// Reads the next batch of recipients (`qmgr_message_realloc()`).
    /// `early`: some in-core recipients of the message are still waiting
    /// or being delivered, so the new ones get indexes after theirs;
    /// otherwise indexes start afresh.
    pub(crate) async fn refill(&mut self, msg: MessageId, early: bool) {
        let Some(mut message) = self.messages.remove(&msg) else {
            return;
        };
        let id = message.queue_id.clone();
        let path = self.layout.path(QueueName::Active, &id);
        let budget = self.sched.refill_budget(msg);
        let read = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(rqmgr_queue::error::Error::from)
            .and_then(|mut f| message.env.refill(&mut f, budget).map(|()| f));
        let mut file = match read {
            Ok(read) => read,
            Err(e) => {
                for line in e.postfix_warnings(id.as_str(), &path.display().to_string()) {
                    self.log.warning(&line);
                }
                self.save_corrupt(&id);
                self.sched
                    .handle(Event::MessageAbandoned { msg }, crate::runtime::sched_now());
                return;
            }
        };
        for w in &message.env.warnings {
            self.log.warning(&w.postfix_line(id.as_str()));
        }
        if !early {
            message.rcpts.restart();
        }
        let batch = std::mem::take(&mut message.env.recipients);
        let first = message.rcpts.extend(batch);
        let more = message.env.resume_offset.is_some();
        let routes = self.resolve_all(&mut message, &mut file, first).await;
        let flush_each = message.qflags & FLUSH_EACH != 0;
        self.messages.insert(msg, message);
        self.sched_message(msg, routes, more, flush_each);
    }

    fn sched_message(&mut self, msg: MessageId, routes: Vec<Route>, more: bool, flush_each: bool) {
        let now = crate::runtime::sched_now();
        // VERP rewrites the sender per recipient: one recipient per request.
        let single_rcpt = self.messages.get(&msg).is_some_and(|m| m.env.single_rcpt);
        self.sched.handle(
            Event::Message {
                msg,
                routes,
                more,
                flush_each,
                single_rcpt,
            },
            now,
        );
        // Preemption judges a job by the recipients it will have, not
        // only those read so far.
        if more {
            if let Some(m) = self.messages.get(&msg) {
                let unread = u32::try_from(m.env.rcpt_unread.max(0)).unwrap_or(u32::MAX);
                self.sched.handle(Event::MessageInfo { msg, unread }, now);
            }
        }
    }

    /// Resolves the recipients from index `first` on
    /// (`qmgr_message_resolve()`), applying Postfix's redirections.
    async fn resolve_all(
        &mut self,
        m: &mut ActiveMessage,
        file: &mut File,
        first: usize,
    ) -> Vec<Route> {
        let mut routes = Vec::with_capacity(m.rcpts.end().saturating_sub(first));
        let tflags = m.tflags();
        let filtered = m.env.filter.is_some() && tflags & DEL_REQ_TRACE_ONLY_MASK == 0;
        let plain = m.env.redirect.is_none() && !filtered;
        let mut batch = std::collections::VecDeque::new();
        for i in first..m.rcpts.end() {
            let Some(held) = m.rcpts.get(i) else {
                continue;
            };
            let address = held.rcpt.address.clone();
            let mut reply;
            if plain {
                if batch.is_empty() {
                    batch = self.resolve_batch(m, i, tflags).await.into();
                }
                reply = match batch.pop_front().flatten() {
                    Some(r) => qmgr_resolve_redirects(r),
                    None => self.resolve_one(m, &address, tflags).await,
                };
            } else if let Some(redirect) = m.env.redirect.clone() {
                // Only the first recipient survives a redirect.
                if i > 0 {
                    m.rcpts.release(i);
                    continue;
                }
                let canonical = self.rewrite_canonical(&redirect).await;
                reply = self.resolve_one(m, &canonical, tflags).await;
                set_rewritten(m, i, canonical);
            } else if let Some(filter) = m
                .env
                .filter
                .clone()
                .filter(|_| tflags & DEL_REQ_TRACE_ONLY_MASK == 0)
            {
                let (transport, nexthop) = split_filter(&filter);
                let nexthop = match nexthop {
                    Some(n) => n.to_vec(),
                    None if !self.p.default_filter_nexthop.is_empty() => {
                        self.p.default_filter_nexthop.as_bytes().to_vec()
                    }
                    None => match domain_of(&address) {
                        Some(d) => d.to_vec(),
                        None => self.p.myhostname.as_bytes().to_vec(),
                    },
                };
                reply = ResolveReply {
                    transport: transport.to_vec(),
                    nexthop,
                    recipient: address.clone(),
                    flags: 0,
                };
            } else {
                reply = self.resolve_one(m, &address, tflags).await;
            }
            if reply.recipient != m.address(i) {
                set_rewritten(m, i, reply.recipient.clone());
            }
            if m.address(i).is_empty() {
                redirect(&mut reply, "error", "5.1.3 null recipient address");
            }
            if m.qflags & FORCE_EXPIRE != 0 {
                redirect(
                    &mut reply,
                    "retry",
                    "4.7.0 message is administratively expired",
                );
            }
            if reply.flags & resolve_flags::CLASS_LOCAL != 0
                && self.is_double_bounce(&reply.recipient)
            {
                self.discard_double_bounce(m, i, file);
                m.rcpts.release(i);
                continue;
            }
            if m.qflags & FLUSH_DFXP == 0
                && self
                    .p
                    .is_deferred_transport(&String::from_utf8_lossy(&reply.transport))
            {
                redirect(&mut reply, "retry", "4.3.2 deferred transport");
            }
            routes.push(Route {
                rcpt: u32::try_from(i).unwrap_or(u32::MAX),
                transport: String::from_utf8_lossy(&reply.transport).into_owned(),
                nexthop: String::from_utf8_lossy(&reply.nexthop).into_owned(),
                address: String::from_utf8_lossy(&reply.recipient).into_owned(),
            });
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
            match self.rewrite.resolve(verify, &m.env.sender, address).await {
                Ok(r) => break r,
                Err(e) => {
                    let pause = self.rewrite_trouble(&e, &mut trouble);
                    tokio::time::sleep(pause).await;
                }
            }
        };
        qmgr_resolve_redirects(reply)
    }

    /// Asks trivial-rewrite about the recipients from index `first` on, a
    /// few at once (see `rqmgr_ipc::rewrite` on why that is faster and
    /// changes nothing). `None`: resolve that one with [`Self::resolve_one`].
    async fn resolve_batch(
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
            .await
    }

    async fn rewrite_canonical(&mut self, address: &[u8]) -> Vec<u8> {
        let mut trouble = RewriteTrouble::default();
        loop {
            match self.rewrite.rewrite("canonicalize", address).await {
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
                self.fatal(&text);
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

    fn is_double_bounce(&self, recipient: &[u8]) -> bool {
        let local = match recipient.iter().rposition(|&b| b == b'@') {
            Some(at) => &recipient[..at],
            None => recipient,
        };
        local.eq_ignore_ascii_case(self.p.double_bounce_sender.as_bytes())
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
                active_arrival: adhoc::timeval(m.active_arrival),
            },
            SystemTime::now(),
            "2.0.0",
            "sent",
            "undeliverable postmaster notification discarded",
            u32::try_from(self.p.delay_logging_resolution_limit).unwrap_or(2),
        );
        self.log.info(&line);
        if let Err(e) = rqmgr_queue::update::mark_done(file, r.offset) {
            self.fatal(&format!(
                "update queue file active/{}: {}",
                m.queue_id,
                os_error(&e)
            ));
        }
    }

    fn has_log(&self, q: QueueName, id: &QueueId) -> bool {
        std::fs::metadata(self.layout.path(q, id)).is_ok_and(|md| md.len() > 0)
    }

    /// Moves an unreadable file out of the way (`qmgr_active_corrupt()`).
    pub(crate) fn save_corrupt(&mut self, id: &QueueId) {
        match self
            .layout
            .rename(QueueName::Active, QueueName::Corrupt, id)
        {
            Ok(()) => self.log.warning(&format!(
                "saving corrupt file \"{id}\" from queue \"active\" to queue \"corrupt\""
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => self.fatal(&format!(
                "qmgr_active_corrupt: save corrupt file queue active id {}: {}",
                id,
                os_error(&e)
            )),
        }
    }

    /// Sets the file's time stamps to now + `delay` seconds, then moves it
    /// from `active/` to `to` (`qmgr_active_defer()`).
    pub(crate) fn move_to(&mut self, id: &QueueId, to: QueueName, delay: i64) {
        let when = now_secs() + delay;
        if let Err(e) = self.layout.set_times(QueueName::Active, id, when) {
            if e.kind() != io::ErrorKind::NotFound {
                let path = self.layout.path(QueueName::Active, id);
                self.fatal(&format!(
                    "qmgr_active_defer: update {} time stamps: {}",
                    path.display(),
                    os_error(&e)
                ));
            }
        }
        if let Err(e) = self.layout.rename(QueueName::Active, to, id) {
            let text = format!(
                "qmgr_active_defer: rename {} from active to {}: {}",
                id,
                to.as_str(),
                os_error(&e)
            );
            if e.kind() != io::ErrorKind::NotFound {
                self.fatal(&text);
            }
            self.log.warning(&text);
        }
    }
}

/// `QMGR_REDIRECT()`: send the recipient to a pseudo-transport whose
/// next hop carries the status text.
fn redirect(reply: &mut ResolveReply, transport: &str, nexthop: &str) {
    reply.flags = 0;
    reply.transport = transport.as_bytes().to_vec();
    reply.nexthop = nexthop.as_bytes().to_vec();
}

fn split_filter(filter: &[u8]) -> (&[u8], Option<&[u8]>) {
    match filter.iter().position(|&b| b == b':') {
        Some(i) if i + 1 < filter.len() => (&filter[..i], Some(&filter[i + 1..])),
        Some(i) => (&filter[..i], None),
        None => (filter, None),
    }
}

fn domain_of(address: &[u8]) -> Option<&[u8]> {
    let at = address.iter().rposition(|&b| b == b'@')?;
    let d = &address[at + 1..];
    (!d.is_empty()).then_some(d)
}

/// The error text as Postfix's `%m` prints it (no "(os error N)").
/// Failed tries of one trivial-rewrite request (see
/// `Runtime::rewrite_trouble`).
#[derive(Debug, Default)]
struct RewriteTrouble {
    /// Connection attempts that failed in a row.
    connects: u32,
    /// Requests that failed on an established connection.
    requests: u32,
}

pub(crate) fn os_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_nexthop_forms() {
        assert_eq!(
            split_filter(b"scan:[127.0.0.1]:10025"),
            (&b"scan"[..], Some(&b"[127.0.0.1]:10025"[..]))
        );
        assert_eq!(split_filter(b"scan:"), (&b"scan"[..], None));
        assert_eq!(split_filter(b"scan"), (&b"scan"[..], None));
    }

    #[test]
    fn errno_text_is_strerror() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(os_error(&e), "No such file or directory");
    }
}
