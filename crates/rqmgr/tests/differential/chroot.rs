//! The queue manager chrooted (master.cf chroot column `y`, so master
//! passes `-c`) and not chrooted: both deliver, local and relayed mail,
//! and log exactly what the stock qmgr logs. Postfix's qmgr needs nothing
//! inside the jail beyond the queue directory: it connects its log socket
//! before entering the jail and resolves no host names.

use crate::common::{instance_with_sink, ok, GUARD};
use crate::compare::{assert_same, run_both, snapshot, Outcome};
use rqmgr_harness::{QueueManager, SinkMode};

fn scenario(qm: QueueManager, chroot: &str) -> Outcome {
    let line = format!("qmgr unix n - {chroot} 300 1 {}", qm.command());
    let (sink, inst) = instance_with_sink(qm, SinkMode::Accept, |b| b.master_cf_line(&line));
    let from = inst.local_address("sender");
    let alice = inst.local_address("alice");
    ok(inst.sendmail(
        &from,
        &[&alice, "x@remote.example"],
        "Subject: jailed\n\nhello\n",
    ));
    ok(inst.wait_queue_empty(GUARD));
    ok(inst.wait_for_log(|l| l.count(": removed") == 1, GUARD));
    // The jail is real: the queue manager's root is the queue directory.
    let pid = ok(inst.wait_for_qmgr(GUARD));
    let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap_or_default();
    let queue_dir = std::fs::canonicalize(inst.queue_dir()).unwrap_or_default();
    assert_eq!(root == queue_dir, chroot == "y", "root {root:?}");
    let out = snapshot(&inst, &[&sink], &["alice"]);
    assert_eq!(out.sink_recipients.len(), 1, "{:?}", out.sink_recipients);
    assert_eq!(out.mailboxes["alice"], ["jailed"]);
    out
}

#[test]
fn chrooted_queue_manager_delivers() {
    let (stock, ours) = run_both(|qm| scenario(qm, "y"));
    assert_same("chroot", &stock, &ours);
}

#[test]
fn unchrooted_queue_manager_delivers() {
    let (stock, ours) = run_both(|qm| scenario(qm, "n"));
    assert_same("no chroot", &stock, &ours);
}
