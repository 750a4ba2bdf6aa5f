//! trivial-rewrite or bounce unavailable to the queue manager for a while.
//!
//! The queue manager's master.cf line names services that do not exist
//! yet (`-o rewrite_service_name=qrewrite` or `-o
//! bounce_service_name=qbounce`), while the other daemons keep using the
//! real ones; the outage ends when the test links the real service's
//! socket under the new name. No reload is involved, so the same queue
//! manager process must wait and recover.
//!
//! Compared: everything `assert_same` compares, except that the queue
//! manager's warnings about the missing service are compared as a set
//! (how often they repeat during the outage depends on its length).

use std::time::Duration;

use crate::common::{ok, GUARD};
use crate::compare::{assert_same, snapshot, Outcome};
use rqmgr_harness::{Instance, QueueManager};

fn start(qm: QueueManager, option: &str) -> Instance {
    let line = format!("qmgr unix n - n 300 1 {} -o {option}", qm.command());
    ok(Instance::builder()
        .queue_manager(qm)
        .master_cf_line(&line)
        .start())
}

/// Makes `private/NAME` reach service `real`.
fn link_service(inst: &Instance, real: &str, name: &str) {
    let private = inst.queue_dir().join("private");
    ok(std::fs::hard_link(private.join(real), private.join(name))
        .map_err(|e| rqmgr_harness::Error::new(e.to_string())));
}

/// Splits the queue manager's lines into the rest and the set of
/// distinct warnings about `service`.
fn split_warnings(mut out: Outcome, service: &str) -> (Outcome, Vec<String>) {
    let (mut warnings, rest): (Vec<String>, Vec<String>) = out
        .qmgr_log
        .into_iter()
        .partition(|l| l.contains("warning:") && l.contains(service));
    warnings.dedup();
    out.qmgr_log = rest;
    (out, warnings)
}

fn rewrite_outage(qm: QueueManager) -> (Outcome, Vec<String>) {
    let inst = start(qm, "rewrite_service_name=qrewrite");
    let alice = inst.local_address("alice");
    ok(inst.sendmail(
        &inst.local_address("sender"),
        &[&alice],
        "Subject: while rewrite is down\n\nhello\n",
    ));
    ok(inst.wait_for_log(|l| l.count("private/qrewrite") >= 1, GUARD));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(inst.mailbox("alice"), "", "delivered without a resolver?");
    link_service(&inst, "rewrite", "qrewrite");
    ok(inst.wait_mailbox_contains("alice", "hello", GUARD));
    ok(inst.wait_queue_empty(GUARD));
    ok(inst.wait_for_log(|l| l.count(": removed") == 1, GUARD));
    split_warnings(snapshot(&inst, &[], &["alice"]), "qrewrite")
}

fn bounce_outage(qm: QueueManager) -> (Outcome, Vec<String>) {
    let inst = start(qm, "bounce_service_name=qbounce");
    let nobody = inst.local_address("nosuchuser");
    ok(inst.sendmail(
        &inst.local_address("sender"),
        &[&nobody],
        "Subject: bounce me\n\nhello\n",
    ));
    // local(8) logs the bounce through the real bounce service; the queue
    // manager cannot have the notification sent and keeps the message.
    ok(inst.wait_until(|i| i.queue_ids("deferred").len() == 1, GUARD));
    link_service(&inst, "bounce", "qbounce");
    ok(inst.postqueue_flush());
    ok(inst.wait_mailbox_contains("sender", "nosuchuser", GUARD));
    ok(inst.wait_queue_empty(GUARD));
    ok(inst.wait_for_log(|l| l.count(": removed") == 2, GUARD));
    split_warnings(snapshot(&inst, &[], &["sender"]), "qbounce")
}

fn check(what: &str, scenario: fn(QueueManager) -> (Outcome, Vec<String>)) {
    let (stock, stock_warnings) = scenario(QueueManager::Stock);
    let (ours, our_warnings) = scenario(crate::common::rqmgr());
    assert_same(what, &stock, &ours);
    assert_eq!(stock_warnings, our_warnings, "{what}: warnings differ");
}

#[test]
fn trivial_rewrite_outage() {
    check("trivial-rewrite outage", rewrite_outage);
}

#[test]
fn bounce_outage_keeps_the_message() {
    check("bounce outage", bounce_outage);
}
