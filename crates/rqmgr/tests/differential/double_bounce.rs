//! Mail to the double-bounce address is discarded by the queue manager
//! itself, with Postfix's `status=sent (undeliverable postmaster
//! notification discarded)` line (qmgr(8), "Mail addressed to the local
//! double-bounce address is silently discarded").

use crate::common::{ok, GUARD};
use crate::compare::{assert_same, run_both, snapshot, Outcome};
use rqmgr_harness::{Instance, QueueManager};

fn scenario(qm: QueueManager) -> Outcome {
    let inst = ok(Instance::builder().queue_manager(qm).start());
    let from = inst.local_address("sender");
    let to = inst.local_address("double-bounce");
    ok(inst.sendmail(&from, &[&to], "Subject: to the void\n\nnobody reads this\n"));
    ok(inst.wait_queue_empty(GUARD));
    ok(inst.wait_for_log(|l| l.count(": removed") == 1, GUARD));
    let out = snapshot(&inst, &[], &["sender"]);
    assert!(
        out.qmgr_log
            .iter()
            .any(|l| l.contains("status=sent (undeliverable postmaster notification discarded)")),
        "{:?}",
        out.qmgr_log
    );
    out
}

#[test]
fn double_bounce_is_discarded_as_postfix_does() {
    let (stock, ours) = run_both(scenario);
    assert_same("double-bounce discard", &stock, &ours);
}
