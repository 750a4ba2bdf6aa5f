//! A search tree over each transport's job list, so that the preemption
//! candidate search (`qmgr_job_candidate()`) skips jobs that cannot change
//! its answer instead of visiting every one.
//!
//! Postfix walks every job after the current one, which is O(jobs) each
//! time the candidate cache is invalid — once per current job at least;
//! with ten thousand messages in core that walk was most of the
//! scheduler's time. Here the job list is mirrored by a treap whose
//! in-order sequence is the list order. Each node keeps, for its subtree,
//! the bounds the walk needs ([`Agg`]): the smallest number of entries
//! still needed by a job that could be a candidate (with the smallest
//! total and earliest arrival, which bound any such job's score), and the
//! latest arrival of a job that could stop the walk. A subtree whose jobs
//! can neither beat the best score so far nor stop the walk is skipped as
//! a whole; every other job is visited in list order exactly as Postfix
//! visits it, so the chosen candidate is the same.
//!
//! Invariants: a job is in its transport's tree exactly when it is on the
//! job list (`level >= 0`); the tree's in-order sequence is the job list;
//! a parent's priority is at least its children's; every node's `agg`
//! combines its own `key` with its children's `agg`; `key` is recomputed
//! whenever a field it is made of changes. That recomputation is lazy:
//! [`Scheduler::job_rekey`] only notes the job (an entry selection would
//! otherwise cost a walk to the root each time), and
//! [`Scheduler::tree_flush`] brings the noted jobs' keys up to date before
//! a search; between the two, every `agg` is consistent with the stored
//! (possibly stale) keys, which is all the tree operations rely on.
//! Priorities come from a fixed-seed generator, so runs are reproducible.

use crate::list::NIL;
use crate::Scheduler;

/// Bounds over a set of jobs (one job's own, or a subtree's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Agg {
    /// Smallest entries-still-needed among jobs with no stack children
    /// and something needed; `i64::MAX` if there is none.
    pub min_needed: i64,
    /// Smallest total entries among those jobs.
    pub min_total: i64,
    /// Earliest arrival (seconds) among those jobs.
    pub min_queued: u64,
    /// Latest arrival (seconds) among jobs with no stack children on stack
    /// level 0 (those that may end the walk); 0 if there is none.
    pub max_queued_l0: u64,
}

impl Agg {
    const EMPTY: Agg = Agg {
        min_needed: i64::MAX,
        min_total: i64::MAX,
        min_queued: u64::MAX,
        max_queued_l0: 0,
    };

    fn join(self, o: Agg) -> Agg {
        Agg {
            min_needed: self.min_needed.min(o.min_needed),
            min_total: self.min_total.min(o.min_total),
            min_queued: self.min_queued.min(o.min_queued),
            max_queued_l0: self.max_queued_l0.max(o.max_queued_l0),
        }
    }
}

/// A job's place in its transport's tree.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Node {
    pub left: u32,
    pub right: u32,
    pub up: u32,
    pub prio: u32,
    /// This job's own bounds.
    pub key: Agg,
    /// Bounds over this node's subtree.
    pub agg: Agg,
}

impl Node {
    pub(crate) const NONE: Node = Node {
        left: NIL,
        right: NIL,
        up: NIL,
        prio: 0,
        key: Agg::EMPTY,
        agg: Agg::EMPTY,
    };
}

/// The running state of one candidate search.
pub(crate) struct Search {
    pub now: u64,
    pub max_slots: i64,
    pub best: u32,
    pub best_score: f64,
    pub stopped: bool,
}

impl Search {
    /// Nothing in a subtree with these bounds can change the outcome: no
    /// job fits the slots or beats the best score, and none stops the walk.
    fn skips(&self, a: &Agg) -> bool {
        let no_candidate = a.min_needed > self.max_slots || {
            // Division rounds monotonically, so no job's delay/total can
            // exceed the biggest delay over the smallest total.
            let delay = self.now.saturating_sub(a.min_queued).saturating_add(1) as f64;
            delay / a.min_total as f64 <= self.best_score
        };
        let no_stop =
            (self.now.saturating_sub(a.max_queued_l0).saturating_add(1) as f64) > self.best_score;
        no_candidate && no_stop
    }
}

impl Scheduler {
    fn node(&mut self, j: u32) -> &mut Node {
        &mut self.jobs[j as usize].node
    }

    fn agg_of(&self, j: u32) -> Agg {
        if j == NIL {
            Agg::EMPTY
        } else {
            self.jobs[j as usize].node.agg
        }
    }

    /// Recomputes one node's `agg` from its key and children.
    fn pull(&mut self, j: u32) {
        let n = self.jobs[j as usize].node;
        let agg = n.key.join(self.agg_of(n.left)).join(self.agg_of(n.right));
        self.node(j).agg = agg;
    }

    /// The job's own bounds, from its fields and its message's.
    fn job_key(&self, j: u32) -> Agg {
        let job = &self.jobs[j as usize];
        if !job.children.is_empty() {
            return Agg::EMPTY;
        }
        let msg = &self.messages[job.msg as usize];
        let queued = msg.queued.as_secs();
        let total = job.read_entries + i64::from(msg.rcpt_unread);
        let needed = total - job.selected_entries;
        let mut key = Agg::EMPTY;
        if needed > 0 {
            key.min_needed = needed;
            key.min_total = total;
            key.min_queued = queued;
        }
        if job.level == 0 {
            key.max_queued_l0 = queued;
        }
        key
    }

    /// Call after any change to a linked job's entry counts, stack level
    /// or children, or its message's unread count or arrival: notes the
    /// job for the next [`Scheduler::tree_flush`].
    pub(crate) fn job_rekey(&mut self, j: u32) {
        let job = &mut self.jobs[j as usize];
        if job.level < 0 || job.tree_dirty {
            return;
        }
        job.tree_dirty = true;
        let t = job.transport as usize;
        let dirty = &mut self.transports[t].tree_dirty;
        dirty.push(j);
        // Bounded even for a transport that never searches: a job is
        // noted once until flushed, but freed jobs' notes linger.
        if dirty.len() > 1024 + self.jobs.len() {
            self.tree_flush(t);
        }
    }

    /// Brings the keys of the jobs noted by [`Scheduler::job_rekey`] up
    /// to date, and with them every `agg` above.
    pub(crate) fn tree_flush(&mut self, t: usize) {
        let mut dirty = std::mem::take(&mut self.transports[t].tree_dirty);
        for &j in &dirty {
            // A note may outlive its job, or name a job reusing its slot.
            if let Some(job) = self.jobs.get_mut(j as usize) {
                job.tree_dirty = false;
                if job.level >= 0 {
                    self.job_rekey_now(j);
                }
            }
        }
        dirty.clear();
        self.transports[t].tree_dirty = dirty;
    }

    fn job_rekey_now(&mut self, j: u32) {
        let key = self.job_key(j);
        if self.jobs[j as usize].node.key == key {
            return;
        }
        self.node(j).key = key;
        let mut n = j;
        while n != NIL {
            let old = self.jobs[n as usize].node.agg;
            self.pull(n);
            if self.jobs[n as usize].node.agg == old {
                break;
            }
            n = self.jobs[n as usize].node.up;
        }
    }

    fn tree_root(&mut self, t: usize) -> &mut u32 {
        &mut self.transports[t].job_tree
    }

    /// Points `parent`'s link to `old` (or the root) at `new`.
    fn replace_child(&mut self, t: usize, parent: u32, old: u32, new: u32) {
        if parent == NIL {
            *self.tree_root(t) = new;
        } else if self.jobs[parent as usize].node.left == old {
            self.node(parent).left = new;
        } else {
            self.node(parent).right = new;
        }
        if new != NIL {
            self.node(new).up = parent;
        }
    }

    /// Rotates `x` above its parent; in-order sequence unchanged.
    fn rotate_up(&mut self, t: usize, x: u32) {
        let p = self.jobs[x as usize].node.up;
        let g = self.jobs[p as usize].node.up;
        if self.jobs[p as usize].node.left == x {
            let b = self.jobs[x as usize].node.right;
            self.node(p).left = b;
            if b != NIL {
                self.node(b).up = p;
            }
            self.node(x).right = p;
        } else {
            let b = self.jobs[x as usize].node.left;
            self.node(p).right = b;
            if b != NIL {
                self.node(b).up = p;
            }
            self.node(x).left = p;
        }
        self.node(p).up = x;
        self.replace_child(t, g, p, x);
        self.pull(p);
        self.pull(x);
    }

    fn next_prio(&mut self) -> u32 {
        // xorshift64: fixed seed, so the tree's shape is reproducible.
        let mut x = self.prio_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.prio_state = x;
        (x >> 32) as u32
    }

    /// Inserts `j` into the tree at its place on the job list, which it
    /// has just joined.
    pub(crate) fn tree_insert(&mut self, t: usize, j: u32) {
        let prio = self.next_prio();
        let key = self.job_key(j);
        let (prev, next) = {
            let l = self.jobs[j as usize].list;
            (l.prev, l.next)
        };
        // The new node hangs as the right child of its list predecessor
        // when that has none (the predecessor lies in next's left subtree
        // or next is NIL), else as next's left child.
        let (parent, left) = if next != NIL && self.jobs[next as usize].node.left == NIL {
            (next, true)
        } else {
            (prev, false)
        };
        *self.node(j) = Node {
            up: parent,
            prio,
            key,
            agg: key,
            ..Node::NONE
        };
        if parent == NIL {
            *self.tree_root(t) = j;
            return;
        }
        if left {
            self.node(parent).left = j;
        } else {
            self.node(parent).right = j;
        }
        let mut n = parent;
        while n != NIL {
            self.pull(n);
            n = self.jobs[n as usize].node.up;
        }
        loop {
            let p = self.jobs[j as usize].node.up;
            if p == NIL || self.jobs[p as usize].node.prio >= prio {
                break;
            }
            self.rotate_up(t, j);
        }
    }

    /// Takes `j` out of the tree.
    pub(crate) fn tree_remove(&mut self, t: usize, j: u32) {
        loop {
            let n = self.jobs[j as usize].node;
            if n.left == NIL || n.right == NIL {
                break;
            }
            let c = if self.jobs[n.left as usize].node.prio >= self.jobs[n.right as usize].node.prio
            {
                n.left
            } else {
                n.right
            };
            self.rotate_up(t, c);
        }
        let n = self.jobs[j as usize].node;
        let child = if n.left == NIL { n.right } else { n.left };
        self.replace_child(t, n.up, j, child);
        let mut p = n.up;
        while p != NIL {
            self.pull(p);
            p = self.jobs[p as usize].node.up;
        }
        *self.node(j) = Node::NONE;
    }

    /// Visits, in list order, every job after `current` that could matter
    /// to the search, handing each to [`Scheduler::candidate_visit`] until it sets `stopped`.
    pub(crate) fn tree_search_after(&self, current: u32, s: &mut Search) {
        let mut x = current;
        self.tree_visit(self.jobs[x as usize].node.right, s);
        while !s.stopped {
            let p = self.jobs[x as usize].node.up;
            if p == NIL {
                break;
            }
            if self.jobs[p as usize].node.left == x {
                self.candidate_visit(p, s);
                if s.stopped {
                    break;
                }
                self.tree_visit(self.jobs[p as usize].node.right, s);
            }
            x = p;
        }
    }

    fn tree_visit(&self, r: u32, s: &mut Search) {
        if r == NIL || s.stopped {
            return;
        }
        let n = &self.jobs[r as usize].node;
        if s.skips(&n.agg) {
            return;
        }
        let (left, right) = (n.left, n.right);
        self.tree_visit(left, s);
        if s.stopped {
            return;
        }
        self.candidate_visit(r, s);
        if s.stopped {
            return;
        }
        self.tree_visit(right, s);
    }

    /// Checks the tree against the job list (debug builds).
    #[cfg(debug_assertions)]
    pub(crate) fn tree_check(&self, t: usize) {
        let mut order = Vec::new();
        self.tree_collect(self.transports[t].job_tree, NIL, &mut order);
        let mut list = Vec::new();
        let mut j = self.transports[t].job_list.head;
        while j != NIL {
            list.push(j);
            j = self.jobs[j as usize].list.next;
        }
        assert_eq!(order, list, "tree order differs from the job list");
    }

    #[cfg(debug_assertions)]
    fn tree_collect(&self, r: u32, up: u32, out: &mut Vec<u32>) {
        if r == NIL {
            return;
        }
        let n = self.jobs[r as usize].node;
        assert_eq!(n.up, up, "job {r}: wrong parent");
        assert_eq!(n.key, self.job_key(r), "job {r}: stale key");
        let agg = n.key.join(self.agg_of(n.left)).join(self.agg_of(n.right));
        assert_eq!(n.agg, agg, "job {r}: stale agg");
        for c in [n.left, n.right] {
            if c != NIL {
                assert!(self.jobs[c as usize].node.prio <= n.prio, "heap order");
            }
        }
        self.tree_collect(n.left, r, out);
        out.push(r);
        self.tree_collect(n.right, r, out);
    }
}
