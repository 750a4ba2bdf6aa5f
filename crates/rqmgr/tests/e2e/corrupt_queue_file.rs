//! Scenario 6: a corrupt queue file (garbage, mode 0700, under a valid queue
//! id name) in incoming/ is moved to corrupt/ with Postfix's warning, and the
//! delivery of other mail goes on. The stock qmgr first moves the file to
//! active/ and only then finds it corrupt, so its warning names queue
//! "active": `warning: saving corrupt file "ID" from queue "active" to queue
//! "corrupt"`.

use crate::common::{instance_with_sink, ok, rqmgr, GUARD};
use rqmgr_harness::{QueueManager, SinkMode};

const MESSAGES: usize = 20;
const BAD_ID: &str = "ABCDEF01234";

fn scenario(qm: QueueManager) {
    let (sink, inst) = instance_with_sink(qm, SinkMode::Accept, |b| b);
    ok(inst.plant_queue_file("incoming", BAD_ID, b"this is not a Postfix queue file\n"));
    ok(inst.postkick("I"));
    ok(inst.smtp_source(MESSAGES as u32, 1, 2, "user@example.com", GUARD));
    let warning = format!(
        "warning: saving corrupt file \"{BAD_ID}\" from queue \"active\" to queue \"corrupt\""
    );
    let qmgr = inst.queue_manager().log_program();
    ok(inst.wait_for_log(|l| !l.matching(&qmgr, &warning).is_empty(), GUARD));
    ok(inst.wait_until(|i| i.queue_ids("corrupt") == [BAD_ID], GUARD));
    ok(sink.wait_received(MESSAGES, GUARD));
    ok(inst.wait_queue_empty(GUARD));
    assert_eq!(sink.received(), MESSAGES);
}

#[test]
fn stock() {
    scenario(QueueManager::Stock);
}

#[test]
fn rqmgr_daemon() {
    scenario(rqmgr());
}
