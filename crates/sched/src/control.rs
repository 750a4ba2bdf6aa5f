//! What operators change while the scheduler runs, and what it learned
//! that a restart may take over.
//!
//! * **Holds** (`rqmgrctl suspend`): a transport, or one next hop of it,
//!   gets no deliveries. Its waiting entries are deferred at once with the
//!   hold's reason, and every recipient routed to it later is deferred on
//!   arrival, before dead transports and destinations are considered, so
//!   that neither `F` nor a flush revives a held destination. Deliveries
//!   already under way finish.
//! * **Destination limits** (`rqmgrctl set TRANSPORT:NEXTHOP ...`):
//!   concurrency, rate delay and recipients per delivery for one next hop,
//!   kept by name so that they outlive the queue (an idle queue is deleted
//!   and made anew when mail comes).
//! * **Learned state** (`Scheduler::learned`, `Scheduler::restore`):
//!   concurrency windows, dead destinations with the time left to their
//!   revival, and rate-delay pauses, as a restarted queue manager may
//!   resume them. Restored windows are used by queues made within
//!   `minimal_backoff_time` of the restore, then forgotten.
//!
//! Names match as `rqmgrctl destinations` shows them: the transport
//! exactly, the next hop ignoring ASCII case (queue names are lower case).
//! Invariant: with no hold, no destination limit and nothing restored, the
//! scheduler decides exactly as without this module; each hook starts by
//! checking that its map is empty.

use std::time::Duration;

use crate::bytestring::ByteString;
use crate::config::TransportConfig;
use crate::event::{Dsn, Route};
use crate::hash::FxHashMap;
use crate::retry::Timer;
use crate::time::Time;
use crate::{LiveLimit, Scheduler};

/// A transport, or one next hop of it, as an operator names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// The transport (master.cf service) name.
    pub transport: ByteString,
    /// One next hop, or every one of the transport.
    pub nexthop: Option<ByteString>,
}

impl Target {
    /// A target; the next hop is compared ignoring ASCII case.
    pub fn new(transport: &[u8], nexthop: Option<&[u8]>) -> Target {
        Target {
            transport: transport.into(),
            nexthop: nexthop.map(|n| n.to_ascii_lowercase().into()),
        }
    }

    /// `transport` or `transport:nexthop`, as `rqmgrctl` takes it.
    pub fn name(&self) -> ByteString {
        match &self.nexthop {
            None => self.transport.clone(),
            Some(hop) => [&self.transport[..], b":", hop].concat().into(),
        }
    }
}

/// An operator's limits for one destination; `None` keeps the
/// transport's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DestLimits {
    pub concurrency: Option<u32>,
    pub rate_delay: Option<Duration>,
    pub recipient_limit: Option<u32>,
}

impl DestLimits {
    /// The concurrency limit in force for a queue of a transport with
    /// `cfg` (0: none). A rate delay means one delivery at a time, as
    /// `qmgr_transport_create()` makes it for a whole transport.
    pub(crate) fn concurrency(&self, cfg: &TransportConfig) -> u32 {
        if !self.rate_delay(cfg).is_zero() {
            return 1;
        }
        self.concurrency.unwrap_or(cfg.dest_concurrency_limit)
    }

    pub(crate) fn rate_delay(&self, cfg: &TransportConfig) -> Duration {
        self.rate_delay.unwrap_or(cfg.dest_rate_delay)
    }

    pub(crate) fn recipient_limit(&self, cfg: &TransportConfig) -> u32 {
        self.recipient_limit.unwrap_or(cfg.dest_recipient_limit)
    }
}

/// One destination as a restarted queue manager may take it over.
#[derive(Clone, Debug, PartialEq)]
pub struct LearnedDestination {
    /// The transport.
    pub transport: ByteString,
    /// The queue name (next hop, or `localpart@nexthop`, lower case).
    pub queue: ByteString,
    /// The next hop deliveries go to.
    pub nexthop: ByteString,
    /// The concurrency window (0: dead).
    pub window: u32,
    /// Why it is dead, if it is.
    pub dead: Option<Dsn>,
    /// How long until it revives (dead) or its rate-delay pause ends.
    pub wake_in: Option<Duration>,
}

/// Holds, destination limits and restored windows; see the module doc.
#[derive(Debug, Default)]
pub(crate) struct Controls {
    holds: FxHashMap<Target, Dsn>,
    limits: FxHashMap<(ByteString, ByteString), DestLimits>,
    warm: FxHashMap<(ByteString, ByteString), u32>,
    warm_until: Time,
}

impl Controls {
    /// The hold a recipient routed this way falls under, if any.
    pub(crate) fn hold_for(&self, route: &Route) -> Option<&Dsn> {
        if self.holds.is_empty() {
            return None;
        }
        let whole = Target {
            transport: route.transport.clone(),
            nexthop: None,
        };
        if let Some(dsn) = self.holds.get(&whole) {
            return Some(dsn);
        }
        let one = Target {
            nexthop: Some(route.nexthop.to_ascii_lowercase().into()),
            ..whole
        };
        self.holds.get(&one)
    }

    /// The operator's limits for a new queue of `transport` to `nexthop`.
    pub(crate) fn limits_for(&self, transport: &[u8], nexthop: &[u8]) -> DestLimits {
        if self.limits.is_empty() {
            return DestLimits::default();
        }
        let key = (
            ByteString::from(transport),
            nexthop.to_ascii_lowercase().into(),
        );
        self.limits.get(&key).copied().unwrap_or_default()
    }

    /// A restored window for a queue made now, used once.
    pub(crate) fn take_warm(&mut self, transport: &[u8], queue: &[u8], now: Time) -> Option<u32> {
        if self.warm.is_empty() {
            return None;
        }
        if now > self.warm_until {
            self.warm.clear();
            return None;
        }
        self.warm
            .remove(&(ByteString::from(transport), ByteString::from(queue)))
    }
}

impl Scheduler {
    /// An operator's `rqmgrctl suspend`: `target` gets no more deliveries
    /// until [`Scheduler::release`]; what waits for it now and what comes
    /// for it later is deferred with `dsn`. A second hold of the same
    /// target replaces the reason. Returns the recipients deferred now.
    pub fn hold(&mut self, target: &Target, dsn: Dsn, now: Time) -> usize {
        self.now = self.now.max(now);
        self.controls.holds.insert(target.clone(), dsn.clone());
        let mut deferred = 0;
        for q in self.target_queues(target) {
            if let Some(queue) = self.queues.get(q) {
                deferred += queue.todo_rcpts;
            }
            self.defer_todo_here(q, &dsn);
            self.maybe_queue_done(q);
        }
        deferred
    }

    /// An operator's `rqmgrctl resume`: the hold on `target` ends; mail
    /// routed to it is scheduled again. False if there was none.
    pub fn release(&mut self, target: &Target, now: Time) -> bool {
        self.now = self.now.max(now);
        self.controls.holds.remove(target).is_some()
    }

    /// The targets held now, with their reasons.
    pub fn holds(&self) -> Vec<(Target, Dsn)> {
        let mut all: Vec<(Target, Dsn)> = self
            .controls
            .holds
            .iter()
            .map(|(t, d)| (t.clone(), d.clone()))
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// An operator's `rqmgrctl set TRANSPORT:NEXTHOP ...`: a limit for one
    /// destination, in force at once and for queues made later. A lower
    /// concurrency shrinks the window (what is in flight finishes).
    pub fn set_destination_limit(
        &mut self,
        transport: &[u8],
        nexthop: &[u8],
        limit: LiveLimit,
        now: Time,
    ) -> Result<(), String> {
        self.now = self.now.max(now);
        let t = self.transport_id(transport);
        let cfg = &self.transports[t].cfg;
        let key = (
            ByteString::from(transport),
            nexthop.to_ascii_lowercase().into(),
        );
        let mut limits = self.controls.limits.get(&key).copied().unwrap_or_default();
        match limit {
            LiveLimit::Concurrency(n) => {
                if !limits.rate_delay(cfg).is_zero() && n != 1 {
                    return Err("a rate-delayed destination delivers one at a time".to_owned());
                }
                limits.concurrency = Some(n);
            }
            LiveLimit::RateDelay(d) => limits.rate_delay = Some(d),
            LiveLimit::RecipientLimit(n) => {
                if self.transports[t].per_recipient_queues() || n == 1 {
                    return Err(
                        "one recipient per delivery is a transport's choice, not a destination's"
                            .to_owned(),
                    );
                }
                limits.recipient_limit = Some(n);
            }
        }
        self.controls.limits.insert(key, limits);
        self.apply_dest_limits(t, nexthop, Some(limits));
        Ok(())
    }

    /// Forgets the operator's limits for one destination: the transport's
    /// apply again. False if there were none.
    pub fn clear_destination_limits(&mut self, transport: &[u8], nexthop: &[u8]) -> bool {
        let key = (
            ByteString::from(transport),
            nexthop.to_ascii_lowercase().into(),
        );
        if self.controls.limits.remove(&key).is_none() {
            return false;
        }
        if let Some(&t) = self.transport_ids.get(transport) {
            self.apply_dest_limits(t, nexthop, None);
        }
        true
    }

    /// Puts a transport's configured limits back (after
    /// [`Scheduler::set_transport_limit`]).
    pub fn reset_transport_limits(&mut self, transport: &[u8]) {
        let Some(&t) = self.transport_ids.get(transport) else {
            return;
        };
        let cfg = (self.cfg.transports)(transport).normalized();
        self.transports[t].cfg = cfg;
        let queues: Vec<usize> = self.transports[t].queues.values().copied().collect();
        for q in queues {
            self.cap_window(q);
        }
    }

    /// What the scheduler learned about destinations: those dead, pausing
    /// after a delivery, or with a window other than where a new one
    /// starts. Sorted, so that the same state gives the same list.
    pub fn learned(&self) -> Vec<LearnedDestination> {
        let mut all = Vec::new();
        for (_, queue) in self.queues.iter() {
            let t = &self.transports[queue.transport];
            let initial = queue.limits.concurrency(&t.cfg);
            let initial = if initial == 0 {
                t.cfg.init_dest_concurrency
            } else {
                t.cfg.init_dest_concurrency.min(initial)
            };
            let window = u32::try_from(queue.window).unwrap_or(0);
            let wake_in = (queue.is_dead() || queue.suspended)
                .then_some(queue.wake_at)
                .flatten()
                .map(|at| at.saturating_since(self.now));
            if queue.dsn.is_none() && wake_in.is_none() && window == initial {
                continue;
            }
            all.push(LearnedDestination {
                transport: t.name.clone(),
                queue: queue.name.clone(),
                nexthop: queue.nexthop.clone(),
                window,
                dead: queue.dsn.clone(),
                wake_in,
            });
        }
        all.sort_unstable_by(|a, b| (&a.transport, &a.queue).cmp(&(&b.transport, &b.queue)));
        all
    }

    /// Takes over what an earlier queue manager learned (see
    /// [`Scheduler::learned`]): dead destinations stay dead for the time
    /// they had left, pauses end when they would have, windows are used by
    /// queues made within `minimal_backoff_time`. Call before any message
    /// arrives; destinations the scheduler already has are left alone.
    pub fn restore(&mut self, learned: Vec<LearnedDestination>, now: Time) {
        self.now = self.now.max(now);
        self.controls.warm_until = self.now + self.cfg.min_backoff;
        for d in learned {
            let t = self.transport_id(&d.transport);
            if self.transports[t].queues.contains_key(&d.queue[..]) {
                continue;
            }
            match (d.dead, d.wake_in) {
                (Some(dsn), Some(wake_in)) => {
                    let q = self.queue_id(t, &d.queue, &d.nexthop);
                    let generation = self.fresh();
                    let revive = self.now + wake_in;
                    let queue = &mut self.queues[q];
                    queue.window = 0;
                    queue.dsn = Some(dsn.clone());
                    queue.last_failure = Some(dsn);
                    queue.dest_flags = 0;
                    queue.generation = generation;
                    queue.throttled_since = Some(self.now);
                    queue.wake_at = Some(revive);
                    self.timers.add(
                        revive,
                        Timer::QueueRevive {
                            queue: q,
                            generation,
                        },
                    );
                }
                (None, Some(wake_in)) if d.window > 0 => {
                    let q = self.queue_id(t, &d.queue, &d.nexthop);
                    let resume = self.now + wake_in;
                    let queue = &mut self.queues[q];
                    queue.window = i32::try_from(d.window).unwrap_or(i32::MAX);
                    queue.suspended = true;
                    queue.wake_at = Some(resume);
                    let generation = queue.generation;
                    self.timers.add(
                        resume,
                        Timer::QueueResume {
                            queue: q,
                            generation,
                        },
                    );
                    self.cap_window(q);
                }
                (None, None) if d.window > 0 => {
                    let key = (d.transport.clone(), d.queue.clone());
                    self.controls.warm.insert(key, d.window);
                }
                _ => {}
            }
        }
    }

    /// The queues in core that `target` names.
    fn target_queues(&self, target: &Target) -> Vec<usize> {
        match &target.nexthop {
            Some(hop) => self.find_destinations(&target.transport, hop, usize::MAX),
            None => {
                let Some(&t) = self.transport_ids.get(&target.transport[..]) else {
                    return Vec::new();
                };
                let mut all: Vec<usize> = self.transports[t].queues.values().copied().collect();
                // HashMap order differs between runs; sorted, every run of
                // the same events makes the same decisions.
                all.sort_unstable();
                all
            }
        }
    }

    /// New limits on the queues of transport `t` to `nexthop`.
    fn apply_dest_limits(&mut self, t: usize, nexthop: &[u8], limits: Option<DestLimits>) {
        let transport = self.transports[t].name.clone();
        for q in self.find_destinations(&transport, nexthop, usize::MAX) {
            self.queues[q].limits = limits.unwrap_or_default();
            self.cap_window(q);
        }
    }

    /// A live window above its queue's limit shrinks to it; deliveries in
    /// flight go on, and no new one starts until fewer are busy.
    pub(crate) fn cap_window(&mut self, q: usize) {
        let t = self.queues[q].transport;
        let cap = self.queues[q].limits.concurrency(&self.transports[t].cfg);
        let cap = i32::try_from(cap).unwrap_or(i32::MAX);
        let queue = &mut self.queues[q];
        if cap > 0 && queue.window > cap {
            queue.window = cap;
        }
        self.refresh(q);
    }

    /// A freshly made queue gets the operator's limits and any restored
    /// window.
    pub(crate) fn dress_new_queue(&mut self, q: usize) {
        let t = self.queues[q].transport;
        let (tname, queue) = (&self.transports[t].name, &self.queues[q]);
        let limits = self.controls.limits_for(tname, &queue.nexthop);
        let warm = self.controls.take_warm(tname, &queue.name, self.now);
        let cap = limits.concurrency(&self.transports[t].cfg);
        let cap = i32::try_from(cap).unwrap_or(i32::MAX);
        let queue = &mut self.queues[q];
        queue.limits = limits;
        if let Some(w) = warm {
            queue.window = i32::try_from(w).unwrap_or(i32::MAX).max(1);
        }
        if cap > 0 && queue.window > cap {
            queue.window = cap;
        }
    }
}
