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
//! nothing else ever deletes or rewrites a queue file here. Where each
//! recipient goes is resolve.rs's part.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;

use rqmgr_queue::dirs::{mtime_secs, QueueName, MODE_EXPIRE, MODE_UNTHROTTLE};
use rqmgr_queue::message::{read_opened_message, QueueMessage, ReadLimits};
use rqmgr_queue::queue_id::QueueId;
use rqmgr_sched::{Event, MessageId, Route};

use crate::clock;
use crate::logging::os_error;
use crate::message::{ActiveMessage, Dests, InCore};
use crate::scan::{QueueScan, FLUSH_DFXP, FLUSH_EACH, FORCE_EXPIRE, SCAN_ALL};
use crate::state::Core;

impl Core {
    /// Tries to feed the next file of `scan` (`qmgr_active_feed()`).
    /// Returns (a file was found, a message entered the active queue).
    pub(crate) async fn feed(&mut self, scan: &mut QueueScan) -> (bool, bool) {
        let id = match scan.next(self.spool.layout()) {
            Ok(Some(id)) => id,
            Ok(None) => return (false, false),
            Err(e) => {
                let q = scan.queue().as_str();
                self.log.die(&format!("scan_dir_next: {q}: {e}"));
            }
        };
        let queue = scan.queue();
        let Some(md) = self.spool.ready(queue, &id) else {
            return (true, false);
        };
        let flags = scan.flags();
        if flags & SCAN_ALL == 0 && mtime_secs(&md) > self.now.secs() + 1 {
            return (true, false);
        }
        if !self.spool.activate(queue, &id) {
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
        if fed {
            self.metrics.inserted(queue.as_str());
        }
        (true, fed)
    }

    /// Brings a file just moved to `active/` into the active queue
    /// (`qmgr_message_alloc()`): read it, then resolve its recipients and
    /// hand them to the scheduler. False if it did not enter (unreadable,
    /// or still being delivered by an agent of an earlier queue manager).
    async fn activate(&mut self, id: QueueId, qflags: u32, new_mode: u32) -> bool {
        let Some((mut file, env)) = self.read_new(&id, new_mode) else {
            return false;
        };
        let msg = self.new_message_id();
        let mut message = ActiveMessage {
            queue_id: id.clone(),
            qflags,
            env,
            active_arrival: clock::precise(),
            status: 0,
            rcpts: InCore::default(),
            reread_at_end: false,
            dests: Dests::default(),
        };
        // Its destinations are those of this attempt from now on.
        self.control.index_dirty |= self.control.deferred.remove(&id);
        let batch = std::mem::take(&mut message.env.recipients);
        message.rcpts.extend(batch);
        let more = message.env.resume_offset.is_some() && message.env.redirect.is_none();
        // A force-expired message that already has a defer log bounces
        // with that log's reasons; the recipients of this read are not
        // delivered again. Those the file holds beyond it are read when
        // this read is done, and go to `retry`, so that the notice names
        // them too (Postfix means to do so, but panics instead: its
        // next read finds this read's recipients still in core).
        if qflags & FORCE_EXPIRE != 0 && self.spool.has_log(QueueName::Defer, &id) {
            message.status = 1;
            self.messages.insert(msg, Box::new(message));
            self.sched_message(msg, Vec::new(), more, false);
            return true;
        }
        self.spool.remove_defer_log(&id);
        self.messages.insert(msg, Box::new(message));
        let routes = self.resolve(msg, &mut file, 0).await;
        self.sched_message(msg, routes, more, qflags & FLUSH_EACH != 0);
        true
    }

    /// The first read of a file in `active/` (`qmgr_message_open()` and
    /// `qmgr_message_read()`): open, lock to detect an agent of an earlier
    /// queue manager at work, read the envelope and a first batch of
    /// recipients, log `(queue active)`, and clear the fast-flush mode bit
    /// (`new_mode`, if not 0). `None` if the message cannot enter now; the
    /// file was moved where Postfix moves it.
    fn read_new(&mut self, id: &QueueId, new_mode: u32) -> Option<(File, QueueMessage)> {
        let path = self.spool.path(QueueName::Active, id);
        let Some(mut file) = self.spool.open_message(id) else {
            // Vanished: Postfix's qmgr_active_corrupt() finds nothing to move.
            self.spool.save_corrupt(id);
            return None;
        };
        match rqmgr_queue::lock::lock_exclusive_nb(&file) {
            Ok(true) => {}
            Ok(false) => {
                self.log
                    .info(&format!("{id}: skipped, still being delivered"));
                drop(file);
                let until = self.now.secs() + 60;
                self.spool.defer(id, QueueName::Incoming, until);
                return None;
            }
            Err(e) => self
                .log
                .die(&format!("lock {}: {}", path.display(), os_error(&e))),
        }
        let limits = ReadLimits {
            resume_offset: None,
            max_recipients: self.sched.recipient_budget(),
            verp_delimiter_filter: self.p.verp_delimiter_filter.as_bytes().to_vec(),
            max_length_bytes: self.compat.record_length_bytes,
        };
        let mut env = match read_opened_message(&mut file, &limits) {
            Ok(env) => env,
            Err(e) => {
                for line in e.postfix_warnings(id.as_str(), &path.display().to_string()) {
                    self.log.warning(&line);
                }
                drop(file);
                self.spool.save_corrupt(id);
                return None;
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
        // The sender as it is: the logger makes it printable.
        let line = [
            id.as_str().as_bytes(),
            b": from=<",
            &env.sender,
            format!(">, size={size}, nrcpt={nrcpt} (queue active)").as_bytes(),
        ]
        .concat();
        self.log.info(&line);
        if new_mode != 0 {
            if let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(new_mode)) {
                self.log
                    .die(&format!("fchmod {}: {}", path.display(), os_error(&e)));
            }
        }
        Some((file, env))
    }

    /// Reads the next batch of recipients (`qmgr_message_realloc()`).
    /// `early`: some in-core recipients of the message are still waiting
    /// or being delivered, so the new ones get indexes after theirs;
    /// otherwise indexes start afresh.
    ///
    /// A read that fails early leaves the file where it is, as Postfix
    /// does: the recipients in core still go to their agents (which fail
    /// to open a file that went, and so give their slots back), and the
    /// read is tried again once they are done (finish.rs). A read that
    /// fails with nothing left in core sends the file to `corrupt/`.
    pub(crate) async fn refill(&mut self, msg: MessageId, early: bool) {
        let budget = self.sched.refill_budget(msg);
        let Some(message) = self.messages.get_mut(&msg) else {
            return;
        };
        let id = message.queue_id.clone();
        let path = self.spool.path(QueueName::Active, &id);
        let read = match self.spool.open_message(&id) {
            Some(mut file) => match message.env.refill(&mut file, budget) {
                Ok(()) => Some(file),
                Err(e) => {
                    for line in e.postfix_warnings(id.as_str(), &path.display().to_string()) {
                        self.log.warning(&line);
                    }
                    None
                }
            },
            None => None,
        };
        let Some(mut file) = read else {
            if early {
                message.reread_at_end = true;
            } else {
                self.messages.remove(&msg);
                self.spool.save_corrupt(&id);
            }
            self.sched
                .handle(Event::MessageAbandoned { msg }, self.now.sched());
            return;
        };
        message.reread_at_end = false;
        for w in &message.env.warnings {
            self.log.warning(&w.postfix_line(id.as_str()));
        }
        if !early {
            message.rcpts.restart();
        }
        let batch = std::mem::take(&mut message.env.recipients);
        let first = message.rcpts.extend(batch);
        let more = message.env.resume_offset.is_some();
        let flush_each = message.qflags & FLUSH_EACH != 0;
        let routes = self.resolve(msg, &mut file, first).await;
        self.sched_message(msg, routes, more, flush_each);
    }

    fn sched_message(&mut self, msg: MessageId, routes: Vec<Route>, more: bool, flush_each: bool) {
        let now = self.now.sched();
        // VERP rewrites the sender per recipient: one recipient per request.
        let single_rcpt = self.messages.get(&msg).is_some_and(|m| m.env.single_rcpt);
        if let Some(m) = self.messages.get_mut(&msg) {
            m.tag_destinations(&routes);
        }
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
}
