//! rqmgr chooses the protocol dialect of the Postfix it serves once, at
//! start-up, from `mail_version`, or from `rqmgr_postfix_dialect` when an
//! operator forces one. These scenarios are rqmgr's own (the stock qmgr has
//! no such choice): with nothing forced and `-v`, the start line names the
//! installed release and mail is delivered; a forced release older than 3.7
//! or one that is not a version is fatal with a clear line in the mail log,
//! and the mail waits in the queue; a release newer than any rqmgr knows
//! gets one warning and the newest dialect.

use crate::common::{instance_with_sink, ok, rqmgr, GUARD};
use rqmgr_harness::{require_postfix, SinkMode};

const QMGR_VERBOSE: &str = "qmgr unix n - n 300 1 qmgr -v";

#[test]
fn the_installed_release_is_named_at_start_with_v() {
    let version = ok(require_postfix()).version;
    let (sink, inst) = instance_with_sink(rqmgr(), SinkMode::Accept, |b| {
        b.master_cf_line(QMGR_VERBOSE)
    });
    ok(inst.smtp_source(3, 1, 1, "user@example.com", GUARD));
    ok(sink.wait_received(3, GUARD));
    ok(inst.wait_queue_empty(GUARD));
    let line = format!("mail_version = {version}: Postfix ");
    let log = inst.log();
    let starts = log.matching("postfix/qmgr", &line);
    assert_eq!(starts.len(), 1, "{}", log.text());
    assert!(
        starts[0].text.ends_with(" protocol dialect"),
        "{}",
        starts[0].raw
    );
}

fn refused(forced: &str, fatal: &str) {
    let (sink, inst) = instance_with_sink(rqmgr(), SinkMode::Accept, |b| {
        b.main_cf("rqmgr_postfix_dialect", forced)
    });
    // Submitted locally: smtp-source gives up once the harness sees the
    // queue manager fail, which is the point here.
    let from = inst.local_address("sender");
    for n in 0..2 {
        let text = format!("Subject: m{n}\n\nmessage {n}\n");
        ok(inst.sendmail(&from, &["user@example.com"], &text));
    }
    ok(inst.wait_until(|i| i.queued_count() == 2, GUARD));
    let line = format!("fatal: {fatal}");
    ok(inst.wait_for_log(|l| !l.matching("postfix/qmgr", &line).is_empty(), GUARD));
    // Nothing moved: the mail waits for a queue manager that can serve it.
    assert_eq!(sink.received(), 0);
    assert_eq!(inst.queued_count(), 2, "{}", inst.maillog());
    assert!(inst.queue_ids("active").is_empty());
}

#[test]
fn a_release_older_than_3_7_is_fatal() {
    refused(
        "3.6.14",
        "Postfix 3.6.14 is not supported: rqmgr needs Postfix 3.7 or later",
    );
}

#[test]
fn a_forced_release_that_is_no_version_is_fatal() {
    refused(
        "three-ten",
        "bad rqmgr_postfix_dialect value: \"three-ten\" (expected a Postfix version such as 3.10.13)",
    );
}

/// A newer release line speaks the newest dialect, which the installed
/// Postfix understands only if it is 3.10 or later; on older ones the
/// warning is all this checks.
#[test]
fn a_newer_release_gets_one_warning_and_the_newest_dialect() {
    let install = ok(require_postfix());
    let (sink, inst) = instance_with_sink(rqmgr(), SinkMode::Accept, |b| {
        b.main_cf("rqmgr_postfix_dialect", "3.99.1")
    });
    ok(inst.smtp_source(2, 1, 1, "user@example.com", GUARD));
    let warning = "warning: Postfix 3.99.1 is newer than the newest release rqmgr knows (3.11): \
                   using the Postfix 3.11 protocol dialect; set rqmgr_postfix_dialect to choose another";
    ok(inst.wait_for_log(|l| !l.matching("postfix/qmgr", warning).is_empty(), GUARD));
    if install.at_least(3, 10) {
        ok(sink.wait_received(2, GUARD));
        ok(inst.wait_queue_empty(GUARD));
    }
    let log = inst.log();
    assert_eq!(
        log.matching("postfix/qmgr", warning).len(),
        1,
        "{}",
        log.text()
    );
}
