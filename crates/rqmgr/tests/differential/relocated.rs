//! relocated_maps: mail to a user who has moved bounces with "User has
//! moved to ..." (relocated(5)). trivial-rewrite resolves such a recipient
//! to the error transport; the queue manager delivers it there like any
//! other route, and the bounce goes to the sender. The message is
//! submitted locally, because smtpd would reject the recipient at RCPT time.
//! A second recipient at the same domain is delivered normally.

use crate::common::{ok, GUARD};
use crate::compare::{assert_same, run_both, snapshot, Outcome};
use crate::support::dsn_summary;
use rqmgr_harness::{Instance, QueueManager};

fn scenario(qm: QueueManager) -> Outcome {
    let inst = ok(Instance::builder()
        .queue_manager(qm)
        .main_cf(
            "relocated_maps",
            "inline:{ { moved@test.localdomain = alice@elsewhere.example } }",
        )
        .start());
    let from = inst.local_address("sender");
    let moved = inst.local_address("moved");
    let bob = inst.local_address("bob");
    ok(inst.sendmail(
        &from,
        &[&moved, &bob],
        "Subject: are you still there\n\nhello\n",
    ));
    ok(inst.wait_mailbox_contains("sender", "Undelivered Mail Returned to Sender", GUARD));
    ok(inst.wait_queue_empty(GUARD));
    let qmgr = inst.queue_manager().log_program();
    ok(inst.wait_for_log(|l| l.matching(&qmgr, ": removed").len() == 2, GUARD));
    let log = inst.log();
    assert_eq!(
        log.count("status=bounced (User has moved to alice@elsewhere.example)"),
        1,
        "{}",
        log.text()
    );
    let mut out = snapshot(&inst, &[], &["sender", "bob"]);
    out.mailboxes.insert(
        "sender (DSN fields)".into(),
        dsn_summary(&inst.mailbox("sender")),
    );
    out
}

#[test]
fn relocated_user_bounces_as_postfix_does() {
    let (stock, ours) = run_both(scenario);
    assert_same("relocated", &stock, &ours);
}
