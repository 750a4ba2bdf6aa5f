//! Delay warnings: with `delay_warning_time` of a few seconds, a message
//! the far end keeps deferring makes the queue manager send the sender one
//! "Delayed Mail" notice at the first deferral after the warning time, and
//! then rewrite the queue file's `W` record to -1 in place, in the same
//! width (postconf(5) delay_warning_time; qmgr(8) sends it via defer(8)).
//!
//! Compared besides the usual outcome: the `W` record's payload before and
//! after the warning (byte for byte, so the width counts).

use std::time::{Duration, Instant};

use crate::common::{instance_with_sink, ok, GUARD};
use crate::compare::{snapshot, wait, Outcome};
use crate::support::{record_payload, run_both_with};
use rqmgr_harness::{Instance, QueueManager, SinkMode};

/// The warning time; the first attempt (at once) comes well before it.
const WARN_AFTER: u64 = 4;

fn scenario(qm: QueueManager) -> (Outcome, Vec<Vec<u8>>) {
    let (mut sink, inst) = instance_with_sink(qm, SinkMode::SoftReject("RCPT".into()), |b| {
        b.main_cf("delay_warning_time", &format!("{WARN_AFTER}s"))
    });
    let from = inst.local_address("sender");
    let submitted = Instant::now();
    ok(inst.sendmail(
        &from,
        &["alice@example.com"],
        "Subject: slow road\n\nthis will take a while\n",
    ));
    let mut w_payloads = Vec::new();

    // First deferral: before the warning time, so no warning yet.
    wait_deferrals(&inst, 1);
    w_payloads.push(w_payload(&inst));
    assert!(!inst.mailbox("sender").contains("Subject: Delayed Mail"));

    // Past the warning time: the next deferral warns, once.
    let due = Duration::from_secs(WARN_AFTER + 1);
    std::thread::sleep(due.saturating_sub(submitted.elapsed()));
    ok(inst.postqueue_flush());
    wait_deferrals(&inst, 2);
    ok(inst.wait_mailbox_contains("sender", "Subject: Delayed Mail", GUARD));
    w_payloads.push(w_payload(&inst));

    // Another deferral: no second warning (checked in the mailbox below).
    ok(inst.postqueue_flush());
    wait_deferrals(&inst, 3);

    ok(sink.set_mode(SinkMode::Accept));
    ok(inst.postqueue_flush());
    ok(sink.wait_received(1, GUARD));
    ok(inst.wait_queue_empty(GUARD));
    let qmgr = inst.queue_manager().log_program();
    ok(inst.wait_for_log(|l| l.matching(&qmgr, ": removed").len() == 2, GUARD));
    let out = snapshot(&inst, &[&sink], &["sender"]);
    assert_eq!(
        inst.mailbox("sender")
            .matches("\nSubject: Delayed Mail")
            .count(),
        1,
        "exactly one delay warning"
    );
    (out, w_payloads)
}

/// Waits until the smtp client logged `n` deferrals and the queue manager
/// has put the file back into `deferred/`.
fn wait_deferrals(inst: &Instance, n: usize) {
    wait(inst, GUARD, &format!("deferral {n}"), |i| {
        i.log().matching("postfix/smtp", "status=deferred").len() == n
            && i.queue_ids("deferred").len() == 1
            && i.queue_ids("active").is_empty()
    });
}

/// The payload of the only deferred file's `W` record.
fn w_payload(inst: &Instance) -> Vec<u8> {
    let ids = inst.queue_ids("deferred");
    let path = inst
        .queue_file_path("deferred", &ids[0])
        .expect("deferred file");
    record_payload(&path, b'W').expect("a W record")
}

#[test]
fn delay_warning_is_sent_once_as_postfix_does() {
    let (stock, ours) = run_both_with(scenario);
    crate::compare::assert_same("delay warning", &stock.0, &ours.0);
    // Postfix writes "%15ld": -1 right-aligned in the arrival time's width.
    assert_eq!(stock.1[1], format!("{:>15}", -1).into_bytes());
    assert_eq!(
        stock.1.iter().map(|p| p.len()).collect::<Vec<_>>(),
        ours.1.iter().map(|p| p.len()).collect::<Vec<_>>(),
        "W record widths differ"
    );
    assert_eq!(stock.1[1], ours.1[1], "W record after the warning differs");
}
