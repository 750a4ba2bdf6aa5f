//! What happened in a simulation: the log that tests assert on.
//!
//! Job: keep every delivery request with its start and end time, every
//! message completion, refill and synchronous deferral, per-destination
//! statistics (peak busy deliveries, first dispatch), and every breach of
//! the scheduler's contract the driver noticed (`violations`).
//!
//! Invariants: `deliveries[i].index == i`, and the index is the global
//! dispatch order; `violations` is empty for a correct scheduler.
//!
//! Limits: everything is kept in memory, so a simulation of millions of
//! deliveries costs some hundred bytes per delivery; the benchmark drives
//! the scheduler without this log.

use std::collections::BTreeMap;
use std::time::Duration;

use rqmgr_sched::{ByteString, ConnId, Dsn, MessageId, Time};

/// How a recipient's attempt ended, as far as this queue run goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fate {
    /// Delivered (agent status 0 on a real transport).
    Delivered,
    /// Bounced by the `error` transport.
    Bounced,
    /// Deferred by an agent (including the `retry` transport's).
    Deferred,
    /// The agent crashed; the message will be retried.
    Crashed,
    /// Deferred by the scheduler itself ([`rqmgr_sched::Action::DeferRecipient`]).
    SyncDeferred,
}

/// A scheduler queue as the driver names it: transport and queue name
/// (the next hop, or `user@nexthop` for one-recipient transports).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DestKey {
    /// The transport.
    pub transport: ByteString,
    /// The queue name.
    pub queue: ByteString,
}

impl DestKey {
    /// A key from its parts.
    pub fn new(transport: impl AsRef<[u8]>, queue: impl AsRef<[u8]>) -> DestKey {
        DestKey {
            transport: transport.as_ref().into(),
            queue: queue.as_ref().into(),
        }
    }
}

/// One delivery request handed to an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// Position in the global dispatch order.
    pub index: usize,
    /// When the scheduler handed it out.
    pub at: Time,
    /// When the agent's reply was reported, once it was.
    pub done_at: Option<Time>,
    /// The connection it went out on.
    pub conn: ConnId,
    /// The message.
    pub msg: MessageId,
    /// The transport.
    pub transport: ByteString,
    /// The request's next hop.
    pub nexthop: ByteString,
    /// The queue it came from.
    pub dest: DestKey,
    /// Recipient indexes.
    pub rcpts: Vec<u32>,
    /// Session caching flags.
    pub dest_flags: u32,
    /// How it ended, once it did.
    pub fate: Option<Fate>,
}

/// Per-destination (per scheduler queue) statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestStats {
    /// Deliveries busy now.
    pub busy: u32,
    /// The most deliveries ever busy at once.
    pub max_busy: u32,
    /// Delivery requests handed out.
    pub deliveries: usize,
    /// Dispatch index of the first delivery.
    pub first_dispatch: Option<usize>,
    /// Replies that gave positive feedback (no site blame, no crash).
    pub positive: u64,
    /// Replies that blamed the site.
    pub negative: u64,
}

/// Message completion, as [`rqmgr_sched::Action::MessageDone`] said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// When.
    pub at: Time,
    /// Which message.
    pub msg: MessageId,
    /// Whether it was deferred.
    pub deferred: bool,
}

/// Everything a simulation recorded.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// Every delivery request, in dispatch order.
    pub deliveries: Vec<DeliveryRecord>,
    /// Per scheduler queue.
    pub dests: BTreeMap<DestKey, DestStats>,
    /// Message completions, in order.
    pub completions: Vec<Completion>,
    /// Refill requests: when, and for which message.
    pub refills: Vec<(Time, MessageId)>,
    /// Warning lines the scheduler asked to log ([`rqmgr_sched::Action::Warning`]).
    pub warnings: Vec<(Time, ByteString)>,
    /// Synchronous deferrals: when, message, recipient index, reason.
    pub sync_deferred: Vec<(Time, MessageId, u32, Dsn)>,
    /// When each message entered the active queue, in order.
    pub entered: Vec<(Time, MessageId)>,
    /// Connection requests made.
    pub connects: usize,
    /// Connections closed unused.
    pub closes: usize,
    /// Connections refused.
    pub refused: usize,
    /// The most messages in the active queue at once.
    pub max_active_messages: usize,
    /// The most recipients in core at once (as the scheduler counted).
    pub max_in_core: usize,
    /// With share tracking on: the largest share (percent) of the
    /// in-core recipients that one destination held while at least one
    /// other destination had in-core recipients too, and which one.
    pub peak_share: Option<(f64, DestKey)>,
    /// Breaches of the scheduler's contract, in words.
    pub violations: Vec<String>,
}

impl Record {
    /// Recipients that ended with `fate`.
    pub fn recipients_with(&self, fate: Fate) -> usize {
        let by_agent: usize = self
            .deliveries
            .iter()
            .filter(|d| d.fate == Some(fate))
            .map(|d| d.rcpts.len())
            .sum();
        if fate == Fate::SyncDeferred {
            self.sync_deferred.len()
        } else {
            by_agent
        }
    }

    /// The deliveries to one next hop, in dispatch order.
    pub fn deliveries_to<'a>(
        &'a self,
        nexthop: &'a (impl AsRef<[u8]> + ?Sized),
    ) -> impl Iterator<Item = &'a DeliveryRecord> + 'a {
        self.deliveries
            .iter()
            .filter(move |d| *d.nexthop == *nexthop.as_ref())
    }

    /// Statistics of one queue, if it ever had a delivery.
    pub fn dest(&self, transport: impl AsRef<[u8]>, queue: impl AsRef<[u8]>) -> Option<&DestStats> {
        self.dests.get(&DestKey::new(transport, queue))
    }

    /// When `msg` completed, if it did.
    pub fn completion(&self, msg: MessageId) -> Option<&Completion> {
        self.completions.iter().find(|c| c.msg == msg)
    }

    /// The smallest gap between the end of one delivery and the start of
    /// the next among `deliveries` (in dispatch order); None with fewer
    /// than two. What a rate delay must keep at or above its setting.
    pub fn min_gap<'a>(
        deliveries: impl IntoIterator<Item = &'a DeliveryRecord>,
    ) -> Option<Duration> {
        let mut prev_done: Option<Time> = None;
        let mut min: Option<Duration> = None;
        for d in deliveries {
            if let Some(done) = prev_done {
                let gap = d.at.saturating_since(done);
                min = Some(min.map_or(gap, |m| m.min(gap)));
            }
            prev_done = d.done_at;
        }
        min
    }

    /// The most of `deliveries` in progress at the same time (a delivery
    /// is in progress from `at` until `done_at`, end excluded).
    pub fn max_overlap<'a>(deliveries: impl IntoIterator<Item = &'a DeliveryRecord>) -> usize {
        // Ends sort before starts at the same instant: a slot freed at t
        // may be reused at t.
        let mut edges: Vec<(Time, i8)> = Vec::new();
        for d in deliveries {
            edges.push((d.at, 1));
            edges.push((d.done_at.unwrap_or(Time::from_micros(u64::MAX)), -1));
        }
        edges.sort();
        let (mut cur, mut max) = (0i64, 0i64);
        for (_, e) in edges {
            cur += i64::from(e);
            max = max.max(cur);
        }
        usize::try_from(max).unwrap_or(0)
    }
}
