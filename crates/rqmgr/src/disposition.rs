//! What becomes of a message once every recipient was tried: Postfix's
//! decisions of `qmgr_active_done_25_generic()` and
//! `qmgr_active_done_3_generic()` (qmgr_active.c), as pure functions of the
//! message's state, the time and the configuration.
//!
//! finish.rs carries them out: it sends the notice [`notice`] chose, feeds
//! its outcome back into the message's status, then moves or removes the
//! file as [`final_step`] says. Each rule has a table test naming the
//! Postfix line it mirrors (v3.7.11 numbering; the same in 3.10 and 3.11).
//!
//! Invariant: only a message with a failed recipient (`status` non-zero)
//! can expire, be warned about or be deferred; a message whose expiry
//! notice went out is final once the defer service took its recipients.

use std::time::Duration;

use rqmgr_sched::next_attempt;

/// Why a message is returned to its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// `postsuper -f`/`-e` asked for it.
    Forced,
    /// Older than its queue lifetime.
    Aged,
}

impl Expiry {
    /// The word Postfix logs: `status=expired` or `status=force-expired`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Expiry::Forced => "force-expired",
            Expiry::Aged => "expired",
        }
    }
}

/// The notice a finished message gets, before it is moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    /// None: delivered, or failed and neither expired nor due a warning.
    None,
    /// Returned to the sender with the defer log's reasons.
    Expire(Expiry),
    /// A delay warning; the `W` record is set to -1 when it went out.
    Warn,
}

/// What [`notice`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Finished {
    /// Some recipient failed (`message->flags`).
    pub failed: bool,
    /// The file was force-expired (`QMGR_FORCE_EXPIRE`).
    pub force_expire: bool,
    /// The null sender: bounces live `bounce_queue_lifetime`.
    pub null_sender: bool,
    /// `create_time` (or the arrival time), in seconds.
    pub create_time: i64,
    /// The `W` record's time, if the file has one (-1 once warned).
    pub warn_time: Option<i64>,
}

/// The queue lifetimes: `maximal_queue_lifetime` and
/// `bounce_queue_lifetime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lifetimes {
    /// For mail with a sender.
    pub mail: Duration,
    /// For mail from the null sender.
    pub bounce: Duration,
}

/// The notice for a finished message at `now` (seconds).
pub(crate) fn notice(m: &Finished, now: i64, lifetimes: Lifetimes) -> Notice {
    if !m.failed {
        return Notice::None;
    }
    let lifetime = if m.null_sender {
        lifetimes.bounce
    } else {
        lifetimes.mail
    };
    if m.force_expire {
        Notice::Expire(Expiry::Forced)
    } else if now >= m.create_time.saturating_add(secs(lifetime)) {
        Notice::Expire(Expiry::Aged)
    } else if m.warn_time.is_some_and(|w| w > 0 && now >= w - 1) {
        Notice::Warn
    } else {
        Notice::None
    }
}

/// Where the file goes last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinalStep {
    /// Every recipient is done: unlink it, log `removed`.
    Remove,
    /// Some recipient is to be tried again: to `deferred/`, with this
    /// next-attempt time (seconds) as the file's times.
    Defer {
        /// When the message is next due.
        until: i64,
    },
}

/// The last step for a message whose status, after its notices, is
/// `failed`: Postfix's backoff is the message's age, clamped to
/// `minimal_backoff_time`..`maximal_backoff_time`, or the minimum without
/// a creation time.
pub(crate) fn final_step(
    failed: bool,
    now: i64,
    create_time: i64,
    min_backoff: Duration,
    max_backoff: Duration,
) -> FinalStep {
    if failed {
        let create = (create_time > 0).then_some(create_time);
        FinalStep::Defer {
            until: next_attempt(now, create, min_backoff, max_backoff),
        }
    } else {
        FinalStep::Remove
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const LIFETIMES: Lifetimes = Lifetimes {
        mail: Duration::from_secs(5 * 86_400),
        bounce: Duration::from_secs(86_400),
    };

    fn finished(failed: bool) -> Finished {
        Finished {
            failed,
            force_expire: false,
            null_sender: false,
            create_time: 1_000_000,
            warn_time: None,
        }
    }

    #[test]
    fn notices_in_postfix_order() {
        let t0 = 1_000_000;
        let forced = Finished {
            force_expire: true,
            ..finished(true)
        };
        let bounce = Finished {
            null_sender: true,
            ..finished(true)
        };
        let warned = |w| Finished {
            warn_time: Some(w),
            ..finished(true)
        };
        // (message, now, notice, Postfix line)
        let rows: &[(Finished, i64, Notice, u32)] = &[
            (finished(false), t0 + 10 * DAY, Notice::None, 450),
            (
                Finished {
                    force_expire: true,
                    ..finished(false)
                },
                t0,
                Notice::None,
                450,
            ),
            (forced, t0, Notice::Expire(Expiry::Forced), 451),
            (finished(true), t0 + 5 * DAY - 1, Notice::None, 453),
            (
                finished(true),
                t0 + 5 * DAY,
                Notice::Expire(Expiry::Aged),
                453,
            ),
            (bounce, t0 + DAY - 1, Notice::None, 454),
            (bounce, t0 + DAY, Notice::Expire(Expiry::Aged), 454),
            // Expiry wins over a due warning.
            (
                Finished {
                    warn_time: Some(t0 + 3600),
                    ..finished(true)
                },
                t0 + 5 * DAY,
                Notice::Expire(Expiry::Aged),
                453,
            ),
            (warned(t0 + 3600), t0 + 3598, Notice::None, 488),
            (warned(t0 + 3600), t0 + 3599, Notice::Warn, 488),
            (warned(t0 + 3600), t0 + 4 * DAY, Notice::Warn, 488),
            (warned(-1), t0 + 4 * DAY, Notice::None, 487),
            (warned(0), t0 + 4 * DAY, Notice::None, 487),
        ];
        for &(m, now, want, line) in rows {
            assert_eq!(notice(&m, now, LIFETIMES), want, "line {line}");
        }
        assert_eq!(Expiry::Forced.as_str(), "force-expired");
        assert_eq!(Expiry::Aged.as_str(), "expired");
    }

    #[test]
    fn final_steps_and_backoff() {
        let min = Duration::from_secs(300);
        let max = Duration::from_secs(4000);
        // (failed, now, create_time, step, Postfix line)
        let rows: &[(bool, i64, i64, FinalStep, u32)] = &[
            (false, 5000, 1000, FinalStep::Remove, 572),
            (true, 1000, 1000, FinalStep::Defer { until: 1300 }, 561),
            (true, 2000, 1000, FinalStep::Defer { until: 3000 }, 558),
            (
                true,
                100_000,
                1000,
                FinalStep::Defer { until: 104_000 },
                559,
            ),
            (true, 5000, 0, FinalStep::Defer { until: 5300 }, 564),
            (true, 5000, -1, FinalStep::Defer { until: 5300 }, 557),
        ];
        for &(failed, now, create, want, line) in rows {
            assert_eq!(
                final_step(failed, now, create, min, max),
                want,
                "line {line}"
            );
        }
        // A maximum below the minimum: Postfix applies the minimum last.
        assert_eq!(
            final_step(true, 2000, 1000, min, Duration::from_secs(100)),
            FinalStep::Defer { until: 2300 }
        );
    }
}
