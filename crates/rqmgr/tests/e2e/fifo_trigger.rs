//! The qmgr service declared `fifo` in master.cf (Postfix's default up to
//! 2.11, still valid): master hands the queue manager a FIFO instead of a
//! listening socket. Triggers are read from it, mail is delivered, and the
//! queue manager logs no error about its trigger endpoint (it used to spin
//! on `accept connection: Socket operation on non-socket`).

use crate::common::{instance_with_sink, ok, rqmgr, GUARD};
use rqmgr_harness::{QueueManager, SinkMode};

const MESSAGES: usize = 50;

fn scenario(qm: QueueManager) {
    let line = format!("qmgr fifo n - n 300 1 {}", qm.command());
    let (sink, inst) = instance_with_sink(qm, SinkMode::Accept, |b| b.master_cf_line(&line));
    ok(inst.smtp_source(MESSAGES as u32, 1, 2, "user@example.com", GUARD));
    ok(sink.wait_received(MESSAGES, GUARD));
    ok(inst.wait_queue_empty(GUARD));
    // A trigger through the FIFO is taken: a flush brings a deferred
    // message (here: none) without errors, and postqueue -f succeeds.
    ok(inst.postqueue_flush());
    let log = inst.log();
    let qmgr = inst.queue_manager().log_program();
    let errors: Vec<_> = log
        .of_program(&qmgr)
        .into_iter()
        .filter(|l| l.text.starts_with("error:") || l.text.starts_with("fatal:"))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn stock() {
    scenario(QueueManager::Stock);
}

#[test]
fn rqmgr_daemon() {
    scenario(rqmgr());
}
