//! Scenario 4: the far end answers 5xx; a bounce reaches the sender's local
//! mailbox and the original is removed from the queue.

use crate::common::{instance_with_sink, ok, rqmgr, GUARD};
use rqmgr_harness::{QueueManager, SinkMode};

fn scenario(qm: QueueManager) {
    let (sink, inst) = instance_with_sink(qm, SinkMode::HardReject("RCPT".into()), |b| b);
    let from = inst.local_address("sender");
    let msg = "Subject: doomed\n\nthis will bounce, token 51c0de\n";
    ok(inst.sendmail(&from, &["nobody@example.com"], msg));
    let mbox = ok(inst.wait_mailbox_contains("sender", "token 51c0de", GUARD));
    assert!(
        mbox.contains("Undelivered Mail Returned to Sender"),
        "{mbox}"
    );
    assert!(mbox.contains("From MAILER-DAEMON"), "{mbox}");
    ok(inst.wait_queue_empty(GUARD));
    assert_eq!(sink.received(), 0);

    let qmgr = inst.queue_manager().log_program();
    let log = ok(inst.wait_for_log(|l| l.matching(&qmgr, ": removed").len() == 2, GUARD));
    let bounced: Vec<_> = log
        .lines()
        .into_iter()
        .filter(|l| l.text.contains("to=<nobody@example.com>") && l.text.contains("status=bounced"))
        .collect();
    assert_eq!(bounced.len(), 1, "{}", log.text());
    let original = bounced[0].queue_id().expect("queue id on the bounce line");
    assert!(
        log.for_queue_id(original)
            .iter()
            .any(|l| l.program == qmgr && l.text.ends_with(": removed")),
        "original {original} not removed:\n{}",
        log.text()
    );
}

#[test]
fn stock() {
    scenario(QueueManager::Stock);
}

#[test]
fn rqmgr_daemon() {
    scenario(rqmgr());
}
