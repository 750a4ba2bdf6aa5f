//! `postfix reload` while deliveries are in flight. The old queue manager
//! exits; its agents finish on their own (the sink holds each DATA for a
//! few seconds). The new one finds their files still locked, logs
//! `QID: skipped, still being delivered` and puts them back for later;
//! a flush then finds nothing left to deliver in them. Every recipient
//! reaches the sink exactly once.
//!
//! Deterministic: the messages enter the active queue in the order they
//! were sent; with the initial destination concurrency of 5, the reload
//! waits until five agents have their files open, and no delivery
//! finishes before it, so exactly the first five files are locked when
//! the new queue manager starts (it reports each of them once per
//! incoming scan that meets it).

use std::time::Duration;

use crate::common::{instance_with_sink, ok, GUARD};
use crate::compare::{assert_same, run_both, snapshot, Outcome};
use crate::support::open_by_agent;
use rqmgr_harness::{QueueManager, SinkMode};

const MESSAGES: usize = 8;

fn scenario(qm: QueueManager) -> Outcome {
    let (sink, inst) = instance_with_sink(qm, SinkMode::SlowData(6), |b| b);
    // One at a time, each into the active queue before the next is
    // sent: two files waiting in `incoming/` together are taken in
    // directory order, which depends on their queue IDs, not on their
    // arrival, and then which five deliveries are under way at the reload
    // could differ between two runs.
    for n in 0..MESSAGES {
        let to = format!("r{n}@remote.example");
        ok(inst.sendmail(
            &inst.local_address("sender"),
            &[&to],
            "Subject: busy\n\nhello\n",
        ));
        ok(inst.wait_for_log(|l| l.count("(queue active)") == n + 1, GUARD));
    }
    // The first five deliveries are under way: their agents hold the
    // files (the sink holds their DATA).
    ok(inst.wait_until(
        |i| {
            let ids = i.queue_ids("active");
            ids.iter().filter(|id| open_by_agent(i, id)).count() == 5
        },
        GUARD,
    ));
    ok(inst.reload());
    ok(inst.wait_for_log(|l| l.count("skipped, still being delivered") >= 5, GUARD));
    ok(sink.wait_received(MESSAGES, GUARD));
    // The old agents are done once they logged their deliveries and
    // closed the files; only then can a flush take the files.
    ok(inst.wait_for_log(|l| l.count("status=sent") == MESSAGES, GUARD));
    std::thread::sleep(Duration::from_secs(1));
    ok(inst.postqueue_flush());
    ok(inst.wait_queue_empty(GUARD));
    ok(inst.wait_for_log(|l| l.count(": removed") == MESSAGES, GUARD));
    let out = snapshot(&inst, &[&sink], &[]);
    let mut unique = out.sink_recipients.clone();
    unique.dedup();
    assert_eq!(
        out.sink_recipients.len(),
        MESSAGES,
        "{:?}",
        out.sink_recipients
    );
    assert_eq!(unique.len(), MESSAGES, "{:?}", out.sink_recipients);
    out
}

#[test]
fn reload_during_delivery_loses_nothing() {
    let (stock, ours) = run_both(scenario);
    assert_same("reload during delivery", &stock, &ours);
}
