//! A full queue file system loses no mail.
//!
//! The queue directory is a small tmpfs. Mail is deferred (the far end
//! answers 450 to RCPT), then the file system is filled and kept full.
//! Retries go on meanwhile: the queue manager's renames and in-place
//! writes need no space, but the defer service cannot write the defer
//! logs, so each attempt also fails to record why. Once space is freed and the far end accepts, every message is
//! delivered exactly once and nothing went to `corrupt/`. Run with the
//! stock qmgr and with rqmgr: both must behave so.

use crate::common::{instance_with_sink, ok, rqmgr, GUARD};
use rqmgr_harness::{QueueManager, SinkMode};

const MESSAGES: usize = 5;
/// The queue tmpfs: room for Postfix's directories and a few files.
const QUEUE_BYTES: u64 = 16 << 20;

fn scenario(qm: QueueManager) {
    let (mut sink, inst) = instance_with_sink(qm, SinkMode::SoftReject("RCPT".into()), |b| {
        b.queue_on_tmpfs(QUEUE_BYTES)
            .main_cf("minimal_backoff_time", "1s")
            .main_cf("maximal_backoff_time", "2s")
            .main_cf("queue_run_delay", "1s")
            // bounce(8) dies when it cannot write, and master pauses a
            // service that dies young.
            .main_cf("service_throttle_time", "2s")
    });
    let from = inst.local_address("sender");
    for n in 0..MESSAGES {
        let text = format!("Subject: m{n}\n\nm{n}\n");
        ok(inst.sendmail(&from, &[&format!("m{n}@example.com")], &text));
    }
    ok(inst.wait_for_log(
        |l| l.matching("postfix/smtp", "status=deferred").len() >= MESSAGES,
        GUARD,
    ));
    let filler = ok(inst.fill_queue_filesystem());

    // Attempts go on while the disk is full; their defer log records
    // cannot be written.
    ok(inst.wait_for_log(
        |l| l.count("No space left on device") >= 2 * MESSAGES,
        GUARD,
    ));
    let queued = inst.queued_count();
    assert_eq!(queued, MESSAGES, "messages in the queue while it is full");
    assert!(inst.queue_ids("corrupt").is_empty());

    drop(filler);
    ok(sink.set_mode(SinkMode::Accept));
    ok(inst.postqueue_flush());
    ok(sink.wait_received(MESSAGES, GUARD));
    ok(inst.wait_queue_empty(GUARD));
    assert_eq!(sink.received(), MESSAGES, "each message delivered once");
    assert!(inst.queue_ids("corrupt").is_empty());
}

#[test]
fn stock() {
    scenario(QueueManager::Stock);
}

#[test]
fn rqmgr_daemon() {
    scenario(rqmgr());
}
