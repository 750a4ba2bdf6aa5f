//! Scenario 7: `postfix reload` replaces the queue manager process (new pid)
//! and mail still flows; after `postfix stop` no process of the instance
//! remains.

use crate::common::{ok, rqmgr, GUARD};
use rqmgr_harness::{Instance, QueueManager};

fn deliver(inst: &Instance, token: &str) {
    let to = inst.local_address("alice");
    let msg = format!("Subject: {token}\n\ntoken {token}\n");
    ok(inst.sendmail(&inst.local_address("sender"), &[&to], &msg));
    ok(inst.wait_mailbox_contains("alice", &format!("token {token}"), GUARD));
}

fn scenario(qm: QueueManager) {
    let mut inst = ok(Instance::builder().queue_manager(qm).start());
    deliver(&inst, "before-reload");
    let old = ok(inst.wait_for_qmgr(GUARD));
    ok(inst.reload());
    ok(inst.wait_until(
        |i| {
            let pids = i.qmgr_pids();
            pids.len() == 1 && pids[0] != old
        },
        GUARD,
    ));
    ok(inst.wait_for_log(|l| l.count("reload -- version") == 1, GUARD));
    deliver(&inst, "after-reload");
    ok(inst.wait_queue_empty(GUARD));
    ok(inst.stop());
    assert_eq!(inst.pids(), Vec::<i32>::new(), "processes left after stop");
}

#[test]
fn stock() {
    scenario(QueueManager::Stock);
}

#[test]
fn rqmgr_daemon() {
    scenario(rqmgr());
}
