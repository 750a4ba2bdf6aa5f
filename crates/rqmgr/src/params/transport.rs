//! Per-transport settings and concurrency feedback values.
//!
//! Job: when the scheduler first meets a transport it asks for that
//! transport's limits. Each value is looked up as `<transport><suffix>`
//! (e.g. `smtp_destination_concurrency_limit`) and falls back to the global
//! value already validated in [`QmgrParams`]; the result is the scheduler's
//! own [`TransportConfig`], so there is one path from main.cf to the
//! scheduler. The creation-time adjustments of Postfix's
//! `qmgr_transport_create` (a destination rate delay forces a concurrency
//! limit of 1; the initial concurrency never exceeds a non-zero limit) are
//! the scheduler's, [`TransportConfig::normalized`], applied there.
//!
//! Invariants: lookups happen in Postfix's order, so the first error reported
//! for a broken configuration is the one Postfix would report. The
//! `local_destination_*` values are ordinary parameters that happen to have
//! their own defaults (2 and 1), which [`QmgrParams`] supplies.
//!
//! Failure: malformed or out-of-range numbers are fatal ([`ParamError`]);
//! malformed feedback values are not: they produce Postfix's warning text and
//! fall back to 1, exactly as `qmgr_feedback_init` does.
//!
//! Limits: hexadecimal floating-point feedback values (`0x1p-3`) are read as
//! their leading `0`, where C's `sscanf("%lf")` would accept them.

use std::time::Duration;

use rqmgr_sched::{Feedback, TransportConfig};

use super::{get_int, get_str, get_time, ParamError, QmgrParams, RawParams};

/// A parsed `*_destination_concurrency_{positive,negative}_feedback` value
/// and the parameter Postfix names when it reports on it.
#[derive(Debug, Clone, PartialEq)]
struct FeedbackSetting {
    /// The value, as the scheduler applies it.
    feedback: Feedback,
    /// The per-transport name if its value differs from the global one,
    /// else the global name.
    source: String,
}

impl FeedbackSetting {
    /// Parse `value` the way `qmgr_feedback_init` does.
    ///
    /// `name` is the per-transport parameter name, `default_name` and
    /// `default_value` the global parameter. Returns the setting and, for a
    /// malformed or unreasonable value, the warning Postfix logs (the value
    /// then becomes a fixed 1).
    fn parse(
        name: &str,
        value: &str,
        default_name: &str,
        default_value: &str,
    ) -> (FeedbackSetting, Option<String>) {
        let source = if value != default_value {
            name
        } else {
            default_name
        }
        .to_string();
        let parsed = parse_feedback_text(value).filter(|f| (0.0..=1.0).contains(&f.value));
        match parsed {
            Some(feedback) => (FeedbackSetting { feedback, source }, None),
            None => {
                let warning =
                    format!("{source}: ignoring malformed or unreasonable feedback: {value}");
                let setting = FeedbackSetting {
                    feedback: Feedback::ONE,
                    source,
                };
                (setting, Some(warning))
            }
        }
    }

    /// The `destination_concurrency_feedback_debug` line Postfix logs when
    /// a transport is created (`init` = its initial concurrency).
    fn debug_line(&self, transport: &str, init: u32) -> String {
        let index = u8::from(self.feedback.per_concurrency);
        let value = if self.feedback.per_concurrency {
            self.feedback.value / f64::from(init.max(1))
        } else {
            self.feedback.value
        };
        format!(
            "{transport}: {} feedback type {index} value at {init}: {}",
            self.source,
            format_g(value)
        )
    }
}

/// Mirror `sscanf(s, "%lf %1[/] %30s%c")` followed by Postfix's case analysis.
/// Returns `None` where Postfix would leave the value marked as an error.
fn parse_feedback_text(s: &str) -> Option<Feedback> {
    let fixed = |value| Feedback {
        value,
        per_concurrency: false,
    };
    let (num, rest) = scan_double(s)?;
    // Only a '/' after optional blanks starts a denominator; anything else
    // after the number is ignored, because sscanf stops with one conversion.
    let Some(after_slash) = rest.trim_start().strip_prefix('/') else {
        return Some(fixed(num));
    };
    let denom = after_slash.trim_start();
    let word_len = denom
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(denom.len());
    // %30s then %c: the denominator must end the string and fit in 30 bytes.
    if word_len == 0 || word_len != denom.len() || word_len > 30 {
        return None;
    }
    if denom.eq_ignore_ascii_case("concurrency") {
        return Some(Feedback {
            value: num,
            per_concurrency: true,
        });
    }
    let int_max = f64::from(i32::MAX);
    let (d, tail) = scan_double(denom)?;
    if (0.0..=int_max).contains(&num) && tail.is_empty() && (1.0 / int_max..=int_max).contains(&d) {
        Some(fixed(num / d))
    } else {
        None
    }
}

/// Longest prefix of `s` (after leading blanks) that C's `strtod` accepts:
/// decimal numbers with optional exponent, `inf`, `infinity`, `nan`.
fn scan_double(s: &str) -> Option<(f64, &str)> {
    let t = s.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let b = t.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let lower = t[i..].to_ascii_lowercase();
    for word in ["infinity", "inf", "nan"] {
        if lower.starts_with(word) {
            let end = i + word.len();
            let v: f64 = if word == "nan" {
                f64::NAN
            } else {
                f64::INFINITY
            };
            let v = if b.first() == Some(&b'-') { -v } else { v };
            return Some((v, &t[end..]));
        }
    }
    let digits_before = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    i += digits_before;
    let mut digits_after = 0;
    if b.get(i) == Some(&b'.') {
        digits_after = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits_before + digits_after > 0 {
            i += 1 + digits_after;
        }
    }
    if digits_before + digits_after == 0 {
        return None;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let exp_digits = b[j..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp_digits > 0 {
            i = j + exp_digits;
        }
    }
    let v: f64 = t[..i].parse().ok()?;
    Some((v, &t[i..]))
}

/// What Postfix logs when it creates a transport: warnings about
/// malformed feedback values, and with `destination_concurrency_feedback_debug`
/// the feedback each direction starts with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TransportNotes {
    /// `warning:` lines.
    pub warnings: Vec<String>,
    /// Informational lines (feedback debugging).
    pub debug: Vec<String>,
}

/// Approximate C's `%g`: six significant digits, trailing zeros removed.
fn format_g(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let exp = v.abs().log10().floor() as i32;
    if !(-4..6).contains(&exp) {
        return format!("{v:e}");
    }
    let decimals = usize::try_from(5 - exp).unwrap_or(0);
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

impl QmgrParams {
    /// The scheduler's settings for `transport`, looked up as
    /// `<transport>_...` with the global values as fallback, in Postfix's
    /// order; and what Postfix logs on creating it.
    ///
    /// # Errors
    ///
    /// A malformed or out-of-range per-transport value (fatal in Postfix).
    pub(crate) fn transport(
        &self,
        raw: &RawParams,
        transport: &str,
    ) -> Result<(TransportConfig, TransportNotes), ParamError> {
        let name = |suffix: &str| format!("{transport}{suffix}");
        let int = |suffix: &str, default: i32, min: i32, max: i32| {
            get_int(raw, &name(suffix), default, min, max).map(unsigned)
        };
        // The local_* parameters are registered by qmgr itself, so their
        // defaults exist even when the raw table lacks them.
        let (con_default, rcpt_default) = if transport == "local" {
            (
                self.local_destination_concurrency_limit,
                self.local_destination_recipient_limit,
            )
        } else {
            (
                self.default_destination_concurrency_limit,
                self.default_destination_recipient_limit,
            )
        };
        let dest_concurrency_limit = int("_destination_concurrency_limit", con_default, 0, 0)?;
        let dest_recipient_limit = int("_destination_recipient_limit", rcpt_default, 0, 0)?;
        let init_dest_concurrency = int(
            "_initial_destination_concurrency",
            self.initial_destination_concurrency,
            1,
            0,
        )?;
        let transport_rate_delay = get_time2(
            raw,
            &name("_transport_rate_delay"),
            self.default_transport_rate_delay,
            0,
        )?;
        let dest_rate_delay = get_time2(
            raw,
            &name("_destination_rate_delay"),
            self.default_destination_rate_delay,
            0,
        )?;
        let delivery_slot_cost = int("_delivery_slot_cost", self.default_delivery_slot_cost, 0, 0)?;
        let delivery_slot_loan = int("_delivery_slot_loan", self.default_delivery_slot_loan, 0, 0)?;
        let delivery_slot_discount = int(
            "_delivery_slot_discount",
            self.default_delivery_slot_discount,
            0,
            100,
        )?;
        let minimum_delivery_slots = int(
            "_minimum_delivery_slots",
            self.default_minimum_delivery_slots,
            0,
            0,
        )?;
        let recipient_limit = int("_recipient_limit", self.default_recipient_limit, 0, 0)?;
        let extra_recipient_limit = int(
            "_extra_recipient_limit",
            self.default_extra_recipient_limit,
            0,
            0,
        )?;
        let recipient_refill_limit = int(
            "_recipient_refill_limit",
            self.default_recipient_refill_limit,
            1,
            0,
        )?;
        let recipient_refill_delay = get_time2(
            raw,
            &name("_recipient_refill_delay"),
            self.default_recipient_refill_delay,
            1,
        )?;
        let mut notes = TransportNotes::default();
        let mut feedback = |suffix: &str, global_name: &str, global: &str| {
            let pname = name(suffix);
            let value = get_str(raw, &pname, global, 1)?;
            let (setting, warning) = FeedbackSetting::parse(&pname, &value, global_name, global);
            notes.warnings.extend(warning);
            Ok::<FeedbackSetting, ParamError>(setting)
        };
        let positive = feedback(
            "_destination_concurrency_positive_feedback",
            "default_destination_concurrency_positive_feedback",
            &self.default_destination_concurrency_positive_feedback,
        )?;
        let negative = feedback(
            "_destination_concurrency_negative_feedback",
            "default_destination_concurrency_negative_feedback",
            &self.default_destination_concurrency_negative_feedback,
        )?;
        let failed_cohort_limit = int(
            "_destination_concurrency_failed_cohort_limit",
            self.default_destination_concurrency_failed_cohort_limit,
            0,
            0,
        )?;
        let config = TransportConfig {
            dest_concurrency_limit,
            dest_recipient_limit,
            init_dest_concurrency,
            positive_feedback: positive.feedback,
            negative_feedback: negative.feedback,
            failed_cohort_limit,
            dest_rate_delay,
            transport_rate_delay,
            recipient_limit,
            extra_recipient_limit,
            recipient_refill_limit,
            recipient_refill_delay,
            delivery_slot_cost,
            delivery_slot_loan,
            delivery_slot_discount,
            minimum_delivery_slots,
        };
        if self.destination_concurrency_feedback_debug {
            // Postfix reports the window the transport starts with.
            let init = config.clone().normalized().init_dest_concurrency;
            for setting in [&positive, &negative] {
                notes.debug.push(setting.debug_line(transport, init));
            }
        }
        Ok((config, notes))
    }
}

/// An `int` parameter as the scheduler counts: Postfix accepts negative
/// values where it checks no minimum, and they mean "none" (0) there.
fn unsigned(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// Per-transport time lookup: a bare number means seconds here, whatever the
/// unit of the global default, as in Postfix's `get_mail_conf_time2`.
fn get_time2(
    raw: &RawParams,
    name: &str,
    default: Duration,
    min: u64,
) -> Result<Duration, ParamError> {
    let default_text = format!("{}s", default.as_secs());
    get_time(raw, name, &default_text, min, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fb(v: &str) -> (FeedbackSetting, Option<String>) {
        FeedbackSetting::parse("smtp_x", v, "default_x", "1")
    }

    fn fixed(value: f64) -> Feedback {
        Feedback {
            value,
            per_concurrency: false,
        }
    }

    #[test]
    fn feedback_forms() {
        assert_eq!(fb("1").0.feedback, fixed(1.0));
        assert_eq!(fb("1").0.source, "default_x");
        assert_eq!(fb("0.25").0.feedback, fixed(0.25));
        assert_eq!(fb("1/8").0.feedback, fixed(0.125));
        assert_eq!(fb(" 1 / 4").0.feedback, fixed(0.25));
        let c = fb("1/Concurrency").0;
        assert_eq!(
            c.feedback,
            Feedback {
                value: 1.0,
                per_concurrency: true
            }
        );
        assert_eq!(
            c.debug_line("smtp", 4),
            "smtp: smtp_x feedback type 1 value at 4: 0.25"
        );
        // Trailing junk without a slash is ignored by sscanf.
        assert_eq!(
            fb("0.5junk"),
            (
                FeedbackSetting {
                    feedback: fixed(0.5),
                    source: "smtp_x".into()
                },
                None
            )
        );
    }

    #[test]
    fn bad_feedback_warns_and_uses_one() {
        for bad in ["2", "x", "1/", "1/0", "1/8 ", "1/8x", "-1", "nan", "1/abc"] {
            let (f, w) = fb(bad);
            assert_eq!(f.feedback, Feedback::ONE, "{bad}");
            assert_eq!(
                w.as_deref(),
                Some(
                    format!("smtp_x: ignoring malformed or unreasonable feedback: {bad}").as_str()
                )
            );
        }
    }

    fn qp(extra: &str) -> (QmgrParams, RawParams) {
        let raw = RawParams::parse(extra);
        let (p, _) = QmgrParams::from_raw(&raw).expect("valid");
        (p, raw)
    }

    #[test]
    fn transport_fallbacks_and_local_defaults() {
        let (p, raw) = qp("default_destination_concurrency_limit = 7\n");
        let (t, notes) = p.transport(&raw, "smtp").expect("ok");
        assert_eq!(notes, TransportNotes::default());
        assert_eq!(t.dest_concurrency_limit, 7);
        assert_eq!(t.dest_recipient_limit, 50);
        assert_eq!(t.init_dest_concurrency, 5);
        assert_eq!(t.recipient_refill_delay, Duration::from_secs(5));
        // With nothing configured, the scheduler's own defaults.
        let (p, raw) = qp("");
        assert_eq!(
            p.transport(&raw, "smtp").expect("ok").0,
            TransportConfig::default()
        );
        let (l, _) = p.transport(&raw, "local").expect("ok");
        assert_eq!((l.dest_concurrency_limit, l.dest_recipient_limit), (2, 1));
    }

    /// The values as configured; the scheduler applies Postfix's
    /// creation-time adjustments (`TransportConfig::normalized`), which the
    /// feedback debug line reports.
    #[test]
    fn transport_values_and_notes() {
        let (p, raw) = qp(
            "relay_destination_rate_delay = 2\nrelay_initial_destination_concurrency = 9\n\
             x_destination_concurrency_limit = 3\nx_destination_concurrency_negative_feedback = 5\n\
             x_recipient_refill_delay = 1m\ndestination_concurrency_feedback_debug = yes\n",
        );
        let (r, _) = p.transport(&raw, "relay").expect("ok");
        assert_eq!(r.dest_rate_delay, Duration::from_secs(2));
        let r = r.normalized();
        assert_eq!((r.dest_concurrency_limit, r.init_dest_concurrency), (1, 1));
        let (x, notes) = p.transport(&raw, "x").expect("ok");
        assert_eq!((x.dest_concurrency_limit, x.init_dest_concurrency), (3, 5));
        assert_eq!(x.recipient_refill_delay, Duration::from_secs(60));
        assert_eq!(
            notes.warnings,
            vec!["x_destination_concurrency_negative_feedback: ignoring malformed or unreasonable feedback: 5".to_string()]
        );
        assert_eq!(
            notes.debug,
            vec![
                "x: default_destination_concurrency_positive_feedback feedback type 0 value at 3: 1"
                    .to_string(),
                "x: x_destination_concurrency_negative_feedback feedback type 0 value at 3: 1"
                    .to_string(),
            ]
        );
        assert_eq!(format_g(1.0 / 3.0), "0.333333");
        assert_eq!(format_g(0.125), "0.125");
    }

    #[test]
    fn transport_range_errors() {
        let (p, raw) = qp("y_delivery_slot_discount = 101\nz_recipient_refill_limit = 0\nq_destination_rate_delay = 5q\n");
        let e = p.transport(&raw, "y").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("invalid y_delivery_slot_discount parameter value 101 > 100")
        );
        let e = p.transport(&raw, "z").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("invalid z_recipient_refill_limit parameter value 0 < 1")
        );
        let e = p.transport(&raw, "q").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("parameter q_destination_rate_delay: bad time value or unit: 5q")
        );
    }
}
