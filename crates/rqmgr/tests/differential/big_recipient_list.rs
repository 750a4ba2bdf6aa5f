//! One message with 10,000 recipients. Small in-core recipient limits
//! (qmgr_message_recipient_limit, the transport's recipient limit and
//! refill limit) force the queue manager to read the recipients in many
//! slices; every recipient must be delivered exactly once.

use crate::common::{instance_with_sink, ok, GUARD};
use crate::compare::{assert_same, run_both, snapshot, Outcome};
use rqmgr_harness::{QueueManager, SinkMode};

const RECIPIENTS: usize = 10_000;

fn scenario(qm: QueueManager) -> Outcome {
    let (sink, inst) = instance_with_sink(qm, SinkMode::Accept, |b| {
        b.main_cf("qmgr_message_active_limit", "100")
            .main_cf("qmgr_message_recipient_limit", "100")
            .main_cf("smtp_recipient_limit", "300")
            .main_cf("smtp_recipient_refill_limit", "50")
            .main_cf("smtp_destination_recipient_limit", "50")
    });
    let rcpts: Vec<String> = (0..RECIPIENTS)
        .map(|n| format!("r{n}@remote.example"))
        .collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    ok(inst.sendmail(
        &inst.local_address("sender"),
        &rcpts,
        "Subject: many\n\nten thousand\n",
    ));
    ok(inst.wait_queue_empty(GUARD));
    ok(inst.wait_for_log(|l| l.count(": removed") == 1, GUARD));
    let out = snapshot(&inst, &[&sink], &[]);
    let mut unique = out.sink_recipients.clone();
    unique.dedup();
    assert_eq!(
        out.sink_recipients.len(),
        RECIPIENTS,
        "some recipient missing or repeated"
    );
    assert_eq!(unique.len(), RECIPIENTS, "some recipient delivered twice");
    out
}

#[test]
fn ten_thousand_recipients_each_delivered_once() {
    let (stock, ours) = run_both(scenario);
    assert_same("10,000 recipients", &stock, &ours);
}
