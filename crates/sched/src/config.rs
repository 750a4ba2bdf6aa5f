//! Validated, typed configuration of the scheduler.
//!
//! The daemon parses main.cf strings; this module only holds the results.
//! Nothing here parses text, so the core can never fail on configuration:
//! out-of-range values were rejected (with Postfix's own words) before a
//! [`Config`] could be built.
//!
//! Per-transport values come from a lookup function rather than a table,
//! because transports appear at run time (the first recipient that
//! trivial-rewrite sends to `relay` creates the `relay` transport), as in
//! `qmgr_transport_create()`.

use std::fmt;
use std::time::Duration;

/// Concurrency feedback for one direction (positive or negative).
///
/// Postfix writes these as `x`, `x/y` or `x/concurrency`; the daemon turns
/// the text into a fraction, and this type applies it. A value of
/// `1/concurrency` means "one whole step per window's worth of cohorts".
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Feedback {
    /// The fraction itself (0 < value <= 1).
    pub value: f64,
    /// Divide by the current window (the `/concurrency` form).
    pub per_concurrency: bool,
}

impl Feedback {
    /// Fixed feedback of one whole step, Postfix's default.
    pub const ONE: Feedback = Feedback {
        value: 1.0,
        per_concurrency: false,
    };

    /// The feedback amount at the given window size.
    pub(crate) fn at(self, window: i32) -> f64 {
        if self.per_concurrency {
            self.value / f64::from(window.max(1))
        } else {
            self.value
        }
    }
}

/// Everything the scheduler needs to know about one transport.
#[derive(Clone, Debug, PartialEq)]
pub struct TransportConfig {
    /// `_destination_concurrency_limit` (0 = no limit).
    pub dest_concurrency_limit: u32,
    /// `_destination_recipient_limit` (0 = no limit).
    pub dest_recipient_limit: u32,
    /// `_initial_destination_concurrency`.
    pub init_dest_concurrency: u32,
    /// `_destination_concurrency_positive_feedback`.
    pub positive_feedback: Feedback,
    /// `_destination_concurrency_negative_feedback`.
    pub negative_feedback: Feedback,
    /// `_destination_concurrency_failed_cohort_limit` (0 = never dead).
    pub failed_cohort_limit: u32,
    /// `_destination_rate_delay`: pause after each delivery to a destination.
    pub dest_rate_delay: Duration,
    /// `_transport_rate_delay`: pause after each delivery by the transport.
    pub transport_rate_delay: Duration,
    /// `_recipient_limit`: in-core recipients this transport may hold.
    pub recipient_limit: u32,
    /// `_extra_recipient_limit`.
    pub extra_recipient_limit: u32,
    /// `_recipient_refill_limit`.
    pub recipient_refill_limit: u32,
    /// `_recipient_refill_delay`.
    pub recipient_refill_delay: Duration,
    /// `_delivery_slot_cost` (preemption off below 2).
    pub delivery_slot_cost: u32,
    /// `_delivery_slot_loan`.
    pub delivery_slot_loan: u32,
    /// `_delivery_slot_discount` (0..=100).
    pub delivery_slot_discount: u32,
    /// `_minimum_delivery_slots`.
    pub minimum_delivery_slots: u32,
}

impl Default for TransportConfig {
    /// Postfix 3.7's built-in defaults for a transport with no overrides.
    fn default() -> Self {
        TransportConfig {
            dest_concurrency_limit: 20,
            dest_recipient_limit: 50,
            init_dest_concurrency: 5,
            positive_feedback: Feedback::ONE,
            negative_feedback: Feedback::ONE,
            failed_cohort_limit: 1,
            dest_rate_delay: Duration::ZERO,
            transport_rate_delay: Duration::ZERO,
            recipient_limit: 20000,
            extra_recipient_limit: 1000,
            recipient_refill_limit: 100,
            recipient_refill_delay: Duration::from_secs(5),
            delivery_slot_cost: 5,
            delivery_slot_loan: 3,
            delivery_slot_discount: 50,
            minimum_delivery_slots: 3,
        }
    }
}

/// A limit an operator changes while rqmgr runs
/// ([`crate::Scheduler::set_transport_limit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveLimit {
    /// `_destination_concurrency_limit` (0: none).
    Concurrency(u32),
    /// `_destination_recipient_limit` (0: none).
    RecipientLimit(u32),
    /// `_destination_rate_delay` (zero: none; otherwise one delivery at a
    /// time, with this pause after each).
    RateDelay(std::time::Duration),
}

impl TransportConfig {
    /// Applies the adjustments `qmgr_transport_create()` makes: a
    /// destination rate delay forces one delivery at a time, and the initial
    /// window never exceeds a non-zero limit.
    pub fn normalized(mut self) -> TransportConfig {
        if !self.dest_rate_delay.is_zero() {
            self.dest_concurrency_limit = 1;
        }
        if self.dest_concurrency_limit > 0
            && self.init_dest_concurrency > self.dest_concurrency_limit
        {
            self.init_dest_concurrency = self.dest_concurrency_limit;
        }
        self.init_dest_concurrency = self.init_dest_concurrency.max(1);
        self
    }
}

/// Looks up the configuration of a transport by name (its bytes, as
/// trivial-rewrite gave them).
pub type TransportLookup = Box<dyn Fn(&[u8]) -> TransportConfig>;

/// Global scheduler configuration.
pub struct Config {
    /// `qmgr_message_active_limit`.
    pub message_active_limit: usize,
    /// `qmgr_message_recipient_limit`.
    pub message_recipient_limit: usize,
    /// `qmgr_message_recipient_minimum`.
    pub message_recipient_minimum: usize,
    /// `minimal_backoff_time`: how long a dead destination stays dead.
    pub min_backoff: Duration,
    /// `maximal_backoff_time`.
    pub max_backoff: Duration,
    /// `transport_retry_time`: how long a broken transport stays dead.
    pub transport_retry_time: Duration,
    /// `qmgr_fudge_factor` (oqmgr), percent.
    pub fudge_factor: u32,
    /// `qmgr_site_hog_factor`, percent (early Postfix): a destination
    /// holding more entries than this share of the active queue (its
    /// message count when in-core recipients exceed 80% of their limit,
    /// else `qmgr_message_active_limit`) gets no new recipients; they are
    /// deferred. 100 = no limit.
    pub site_hog_factor: u32,
    /// Preemptive scheduling (qmgr) rather than plain round robin (oqmgr).
    pub preemptive: bool,
    /// `qmgr_clog_warn_time` (zero when off, or when `helpful_warnings`
    /// is off): how often to warn about one destination clogging the
    /// active queue.
    pub clog_warn_time: Duration,
    /// `recipient_delimiter`, for naming per-recipient queues: a set of
    /// bytes, any of which ends the local part there.
    pub recipient_delimiter: String,
    /// Per-transport configuration.
    pub transports: TransportLookup,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("message_active_limit", &self.message_active_limit)
            .field("message_recipient_limit", &self.message_recipient_limit)
            .field("min_backoff", &self.min_backoff)
            .field("transport_retry_time", &self.transport_retry_time)
            .field("preemptive", &self.preemptive)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    /// Postfix 3.7's built-in defaults, with `local` limited as Postfix's
    /// qmgr limits it (`local_destination_*` 2 and 1).
    fn default() -> Self {
        Config {
            message_active_limit: 20000,
            message_recipient_limit: 20000,
            message_recipient_minimum: 10,
            min_backoff: Duration::from_secs(300),
            max_backoff: Duration::from_secs(4000),
            transport_retry_time: Duration::from_secs(60),
            fudge_factor: 100,
            site_hog_factor: 100,
            clog_warn_time: Duration::from_secs(300),
            preemptive: true,
            recipient_delimiter: String::new(),
            transports: Box::new(|name| {
                let mut t = TransportConfig::default();
                if name == b"local" {
                    t.dest_concurrency_limit = 2;
                    t.dest_recipient_limit = 1;
                }
                t
            }),
        }
    }
}
