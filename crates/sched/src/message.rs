//! Messages in the active queue: recipients in, entries out
//! (`qmgr_message.c`: resolve, assign, recipient limits).
//!
//! Recipients arrive in batches ([`crate::Event::Message`]); each batch is
//! first bound to live queues (`qmgr_message_resolve()`, with dead
//! transports and destinations redirected to `retry`, and the site hog
//! factor applied), then grouped into entries (`qmgr_message_assign()`):
//! a recipient joins its peer's last waiting entry while the transport's
//! `_destination_recipient_limit` allows, else starts a new one.
//!
//! Recipient slots (preemptive mode): a message may hold `rcpt_limit`
//! recipients in core; it starts with `qmgr_message_recipient_minimum`
//! and its jobs borrow more from their transports' pools, in arrival
//! order, returning what they do not need once the message is fully read.
//!
//! Invariants: `refcount` counts the message's entries; `rcpt_count` their
//! recipients; `rcpt_limit` equals the minimum plus the slots its jobs
//! hold; a message with `refilling` set has an [`crate::Action::Refill`]
//! outstanding and is neither refilled again nor finished meanwhile.

use crate::entry::count;
use crate::event::{Dsn, MessageId, Route};
use crate::list::{ix, NIL};
use crate::time::Time;
use crate::{Scheduler, RETRY_TRANSPORT};

/// Why the site hog factor deferred a recipient (early Postfix's text).
pub(crate) const HOG_REASON: &str = "site destination queue overflow";

/// What the core remembers of a message in the active queue.
#[derive(Debug)]
pub(crate) struct Message {
    pub id: MessageId,
    /// Entries not yet done.
    pub refcount: u32,
    /// In-core recipients (in entries not yet done).
    pub rcpt_count: i64,
    pub rcpt_limit: i64,
    /// Recipients still in the file, as the caller last said (0 = unknown).
    pub rcpt_unread: u32,
    /// When the message entered the active queue.
    pub queued: Time,
    /// When recipients were last read.
    pub refill_time: Time,
    pub deferred: bool,
    /// The file holds recipients not yet read (`rcpt_offset != 0`).
    pub more: bool,
    pub refilling: bool,
    /// One recipient per entry (VERP: `message->single_rcpt`).
    pub single_rcpt: bool,
    /// The message's jobs, one per transport it uses.
    pub jobs: Vec<u32>,
}

impl Scheduler {
    pub(crate) fn message_arrived(
        &mut self,
        msg: MessageId,
        routes: Vec<Route>,
        more: bool,
        flush_each: bool,
        single_rcpt: bool,
    ) {
        let m = match self.message_ids.get(&msg) {
            Some(&m) => {
                let message = &mut self.messages[m as usize];
                message.refilling = false;
                message.more = more;
                message.refill_time = self.now;
                m
            }
            None => {
                let m = ix(self.messages.insert(Message {
                    id: msg,
                    refcount: 0,
                    rcpt_count: 0,
                    rcpt_limit: count(self.cfg.message_recipient_minimum),
                    rcpt_unread: 0,
                    queued: self.now,
                    refill_time: self.now,
                    deferred: false,
                    more,
                    refilling: false,
                    single_rcpt,
                    jobs: Vec::new(),
                }));
                self.message_ids.insert(msg, m);
                m
            }
        };
        if !more && self.messages[m as usize].rcpt_unread != 0 {
            self.messages[m as usize].rcpt_unread = 0;
            self.message_rekey(m);
        }
        // Resolve the whole batch before assigning any of it, so that the
        // hog factor sees the queues as they were before this batch.
        let mut bound = Vec::with_capacity(routes.len());
        for route in &routes {
            if let Some(q) = self.bind_recipient(m, route, flush_each) {
                bound.push((route.rcpt, q));
            }
        }
        drop(routes);
        self.assign(m, bound);
        if !self.messages[m as usize].more {
            for j in self.messages[m as usize].jobs.clone() {
                self.job_move_limits(j);
            }
        }
        self.maybe_message_done(m);
    }

    /// Groups bound recipients into entries (`qmgr_message_assign()`).
    fn assign(&mut self, m: u32, bound: Vec<(u32, usize)>) {
        let (mut job, mut jt) = (NIL, usize::MAX);
        let (mut peer, mut pq) = (NIL, usize::MAX);
        for (rcpt, q) in bound {
            let t = self.queues[q].transport;
            if job == NIL || jt != t {
                job = self.job_obtain(m, ix(t));
                jt = t;
                peer = NIL;
            }
            if peer == NIL || pq != q {
                peer = self.peer_obtain(job, ix(q));
                pq = q;
            }
            let limit = if self.messages[m as usize].single_rcpt {
                1
            } else {
                self.queues[q]
                    .limits
                    .recipient_limit(&self.transports[t].cfg) as usize
            };
            let last = self.peers[peer as usize].entries.tail;
            let e = if last == NIL
                || (limit != 0 && self.entries[last as usize].rcpts.len() >= limit)
            {
                let e = self.entry_create(peer);
                self.refresh(q);
                e
            } else {
                last
            };
            self.entries[e as usize].rcpts.push(rcpt);
            self.queues[q].todo_rcpts += 1;
            self.jobs[job as usize].rcpt_count += 1;
            self.messages[m as usize].rcpt_count += 1;
            self.recipients += 1;
        }
        // The unread count may have changed every candidate choice.
        if self.cfg.preemptive {
            for &j in &self.messages[m as usize].jobs {
                let job = &self.jobs[j as usize];
                let tr = &mut self.transports[job.transport as usize];
                if job.selected_entries < job.read_entries && job.blocker_tag != tr.blocker_tag {
                    tr.reset_candidate_cache();
                }
            }
        }
    }

    /// The queue name for a recipient (`qmgr_message_resolve()`): the next
    /// hop, or for one-recipient transports `localpart@nexthop`, so that
    /// concurrency is limited per recipient; ASCII letters folded to lower
    /// case and every other byte kept, as Postfix's `lowercase()` does, so
    /// names that differ in any non-ASCII byte name different queues.
    fn queue_name(&self, transport: usize, route: &Route) -> Vec<u8> {
        if !self.transports[transport].per_recipient_queues() {
            return route.nexthop.to_ascii_lowercase();
        }
        let address = &route.address[..];
        let local = match address.iter().rposition(|&b| b == b'@') {
            Some(at) => &address[..at],
            None => address,
        };
        // Postfix cuts at the first byte of the delimiter set.
        let delims = self.cfg.recipient_delimiter.as_bytes();
        let local = match local.iter().position(|b| delims.contains(b)) {
            Some(cut) if cut > 0 => &local[..cut],
            _ => local,
        };
        let mut name = Vec::with_capacity(local.len() + 1 + route.nexthop.len());
        name.extend_from_slice(local);
        name.push(b'@');
        name.extend_from_slice(&route.nexthop);
        name.make_ascii_lowercase();
        name
    }

    /// Finds the live queue for one recipient, redirecting around dead
    /// transports and destinations to `retry`; None if the recipient was
    /// deferred on the spot (even `retry` is dead, or the site hogs).
    fn bind_recipient(&mut self, m: u32, route: &Route, flush_each: bool) -> Option<usize> {
        if let Some(dsn) = self.controls.hold_for(route) {
            let dsn = dsn.clone();
            self.defer_recipient(m, route.rcpt, dsn);
            return None;
        }
        let mut t = self.transport_id(&route.transport);
        if flush_each && self.transports[t].is_dead() {
            self.transport_unthrottle(t);
        }
        let mut nexthop_override = None;
        if let Some(dsn) = self.transports[t].dsn.clone() {
            let retry = self.transport_id(RETRY_TRANSPORT.as_bytes());
            if self.transports[retry].is_dead() {
                self.defer_recipient(m, route.rcpt, dsn);
                return None;
            }
            t = retry;
            nexthop_override = Some(dsn.error_nexthop());
        }
        let redirected = nexthop_override.is_some();
        let (name, nexthop) = match &nexthop_override {
            Some(nh) => (nh.to_ascii_lowercase(), &nh[..]),
            None => (self.queue_name(t, route), &route.nexthop[..]),
        };
        let q = self.queue_id(t, &name, nexthop);
        if flush_each && self.queues[q].is_dead() {
            self.queue_unthrottle(q);
        }
        if let Some(dsn) = self.queues[q].dsn.clone() {
            return match self.retry_queue(&dsn) {
                Some(rq) => Some(rq),
                None => {
                    self.defer_recipient(m, route.rcpt, dsn);
                    None
                }
            };
        }
        if !redirected && self.site_hogs(q) {
            self.defer_recipient(m, route.rcpt, Dsn::new("4.4.5", HOG_REASON));
            return None;
        }
        Some(q)
    }

    /// `qmgr_site_hog_factor` as early Postfix's `qmgr_message_resolve()`
    /// applied it: a destination whose entries (waiting plus busy) exceed
    /// hog-factor percent of the active queue — its message count when
    /// in-core recipients are above 80% of `qmgr_message_recipient_limit`,
    /// else `qmgr_message_active_limit` — gets no more recipients now;
    /// they are deferred and come back in a later queue run.
    pub(crate) fn site_hogs(&self, q: usize) -> bool {
        let hog = self.cfg.site_hog_factor;
        if hog >= 100 {
            return false;
        }
        let busy_system = self.recipients as f64 > 0.8 * self.cfg.message_recipient_limit as f64;
        let base = if busy_system {
            self.messages.len()
        } else {
            self.cfg.message_active_limit
        };
        f64::from(self.queues[q].length()) > f64::from(hog) / 100.0 * base as f64
    }

    pub(crate) fn defer_recipient(&mut self, m: u32, rcpt: u32, dsn: Dsn) {
        let message = &mut self.messages[m as usize];
        message.deferred = true;
        let msg = message.id;
        self.actions
            .push_back(crate::Action::DeferRecipient { msg, rcpt, dsn });
    }

    /// Records how many recipients the message's file still holds beyond
    /// those handed in (`rcpt_unread`), for the candidate scores.
    pub(crate) fn message_info(&mut self, msg: MessageId, unread: u32) {
        if let Some(&m) = self.message_ids.get(&msg) {
            let message = &mut self.messages[m as usize];
            message.rcpt_unread = if message.more { unread } else { 0 };
            if self.cfg.preemptive {
                for &j in &message.jobs {
                    self.transports[self.jobs[j as usize].transport as usize]
                        .reset_candidate_cache();
                }
                self.message_rekey(m);
            }
        }
    }

    /// The message's unread count changed: so did its jobs' tree keys.
    fn message_rekey(&mut self, m: u32) {
        // By index: rekeying never changes a message's job list.
        for k in 0..self.messages[m as usize].jobs.len() {
            let j = self.messages[m as usize].jobs[k];
            self.job_rekey(j);
        }
    }

    /// How many recipients the next read of `msg` may take in.
    pub(crate) fn message_budget(&self, msg: MessageId) -> usize {
        let Some(&m) = self.message_ids.get(&msg) else {
            return self.first_read_budget();
        };
        if !self.cfg.preemptive {
            return self.oqmgr_per_message();
        }
        let message = &self.messages[m as usize];
        let free = message.rcpt_limit - message.rcpt_count;
        usize::try_from(free)
            .unwrap_or(0)
            .clamp(1, READ_LATENCY_CAP)
    }

    /// The first read of a new message.
    pub(crate) fn first_read_budget(&self) -> usize {
        if !self.cfg.preemptive {
            return self.oqmgr_per_message();
        }
        // At least the per-message minimum, so every message progresses
        // however full the active queue is.
        self.cfg
            .message_recipient_limit
            .saturating_sub(self.recipients)
            .max(self.cfg.message_recipient_minimum)
            .clamp(1, READ_LATENCY_CAP)
    }

    /// oqmgr reads up to fudge-factor percent of the in-core limit per
    /// message, whatever the others hold.
    pub(crate) fn oqmgr_per_message(&self) -> usize {
        let limit = self.cfg.message_recipient_limit as u128 * u128::from(self.cfg.fudge_factor);
        usize::try_from(limit.div_ceil(100))
            .unwrap_or(usize::MAX)
            .max(1)
    }
}

/// Postfix's qmgr reads at most this many recipients at once, to keep the
/// time spent reading (when nothing else happens) short.
pub(crate) const READ_LATENCY_CAP: usize = 5000;
