//! `postsuper -f` on a message too large for one read, whose `defer/` log
//! names only some of its recipients. What Postfix's qmgr means to do
//! (qmgr_message.c, the force-expire branch of qmgr_message_alloc and
//! qmgr_active_done): bounce the recipients of the old log without
//! delivering anything, then read the rest of the file and send every
//! recipient beyond the first read to the `retry` transport ("4.7.0
//! message is administratively expired"), so that the expiry notice names
//! them too; only then is the file removed.
//!
//! What it does (3.7 to 3.11): the recipients of the first read are never
//! freed, so the next read panics (`recipient list not empty on recipient
//! reload`); the message stays in the queue and the next queue manager
//! meets it again. rqmgr does what Postfix means to do; the stock run
//! checks the panic and that the message is kept, so the scenario says
//! when Postfix changes.
//!
//! The old log is made partial by cutting the real one after its first
//! [`KEPT`] recipients while the message waits in `deferred/`.

use crate::common::{instance_with_sink, ok, rqmgr, GUARD};
use crate::compare::wait;
use crate::support::submit;
use rqmgr_harness::{Instance, QueueManager, SinkMode, SmtpSink};

const RECIPIENTS: usize = 6_000;
/// Recipients the cut `defer/` log keeps.
const KEPT: usize = 40;
/// Recipients the first read takes (`qmgr_message_recipient_limit`, with
/// nothing else in the active queue).
const FIRST_READ: usize = 100;
const STOCK_PANIC: &str = "recipient list not empty on recipient reload";

/// What [`expire_list`] leaves: the sink, the instance, the list's queue
/// ID and the recipients the cut log names.
type Expired = (SmtpSink, Instance, String, Vec<String>);

/// Runs the scenario up to the forced expiry.
fn expire_list(qm: QueueManager) -> Expired {
    let (sink, inst) = instance_with_sink(qm, SinkMode::SoftReject("RCPT".into()), |b| {
        b.main_cf("qmgr_message_active_limit", "100")
            .main_cf("qmgr_message_recipient_limit", &FIRST_READ.to_string())
            .main_cf("minimal_backoff_time", "3600s")
            .main_cf("maximal_backoff_time", "4000s")
            .main_cf("queue_run_delay", "3600s")
    });
    let rcpts: Vec<String> = (0..RECIPIENTS)
        .map(|n| format!("r{n}@example.com"))
        .collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let id = submit(
        &inst,
        &inst.local_address("sender"),
        &rcpts,
        "Subject: many\n\nmany\n",
    );
    wait(&inst, GUARD, "the list deferred", |i| {
        i.queue_ids("deferred") == [id.clone()]
            && i.queue_ids("active").is_empty()
            && i.log().matching("postfix/smtp", "status=deferred").len() == RECIPIENTS
    });
    let log = inst.queue_file_path("defer", &id).expect("the defer log");
    let text = std::fs::read_to_string(&log).expect("read the defer log");
    let blocks: Vec<&str> = text.split_inclusive("\n\n").collect();
    assert_eq!(blocks.len(), RECIPIENTS, "one entry per recipient");
    std::fs::write(&log, blocks[..KEPT].concat()).expect("cut the defer log");
    let kept: Vec<String> = blocks[..KEPT]
        .iter()
        .flat_map(|b| b.lines())
        .filter_map(|l| l.strip_prefix("recipient="))
        .map(str::to_string)
        .collect();
    assert_eq!(kept.len(), KEPT, "one recipient per entry");

    ok(inst.postsuper(&["-f", &id]));
    ok(inst.postqueue(&["-i", &id]));
    (sink, inst, id, kept)
}

/// The addresses of the `Final-Recipient` fields in `mailbox`, sorted.
fn final_recipients(mailbox: &str) -> Vec<String> {
    let mut out: Vec<String> = mailbox
        .lines()
        .filter_map(|l| l.strip_prefix("Final-Recipient: rfc822; "))
        .map(str::to_string)
        .collect();
    out.sort();
    out
}

#[test]
fn stock_panics_and_keeps_the_message() {
    let (_sink, inst, id, _) = expire_list(QueueManager::Stock);
    let qmgr = inst.queue_manager().log_program();
    let panic = format!("panic: {id}: {STOCK_PANIC}");
    // The harness's waits fail at a queue manager's panic; this one is
    // expected, so poll the log plainly.
    ok(rqmgr_harness::poll(GUARD, || {
        Ok((!inst.log().matching(&qmgr, &panic).is_empty()).then_some(()))
    }));
    let queued = ["incoming", "active", "deferred"]
        .iter()
        .any(|q| inst.queue_ids(q).contains(&id));
    assert!(queued, "the message is still queued");
}

#[test]
fn rqmgr_returns_the_log_and_every_unread_recipient() {
    let (_sink, inst, id, kept) = expire_list(rqmgr());
    ok(inst.wait_mailbox_contains("sender", "Undelivered Mail Returned to Sender", GUARD));
    ok(inst.wait_queue_empty(GUARD));
    let qmgr = inst.queue_manager().log_program();
    ok(inst.wait_for_log(|l| l.matching(&qmgr, ": removed").len() == 2, GUARD));
    let log = inst.log();
    let expired = format!(
        "{id}: from=<{}>, status=force-expired",
        inst.local_address("sender")
    );
    assert_eq!(log.matching(&qmgr, &expired).len(), 1, "{}", log.text());
    // The unread recipients went to `retry` (the error(8) agent, which
    // logs as such); postlogd may write their lines after ours.
    let retried = |l: &rqmgr_harness::Maillog| {
        l.matching("postfix/error", "administratively expired")
            .len()
    };
    if inst
        .wait_for_log(|l| retried(l) >= RECIPIENTS - FIRST_READ, GUARD)
        .is_err()
    {
        panic!("{} recipients retried", retried(&inst.log()));
    }
    assert_eq!(retried(&inst.log()), RECIPIENTS - FIRST_READ);
    let mut expected: Vec<String> = (FIRST_READ..RECIPIENTS)
        .map(|n| format!("r{n}@example.com"))
        .chain(kept)
        .collect();
    expected.sort();
    let returned = final_recipients(&inst.mailbox("sender"));
    assert_eq!(returned.len(), expected.len(), "recipients returned");
    let missing: Vec<&String> = expected.iter().filter(|r| !returned.contains(r)).collect();
    let extra: Vec<&String> = returned.iter().filter(|r| !expected.contains(r)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {:?}..., extra {:?}...",
        &missing[..missing.len().min(5)],
        &extra[..extra.len().min(5)]
    );
}
