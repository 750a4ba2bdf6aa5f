//! Deferrals the queue manager makes itself: a transport is down
//! (`broken`, no master.cf entry) and so is `retry` (left out of
//! master.cf), so every recipient for it is deferred on the spot
//! (`qmgr_defer_recipient()`, Postfix's `defer_append()`). Normal mail gets
//! a defer log entry, a `status=deferred` line and its domain registered
//! with flush(8) for fast flush (`fast_flush_domains`); a `sendmail -bv`
//! probe gets its "undeliverable" result through the trace service, which
//! mails the report to the sender. Compared with the stock qmgr: the
//! report, the fast-flush log, the queues and the queue manager's lines.

use crate::common::{instance_with_sink, ok, GUARD};
use crate::compare::{assert_same, run_both, snapshot, Outcome};
use crate::kick::{no_retries, settle};
use rqmgr_harness::{Instance, QueueManager, SinkMode};

/// The queue IDs flush(8) keeps for `site` (its fast-flush log, named
/// after the site with `_` for `.`), counted.
fn fast_flush_entries(inst: &Instance, site: &str) -> usize {
    std::fs::read_to_string(inst.queue_dir().join("flush").join(site.replace('.', "_")))
        .map_or(0, |text| {
            text.lines().filter(|l| !l.trim().is_empty()).count()
        })
}

fn scenario(qm: QueueManager) -> Outcome {
    let (sink, inst) = instance_with_sink(qm, SinkMode::Accept, |b| {
        no_retries(b)
            .main_cf("transport_maps", "inline:{ broken.example=broken: }")
            .main_cf("fast_flush_domains", "broken.example")
            .without_master_service("retry")
    });
    let from = inst.local_address("sender");
    ok(inst.sendmail(&from, &["x@broken.example"], "Subject: plain\n\nhello\n"));
    ok(inst.wait_until(|i| i.queue_ids("deferred").len() == 1, GUARD));
    ok(inst.wait_until(|i| fast_flush_entries(i, "broken.example") == 1, GUARD));
    ok(inst.sendmail_with(&["-bv"], &from, &["y@broken.example"], ""));
    ok(inst.wait_mailbox_contains("sender", "y@broken.example", GUARD));
    let qmgr = inst.queue_manager().log_program();
    ok(inst.wait_for_log(|l| l.matching(&qmgr, ": removed").len() == 2, GUARD));
    settle();
    let log = inst.log();
    assert_eq!(log.count("status=undeliverable"), 1, "{}", log.text());
    let mut out = snapshot(&inst, &[&sink], &["sender"]);
    out.mailboxes.insert(
        "fast-flush log of broken.example (entries)".into(),
        vec![fast_flush_entries(&inst, "broken.example").to_string()],
    );
    out
}

#[test]
fn deferrals_of_the_queue_manager_itself_as_postfix() {
    let (stock, ours) = run_both(scenario);
    assert_same("retry unavailable", &stock, &ours);
}
