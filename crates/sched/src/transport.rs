//! Transports: one per master.cf delivery service, as `qmgr_transport.c`.
//!
//! A transport owns its destination queues and a round-robin list of the
//! queues that can hand out work now. It keeps a running total of how many
//! entries those queues could hand out (`available`), so that choosing a
//! transport to connect to costs nothing per destination — Postfix walks
//! every queue there, which is what makes it slow with thousands of them.
//!
//! Invariants: `available` equals the sum of `contribution` over the
//! transport's queues, and every queue with a non-zero contribution is in
//! `rr` (possibly together with stale slots, skipped when met). At most
//! two connection attempts are pending at once, because the queue manager
//! cannot see master.cf's process limits and must not flood master.

use std::collections::{HashMap, VecDeque};

use crate::config::TransportConfig;
use crate::event::Dsn;

/// Postfix's `QMGR_TRANSPORT_MAX_PEND`.
pub(crate) const MAX_PENDING: u32 = 2;

/// One delivery transport.
#[derive(Debug)]
pub(crate) struct Transport {
    pub name: String,
    pub cfg: TransportConfig,
    pub queues: HashMap<String, usize>,
    /// Round robin over queues that may have work: (queue key, ticket).
    pub rr: VecDeque<(usize, u64)>,
    pub available: u64,
    pub pending: u32,
    /// Why the transport is dead, if it is.
    pub dsn: Option<Dsn>,
    pub generation: u32,
    pub rate_locked: bool,
}

impl Transport {
    pub fn new(name: String, cfg: TransportConfig) -> Self {
        Transport {
            name,
            cfg: cfg.normalized(),
            queues: HashMap::new(),
            rr: VecDeque::new(),
            available: 0,
            pending: 0,
            dsn: None,
            generation: 0,
            rate_locked: false,
        }
    }

    pub fn is_dead(&self) -> bool {
        self.dsn.is_some()
    }

    /// Worth opening one more connection (`qmgr_transport_select()`): alive,
    /// not rate-locked, and more work than connections already coming.
    pub fn wants_connection(&self) -> bool {
        !self.is_dead()
            && !self.rate_locked
            && self.pending < MAX_PENDING
            && self.available > u64::from(self.pending)
    }
}
