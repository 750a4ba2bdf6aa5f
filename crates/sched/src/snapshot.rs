//! Read-only views of the scheduler for operators: the totals of the
//! active queue, each transport, the busiest or failing destinations, and
//! the jobs in scheduling order. The daemon serves them on its admin
//! socket and turns them into metrics; no stock Postfix shows this state.
//!
//! Invariants:
//! - Read-only: every function takes `&self`. The counters the views show
//!   (deliveries and site failures per destination, destination deaths per
//!   transport, recipients waiting per destination, deliveries busy per
//!   transport) are kept where the scheduler decides, and no decision reads
//!   them, so taking or not taking a snapshot changes nothing.
//! - Bounded cost, because an operator may poll while a million recipients
//!   are in core: [`Scheduler::totals`] is O(1);
//!   [`Scheduler::transport_views`] O(transports);
//!   [`Scheduler::destination_views`] at most one pass over the
//!   destinations with a heap of at most `limit` entries (never a sort of
//!   them all); [`Scheduler::job_views`] O(`limit`) while enough jobs are
//!   on the job lists. Nothing allocates per recipient or per entry.
//! - Views are copies: they stay valid (and stale) after the scheduler
//!   moves on.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::time::Duration;

use crate::bytestring::ByteString;
use crate::config::{Feedback, TransportConfig};
use crate::event::{Dsn, MessageId};
use crate::list::NIL;
use crate::time::Time;
use crate::Scheduler;

/// Active-queue totals against their limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Totals {
    /// Messages in the active queue.
    pub messages: usize,
    /// `qmgr_message_active_limit`.
    pub message_limit: usize,
    /// Recipients held in core.
    pub recipients: usize,
    /// `qmgr_message_recipient_limit`.
    pub recipient_limit: usize,
    /// Transports known so far (they appear with their first recipient
    /// and are never forgotten).
    pub transports: usize,
    /// Destination queues in core, of all transports.
    pub destinations: usize,
}

/// What a destination queue may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DestinationState {
    /// Live: hands out deliveries while its window has room.
    Ready,
    /// Dead after too many failed cohorts (window 0): its recipients go to
    /// the `retry` transport until it revives at
    /// [`DestinationView::next_retry`] or on the `F` trigger.
    Throttled,
    /// Live but pausing after a delivery (`_destination_rate_delay`), until
    /// [`DestinationView::next_retry`].
    Suspended,
}

impl DestinationState {
    /// The state's name, as operators see it: `ready`, `throttled` or
    /// `suspended`.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationState::Ready => "ready",
            DestinationState::Throttled => "throttled",
            DestinationState::Suspended => "suspended",
        }
    }
}

/// How many of a transport's destinations are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestinationCounts {
    /// [`DestinationState::Ready`].
    pub ready: usize,
    /// [`DestinationState::Throttled`].
    pub throttled: usize,
    /// [`DestinationState::Suspended`].
    pub suspended: usize,
}

/// One transport (master.cf delivery service).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportView {
    /// The transport's name, as trivial-rewrite gave it.
    pub name: ByteString,
    /// Its delivery agent could not be reached: nothing is sent to it until
    /// `transport_retry_time` has passed or the `F` trigger.
    pub dead: bool,
    /// Why it is dead (e.g. `4.3.0 mail transport unavailable`); `None`
    /// while it is alive.
    pub dead_reason: Option<Dsn>,
    /// Connections asked for whose agent has not announced itself yet.
    pub pending: usize,
    /// Deliveries in flight.
    pub busy: usize,
    /// Destination queues in core.
    pub destinations: usize,
    /// `_destination_concurrency_limit` in force (0 = unlimited); a
    /// destination rate delay makes it 1, as in Postfix.
    pub dest_concurrency_limit: u32,
    /// `_initial_destination_concurrency` in force (never above a non-zero
    /// limit).
    pub initial_concurrency: u32,
    /// `_destination_recipient_limit`: recipients per delivery (0 = no
    /// limit; 1 makes one queue per recipient).
    pub recipient_limit: u32,
    /// `_destination_rate_delay`: the pause after each delivery to one
    /// destination (zero = none).
    pub rate_delay: Duration,
    /// The concurrency feedback settings, readable, e.g. `positive
    /// 1/concurrency, negative 1/concurrency, cohorts 1` (`cohorts` is
    /// `_destination_concurrency_failed_cohort_limit`, 0 = never dead).
    pub feedback: String,
    /// Destinations of this transport that died (became
    /// [`DestinationState::Throttled`]) since the scheduler started; a
    /// counter that only grows.
    pub throttles: u64,
}

/// One destination queue of one transport.
#[derive(Clone, Debug, PartialEq)]
pub struct DestinationView {
    /// The transport's name.
    pub transport: ByteString,
    /// The next hop deliveries go to, byte for byte as the first recipient
    /// of the queue was routed.
    pub nexthop: ByteString,
    /// The queue's name: the next hop with ASCII letters in lower case, or
    /// `localpart@nexthop` for one-recipient transports.
    pub name: ByteString,
    /// Ready, throttled (dead) or suspended (rate delay).
    pub state: DestinationState,
    /// Current concurrency window: deliveries allowed at once (0 while
    /// throttled).
    pub window: u32,
    /// The limit the window may grow to (0 = none).
    pub window_limit: u32,
    /// Entries waiting for delivery.
    pub todo: usize,
    /// Recipients in the waiting entries.
    pub todo_recipients: usize,
    /// Entries being delivered.
    pub busy: usize,
    /// Deliveries that ended without blaming the site (positive feedback),
    /// since the queue was created. Crashed deliveries (no usable reply)
    /// count neither here nor in `failures`.
    pub successes: u64,
    /// Deliveries that blamed the site (negative feedback), since the queue
    /// was created.
    pub failures: u64,
    /// Failed cohorts counted towards death, as the concurrency feedback
    /// counts them (reset by any success).
    pub failed_cohorts: f64,
    /// The latest site failure: status and text as the agent gave them.
    pub last_failure: Option<Dsn>,
    /// When the queue died, while it is throttled.
    pub throttled_since: Option<Time>,
    /// When a throttled queue revives or a suspended one resumes; `None`
    /// while ready.
    pub next_retry: Option<Time>,
}

/// One job: one message's work for one transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobView {
    /// The message.
    pub msg: MessageId,
    /// The transport.
    pub transport: ByteString,
    /// The message's recipients for this transport held in core (waiting
    /// or being delivered).
    pub recipients_in_core: usize,
    /// Recipients of the message still in its file, as the caller last
    /// said ([`crate::Event::MessageInfo`]; 0 = none or unknown).
    pub unread: usize,
    /// Entries of the job selected for delivery so far.
    pub selected_entries: usize,
    /// Delivery slots the job has used (preemption bookkeeping; a
    /// preempting job's reservation, which Postfix keeps negative, shows
    /// as 0).
    pub slots_used: usize,
    /// Delivery slots the job has earned towards letting smaller jobs
    /// preempt it (0 when none or overdrawn).
    pub slots_available: usize,
    /// Every destination the job has waiting entries for is at its window,
    /// so the transport passes over it until one has room.
    pub blocker: bool,
}

/// Which destinations [`Scheduler::destination_views`] shows. Rankings are
/// by waiting recipients, then by busy entries, most first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationSelect<'a> {
    /// The queue of this transport named after `nexthop`, which matches
    /// ignoring ASCII case as queue names do (a queue name
    /// `localpart@nexthop` works too). For a one-recipient transport, where
    /// a next hop has one queue per recipient, all queues of that next hop
    /// when `nexthop` names none.
    One {
        /// The transport's name, exactly.
        transport: &'a [u8],
        /// The next hop (or queue name).
        nexthop: &'a [u8],
    },
    /// The queues of one transport, ranked.
    Transport(&'a [u8]),
    /// The N queues with most waiting recipients, of all transports.
    TopByTodo(usize),
    /// The top N as [`DestinationSelect::TopByTodo`], then every throttled
    /// queue not among them (ranked likewise), for metrics.
    TopAndThrottled(usize),
}

impl Scheduler {
    /// Active-queue totals, in O(1).
    pub fn totals(&self) -> Totals {
        Totals {
            messages: self.messages.len(),
            message_limit: self.cfg.message_active_limit,
            recipients: self.recipients,
            recipient_limit: self.cfg.message_recipient_limit,
            transports: self.transports.len(),
            destinations: self.queues.len(),
        }
    }

    /// Every transport, in the order they appeared.
    pub fn transport_views(&self) -> Vec<TransportView> {
        self.transports
            .iter()
            .map(|t| TransportView {
                name: t.name.clone(),
                dead: t.is_dead(),
                dead_reason: t.dsn.clone(),
                pending: t.pending as usize,
                busy: t.busy as usize,
                destinations: t.queues.len(),
                dest_concurrency_limit: t.cfg.dest_concurrency_limit,
                initial_concurrency: t.cfg.init_dest_concurrency,
                recipient_limit: t.cfg.dest_recipient_limit,
                rate_delay: t.cfg.dest_rate_delay,
                feedback: feedback_summary(&t.cfg),
                throttles: t.throttles,
            })
            .collect()
    }

    /// How many of `transport`'s destinations are in each state (all zero
    /// for an unknown transport); no view is built.
    pub fn destination_counts(&self, transport: &[u8]) -> DestinationCounts {
        let mut counts = DestinationCounts::default();
        let Some(&t) = self.transport_ids.get(transport) else {
            return counts;
        };
        for &q in self.transports[t].queues.values() {
            match self.destination_state(q) {
                DestinationState::Ready => counts.ready += 1,
                DestinationState::Throttled => counts.throttled += 1,
                DestinationState::Suspended => counts.suspended += 1,
            }
        }
        counts
    }

    /// The selected destinations, at most `limit` of them, ranked (see
    /// [`DestinationSelect`]). Unknown names select nothing.
    pub fn destination_views(
        &self,
        select: DestinationSelect<'_>,
        limit: usize,
    ) -> Vec<DestinationView> {
        let queues = match select {
            DestinationSelect::One { transport, nexthop } => {
                self.find_destinations(transport, nexthop, limit)
            }
            DestinationSelect::Transport(name) => match self.transport_ids.get(name) {
                Some(&t) => {
                    let queues = self.transports[t].queues.values().copied();
                    self.ranked(queues, limit)
                }
                None => Vec::new(),
            },
            DestinationSelect::TopByTodo(n) => {
                self.ranked(self.queues.iter().map(|(q, _)| q), n.min(limit))
            }
            DestinationSelect::TopAndThrottled(n) => self.top_and_throttled(n, limit),
        };
        queues
            .into_iter()
            .map(|q| self.destination_view(q))
            .collect()
    }

    /// Jobs, at most `limit`, of one transport or of all: first those on
    /// the job lists, transport by transport in scheduling order (the order
    /// preemptive scheduling serves them, preempting jobs in front of those
    /// they preempted); then jobs on no list (retired ones with nothing
    /// waiting, and under round-robin scheduling every job) in no
    /// particular order. An unknown transport has no jobs.
    pub fn job_views(&self, transport: Option<&[u8]>, limit: usize) -> Vec<JobView> {
        let only = match transport {
            Some(name) => match self.transport_ids.get(name) {
                Some(&t) => Some(t),
                None => return Vec::new(),
            },
            None => None,
        };
        let wanted = |t: usize| match only {
            Some(o) => o == t,
            None => true,
        };
        let mut views = Vec::with_capacity(limit.min(self.jobs.len()));
        for (t, tr) in self.transports.iter().enumerate() {
            if !wanted(t) {
                continue;
            }
            let mut j = tr.job_list.head;
            while j != NIL {
                if views.len() >= limit {
                    return views;
                }
                views.push(self.job_view(j));
                j = self.jobs[j as usize].list.next;
            }
        }
        // Jobs off the lists have no order worth a sort; the slab's is
        // at least the same for the same history.
        for (j, job) in &self.jobs {
            if views.len() >= limit {
                break;
            }
            if job.level < 0 && wanted(job.transport as usize) {
                views.push(self.job_view(crate::list::ix(j)));
            }
        }
        views
    }

    fn job_view(&self, j: u32) -> JobView {
        let job = &self.jobs[j as usize];
        let message = &self.messages[job.msg as usize];
        JobView {
            msg: message.id,
            transport: self.transports[job.transport as usize].name.clone(),
            recipients_in_core: non_negative(job.rcpt_count),
            unread: message.rcpt_unread as usize,
            selected_entries: non_negative(job.selected_entries),
            slots_used: non_negative(job.slots_used),
            slots_available: non_negative(job.slots_available),
            blocker: self.is_blocker(j),
        }
    }

    fn destination_state(&self, q: usize) -> DestinationState {
        let queue = &self.queues[q];
        if queue.is_dead() {
            DestinationState::Throttled
        } else if queue.suspended {
            DestinationState::Suspended
        } else {
            DestinationState::Ready
        }
    }

    fn destination_view(&self, q: usize) -> DestinationView {
        let queue = &self.queues[q];
        let t = &self.transports[queue.transport];
        let state = self.destination_state(q);
        DestinationView {
            transport: t.name.clone(),
            nexthop: queue.nexthop.clone(),
            name: queue.name.clone(),
            state,
            window: u32::try_from(queue.window).unwrap_or(0),
            window_limit: queue.limits.concurrency(&t.cfg),
            todo: queue.todo.len as usize,
            todo_recipients: queue.todo_rcpts,
            busy: queue.busy as usize,
            successes: queue.ok_deliveries,
            failures: queue.site_failures,
            failed_cohorts: queue.fail_cohorts(),
            last_failure: queue.last_failure.clone(),
            throttled_since: queue.throttled_since.filter(|_| queue.is_dead()),
            // The field is left behind when the queue comes back; only a
            // queue still waiting has a time to show.
            next_retry: queue.wake_at.filter(|_| state != DestinationState::Ready),
        }
    }

    /// A queue's place in the rankings: most waiting recipients, then most
    /// busy; the slab key makes every key distinct (and the order the same
    /// for the same history).
    fn rank(&self, q: usize) -> Rank {
        let queue = &self.queues[q];
        (queue.todo_rcpts, queue.busy, Reverse(q))
    }

    /// The best `k` of `queues`, best first.
    fn ranked(&self, queues: impl Iterator<Item = usize>, k: usize) -> Vec<usize> {
        let mut top = TopK::new(k, self.queues.len());
        for q in queues {
            top.offer(self.rank(q));
        }
        top.into_best_first().into_iter().map(key_queue).collect()
    }

    fn top_and_throttled(&self, n: usize, limit: usize) -> Vec<usize> {
        let k = n.min(limit);
        let mut top = TopK::new(k, self.queues.len());
        let mut throttled = TopK::new(limit, self.queues.len());
        for (q, queue) in &self.queues {
            let rank = self.rank(q);
            top.offer(rank);
            if queue.is_dead() {
                throttled.offer(rank);
            }
        }
        let top = top.into_best_first();
        // Ranks are distinct, so a throttled queue is among the top exactly
        // when the top is full and its rank is at least the top's last;
        // a top with room holds every queue already.
        let least = match top.last() {
            Some(&least) if top.len() == k => Some(least),
            Some(_) => return top.into_iter().map(key_queue).collect(),
            None => None,
        };
        let mut queues: Vec<usize> = top.into_iter().map(key_queue).collect();
        for rank in throttled.into_best_first() {
            if queues.len() >= limit {
                break;
            }
            let listed = match least {
                Some(least) => rank >= least,
                None => false,
            };
            if !listed {
                queues.push(key_queue(rank));
            }
        }
        queues
    }

    /// See [`DestinationSelect::One`].
    pub(crate) fn find_destinations(
        &self,
        transport: &[u8],
        nexthop: &[u8],
        limit: usize,
    ) -> Vec<usize> {
        if limit == 0 {
            return Vec::new();
        }
        let Some(&t) = self.transport_ids.get(transport) else {
            return Vec::new();
        };
        let tr = &self.transports[t];
        if let Some(&q) = tr.queues.get(&nexthop.to_ascii_lowercase()[..]) {
            return vec![q];
        }
        if !tr.per_recipient_queues() {
            return Vec::new();
        }
        let same_nexthop = tr
            .queues
            .values()
            .copied()
            .filter(|&q| self.queues[q].nexthop.eq_ignore_ascii_case(nexthop));
        self.ranked(same_nexthop, limit)
    }
}

/// Waiting recipients, busy entries, slab key (see [`Scheduler::rank`]).
type Rank = (usize, u32, Reverse<usize>);

fn key_queue(rank: Rank) -> usize {
    (rank.2).0
}

/// The `k` greatest keys offered, kept in a min-heap of at most `k`: one
/// pass, O(log k) per key, and memory for `k` keys whatever the number
/// offered.
struct TopK<K> {
    k: usize,
    heap: BinaryHeap<Reverse<K>>,
}

impl<K: Ord> TopK<K> {
    /// `at_most` bounds what will be offered, so that a huge `k` does not
    /// reserve memory for keys that cannot come.
    fn new(k: usize, at_most: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.min(at_most)),
        }
    }

    fn offer(&mut self, key: K) {
        if self.heap.len() < self.k {
            self.heap.push(Reverse(key));
        } else if let Some(mut least) = self.heap.peek_mut() {
            if key > least.0 {
                *least = Reverse(key);
            }
        }
    }

    fn into_best_first(self) -> Vec<K> {
        // Ascending by `Reverse` is descending by key.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(key)| key)
            .collect()
    }
}

/// Preemption keeps some counters negative on purpose; a view shows 0.
fn non_negative(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

fn feedback_summary(cfg: &TransportConfig) -> String {
    format!(
        "positive {}, negative {}, cohorts {}",
        FeedbackText(cfg.positive_feedback),
        FeedbackText(cfg.negative_feedback),
        cfg.failed_cohort_limit
    )
}

/// Feedback written as main.cf would have it: `1`, `1/4`, `1/concurrency`.
struct FeedbackText(Feedback);

impl fmt::Display for FeedbackText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0.value;
        let inverse = 1.0 / value;
        let n = inverse.round();
        // The daemon turned `1/n` into a float; give the fraction back
        // (`0.5/concurrency` stays as it is: `1/2/concurrency` reads badly).
        let fraction = !self.0.per_concurrency && value < 1.0 && n >= 2.0;
        if fraction && (inverse - n).abs() < 1e-9 * n {
            write!(f, "1/{n}")?;
        } else {
            write!(f, "{value}")?;
        }
        if self.0.per_concurrency {
            f.write_str("/concurrency")?;
        }
        Ok(())
    }
}

#[cfg(test)]
impl Scheduler {
    /// Recomputes every running count a view reads by walking the entries,
    /// and panics where one disagrees: the tests' check that the counts are
    /// kept at every place recipients and entries move.
    pub(crate) fn audit_snapshot_counts(&self) {
        let mut busy_per_transport = vec![0u32; self.transports.len()];
        let mut ready_per_transport = vec![0u64; self.transports.len()];
        let mut in_entries = 0;
        for (q, queue) in &self.queues {
            busy_per_transport[queue.transport] += queue.busy;
            ready_per_transport[queue.transport] += u64::from(queue.ready_share());
            assert_eq!(
                queue.ready_contribution,
                queue.ready_share(),
                "queue {q} {:?}: ready share not refreshed",
                queue.name
            );
            let mut todo_rcpts = 0;
            let mut e = queue.todo.head;
            while e != NIL {
                let entry = &self.entries[e as usize];
                todo_rcpts += entry.rcpts.len();
                e = entry.in_queue.next;
            }
            assert_eq!(
                queue.todo_rcpts, todo_rcpts,
                "queue {q} {:?}: waiting recipients",
                queue.name
            );
        }
        for (_, entry) in &self.entries {
            in_entries += entry.rcpts.len();
        }
        for (t, tr) in self.transports.iter().enumerate() {
            assert_eq!(
                tr.busy, busy_per_transport[t],
                "transport {:?}: busy",
                tr.name
            );
            assert_eq!(
                tr.ready_backlog, ready_per_transport[t],
                "transport {:?}: ready backlog",
                tr.name
            );
        }
        assert_eq!(self.totals().recipients, in_entries, "in-core recipients");
        assert_eq!(self.totals().destinations, self.queues.len());
    }
}
