//! Jobs and preemptive scheduling (`qmgr_job.c`, SCHEDULER_README).
//!
//! A job is one message's work for one transport. Each transport lists
//! its jobs in the order their messages entered the active queue, and
//! serves the *current* job first; a job that cannot be served because all
//! its destinations are at their concurrency window is a *blocker* and is
//! passed over until one of them has room.
//!
//! Preemption (when the transport's `delivery_slot_cost` is at least 2):
//! every delivery of a job earns it one *slot*; a job that has earned
//! `delivery_slot_cost` slots per entry of another, later job may let that
//! job go first. The candidate is the job with the best ratio of time in
//! the active queue to total entries, among those small enough to fit the
//! slots the current job can still earn (found through the job tree of
//! [`crate::order`], which skips jobs that cannot win instead of visiting
//! each as Postfix does). The `delivery_slot_loan` lets a
//! preemption happen before all slots are earned, and
//! `delivery_slot_discount` lowers the price; either way the preempting
//! job's entries are paid for. A preempting job is pushed on a *stack*
//! above the job it preempted (in front of it on the job list), and is
//! popped when done, returning unused slots to its parent. Jobs with no
//! waiting entries are *retired* from the job lists until more recipients
//! arrive.
//!
//! Invariants: a job's `level` is -1 exactly when it is on neither job
//! list, 0 for a job on the lists but on no stack, and more than 0 for a
//! stacked job, which has a `parent` (unless orphaned) and sits in front
//! of it. The candidate cache is valid only while
//! `candidate_cache_current` names the current job.

use std::collections::VecDeque;

use crate::list::{self, ix, Links, NIL};
use crate::order::{Node, Search};
use crate::peer::PeerIndex;
use crate::Scheduler;

/// One message's deliveries through one transport.
#[derive(Debug)]
pub(crate) struct Job {
    pub msg: u32,
    pub transport: u32,
    /// Place on the transport's job list.
    pub list: Links,
    /// Place on the transport's by-time list.
    pub time: Links,
    pub parent: u32,
    pub children: Vec<u32>,
    pub level: i32,
    pub blocker_tag: u32,
    /// Peers that may have selectable entries: (peer, stamp).
    pub ring: VecDeque<(u32, u32)>,
    pub slots_used: i64,
    pub slots_available: i64,
    pub selected_entries: i64,
    pub read_entries: i64,
    pub rcpt_count: i64,
    pub rcpt_limit: i64,
    /// Place in the transport's job tree (see [`crate::order`]).
    pub node: Node,
    /// Noted for the tree's next flush.
    pub tree_dirty: bool,
    /// The job's peers by queue (`peer_byname`).
    pub peers: PeerIndex,
}

fn on_list(j: &mut Job) -> &mut Links {
    &mut j.list
}

fn on_time(j: &mut Job) -> &mut Links {
    &mut j.time
}

impl Scheduler {
    /// The message's job for the transport, created or revived and linked
    /// (`qmgr_job_obtain()`). New recipients may change every candidate
    /// choice, and unmake the job a blocker.
    pub(crate) fn job_obtain(&mut self, m: u32, t: u32) -> u32 {
        let found = self.messages[m as usize]
            .jobs
            .iter()
            .copied()
            .find(|&j| self.jobs[j as usize].transport == t);
        let j = match found {
            Some(j) => j,
            None => {
                let j = ix(self.jobs.insert(Job {
                    msg: m,
                    transport: t,
                    list: Links::NONE,
                    time: Links::NONE,
                    parent: NIL,
                    children: Vec::new(),
                    level: -1,
                    blocker_tag: 0,
                    ring: VecDeque::new(),
                    slots_used: 0,
                    slots_available: 0,
                    selected_entries: 0,
                    read_entries: 0,
                    rcpt_count: 0,
                    rcpt_limit: 0,
                    node: Node::NONE,
                    tree_dirty: false,
                    peers: PeerIndex::default(),
                }));
                self.messages[m as usize].jobs.push(j);
                j
            }
        };
        if !self.cfg.preemptive {
            return j;
        }
        if self.jobs[j as usize].level < 0 {
            self.job_link(j);
        }
        let tr = &mut self.transports[t as usize];
        tr.reset_candidate_cache();
        if self.jobs[j as usize].blocker_tag == tr.blocker_tag {
            self.jobs[j as usize].blocker_tag = 0;
            tr.job_current = tr.job_list.head;
        }
        j
    }

    fn queued(&self, j: u32) -> crate::Time {
        self.messages[self.jobs[j as usize].msg as usize].queued
    }

    /// Links the job into both job lists by its message's arrival time
    /// (`qmgr_job_link()`), and hands it the transport's unused slots.
    fn job_link(&mut self, j: u32) {
        let t = self.jobs[j as usize].transport as usize;
        let queued = self.queued(j);
        if self.jobs[j as usize].level >= 0 {
            panic!("job_link: job {j} already linked");
        }
        // Walk back from the tail: usually the new job simply goes last.
        // Stack children are skipped, so the job lands in time order
        // relative to the jobs on stack level zero.
        let mut current = self.transports[t].job_current;
        let (mut prev, mut next) = (self.transports[t].job_list.tail, NIL);
        while prev != NIL {
            if self.jobs[prev as usize].parent == NIL && self.queued(prev) <= queued {
                break;
            }
            if current == prev {
                current = NIL;
            }
            next = prev;
            prev = self.jobs[prev as usize].list.prev;
        }
        list::insert_before(
            &mut self.jobs,
            &mut self.transports[t].job_list,
            j,
            next,
            on_list,
        );
        self.tree_insert(t, j);
        let mut unread = self.transports[t].job_next_unread;
        let (mut prev, mut next) = (self.transports[t].job_bytime.tail, NIL);
        while prev != NIL {
            if self.queued(prev) <= queued {
                break;
            }
            if unread == prev {
                unread = NIL;
            }
            next = prev;
            prev = self.jobs[prev as usize].time.prev;
        }
        list::insert_before(
            &mut self.jobs,
            &mut self.transports[t].job_bytime,
            j,
            next,
            on_time,
        );
        self.jobs[j as usize].level = 0;
        self.job_rekey(j);
        if current == NIL {
            self.transports[t].job_current = j;
        }
        if unread == NIL {
            let old = std::mem::replace(&mut self.transports[t].job_next_unread, j);
            if old != NIL {
                self.job_move_limits(old);
            }
        }
        // Take every unused slot for now; the excess goes back once the
        // message is fully read and the real need is known.
        let tr = &mut self.transports[t];
        if tr.rcpt_unused > 0 {
            let n = std::mem::take(&mut tr.rcpt_unused);
            self.jobs[j as usize].rcpt_limit += n;
            let m = self.jobs[j as usize].msg as usize;
            self.messages[m].rcpt_limit += n;
        }
    }

    /// Returns the job's unused recipient slots to the transport pool and
    /// passes them on to the first job still reading recipients
    /// (`qmgr_job_move_limits()`).
    pub(crate) fn job_move_limits(&mut self, j: u32) {
        let t = self.jobs[j as usize].transport as usize;
        let m = self.jobs[j as usize].msg as usize;
        let mut next = self.transports[t].job_next_unread;
        if j == next {
            // The by-time order never changes, so the search resumes where
            // the last one stopped: amortised O(1) per job.
            next = self.jobs[j as usize].time.next;
            while next != NIL {
                let nm = self.jobs[next as usize].msg as usize;
                if self.messages[nm].more {
                    break;
                }
                next = self.jobs[next as usize].time.next;
            }
            self.transports[t].job_next_unread = next;
        }
        let job = &self.jobs[j as usize];
        let msg = &self.messages[m];
        let unused = (job.rcpt_limit - job.rcpt_count).min(msg.rcpt_limit - msg.rcpt_count);
        if unused <= 0 {
            return;
        }
        self.jobs[j as usize].rcpt_limit -= unused;
        self.messages[m].rcpt_limit -= unused;
        let tr = &mut self.transports[t];
        tr.rcpt_unused += unused;
        if next != NIL && tr.rcpt_unused > 0 {
            let n = std::mem::take(&mut tr.rcpt_unused);
            self.jobs[next as usize].rcpt_limit += n;
            let nm = self.jobs[next as usize].msg as usize;
            self.messages[nm].rcpt_limit += n;
        }
    }

    /// Hands a job's stack children to `parent` (or orphans them).
    fn job_parent_gone(&mut self, j: u32, parent: u32) {
        for child in std::mem::take(&mut self.jobs[j as usize].children) {
            if parent != NIL {
                self.jobs[parent as usize].children.push(child);
            }
            self.jobs[child as usize].parent = parent;
        }
        self.job_rekey(j);
        if parent != NIL {
            self.job_rekey(parent);
        }
    }

    fn job_unlink(&mut self, j: u32) {
        let job = &self.jobs[j as usize];
        if job.level != 0 || job.parent != NIL {
            panic!(
                "job_unlink: job {j} at stack level {} with parent {}",
                job.level, job.parent
            );
        }
        let t = job.transport as usize;
        let next = job.list.next;
        self.job_parent_gone(j, NIL);
        let tr = &mut self.transports[t];
        if tr.job_current == j {
            tr.job_current = next;
        }
        if j == tr.candidate_cache || j == tr.candidate_cache_current {
            tr.reset_candidate_cache();
        }
        self.tree_remove(t, j);
        list::unlink(&mut self.jobs, &mut self.transports[t].job_list, j, on_list);
        list::unlink(
            &mut self.jobs,
            &mut self.transports[t].job_bytime,
            j,
            on_time,
        );
        self.jobs[j as usize].level = -1;
    }

    /// Takes a job with nothing to select off the job lists; more
    /// recipients revive it through [`Scheduler::job_obtain`]
    /// (`qmgr_job_retire()`).
    fn job_retire(&mut self, j: u32) {
        if self.jobs[j as usize].level > 0 {
            self.job_pop(j);
        }
        self.job_move_limits(j);
        self.job_unlink(j);
    }

    /// Releases a job of a finished message (`qmgr_job_free()`).
    pub(crate) fn job_free(&mut self, j: u32) {
        if self.jobs[j as usize].rcpt_count != 0 {
            panic!(
                "job_free: job {j} still counts {} recipients",
                self.jobs[j as usize].rcpt_count
            );
        }
        if self.jobs[j as usize].level > 0 {
            self.job_pop(j);
        }
        self.job_move_limits(j);
        debug_assert_eq!(self.jobs[j as usize].rcpt_limit, 0, "job_free: slots leak");
        if self.jobs[j as usize].level >= 0 {
            self.job_unlink(j);
        }
        self.jobs.remove(j as usize);
    }

    /// One delivery of the job: one slot more used, and available to
    /// preempt it (`qmgr_job_count_slots()`).
    fn job_count_slots(&mut self, j: u32) {
        let job = &mut self.jobs[j as usize];
        job.slots_available += 1;
        job.slots_used += 1;
        let tr = &mut self.transports[job.transport as usize];
        if j != tr.candidate_cache_current {
            tr.reset_candidate_cache();
        }
    }

    /// Entries the job may still get: read ones plus every unread
    /// recipient of its message (`MAX_ENTRIES()`).
    fn max_entries(&self, j: u32) -> i64 {
        let job = &self.jobs[j as usize];
        job.read_entries + i64::from(self.messages[job.msg as usize].rcpt_unread)
    }

    pub(crate) fn is_blocker(&self, j: u32) -> bool {
        let job = &self.jobs[j as usize];
        job.blocker_tag == self.transports[job.transport as usize].blocker_tag
    }

    /// The best job to preempt `current` with, or NIL
    /// (`qmgr_job_candidate()`): the best (time in active queue)/(total
    /// entries) among jobs after `current` that fit the slots `current`
    /// can still earn. Cached, negative results included.
    fn job_candidate(&mut self, current: u32) -> u32 {
        let t = self.jobs[current as usize].transport as usize;
        let now = self.now.as_secs();
        let tr = &self.transports[t];
        if tr.candidate_cache_current == current
            && (tr.candidate_cache_time.as_secs() == now || tr.candidate_cache == NIL)
        {
            return tr.candidate_cache;
        }
        let cost = tr.slot_cost.max(1);
        let cur = &self.jobs[current as usize];
        let max_slots = (cur.read_entries - cur.selected_entries + cur.slots_available) / cost;
        let mut search = Search {
            now,
            max_slots,
            best: NIL,
            best_score: 0.0,
            stopped: false,
        };
        if max_slots > 0 {
            self.tree_flush(t);
            self.tree_search_after(current, &mut search);
        }
        // Debug builds check the tree walk against Postfix's plain one.
        #[cfg(debug_assertions)]
        {
            self.tree_flush(t);
            self.tree_check(t);
            let mut plain = Search {
                now,
                max_slots,
                best: NIL,
                best_score: 0.0,
                stopped: false,
            };
            if max_slots > 0 {
                let mut j = self.jobs[current as usize].list.next;
                while j != NIL && !plain.stopped {
                    self.candidate_visit(j, &mut plain);
                    j = self.jobs[j as usize].list.next;
                }
            }
            assert_eq!(search.best, plain.best, "job_candidate: tree walk differs");
        }
        let best = search.best;
        let tr = &mut self.transports[t];
        tr.candidate_cache = best;
        tr.candidate_cache_current = current;
        tr.candidate_cache_time = self.now;
        best
    }

    /// One job of the candidate walk, in list order: skip stack parents
    /// and blockers, score the rest, stop where no later job can win.
    pub(crate) fn candidate_visit(&self, j: u32, s: &mut Search) {
        let job = &self.jobs[j as usize];
        // Stack parents are behind their children; children of other
        // stacks are fair game.
        if !job.children.is_empty() || self.is_blocker(j) {
            return;
        }
        let total = self.max_entries(j);
        let needed = total - job.selected_entries;
        let queued = self.messages[job.msg as usize].queued.as_secs();
        let delay = s.now.saturating_sub(queued).saturating_add(1) as f64;
        if needed > 0 && needed <= s.max_slots {
            let score = delay / total as f64;
            if score > s.best_score {
                s.best_score = score;
                s.best = j;
            }
        }
        // Later jobs arrived later: none can beat this score.
        if delay <= s.best_score && job.level == 0 {
            s.stopped = true;
        }
    }

    /// Lets a smaller job go before `current` if `current` has earned
    /// enough slots for it (`qmgr_job_preempt()`); returns the job to serve.
    fn job_preempt(&mut self, current: u32) -> u32 {
        let t = self.jobs[current as usize].transport as usize;
        let (cost, loan, factor) = {
            let tr = &self.transports[t];
            (tr.slot_cost.max(1), tr.slot_loan, tr.slot_loan_factor)
        };
        if self.jobs[current as usize].slots_available <= 0
            || self.max_entries(current) < self.transports[t].min_slots * cost
        {
            return current;
        }
        let j = self.job_candidate(current);
        if j == NIL {
            return current;
        }
        if j == current
            || !self.jobs[j as usize].children.is_empty()
            || self.jobs[j as usize].level < 0
        {
            panic!("job_preempt: bad candidate {j} for job {current}");
        }
        let expected = self.max_entries(j) - self.jobs[j as usize].selected_entries;
        // The loan only lets the preemption happen earlier; the slots are
        // paid in full below either way.
        let earned = self.jobs[current as usize].slots_available / cost + loan;
        if (earned as f64) < expected as f64 * factor as f64 / 100.0 {
            return current;
        }
        if self.jobs[j as usize].level > 0 {
            self.job_pop(j);
        }
        self.tree_remove(t, j);
        list::unlink(&mut self.jobs, &mut self.transports[t].job_list, j, on_list);
        list::insert_before(
            &mut self.jobs,
            &mut self.transports[t].job_list,
            j,
            current,
            on_list,
        );
        self.tree_insert(t, j);
        let level = self.jobs[current as usize].level + 1;
        self.jobs[current as usize].children.push(j);
        let job = &mut self.jobs[j as usize];
        job.parent = current;
        job.level = level;
        self.job_rekey(j);
        self.job_rekey(current);
        let tr = &mut self.transports[t];
        tr.job_current = j;
        tr.reset_candidate_cache();
        // One job may be preempted by several at once: reserve the slots
        // now; the pop corrects by what was really used.
        self.jobs[current as usize].slots_available -= expected * cost;
        self.jobs[j as usize].slots_used = -expected;
        // A preempting job still reading recipients gets half of what is
        // left of the extra (per-stack) recipient slots.
        let m = self.jobs[j as usize].msg as usize;
        if self.messages[m].more {
            let tr = &mut self.transports[t];
            let slots = (tr.rcpt_per_stack + tr.rcpt_unused + 1) / 2;
            tr.rcpt_unused -= slots;
            self.jobs[j as usize].rcpt_limit += slots;
            self.messages[m].rcpt_limit += slots;
        }
        j
    }

    /// Takes a job off its preemption stack (`qmgr_job_pop()`), crediting
    /// its original parent with the slots it did not use. The caller
    /// places it on the job list.
    fn job_pop(&mut self, j: u32) {
        let job = &self.jobs[j as usize];
        if job.level <= 0 {
            panic!("job_pop: job {j} not on a stack (level {})", job.level);
        }
        let t = job.transport as usize;
        let parent = job.parent;
        let cost = self.transports[t].slot_cost.max(1);
        if parent != NIL {
            let (used, level) = (
                self.jobs[j as usize].slots_used,
                self.jobs[j as usize].level,
            );
            let p = &mut self.jobs[parent as usize];
            // Only the original parent is credited: an adopting one did
            // not pay for this job.
            if level == p.level + 1 {
                p.slots_available -= used * cost;
            }
            let p = &mut self.jobs[parent as usize];
            p.children.retain(|&c| c != j);
            self.jobs[j as usize].parent = NIL;
        }
        self.jobs[j as usize].level = 0;
        self.job_parent_gone(j, parent);
        self.transports[t].reset_candidate_cache();
    }

    fn has_entries(&self, j: u32) -> bool {
        let job = &self.jobs[j as usize];
        job.selected_entries < job.read_entries
    }

    /// The job's next peer, asking for more recipients first when the
    /// message has slots for them (`qmgr_job_peer_select()`).
    fn job_peer_select(&mut self, j: u32) -> Option<u32> {
        let m = self.jobs[j as usize].msg;
        self.qmgr_refill_check(m, self.jobs[j as usize].transport as usize, false);
        if self.has_entries(j) {
            if let Some(p) = self.peer_select(j) {
                return Some(p);
            }
        }
        // Nothing selectable in core: the last chance is more recipients.
        // They arrive later, by event, so this job waits for them.
        self.qmgr_refill_check(m, self.jobs[j as usize].transport as usize, true);
        None
    }

    /// The transport's next entry under (preemptive) job scheduling
    /// (`qmgr_job_entry_select()`).
    pub(crate) fn job_entry_select(&mut self, t: usize) -> Option<u32> {
        let mut j = self.transports[t].job_current;
        if j == NIL {
            return None;
        }
        if self.transports[t].slot_cost >= 2 {
            j = self.job_preempt(j);
        }
        while j != NIL {
            let next = self.jobs[j as usize].list.next;
            if self.is_blocker(j) {
                j = next;
                continue;
            }
            if let Some(p) = self.job_peer_select(j) {
                let e = self.peers[p as usize].entries.head;
                if e == NIL {
                    panic!("job_entry_select: selected peer {p} has no entries");
                }
                self.entry_select(e);
                self.job_count_slots(j);
                // Start here next time, past the blockers.
                self.transports[t].job_current = j;
                let m = self.jobs[j as usize].msg as usize;
                if !self.has_entries(j) && !self.messages[m].more {
                    self.job_retire(j);
                }
                return Some(e);
            } else if self.has_entries(j) {
                // Every destination of the job is at its window; its peers
                // are parked there and will wake it.
                self.jobs[j as usize].blocker_tag = self.transports[t].blocker_tag;
            } else {
                // Stalled: nothing in core. Out of the way until refilled.
                self.job_retire(j);
            }
            j = next;
        }
        self.transports[t].job_current = NIL;
        None
    }
}
