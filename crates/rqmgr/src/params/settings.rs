//! The validated queue manager configuration, [`QmgrParams`].
//!
//! Job: convert the raw table in the order Postfix does (global parameters,
//! logging set-up checks, then the queue manager's int, string, boolean and
//! time tables) so the first fatal error is the one Postfix would report, and
//! apply the post-init adjustments with Postfix's warning texts.
//!
//! Invariants: field names are the `main.cf` names; durations are whole
//! seconds; integer fields keep Postfix's `int` semantics.
//!
//! Failure: see [`ParamError`]; warnings are returned for the caller to log.

use std::time::Duration;

use super::{get_bool, get_int, get_str, get_time, ParamError, RawParams};

/// `info_log_address_format`: how addresses appear in informational logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum InfoLogAddressFormat {
    /// Quote the local part as RFC 5322 requires (`external`, the default).
    External,
    /// Log the address as stored (`internal`).
    Internal,
}

/// Every parameter Postfix 3.7's `qmgr` and `oqmgr` read, validated.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub(crate) struct QmgrParams {
    // Global parameters (mail_params.c).
    /// `config_directory`, used in some fatal messages.
    pub config_directory: String,
    /// `queue_directory`.
    pub queue_directory: String,
    /// `mail_owner`.
    pub mail_owner: String,
    /// `daemon_directory`.
    pub daemon_directory: String,
    /// `hash_queue_names`, split on commas and blanks.
    pub hash_queue_names: Vec<String>,
    /// `hash_queue_depth` (>= 1).
    pub hash_queue_depth: i32,
    /// `default_process_limit` (>= 1): target size of the in-flow token pool.
    pub default_process_limit: i32,
    /// `in_flow_delay` (0..=10 s).
    pub in_flow_delay: Duration,
    /// `daemon_timeout` (>= 1 s).
    pub daemon_timeout: Duration,
    /// `ipc_idle` (>= 1 s).
    pub ipc_idle: Duration,
    /// `ipc_ttl` (>= 1 s).
    pub ipc_ttl: Duration,
    /// `rewrite_service_name`.
    pub rewrite_service_name: String,
    /// `bounce_service_name`.
    pub bounce_service_name: String,
    /// `defer_service_name`.
    pub defer_service_name: String,
    /// `trace_service_name`.
    pub trace_service_name: String,
    /// `flush_service_name`.
    pub flush_service_name: String,
    /// `address_verify_service_name`.
    pub address_verify_service_name: String,
    /// `address_verify_negative_cache`: store failed probes too.
    pub address_verify_negative_cache: bool,
    /// `myhostname` (validated as a host name).
    pub myhostname: String,
    /// `double_bounce_sender`.
    pub double_bounce_sender: String,
    /// `recipient_delimiter` (may be empty).
    pub recipient_delimiter: String,
    /// `smtputf8_enable`.
    pub smtputf8_enable: bool,
    /// `soft_bounce`.
    pub soft_bounce: bool,
    /// `helpful_warnings` (gates the congestion warning).
    pub helpful_warnings: bool,
    /// `fast_flush_domains`, uncompiled.
    pub fast_flush_domains: String,
    /// `delay_logging_resolution_limit` (0..=6).
    pub delay_logging_resolution_limit: i32,
    /// `info_log_address_format`.
    pub info_log_address_format: InfoLogAddressFormat,
    /// `syslog_name`.
    pub syslog_name: String,
    /// `syslog_facility` as a syslog facility code (already shifted).
    pub syslog_facility: i32,
    /// `maillog_file`; non-empty selects postlog logging.
    pub maillog_file: String,
    /// `postlog_service_name`.
    pub postlog_service_name: String,
    /// `process_name`: set by the caller from argv\[0\]; `qmgr` if absent.
    pub process_name: String,

    // Queue manager tables (qmgr.c / oqmgr qmgr.c).
    /// `qmgr_message_active_limit` (>= 1).
    pub qmgr_message_active_limit: i32,
    /// `qmgr_message_recipient_limit` (>= 1; raised to the active limit).
    pub qmgr_message_recipient_limit: i32,
    /// `qmgr_message_recipient_minimum` (>= 1).
    pub qmgr_message_recipient_minimum: i32,
    /// `default_recipient_limit`.
    pub default_recipient_limit: i32,
    /// `default_extra_recipient_limit`.
    pub default_extra_recipient_limit: i32,
    /// `default_recipient_refill_limit` (>= 1).
    pub default_recipient_refill_limit: i32,
    /// `default_delivery_slot_cost`.
    pub default_delivery_slot_cost: i32,
    /// `default_delivery_slot_loan`.
    pub default_delivery_slot_loan: i32,
    /// `default_delivery_slot_discount` (0..=100).
    pub default_delivery_slot_discount: i32,
    /// `default_minimum_delivery_slots`.
    pub default_minimum_delivery_slots: i32,
    /// `initial_destination_concurrency` (>= 1).
    pub initial_destination_concurrency: i32,
    /// `default_destination_concurrency_limit` (0 = none).
    pub default_destination_concurrency_limit: i32,
    /// `default_destination_recipient_limit` (0 = none).
    pub default_destination_recipient_limit: i32,
    /// `local_destination_recipient_limit` (default 1).
    pub local_destination_recipient_limit: i32,
    /// `local_destination_concurrency_limit` (default 2).
    pub local_destination_concurrency_limit: i32,
    /// `default_destination_concurrency_failed_cohort_limit` (0 = never dead).
    pub default_destination_concurrency_failed_cohort_limit: i32,
    /// `address_verify_pending_request_limit` (>= 1).
    pub address_verify_pending_request_limit: i32,
    /// `qmgr_fudge_factor` (10..=100; oqmgr only).
    pub qmgr_fudge_factor: i32,
    /// `qmgr_site_hog_factor` (10..=100): retired in Postfix 2.0 and not
    /// read by 3.7; kept for the early-Postfix scheduling mode.
    pub qmgr_site_hog_factor: i32,
    /// `defer_transports`, split on commas and blanks.
    pub defer_transports: Vec<String>,
    /// `default_destination_concurrency_positive_feedback`, unparsed: Postfix
    /// only parses it per transport (see [`QmgrParams::transport`]).
    pub default_destination_concurrency_positive_feedback: String,
    /// `default_destination_concurrency_negative_feedback`, unparsed.
    pub default_destination_concurrency_negative_feedback: String,
    /// `default_filter_nexthop`.
    pub default_filter_nexthop: String,
    /// `disable_verp_bounces`.
    pub disable_verp_bounces: bool,
    /// `verp_delimiter_filter`: the characters a VERP delimiter may be.
    pub verp_delimiter_filter: String,
    /// `destination_concurrency_feedback_debug`.
    pub destination_concurrency_feedback_debug: bool,
    /// `confirm_delay_cleared`.
    pub confirm_delay_cleared: bool,
    /// `queue_run_delay` (>= 1 s).
    pub queue_run_delay: Duration,
    /// `minimal_backoff_time` (>= 1 s).
    pub minimal_backoff_time: Duration,
    /// `maximal_backoff_time` (>= 1 s).
    pub maximal_backoff_time: Duration,
    /// `maximal_queue_lifetime` (<= 100 days; bare number = days).
    pub maximal_queue_lifetime: Duration,
    /// `bounce_queue_lifetime` (<= 100 days; lowered to maximal).
    pub bounce_queue_lifetime: Duration,
    /// `transport_retry_time` (>= 1 s).
    pub transport_retry_time: Duration,
    /// `qmgr_clog_warn_time` (0 = off).
    pub qmgr_clog_warn_time: Duration,
    /// `default_recipient_refill_delay` (>= 1 s).
    pub default_recipient_refill_delay: Duration,
    /// `default_transport_rate_delay`.
    pub default_transport_rate_delay: Duration,
    /// `default_destination_rate_delay`.
    pub default_destination_rate_delay: Duration,
    /// `qmgr_daemon_timeout` (>= 1 s): watchdog limit per loop pass.
    pub qmgr_daemon_timeout: Duration,
    /// `qmgr_ipc_timeout` (>= 1 s): replaces `ipc_timeout` in qmgr.
    pub qmgr_ipc_timeout: Duration,
}

/// Split a Postfix list value on commas and white space.
fn split_list(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Postfix's `valid_hostname` without wildcards: labels of letters, digits,
/// `_` and inner `-`, at most 63 bytes each, 255 in all, not all-numeric.
fn valid_hostname(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let mut non_numeric = false;
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 || label.starts_with('-') || label.ends_with('-') {
            return false;
        }
        for b in label.bytes() {
            if !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                return false;
            }
            non_numeric |= !b.is_ascii_digit();
        }
    }
    non_numeric
}

/// Compatibility-level dependent default of `smtputf8_enable`, for raw
/// tables that lack it (postconf always prints the evaluated value).
fn smtputf8_default(raw: &RawParams) -> bool {
    let level = raw.get("compatibility_level").unwrap_or("0");
    let major = level.split('.').next().and_then(|m| m.parse::<u32>().ok());
    major.is_some_and(|m| m >= 1)
}

impl QmgrParams {
    /// Validate `raw` as Postfix's `qmgr` start-up does. Returns the settings
    /// and the warnings Postfix logs at start-up (post-init adjustments).
    ///
    /// # Errors
    ///
    /// The first value Postfix would reject, with Postfix's fatal text.
    pub(crate) fn from_raw(raw: &RawParams) -> Result<(QmgrParams, Vec<String>), ParamError> {
        let mut warnings = Vec::new();
        let config_directory = get_str(raw, "config_directory", "/etc/postfix", 0)?;

        // mail_params_init: syslog_facility is checked first of all.
        let facility_name = get_str(raw, "syslog_facility", "mail", 1)?;
        let syslog_facility = crate::logging::facility_code(&facility_name).ok_or_else(|| {
            ParamError::Unrecognized {
                config_dir: config_directory.clone(),
                name: "syslog_facility".into(),
                value: facility_name.clone(),
            }
        })?;
        let maillog_file = get_str(raw, "maillog_file", "", 0)?;
        let maillog_file_prefixes = get_str(raw, "maillog_file_prefixes", "/var, /dev/stdout", 1)?;
        let postlog_service_name = get_str(raw, "postlog_service_name", "postlog", 1)?;
        let smtputf8_enable = get_bool(raw, "smtputf8_enable", smtputf8_default(raw))?;
        let myhostname = get_str(raw, "myhostname", "localhost.localdomain", 1)?;
        if !valid_hostname(&myhostname) {
            return Err(ParamError::BadHostname {
                config_dir: config_directory,
                value: myhostname,
            });
        }
        let syslog_name = get_str(raw, "syslog_name", "postfix", 1)?;
        let mail_owner = get_str(raw, "mail_owner", "postfix", 1)?;
        let daemon_directory = get_str(raw, "daemon_directory", "/usr/libexec/postfix", 1)?;
        let queue_directory = get_str(raw, "queue_directory", "/var/spool/postfix", 1)?;
        let double_bounce_sender = get_str(raw, "double_bounce_sender", "double-bounce", 1)?;
        let hash_queue_names = split_list(&get_str(raw, "hash_queue_names", "deferred, defer", 1)?);
        let recipient_delimiter = get_str(raw, "recipient_delimiter", "", 0)?;
        let fast_flush_domains = match raw.get("fast_flush_domains") {
            Some(v) => v.to_string(),
            None => raw.get("relay_domains").unwrap_or("").to_string(),
        };
        let bounce_service_name = get_str(raw, "bounce_service_name", "bounce", 1)?;
        let defer_service_name = get_str(raw, "defer_service_name", "defer", 1)?;
        let rewrite_service_name = get_str(raw, "rewrite_service_name", "rewrite", 1)?;
        let flush_service_name = get_str(raw, "flush_service_name", "flush", 1)?;
        let trace_service_name = get_str(raw, "trace_service_name", "trace", 1)?;
        let address_verify_service_name = get_str(raw, "address_verify_service_name", "verify", 1)?;
        let address_verify_negative_cache = get_bool(raw, "address_verify_negative_cache", true)?;
        let info_form = get_str(raw, "info_log_address_format", "external", 1)?;
        let info_log_address_format = if info_form.eq_ignore_ascii_case("external") {
            InfoLogAddressFormat::External
        } else if info_form.eq_ignore_ascii_case("internal") {
            InfoLogAddressFormat::Internal
        } else {
            return Err(ParamError::InvalidSetting {
                name: "info_log_address_format".into(),
                value: info_form,
            });
        };
        let default_process_limit = get_int(raw, "default_process_limit", 100, 1, 0)?;
        let hash_queue_depth = get_int(raw, "hash_queue_depth", 1, 1, 0)?;
        let delay_logging_resolution_limit =
            get_int(raw, "delay_logging_resolution_limit", 2, 0, 6)?;
        let ipc_idle = get_time(raw, "ipc_idle", "5s", 1, 0)?;
        let ipc_ttl = get_time(raw, "ipc_ttl", "1000s", 1, 0)?;
        let daemon_timeout = get_time(raw, "daemon_timeout", "18000s", 1, 0)?;
        let in_flow_delay = get_time(raw, "in_flow_delay", "1s", 0, 10)?;
        let soft_bounce = get_bool(raw, "soft_bounce", false)?;
        let helpful_warnings = get_bool(raw, "helpful_warnings", true)?;

        // maillog_client_init: the log file must sit under an allowed prefix.
        if !maillog_file.is_empty() {
            let ok = split_list(&maillog_file_prefixes)
                .iter()
                .any(|p| maillog_file.starts_with(p.as_str()));
            if !ok {
                return Err(ParamError::MaillogPrefix { file: maillog_file });
            }
        }
        let process_name = raw.get("process_name").unwrap_or("qmgr").to_string();

        // The queue manager's own tables, in trigger_server argument order.
        let qmgr_message_active_limit = get_int(raw, "qmgr_message_active_limit", 20000, 1, 0)?;
        let mut qmgr_message_recipient_limit =
            get_int(raw, "qmgr_message_recipient_limit", 20000, 1, 0)?;
        let qmgr_message_recipient_minimum =
            get_int(raw, "qmgr_message_recipient_minimum", 10, 1, 0)?;
        let default_recipient_limit = get_int(raw, "default_recipient_limit", 20000, 0, 0)?;
        let default_extra_recipient_limit =
            get_int(raw, "default_extra_recipient_limit", 1000, 0, 0)?;
        let default_recipient_refill_limit =
            get_int(raw, "default_recipient_refill_limit", 100, 1, 0)?;
        let default_delivery_slot_cost = get_int(raw, "default_delivery_slot_cost", 5, 0, 0)?;
        let default_delivery_slot_loan = get_int(raw, "default_delivery_slot_loan", 3, 0, 0)?;
        let default_delivery_slot_discount =
            get_int(raw, "default_delivery_slot_discount", 50, 0, 100)?;
        let default_minimum_delivery_slots =
            get_int(raw, "default_minimum_delivery_slots", 3, 0, 0)?;
        let initial_destination_concurrency =
            get_int(raw, "initial_destination_concurrency", 5, 1, 0)?;
        let default_destination_concurrency_limit =
            get_int(raw, "default_destination_concurrency_limit", 20, 0, 0)?;
        let default_destination_recipient_limit =
            get_int(raw, "default_destination_recipient_limit", 50, 0, 0)?;
        let qmgr_fudge_factor = get_int(raw, "qmgr_fudge_factor", 100, 10, 100)?;
        let local_destination_recipient_limit =
            get_int(raw, "local_destination_recipient_limit", 1, 0, 0)?;
        let local_destination_concurrency_limit =
            get_int(raw, "local_destination_concurrency_limit", 2, 0, 0)?;
        let default_destination_concurrency_failed_cohort_limit = get_int(
            raw,
            "default_destination_concurrency_failed_cohort_limit",
            1,
            0,
            0,
        )?;
        let address_verify_pending_request_limit =
            get_int(raw, "address_verify_pending_request_limit", 20000 / 4, 1, 0)?;
        let qmgr_site_hog_factor = get_int(raw, "qmgr_site_hog_factor", 100, 10, 100)?;

        let defer_transports = split_list(&get_str(raw, "defer_transports", "", 0)?);
        let default_destination_concurrency_positive_feedback = get_str(
            raw,
            "default_destination_concurrency_positive_feedback",
            "1",
            1,
        )?;
        let default_destination_concurrency_negative_feedback = get_str(
            raw,
            "default_destination_concurrency_negative_feedback",
            "1",
            1,
        )?;
        let default_filter_nexthop = get_str(raw, "default_filter_nexthop", "", 0)?;

        let disable_verp_bounces = get_bool(raw, "disable_verp_bounces", false)?;
        let verp_delimiter_filter = get_str(raw, "verp_delimiter_filter", "-=+", 1)?;
        let destination_concurrency_feedback_debug =
            get_bool(raw, "destination_concurrency_feedback_debug", false)?;
        let confirm_delay_cleared = get_bool(raw, "confirm_delay_cleared", false)?;

        let queue_run_delay = get_time(raw, "queue_run_delay", "300s", 1, 0)?;
        let minimal_backoff_time = get_time(raw, "minimal_backoff_time", "300s", 1, 0)?;
        let maximal_backoff_time = get_time(raw, "maximal_backoff_time", "4000s", 1, 0)?;
        let maximal_queue_lifetime = get_time(raw, "maximal_queue_lifetime", "5d", 0, 8_640_000)?;
        let mut bounce_queue_lifetime = get_time(raw, "bounce_queue_lifetime", "5d", 0, 8_640_000)?;
        let transport_retry_time = get_time(raw, "transport_retry_time", "60s", 1, 0)?;
        let qmgr_clog_warn_time = get_time(raw, "qmgr_clog_warn_time", "300s", 0, 0)?;
        let default_recipient_refill_delay =
            get_time(raw, "default_recipient_refill_delay", "5s", 1, 0)?;
        let default_transport_rate_delay =
            get_time(raw, "default_transport_rate_delay", "0s", 0, 0)?;
        let default_destination_rate_delay =
            get_time(raw, "default_destination_rate_delay", "0s", 0, 0)?;
        let qmgr_daemon_timeout = get_time(raw, "qmgr_daemon_timeout", "1000s", 1, 0)?;
        let qmgr_ipc_timeout = get_time(raw, "qmgr_ipc_timeout", "60s", 1, 0)?;

        // Post-init adjustments, with Postfix's warning texts.
        if process_name == "nqmgr" {
            warnings.push(format!(
                "please update the {config_directory}/master.cf file; the new queue manager"
            ));
            warnings.push(
                "(old name: nqmgr) has become the standard queue manager (new name: qmgr)".into(),
            );
            warnings
                .push("support for the name old name (nqmgr) will be removed from Postfix".into());
        }
        if qmgr_message_recipient_limit < qmgr_message_active_limit {
            warnings.push(
                "qmgr_message_recipient_limit is smaller than qmgr_message_active_limit \
                 - adjusting qmgr_message_recipient_limit"
                    .into(),
            );
            qmgr_message_recipient_limit = qmgr_message_active_limit;
        }
        if bounce_queue_lifetime > maximal_queue_lifetime {
            warnings.push(
                "bounce_queue_lifetime is larger than maximal_queue_lifetime \
                 - adjusting bounce_queue_lifetime"
                    .into(),
            );
            bounce_queue_lifetime = maximal_queue_lifetime;
        }

        let params = QmgrParams {
            config_directory,
            queue_directory,
            mail_owner,
            daemon_directory,
            hash_queue_names,
            hash_queue_depth,
            default_process_limit,
            in_flow_delay,
            daemon_timeout,
            ipc_idle,
            ipc_ttl,
            rewrite_service_name,
            bounce_service_name,
            defer_service_name,
            trace_service_name,
            address_verify_service_name,
            address_verify_negative_cache,
            flush_service_name,
            myhostname,
            double_bounce_sender,
            recipient_delimiter,
            smtputf8_enable,
            soft_bounce,
            helpful_warnings,
            fast_flush_domains,
            delay_logging_resolution_limit,
            info_log_address_format,
            syslog_name,
            syslog_facility,
            maillog_file,
            postlog_service_name,
            process_name,
            qmgr_message_active_limit,
            qmgr_message_recipient_limit,
            qmgr_message_recipient_minimum,
            default_recipient_limit,
            default_extra_recipient_limit,
            default_recipient_refill_limit,
            default_delivery_slot_cost,
            default_delivery_slot_loan,
            default_delivery_slot_discount,
            default_minimum_delivery_slots,
            initial_destination_concurrency,
            default_destination_concurrency_limit,
            default_destination_recipient_limit,
            local_destination_recipient_limit,
            local_destination_concurrency_limit,
            default_destination_concurrency_failed_cohort_limit,
            address_verify_pending_request_limit,
            qmgr_fudge_factor,
            qmgr_site_hog_factor,
            defer_transports,
            default_destination_concurrency_positive_feedback,
            default_destination_concurrency_negative_feedback,
            default_filter_nexthop,
            disable_verp_bounces,
            verp_delimiter_filter,
            destination_concurrency_feedback_debug,
            confirm_delay_cleared,
            queue_run_delay,
            minimal_backoff_time,
            maximal_backoff_time,
            maximal_queue_lifetime,
            bounce_queue_lifetime,
            transport_retry_time,
            qmgr_clog_warn_time,
            default_recipient_refill_delay,
            default_transport_rate_delay,
            default_destination_rate_delay,
            qmgr_daemon_timeout,
            qmgr_ipc_timeout,
        };
        Ok((params, warnings))
    }

    /// The postlog socket path, `$queue_directory/public/$postlog_service_name`.
    pub(crate) fn postlog_socket(&self) -> std::path::PathBuf {
        std::path::Path::new(&self.queue_directory)
            .join("public")
            .join(&self.postlog_service_name)
    }
}

#[cfg(test)]
mod tests;
