//! Scenario 1: 2,000 messages from smtp-source reach smtp-sink; the queue
//! ends empty; the queue manager logs `(queue active)` and `removed` for each.

use crate::common::{instance_with_sink, ok, rqmgr, GUARD};
use rqmgr_harness::{QueueManager, SinkMode};

const MESSAGES: usize = 2000;

fn scenario(qm: QueueManager) {
    let (sink, inst) = instance_with_sink(qm, SinkMode::Accept, |b| b);
    ok(inst.smtp_source(MESSAGES as u32, 1, 10, "user@example.com", GUARD * 2));
    ok(sink.wait_received(MESSAGES, GUARD));
    ok(inst.wait_queue_empty(GUARD));
    assert_eq!(sink.received(), MESSAGES, "no duplicates expected");

    let qmgr = inst.queue_manager().log_program();
    // postlogd writes asynchronously: wait until every line has arrived,
    // smtpd's as well as the queue manager's (under load smtpd's lines
    // may come in after the last `removed`).
    let log = ok(inst.wait_for_log(
        |log| {
            log.matching(&qmgr, ": removed").len() >= MESSAGES
                && log.queue_ids_logged("postfix/smtpd", "client=").len() >= MESSAGES
        },
        GUARD,
    ));
    let received = log.queue_ids_logged("postfix/smtpd", "client=");
    assert_eq!(received.len(), MESSAGES, "smtpd queue ids");
    let active = log.queue_ids_logged(&qmgr, "from=<");
    let removed = log.queue_ids_logged(&qmgr, "removed");
    for id in &received {
        assert!(active.contains(id), "{id}: no `(queue active)` line");
        assert!(removed.contains(id), "{id}: no `removed` line");
    }
    let active_lines = log.matching(&qmgr, "(queue active)").len();
    assert_eq!(active_lines, MESSAGES, "one `(queue active)` per message");
}

#[test]
fn stock() {
    scenario(QueueManager::Stock);
}

#[test]
fn rqmgr_daemon() {
    scenario(rqmgr());
}
