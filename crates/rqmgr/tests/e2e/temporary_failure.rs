//! Scenario 3: the far end answers 4xx; the messages wait in deferred/ with
//! the mtime of Postfix's back-off rule (time of deferral + clamp(age,
//! minimal_backoff_time, maximal_backoff_time) = + minimal_backoff_time for
//! fresh mail); once the far end accepts, `postqueue -f` delivers them all.

use crate::common::{instance_with_sink, ok, rqmgr, GUARD};
use rqmgr_harness::{Instance, QueueManager, SinkMode};
use std::time::{SystemTime, UNIX_EPOCH};

const MESSAGES: usize = 5;
/// Long enough that no periodic retry happens during the test.
const MIN_BACKOFF: u64 = 600;
/// Tolerance for rounding to whole seconds and scheduling.
const SLACK: u64 = 2;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn scenario(qm: QueueManager) {
    let (mut sink, inst) = instance_with_sink(qm, SinkMode::SoftReject("RCPT".into()), |b| {
        b.main_cf("minimal_backoff_time", &format!("{MIN_BACKOFF}s"))
            .main_cf("maximal_backoff_time", &format!("{}s", MIN_BACKOFF * 2))
            .main_cf("queue_run_delay", "300s")
    });
    let before = now();
    ok(inst.smtp_source(MESSAGES as u32, 1, 1, "user@example.com", GUARD));
    ok(inst.wait_until(
        |i| i.queue_ids("deferred").len() == MESSAGES && i.queued_count() == MESSAGES,
        GUARD,
    ));
    let after = now();
    assert_eq!(sink.received(), 0);
    for id in inst.queue_ids("deferred") {
        let path = inst.queue_file_path("deferred", &id).expect("listed file");
        let mtime = ok(Instance::mtime_secs(&path));
        assert!(
            mtime + SLACK >= before + MIN_BACKOFF && mtime <= after + MIN_BACKOFF + SLACK,
            "{id}: mtime {mtime} not in [{before}, {after}] + {MIN_BACKOFF}s"
        );
    }
    // postlogd may write the agents' lines after the files moved: wait.
    ok(inst.wait_for_log(|l| l.count("status=deferred") >= MESSAGES, GUARD));
    let log = inst.log();
    assert_eq!(log.count("status=deferred"), MESSAGES, "{}", log.text());

    ok(sink.set_mode(SinkMode::Accept));
    ok(inst.postqueue_flush());
    ok(sink.wait_received(MESSAGES, GUARD));
    ok(inst.wait_queue_empty(GUARD));
    assert_eq!(sink.received(), MESSAGES);
    let qmgr = inst.queue_manager().log_program();
    ok(inst.wait_for_log(|l| l.matching(&qmgr, ": removed").len() == MESSAGES, GUARD));
}

#[test]
fn stock() {
    scenario(QueueManager::Stock);
}

#[test]
fn rqmgr_daemon() {
    scenario(rqmgr());
}
