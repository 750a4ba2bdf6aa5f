//! A configuration the queue manager refuses (a non-numeric
//! `qmgr_message_active_limit`) is fatal with Postfix's words, and the
//! fatal line reaches the mail log, where the operator looks (master sends
//! the queue manager's stderr to /dev/null). The mail waits.

use crate::common::{instance_with_sink, ok, rqmgr, GUARD};
use rqmgr_harness::{QueueManager, SinkMode};

fn scenario(qm: QueueManager) {
    let (sink, inst) = instance_with_sink(qm, SinkMode::Accept, |b| {
        b.main_cf("qmgr_message_active_limit", "many")
    });
    let from = inst.local_address("sender");
    ok(inst.sendmail(&from, &["user@example.com"], "Subject: x\n\nx\n"));
    let fatal = "fatal: bad numerical configuration: qmgr_message_active_limit = many";
    let qmgr = inst.queue_manager().log_program();
    ok(inst.wait_for_log(|l| !l.matching(&qmgr, fatal).is_empty(), GUARD));
    ok(inst.wait_until(|i| i.queued_count() == 1, GUARD));
    assert_eq!(sink.received(), 0);
}

#[test]
fn stock() {
    scenario(QueueManager::Stock);
}

#[test]
fn rqmgr_daemon() {
    scenario(rqmgr());
}
