//! Tests of the parent module.

use super::*;

fn load(text: &str) -> Result<(QmgrParams, Vec<String>), String> {
    QmgrParams::from_raw(&RawParams::parse(text)).map_err(|e| e.to_string())
}

#[test]
fn defaults_match_postfix() {
    let (p, w) = load("").expect("defaults are valid");
    assert!(w.is_empty());
    assert_eq!(p.queue_run_delay, Duration::from_secs(300));
    assert_eq!(p.maximal_queue_lifetime, Duration::from_secs(5 * 86400));
    assert_eq!(p.qmgr_message_recipient_limit, 20000);
    assert_eq!(p.address_verify_pending_request_limit, 5000);
    assert_eq!(p.hash_queue_names, vec!["deferred", "defer"]);
    assert_eq!(p.syslog_facility, 2 << 3);
    assert_eq!(p.process_name, "qmgr");
    assert_eq!(p.qmgr_site_hog_factor, 100);
    assert!(!p.smtputf8_enable);
    assert_eq!(p.verp_delimiter_filter, "-=+");
}

/// mail_params.c: `verp_delimiter_filter` is a string of at least one
/// character, which qmgr checks a message's VERP delimiters against.
#[test]
fn verp_delimiter_filter_is_read() {
    let (p, _) = load("verp_delimiter_filter = +=_\n").expect("valid");
    assert_eq!(p.verp_delimiter_filter, "+=_");
    let e = load("verp_delimiter_filter =\n").unwrap_err();
    assert_eq!(e, "bad string length 0 < 1: verp_delimiter_filter = ");
}

#[test]
fn bare_numbers_use_the_default_unit() {
    let (p, _) =
        load("maximal_queue_lifetime = 3\nbounce_queue_lifetime = 2h\nqueue_run_delay = 2m\n")
            .expect("valid");
    assert_eq!(p.maximal_queue_lifetime, Duration::from_secs(3 * 86400));
    assert_eq!(p.bounce_queue_lifetime, Duration::from_secs(7200));
    assert_eq!(p.queue_run_delay, Duration::from_secs(120));
}

#[test]
fn adjustments_warn() {
    let (p, w) = load(
        "qmgr_message_active_limit = 500\nqmgr_message_recipient_limit = 100\n\
         maximal_queue_lifetime = 1d\nbounce_queue_lifetime = 2d\nprocess_name = nqmgr\n",
    )
    .expect("valid");
    assert_eq!(p.qmgr_message_recipient_limit, 500);
    assert_eq!(p.bounce_queue_lifetime, Duration::from_secs(86400));
    assert_eq!(w.len(), 5);
    assert_eq!(
        w[3],
        "qmgr_message_recipient_limit is smaller than qmgr_message_active_limit - adjusting qmgr_message_recipient_limit"
    );
    assert_eq!(
        w[4],
        "bounce_queue_lifetime is larger than maximal_queue_lifetime - adjusting bounce_queue_lifetime"
    );
}

#[test]
fn fatal_messages_match_postfix() {
    let cases = [
        (
            "qmgr_fudge_factor = 5",
            "invalid qmgr_fudge_factor parameter value 5 < 10",
        ),
        (
            "qmgr_site_hog_factor = 101",
            "invalid qmgr_site_hog_factor parameter value 101 > 100",
        ),
        (
            "qmgr_message_active_limit = 1x",
            "bad numerical configuration: qmgr_message_active_limit = 1x",
        ),
        (
            "qmgr_message_active_limit = 99999999999",
            "bad numerical configuration: qmgr_message_active_limit = 99999999999",
        ),
        (
            "maximal_queue_lifetime = 101d",
            "invalid maximal_queue_lifetime: 8726400 (max 8640000)",
        ),
        ("queue_run_delay = 0", "invalid queue_run_delay: 0 (min 1)"),
        (
            "queue_run_delay = 5x",
            "parameter queue_run_delay: bad time value or unit: 5x",
        ),
        (
            "queue_run_delay = -5",
            "parameter queue_run_delay: bad time value or unit: -5",
        ),
        (
            "soft_bounce = maybe",
            "bad boolean configuration: soft_bounce = maybe",
        ),
        ("mail_owner =", "bad string length 0 < 1: mail_owner = "),
        (
            "syslog_facility = bogus",
            "file /etc/postfix/main.cf: parameter syslog_facility: unrecognized value: bogus",
        ),
        (
            "myhostname = -bad",
            "file /etc/postfix/main.cf: parameter myhostname: bad parameter value: -bad",
        ),
        (
            "info_log_address_format = x",
            "invalid parameter setting \"info_log_address_format = x\"",
        ),
        (
            "maillog_file = /srv/x",
            "maillog_file value '/srv/x' does not match any prefix in maillog_file_prefixes",
        ),
        ("in_flow_delay = 11", "invalid in_flow_delay: 11 (max 10)"),
    ];
    for (text, want) in cases {
        assert_eq!(load(text).err().as_deref(), Some(want), "{text}");
    }
}

#[test]
fn quirks_of_c_conversions() {
    // strtol skips leading blanks and accepts a sign; conv_time ignores
    // anything after the unit letter and reads a lone letter as zero.
    let (p, _) = load(
        "qmgr_message_recipient_minimum = \t+7\nqmgr_clog_warn_time = 10mx\n\
                       default_destination_rate_delay = s\n",
    )
    .expect("valid");
    assert_eq!(p.qmgr_message_recipient_minimum, 7);
    assert_eq!(p.qmgr_clog_warn_time, Duration::from_secs(600));
    assert_eq!(p.default_destination_rate_delay, Duration::ZERO);
    // Negative values pass where Postfix sets no minimum.
    let (p, _) = load("default_destination_concurrency_limit = -1").expect("valid");
    assert_eq!(p.default_destination_concurrency_limit, -1);
}

#[test]
fn hostnames() {
    assert!(valid_hostname("mail.example.com"));
    assert!(valid_hostname("a_b.c-d"));
    assert!(!valid_hostname("1.2.3.4"));
    assert!(!valid_hostname("a..b"));
    assert!(!valid_hostname("a.b."));
    assert!(!valid_hostname("a-.b"));
    assert!(!valid_hostname(&"x".repeat(64)));
}
