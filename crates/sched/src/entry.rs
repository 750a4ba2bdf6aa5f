//! Entries: a group of recipients of one message for one destination,
//! delivered in one request (`qmgr_entry.c`).
//!
//! An entry waiting for delivery is on two lists: its queue's `todo` (the
//! destination's FIFO, which oqmgr serves) and its peer's entry list (the
//! job's share of that destination, which qmgr serves). Once selected it is
//! on neither and counts in its queue's `busy`. Every entry holds one
//! reference to its peer and one to its message; the last entry gone frees
//! the peer, and the message is finished or refilled.

use crate::bytestring::ByteString;
use crate::event::Action;
use crate::list::{self, ix, Links, NIL};
use crate::Scheduler;

/// One delivery request's worth of recipients.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The message's slab index.
    pub msg: u32,
    pub queue: u32,
    pub peer: u32,
    /// Place on the queue's `todo` list.
    pub in_queue: Links,
    /// Place on the peer's entry list.
    pub in_peer: Links,
    pub busy: bool,
    pub rcpts: Rcpts,
}

/// An entry's recipient indexes. Many entries hold one recipient (small
/// messages, or one recipient per destination), which is kept inline:
/// no allocation, and no second cache miss when the entry is delivered.
#[derive(Debug)]
pub(crate) enum Rcpts {
    One(u32),
    /// Empty or more than one.
    Many(Vec<u32>),
}

impl Rcpts {
    const EMPTY: Rcpts = Rcpts::Many(Vec::new());

    pub(crate) fn len(&self) -> usize {
        match self {
            Rcpts::One(_) => 1,
            Rcpts::Many(v) => v.len(),
        }
    }

    pub(crate) fn as_slice(&self) -> &[u32] {
        match self {
            Rcpts::One(r) => std::slice::from_ref(r),
            Rcpts::Many(v) => v,
        }
    }

    pub(crate) fn push(&mut self, rcpt: u32) {
        match self {
            Rcpts::Many(v) if v.is_empty() => *self = Rcpts::One(rcpt),
            Rcpts::One(first) => *self = Rcpts::Many(vec![*first, rcpt]),
            Rcpts::Many(v) => v.push(rcpt),
        }
    }
}

pub(crate) fn in_queue(e: &mut Entry) -> &mut Links {
    &mut e.in_queue
}

pub(crate) fn in_peer(e: &mut Entry) -> &mut Links {
    &mut e.in_peer
}

impl Scheduler {
    /// A new, empty entry at the end of the peer's and the queue's lists
    /// (`qmgr_entry_create()`).
    pub(crate) fn entry_create(&mut self, p: u32) -> u32 {
        let peer = &self.peers[p as usize];
        let (q, j) = (peer.queue, peer.job);
        let m = self.jobs[j as usize].msg;
        let e = ix(self.entries.insert(Entry {
            msg: m,
            queue: q,
            peer: p,
            in_queue: Links::NONE,
            in_peer: Links::NONE,
            busy: false,
            rcpts: Rcpts::EMPTY,
        }));
        let peer = &mut self.peers[p as usize];
        list::push_back(&mut self.entries, &mut peer.entries, e, in_peer);
        peer.refcount += 1;
        let queue = &mut self.queues[q as usize];
        list::push_back(&mut self.entries, &mut queue.todo, e, in_queue);
        self.messages[m as usize].refcount += 1;
        self.jobs[j as usize].read_entries += 1;
        self.job_rekey(j);
        self.peer_offer(p);
        self.clog_warning(q as usize);
        e
    }

    /// Postfix's advice when one destination holds more than a fifth of
    /// the active queue (`qmgr_entry_create()`), at most once per
    /// `qmgr_clog_warn_time` per destination. The lines and the choice of
    /// advice are Postfix's, because operators search for them.
    fn clog_warning(&mut self, q: usize) {
        let period = self.cfg.clog_warn_time;
        if period.is_zero() {
            return;
        }
        let limit = self.cfg.message_active_limit;
        let queue = &self.queues[q];
        let length = queue.length() as usize;
        if length <= limit / 5 || self.now < queue.clog_time_to_warn {
            return;
        }
        let messages = self.messages.len();
        let share = length as f64 / messages.max(1) as f64;
        let t = &self.transports[queue.transport];
        // Names go into the lines as the bytes they are, as in Postfix.
        let with = |parts: &[&[u8]]| ByteString::from(parts.concat());
        let mut lines = vec![with(&[
            b"mail for ",
            &queue.nexthop,
            format!(" is using up {length} of {messages} active queue entries").as_bytes(),
        ])];
        if share < 0.9 {
            lines.push("this may slow down other mail deliveries".into());
        }
        let conc = t.cfg.dest_concurrency_limit;
        if conc > 0 && conc <= queue.busy + 1 {
            lines.push(with(&[
                b"you may need to increase the main.cf ",
                &t.name,
                format!("_destination_concurrency_limit from {conc}").as_bytes(),
            ]));
        } else if f64::from(queue.window) > limit as f64 * share {
            lines.push(
                format!(
                    "you may need to increase the main.cf qmgr_message_active_limit from {limit}"
                )
                .into(),
            );
        } else if t.queues.len() > 1 {
            lines.push(with(&[
                b"you may need a separate master.cf transport for ",
                &queue.nexthop,
            ]));
        } else {
            lines.push(with(&[
                b"you may need to reduce ",
                &t.name,
                b" connect and helo timeouts",
            ]));
            lines.push("so that Postfix quickly skips unavailable hosts".into());
            lines.push(
                "you may need to increase the main.cf minimal_backoff_time and maximal_backoff_time"
                    .into(),
            );
            lines.push("so that Postfix wastes less time on undeliverable mail".into());
            lines.push(with(&[
                b"you may need to increase the master.cf ",
                &t.name,
                b" process limit",
            ]));
        }
        lines.push("please avoid flushing the whole queue when you have".into());
        lines.push("lots of deferred mail, that is bad for performance".into());
        lines.push("to turn off these warnings specify: qmgr_clog_warn_time = 0".into());
        self.queues[q].clog_time_to_warn = self.now + period;
        self.actions.extend(
            lines
                .into_iter()
                .map(|text| crate::Action::Warning { text }),
        );
    }

    /// Takes a waiting entry off its lists for delivery
    /// (`qmgr_entry_select()`), with the session-caching hints.
    pub(crate) fn entry_select(&mut self, e: u32) {
        let entry = &self.entries[e as usize];
        if entry.busy {
            panic!("entry_select: entry {e} is already busy");
        }
        let (q, p) = (entry.queue as usize, entry.peer);
        let peer = &mut self.peers[p as usize];
        list::unlink(&mut self.entries, &mut peer.entries, e, in_peer);
        let j = peer.job as usize;
        let queue = &mut self.queues[q];
        list::unlink(&mut self.entries, &mut queue.todo, e, in_queue);
        queue.busy += 1;
        queue.todo_rcpts -= self.entries[e as usize].rcpts.len();
        queue.update_dest_flags(self.now);
        self.transports[queue.transport].busy += 1;
        self.entries[e as usize].busy = true;
        self.jobs[j].selected_entries += 1;
        self.job_rekey(ix(j));
        self.refresh(q);
    }

    /// Puts a busy entry back as if never selected, because the request
    /// never reached the agent (`qmgr_entry_unselect()`).
    pub(crate) fn entry_unselect(&mut self, e: u32) {
        let entry = &mut self.entries[e as usize];
        if !entry.busy {
            panic!("entry_unselect: entry {e} is not busy");
        }
        entry.busy = false;
        let (q, p) = (entry.queue as usize, entry.peer);
        let queue = &mut self.queues[q];
        queue.busy = queue.busy.saturating_sub(1);
        queue.todo_rcpts += entry.rcpts.len();
        let tr = &mut self.transports[queue.transport];
        tr.busy = tr.busy.saturating_sub(1);
        list::push_back(&mut self.entries, &mut queue.todo, e, in_queue);
        let peer = &mut self.peers[p as usize];
        list::push_front(&mut self.entries, &mut peer.entries, e, in_peer);
        let j = peer.job as usize;
        self.jobs[j].selected_entries -= 1;
        self.job_rekey(ix(j));
        self.peer_offer(p);
        self.refresh(q);
    }

    /// Moves a waiting entry's recipients to another (live) queue, under
    /// the message's job for that queue's transport
    /// (`qmgr_entry_move_todo()`).
    pub(crate) fn entry_move_todo(&mut self, dst_queue: usize, e: u32) {
        let m = self.entries[e as usize].msg;
        let t = ix(self.queues[dst_queue].transport);
        let dst_job = self.job_obtain(m, t);
        let dst_peer = self.peer_obtain(dst_job, ix(dst_queue));
        let new = self.entry_create(dst_peer);
        let rcpts = std::mem::replace(&mut self.entries[e as usize].rcpts, Rcpts::EMPTY);
        // Both entries wait: the recipients change `todo` lists here, and
        // the emptied entry takes none with it when it is done below.
        let src_queue = self.entries[e as usize].queue as usize;
        self.queues[src_queue].todo_rcpts -= rcpts.len();
        self.queues[dst_queue].todo_rcpts += rcpts.len();
        let n = count(rcpts.len());
        let src_job = self.peers[self.entries[e as usize].peer as usize].job;
        self.jobs[src_job as usize].rcpt_count -= n;
        self.jobs[dst_job as usize].rcpt_count += n;
        self.entries[new as usize].rcpts = rcpts;
        self.entry_done(e);
        self.refresh(dst_queue);
    }

    /// Removes a finished, deferred or moved entry (`qmgr_entry_done()`):
    /// recipient counts and slots go back, the peer, queue and message may
    /// go with it.
    pub(crate) fn entry_done(&mut self, e: u32) {
        let entry = self.entries.remove(e as usize);
        let (q, p, m) = (entry.queue as usize, entry.peer, entry.msg);
        let j = self.peers[p as usize].job;
        let t = self.jobs[j as usize].transport as usize;
        if entry.busy {
            let queue = &mut self.queues[q];
            queue.busy = queue.busy.saturating_sub(1);
            let tr = &mut self.transports[queue.transport];
            tr.busy = tr.busy.saturating_sub(1);
        } else {
            self.queues[q].todo_rcpts -= entry.rcpts.len();
            let peer = &mut self.peers[p as usize];
            // Temporarily reinsert nothing: the links live in the removed
            // entry, so splice its neighbours directly.
            splice_out(&mut self.entries, &mut peer.entries, entry.in_peer, in_peer);
            let queue = &mut self.queues[q];
            splice_out(&mut self.entries, &mut queue.todo, entry.in_queue, in_queue);
            self.jobs[j as usize].selected_entries += 1;
            self.job_rekey(j);
        }
        let n = count(entry.rcpts.len());
        self.jobs[j as usize].rcpt_count -= n;
        self.messages[m as usize].rcpt_count -= n;
        self.recipients = self.recipients.saturating_sub(entry.rcpts.len());
        // Slots this message's jobs no longer need go back to the pool:
        // a retired job's, or any job's once the message is fully read.
        let more = self.messages[m as usize].more;
        // By index: job_move_limits never changes a message's job list.
        for k in 0..self.messages[m as usize].jobs.len() {
            let sponsor = self.messages[m as usize].jobs[k];
            let job = &self.jobs[sponsor as usize];
            if job.rcpt_count >= job.rcpt_limit || sponsor == j {
                continue;
            }
            if job.level < 0 || !more {
                self.job_move_limits(sponsor);
            }
        }
        if !more {
            self.job_move_limits(j);
        }
        if entry.busy {
            self.queue_delivery_done(q, t);
        }
        let peer = &mut self.peers[p as usize];
        peer.refcount -= 1;
        if peer.refcount == 0 {
            self.peer_free(p);
        }
        self.refresh(q);
        self.maybe_queue_done(q);
        let msg = &mut self.messages[m as usize];
        msg.refcount -= 1;
        self.oqmgr_refill_check(m);
        self.maybe_message_done(m);
    }

    /// After a delivery: remember when, and pause a rate-limited
    /// destination (`_destination_rate_delay`).
    fn queue_delivery_done(&mut self, q: usize, t: usize) {
        self.queues[q].last_done = Some(self.now);
        let delay = self.queues[q].limits.rate_delay(&self.transports[t].cfg);
        if delay.is_zero() {
            return;
        }
        if self.queues[q].is_dead() {
            self.queue_unthrottle(q);
        }
        let queue = &mut self.queues[q];
        if queue.window > 0 && !queue.suspended {
            queue.suspended = true;
            queue.wake_at = Some(self.now + delay);
            let generation = queue.generation;
            self.timers.add(
                self.now + delay,
                crate::retry::Timer::QueueResume {
                    queue: q,
                    generation,
                },
            );
        }
    }

    /// Defers every recipient of a waiting entry on the spot, then drops it.
    pub(crate) fn entry_defer(&mut self, e: u32, dsn: &crate::event::Dsn) {
        let m = self.entries[e as usize].msg as usize;
        let id = self.messages[m].id;
        self.messages[m].deferred = true;
        for &rcpt in self.entries[e as usize].rcpts.as_slice() {
            self.actions.push_back(Action::DeferRecipient {
                msg: id,
                rcpt,
                dsn: dsn.clone(),
            });
        }
        self.entry_done(e);
    }
}

/// Unlinks a node whose own links were already taken out of the slab.
fn splice_out(
    slab: &mut slab::Slab<Entry>,
    list: &mut list::List,
    links: Links,
    l: list::Access<Entry>,
) {
    if links.prev == NIL {
        list.head = links.next;
    } else {
        l(&mut slab[links.prev as usize]).next = links.next;
    }
    if links.next == NIL {
        list.tail = links.prev;
    } else {
        l(&mut slab[links.next as usize]).prev = links.prev;
    }
    list.len = list.len.saturating_sub(1);
}

/// A recipient count as Postfix's `int` counters hold it.
pub(crate) fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
