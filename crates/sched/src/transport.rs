//! Transports: one per master.cf delivery service, as `qmgr_transport.c`.
//!
//! A transport owns its destination queues and a round-robin list of the
//! queues that can hand out work now (oqmgr's selection). It keeps a
//! running total of how many entries those queues could hand out
//! (`available`), so that choosing a transport to connect to costs nothing
//! per destination — Postfix walks every queue there, which is what makes
//! it slow with thousands of them.
//!
//! Under preemptive scheduling the transport also owns its job list (jobs
//! in scheduling order, stack children in front of their parents), the
//! same jobs by arrival time, the current job, the candidate cache and the
//! pool of recipient slots (`rcpt_unused`), all as in `qmgr_job.c`.
//!
//! Invariants: `available` equals the sum of `contribution` over the
//! transport's queues, `busy` the sum of their `busy`, and every queue
//! with a non-zero contribution is in
//! `rr` when selection is round robin (possibly together with stale
//! slots, skipped when met). At most two connection attempts are pending
//! at once, because the queue manager cannot see master.cf's process
//! limits and must not flood master. `blocker_tag` is always odd, so a
//! job that was never marked (tag 0) is never a blocker.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::bytestring::ByteString;
use crate::config::TransportConfig;
use crate::event::Dsn;
use crate::intake::StartRate;
use crate::list::{List, NIL};
use crate::time::Time;
use crate::{ERROR_TRANSPORT, RETRY_TRANSPORT};

/// Postfix's `QMGR_TRANSPORT_MAX_PEND`.
pub(crate) const MAX_PENDING: u32 = 2;

/// One delivery transport.
#[derive(Debug)]
pub(crate) struct Transport {
    pub name: ByteString,
    pub cfg: TransportConfig,
    /// Queue keys by queue name.
    pub queues: HashMap<ByteString, usize>,
    /// Round robin over queues that may have work: (queue key, ticket).
    pub rr: VecDeque<(usize, u64)>,
    pub available: u64,
    pub pending: u32,
    /// Why the transport is dead, if it is.
    pub dsn: Option<Dsn>,
    pub generation: u32,
    pub rate_locked: bool,
    /// Jobs in scheduling order (`job_list`).
    pub job_list: List,
    /// Jobs in order of their message's arrival (`job_bytime`).
    pub job_bytime: List,
    pub job_current: u32,
    /// Root of the search tree over `job_list` (see [`crate::order`]).
    pub job_tree: u32,
    /// Jobs whose tree keys may be stale.
    pub tree_dirty: Vec<u32>,
    /// First job whose message still has unread recipients.
    pub job_next_unread: u32,
    pub candidate_cache: u32,
    /// The current job the cache was computed for; NIL = no cache.
    pub candidate_cache_current: u32,
    pub candidate_cache_time: Time,
    pub blocker_tag: u32,
    /// Recipient slots not lent to any job (`_recipient_limit` pool);
    /// negative while preempting jobs use the extra (per-stack) slots.
    pub rcpt_unused: i64,
    pub rcpt_per_stack: i64,
    pub slot_cost: i64,
    pub slot_loan: i64,
    pub slot_loan_factor: i64,
    pub min_slots: i64,
    pub refill_limit: i64,
    pub refill_delay: Duration,
    /// Entries of this transport being delivered, for snapshots.
    pub busy: u32,
    /// Destinations of this transport that died, ever (for snapshots).
    pub throttles: u64,
    /// Entries whose queue has room, waiting only for an agent (the sum
    /// of the queues' `ready_contribution`; see intake.rs).
    pub ready_backlog: u64,
    /// How fast this transport's agents take deliveries (intake.rs).
    pub start_rate: StartRate,
}

impl Transport {
    pub(crate) fn new(name: ByteString, cfg: TransportConfig) -> Self {
        let cfg = cfg.normalized();
        Transport {
            name,
            queues: HashMap::new(),
            rr: VecDeque::new(),
            available: 0,
            pending: 0,
            dsn: None,
            generation: 0,
            rate_locked: false,
            job_list: List::default(),
            job_bytime: List::default(),
            job_current: NIL,
            job_tree: NIL,
            tree_dirty: Vec::new(),
            job_next_unread: NIL,
            candidate_cache: NIL,
            candidate_cache_current: NIL,
            candidate_cache_time: Time::ZERO,
            blocker_tag: 1,
            rcpt_unused: i64::from(cfg.recipient_limit),
            rcpt_per_stack: i64::from(cfg.extra_recipient_limit),
            slot_cost: i64::from(cfg.delivery_slot_cost),
            slot_loan: i64::from(cfg.delivery_slot_loan),
            slot_loan_factor: 100 - i64::from(cfg.delivery_slot_discount.min(100)),
            min_slots: i64::from(cfg.minimum_delivery_slots),
            refill_limit: i64::from(cfg.recipient_refill_limit.max(1)),
            refill_delay: cfg.recipient_refill_delay,
            busy: 0,
            throttles: 0,
            ready_backlog: 0,
            start_rate: StartRate::default(),
            cfg,
        }
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dsn.is_some()
    }

    /// Worth opening one more connection (`qmgr_transport_select()`): alive,
    /// not rate-locked, and more work than connections already coming.
    pub(crate) fn wants_connection(&self) -> bool {
        !self.is_dead()
            && !self.rate_locked
            && self.pending < MAX_PENDING
            && self.available > u64::from(self.pending)
    }

    /// Queues are per recipient (`localpart@nexthop`), so that concurrency
    /// is limited per mailbox: a recipient limit of 1, except for the
    /// error pseudo-transports, which group by reason.
    pub(crate) fn per_recipient_queues(&self) -> bool {
        self.cfg.dest_recipient_limit == 1
            && self.name != ERROR_TRANSPORT
            && self.name != RETRY_TRANSPORT
    }

    /// `RESET_CANDIDATE_CACHE()`.
    pub(crate) fn reset_candidate_cache(&mut self) {
        self.candidate_cache_current = NIL;
    }
}
