//! Scenario 2: a message to a local user lands in that user's mailbox.

use crate::common::{ok, rqmgr, GUARD};
use rqmgr_harness::{Instance, QueueManager};

fn scenario(qm: QueueManager) {
    let inst = ok(Instance::builder().queue_manager(qm).start());
    let to = inst.local_address("alice");
    let from = inst.local_address("sender");
    let msg = "Subject: local delivery test\n\nhello alice, token 7f3a9c\n";
    ok(inst.sendmail(&from, &[&to], msg));
    let mbox = ok(inst.wait_mailbox_contains("alice", "token 7f3a9c", GUARD));
    assert!(mbox.contains("Subject: local delivery test"), "{mbox}");
    assert!(mbox.contains(&format!("Delivered-To: {to}")), "{mbox}");
    ok(inst.wait_queue_empty(GUARD));
    let qmgr = inst.queue_manager().log_program();
    ok(inst.wait_for_log(|l| l.matching(&qmgr, ": removed").len() == 1, GUARD));
}

#[test]
fn stock() {
    scenario(QueueManager::Stock);
}

#[test]
fn stock_oqmgr() {
    scenario(QueueManager::StockOqmgr);
}

#[test]
fn rqmgr_daemon() {
    scenario(rqmgr());
}
