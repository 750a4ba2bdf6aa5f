//! Per-transport settings and concurrency feedback values.
//!
//! Job: when the scheduler first meets a transport it asks for that
//! transport's limits. Each value is looked up as `<transport><suffix>`
//! (e.g. `smtp_destination_concurrency_limit`) and falls back to the global
//! value already validated in [`QmgrParams`]; then the creation-time
//! adjustments of Postfix 3.7's `qmgr_transport_create` are applied:
//! a destination rate delay forces a concurrency limit of 1, and the initial
//! concurrency never exceeds a non-zero limit.
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

use super::{get_int, get_str, get_time, ParamError, QmgrParams, RawParams};

/// How a feedback value scales with the current concurrency window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeedbackKind {
    /// A fixed amount per delivery (`x` or `x/y`).
    Fixed,
    /// An amount divided by the current window (`x/concurrency`).
    PerConcurrency,
}

/// A parsed `*_destination_concurrency_{positive,negative}_feedback` value.
#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    /// The numerator, always within 0..=1 after validation.
    pub base: f64,
    /// Whether `base` is divided by the concurrency window.
    pub kind: FeedbackKind,
    /// The parameter name Postfix would mention for this value: the
    /// per-transport name if it differs from the default, else the global name.
    pub source: String,
}

impl Feedback {
    /// The feedback amount at concurrency window `window` (> 0).
    pub fn value(&self, window: i32) -> f64 {
        match self.kind {
            FeedbackKind::Fixed => self.base,
            FeedbackKind::PerConcurrency => self.base / f64::from(window.max(1)),
        }
    }

    /// Parse `value` the way `qmgr_feedback_init` does.
    ///
    /// `name` is the per-transport parameter name, `default_name` and
    /// `default_value` the global parameter. Returns the feedback and, for a
    /// malformed or unreasonable value, the warning Postfix logs (the value
    /// then becomes a fixed 1).
    pub fn parse(
        name: &str,
        value: &str,
        default_name: &str,
        default_value: &str,
    ) -> (Feedback, Option<String>) {
        let source = if value != default_value {
            name
        } else {
            default_name
        }
        .to_string();
        let parsed = parse_feedback_text(value).filter(|(base, _)| (0.0..=1.0).contains(base));
        match parsed {
            Some((base, kind)) => (Feedback { base, kind, source }, None),
            None => {
                let warning =
                    format!("{source}: ignoring malformed or unreasonable feedback: {value}");
                let fb = Feedback {
                    base: 1.0,
                    kind: FeedbackKind::Fixed,
                    source,
                };
                (fb, Some(warning))
            }
        }
    }
}

/// Mirror `sscanf(s, "%lf %1[/] %30s%c")` followed by Postfix's case analysis.
/// Returns `None` where Postfix would leave the value marked as an error.
fn parse_feedback_text(s: &str) -> Option<(f64, FeedbackKind)> {
    let (num, rest) = scan_double(s)?;
    // Only a '/' after optional blanks starts a denominator; anything else
    // after the number is ignored, because sscanf stops with one conversion.
    let Some(after_slash) = rest.trim_start().strip_prefix('/') else {
        return Some((num, FeedbackKind::Fixed));
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
        return Some((num, FeedbackKind::PerConcurrency));
    }
    let int_max = f64::from(i32::MAX);
    let (d, tail) = scan_double(denom)?;
    if (0.0..=int_max).contains(&num) && tail.is_empty() && (1.0 / int_max..=int_max).contains(&d) {
        Some((num / d, FeedbackKind::Fixed))
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

/// The limits the scheduler uses for one transport, after Postfix's
/// creation-time adjustments. Integer fields keep Postfix's `int` semantics.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportParams {
    /// `_destination_concurrency_limit` (0 = no limit); 1 when a
    /// destination rate delay is set.
    pub dest_concurrency_limit: i32,
    /// `_destination_recipient_limit` (0 = no limit).
    pub dest_recipient_limit: i32,
    /// `_initial_destination_concurrency`, clamped to a non-zero limit.
    pub initial_dest_concurrency: i32,
    /// `_destination_concurrency_positive_feedback`.
    pub dest_concurrency_positive_feedback: Feedback,
    /// `_destination_concurrency_negative_feedback`.
    pub dest_concurrency_negative_feedback: Feedback,
    /// `_destination_concurrency_failed_cohort_limit` (0 = never dead).
    pub dest_concurrency_failed_cohort_limit: i32,
    /// `_destination_rate_delay` (whole seconds).
    pub dest_rate_delay: Duration,
    /// `_transport_rate_delay` (whole seconds).
    pub transport_rate_delay: Duration,
    /// `_recipient_limit`: in-core recipients for this transport.
    pub recipient_limit: i32,
    /// `_extra_recipient_limit`.
    pub extra_recipient_limit: i32,
    /// `_recipient_refill_limit` (>= 1).
    pub recipient_refill_limit: i32,
    /// `_recipient_refill_delay` (>= 1 s).
    pub recipient_refill_delay: Duration,
    /// `_delivery_slot_cost`.
    pub delivery_slot_cost: i32,
    /// `_delivery_slot_loan`.
    pub delivery_slot_loan: i32,
    /// `_delivery_slot_discount` (0..=100).
    pub delivery_slot_discount: i32,
    /// `_minimum_delivery_slots`.
    pub minimum_delivery_slots: i32,
}

impl TransportParams {
    /// The `destination_concurrency_feedback_debug` line Postfix logs for
    /// `fb` when a transport is created (`init` = initial concurrency).
    pub fn feedback_debug_line(transport: &str, fb: &Feedback, init: i32) -> String {
        let index = match fb.kind {
            FeedbackKind::Fixed => 0,
            FeedbackKind::PerConcurrency => 1,
        };
        format!(
            "{transport}: {} feedback type {index} value at {init}: {}",
            fb.source,
            format_g(fb.value(init))
        )
    }
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
    /// Settings for `transport`, looked up as `<transport>_...` with the
    /// global values as fallback. Returns the values and any warnings to log
    /// (malformed feedback).
    ///
    /// # Errors
    ///
    /// A malformed or out-of-range per-transport value (fatal in Postfix).
    pub fn transport(
        &self,
        raw: &RawParams,
        transport: &str,
    ) -> Result<(TransportParams, Vec<String>), ParamError> {
        let name = |suffix: &str| format!("{transport}{suffix}");
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
        let mut dest_concurrency_limit = get_int(
            raw,
            &name("_destination_concurrency_limit"),
            con_default,
            0,
            0,
        )?;
        let dest_recipient_limit = get_int(
            raw,
            &name("_destination_recipient_limit"),
            rcpt_default,
            0,
            0,
        )?;
        let mut initial_dest_concurrency = get_int(
            raw,
            &name("_initial_destination_concurrency"),
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
        if !dest_rate_delay.is_zero() {
            dest_concurrency_limit = 1;
        }
        if dest_concurrency_limit != 0 && dest_concurrency_limit < initial_dest_concurrency {
            initial_dest_concurrency = dest_concurrency_limit;
        }
        let delivery_slot_cost = get_int(
            raw,
            &name("_delivery_slot_cost"),
            self.default_delivery_slot_cost,
            0,
            0,
        )?;
        let delivery_slot_loan = get_int(
            raw,
            &name("_delivery_slot_loan"),
            self.default_delivery_slot_loan,
            0,
            0,
        )?;
        let delivery_slot_discount = get_int(
            raw,
            &name("_delivery_slot_discount"),
            self.default_delivery_slot_discount,
            0,
            100,
        )?;
        let minimum_delivery_slots = get_int(
            raw,
            &name("_minimum_delivery_slots"),
            self.default_minimum_delivery_slots,
            0,
            0,
        )?;
        let recipient_limit = get_int(
            raw,
            &name("_recipient_limit"),
            self.default_recipient_limit,
            0,
            0,
        )?;
        let extra_recipient_limit = get_int(
            raw,
            &name("_extra_recipient_limit"),
            self.default_extra_recipient_limit,
            0,
            0,
        )?;
        let recipient_refill_limit = get_int(
            raw,
            &name("_recipient_refill_limit"),
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
        let mut warnings = Vec::new();
        let mut feedback = |suffix: &str, global_name: &str, global: &str| {
            let pname = name(suffix);
            let value = get_str(raw, &pname, global, 1)?;
            let (fb, warn) = Feedback::parse(&pname, &value, global_name, global);
            warnings.extend(warn);
            Ok::<Feedback, ParamError>(fb)
        };
        let pos = feedback(
            "_destination_concurrency_positive_feedback",
            "default_destination_concurrency_positive_feedback",
            &self.default_destination_concurrency_positive_feedback,
        )?;
        let neg = feedback(
            "_destination_concurrency_negative_feedback",
            "default_destination_concurrency_negative_feedback",
            &self.default_destination_concurrency_negative_feedback,
        )?;
        let dest_concurrency_failed_cohort_limit = get_int(
            raw,
            &name("_destination_concurrency_failed_cohort_limit"),
            self.default_destination_concurrency_failed_cohort_limit,
            0,
            0,
        )?;
        let params = TransportParams {
            dest_concurrency_limit,
            dest_recipient_limit,
            initial_dest_concurrency,
            dest_concurrency_positive_feedback: pos,
            dest_concurrency_negative_feedback: neg,
            dest_concurrency_failed_cohort_limit,
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
        Ok((params, warnings))
    }
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

    fn fb(v: &str) -> (Feedback, Option<String>) {
        Feedback::parse("smtp_x", v, "default_x", "1")
    }

    #[test]
    fn feedback_forms() {
        assert_eq!(fb("1").0.base, 1.0);
        assert_eq!(fb("1").0.source, "default_x");
        assert_eq!(fb("0.25").0.base, 0.25);
        assert_eq!(fb("1/8").0.base, 0.125);
        assert_eq!(fb(" 1 / 4").0.base, 0.25);
        let c = fb("1/Concurrency").0;
        assert_eq!((c.base, c.kind), (1.0, FeedbackKind::PerConcurrency));
        assert_eq!(c.value(4), 0.25);
        // Trailing junk without a slash is ignored by sscanf.
        assert_eq!(
            fb("0.5junk"),
            (
                Feedback {
                    base: 0.5,
                    kind: FeedbackKind::Fixed,
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
            assert_eq!((f.base, f.kind), (1.0, FeedbackKind::Fixed), "{bad}");
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
        let (t, w) = p.transport(&raw, "smtp").expect("ok");
        assert!(w.is_empty());
        assert_eq!(t.dest_concurrency_limit, 7);
        assert_eq!(t.dest_recipient_limit, 50);
        assert_eq!(t.initial_dest_concurrency, 5);
        assert_eq!(t.recipient_refill_delay, Duration::from_secs(5));
        let (l, _) = p.transport(&raw, "local").expect("ok");
        assert_eq!((l.dest_concurrency_limit, l.dest_recipient_limit), (2, 1));
    }

    #[test]
    fn transport_adjustments() {
        let (p, raw) = qp(
            "relay_destination_rate_delay = 2\nrelay_initial_destination_concurrency = 9\n\
             x_destination_concurrency_limit = 3\nx_destination_concurrency_negative_feedback = 5\n\
             x_recipient_refill_delay = 1m\n",
        );
        let (r, _) = p.transport(&raw, "relay").expect("ok");
        assert_eq!(r.dest_rate_delay, Duration::from_secs(2));
        assert_eq!(
            (r.dest_concurrency_limit, r.initial_dest_concurrency),
            (1, 1)
        );
        let (x, w) = p.transport(&raw, "x").expect("ok");
        assert_eq!(
            (x.dest_concurrency_limit, x.initial_dest_concurrency),
            (3, 3)
        );
        assert_eq!(x.recipient_refill_delay, Duration::from_secs(60));
        assert_eq!(
            w,
            vec!["x_destination_concurrency_negative_feedback: ignoring malformed or unreasonable feedback: 5".to_string()]
        );
        assert_eq!(
            TransportParams::feedback_debug_line("x", &x.dest_concurrency_positive_feedback, 5),
            "x: default_destination_concurrency_positive_feedback feedback type 0 value at 5: 1"
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
