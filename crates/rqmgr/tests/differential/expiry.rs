//! Expiry: mail older than maximal_queue_lifetime is returned to the
//! sender at its next failed attempt (`status=expired, returned to
//! sender`), and a bounce (null sender) older than bounce_queue_lifetime is
//! dropped the same way, its "return" going nowhere; `postsuper -e` and
//! `postsuper -f` force expiry (`status=force-expired`), the message then
//! bouncing with the reasons of its last attempt (qmgr(8), postsuper(1)).

use std::time::Duration;

use crate::common::{instance_with_sink, ok, GUARD};
use crate::compare::{assert_same, run_both, snapshot, wait, Outcome};
use crate::support::{dsn_summary, submit};
use rqmgr_harness::{Instance, QueueManager, SinkMode};

/// Both lifetimes; the first attempts come well before.
const LIFETIME: u64 = 4;

fn lifetimes(qm: QueueManager) -> Outcome {
    let (sink, inst) = instance_with_sink(qm, SinkMode::SoftReject("RCPT".into()), |b| {
        b.main_cf("maximal_queue_lifetime", &format!("{LIFETIME}s"))
            .main_cf("bounce_queue_lifetime", &format!("{LIFETIME}s"))
    });
    // Mail from a local sender to the deferring far end.
    submit(
        &inst,
        &inst.local_address("sender"),
        &["alice@example.com"],
        "Subject: will expire\n\ntoo late\n",
    );
    // Mail from a remote sender to an unknown local user: its bounce (null
    // sender) goes to the deferring far end.
    submit(
        &inst,
        "carol@example.com",
        &[&inst.local_address("no-such-user")],
        "Subject: lost\n\nnobody home\n",
    );
    wait_deferred(&inst, 2);
    assert_eq!(inst.log().count("expired"), 0);

    // Both messages exist now (the bounce is made before its original is
    // removed); a full lifetime from here, both are past it whatever the
    // machine's load did to the bounce's creation time.
    std::thread::sleep(Duration::from_secs(LIFETIME + 1));
    ok(inst.postqueue_flush());
    ok(inst.wait_queue_empty(GUARD));
    ok(inst.wait_mailbox_contains("sender", "Undelivered Mail Returned to Sender", GUARD));
    let qmgr = inst.queue_manager().log_program();
    ok(inst.wait_for_log(|l| l.matching(&qmgr, ": removed").len() == 4, GUARD));
    let log = inst.log();
    assert_eq!(
        log.matching(&qmgr, "status=expired, returned to sender")
            .len(),
        2,
        "{}",
        log.text()
    );
    let mut out = snapshot(&inst, &[&sink], &["sender", "postmaster"]);
    out.mailboxes.insert(
        "sender (DSN fields)".into(),
        dsn_summary(&inst.mailbox("sender")),
    );
    out
}

fn forced(qm: QueueManager) -> Outcome {
    let (sink, inst) = instance_with_sink(qm, SinkMode::SoftReject("RCPT".into()), |b| {
        b.main_cf("header_checks", "regexp:{ { /^Subject: held/ HOLD } }")
    });
    let from = inst.local_address("sender");
    let [a, b, c] = ["a", "b", "c"].map(|to| {
        let rcpt = format!("{to}@example.com");
        submit(
            &inst,
            &from,
            &[&rcpt],
            &format!("Subject: for {to}\n\nhi\n"),
        )
    });
    wait_deferred(&inst, 3);
    // d: held on arrival, never tried, so it has no defer log.
    let d = submit(
        &inst,
        &from,
        &["d@example.com"],
        "Subject: held on arrival\n\nhi\n",
    );
    wait(&inst, GUARD, "d on hold", |i| {
        i.queue_ids("hold").len() == 1
    });
    // a: expire in deferred/. b: hold, then expire and release at once.
    // c: hold, then expire: it stays on hold, marked. d: expire and
    // release; it bounces as "administratively expired".
    ok(inst.postsuper(&["-e", &a]));
    ok(inst.postsuper(&["-h", &b]));
    ok(inst.postsuper(&["-f", &b]));
    ok(inst.postsuper(&["-h", &c]));
    ok(inst.postsuper(&["-e", &c]));
    ok(inst.postsuper(&["-f", &d]));
    ok(inst.postqueue_flush());
    wait(&inst, GUARD, "three bounces", |i| {
        i.mailbox("sender")
            .matches("\nSubject: Undelivered Mail Returned to Sender")
            .count()
            == 3
            && i.queued_count() == 0
    });
    let qmgr = inst.queue_manager().log_program();
    ok(inst.wait_for_log(|l| l.matching(&qmgr, ": removed").len() == 6, GUARD));
    let log = inst.log();
    assert_eq!(
        log.matching(&qmgr, "status=force-expired, returned to sender")
            .len(),
        3,
        "{}",
        log.text()
    );
    let mut out = snapshot(&inst, &[&sink], &["sender"]);
    assert_eq!(out.queues["hold"].len(), 1);
    out.mailboxes.insert(
        "sender (DSN fields)".into(),
        dsn_summary(&inst.mailbox("sender")),
    );
    out
}

/// Waits until `n` messages sit in `deferred/` and nothing is active.
fn wait_deferred(inst: &Instance, n: usize) {
    wait(inst, GUARD, &format!("{n} deferred"), |i| {
        i.log().matching("postfix/smtp", "status=deferred").len() == n
            && i.queue_ids("deferred").len() == n
            && i.queue_ids("active").is_empty()
            && i.queue_ids("incoming").is_empty()
    });
}

#[test]
fn expired_mail_bounces_as_postfix_does() {
    let (stock, ours) = run_both(lifetimes);
    assert_same("expiry by lifetime", &stock, &ours);
}

#[test]
fn forced_expiry_as_postfix_does() {
    let (stock, ours) = run_both(forced);
    assert_same("forced expiry", &stock, &ours);
}
