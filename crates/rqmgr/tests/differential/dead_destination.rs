//! A destination that refuses connections. The first failed delivery (the
//! failed cohort, limit 1) marks the destination dead; the rest of its
//! mail then goes through the retry transport with Postfix's text
//! `delivery temporarily suspended: connect to ...: Connection refused`.
//! The destination comes back to life after `minimal_backoff_time`, or at
//! once on the `F` trigger (`postqueue -f`).
//!
//! Three one-recipient messages and concurrency 1 make the stock qmgr's
//! behaviour deterministic: exactly one delivery attempt fails, the other
//! two messages are suspended. (A destination recipient limit of 1 would
//! not do: it makes every recipient a destination of its own.)

use std::time::Duration;

use crate::common::{instance_with_sink, ok, GUARD};
use crate::compare::{assert_same, snapshot, Outcome};
use crate::lines::lines_containing;
use rqmgr_harness::{Instance, QueueManager, SinkMode, SmtpSink};

const SUSPENDED: &str = "status=deferred (delivery temporarily suspended: connect to";

/// An instance relaying to a sink that is down; `backoff` is the
/// minimal_backoff_time. Sends three messages and waits until they are
/// deferred.
fn dead_destination(qm: QueueManager, backoff: &str) -> (SmtpSink, Instance) {
    let (mut sink, inst) = instance_with_sink(qm, SinkMode::Accept, |b| {
        b.main_cf("smtp_initial_destination_concurrency", "1")
            .main_cf("minimal_backoff_time", backoff)
            .main_cf("maximal_backoff_time", "4000s")
    });
    sink.stop();
    let from = inst.local_address("sender");
    for to in ["a@remote.example", "b@remote.example", "c@remote.example"] {
        let msg = format!("Subject: to {to}\n\nhello\n");
        ok(inst.sendmail(&from, &[to], &msg));
    }
    ok(inst.wait_until(|i| i.queue_ids("deferred").len() == 3, GUARD));
    // postlogd writes the retry agent's lines after the files moved, and
    // may lag under load: wait for them, then count.
    ok(inst.wait_for_log(|l| l.count(SUSPENDED) >= 2, GUARD));
    let log = inst.log();
    assert_eq!(log.count(SUSPENDED), 2, "{}", log.text());
    (sink, inst)
}

fn after_backoff(qm: QueueManager) -> (Outcome, Vec<String>) {
    let (mut sink, inst) = dead_destination(qm, "3s");
    ok(sink.set_mode(SinkMode::Accept));
    // Past the backoff the destination is alive again: new mail for it is
    // delivered, not suspended.
    std::thread::sleep(Duration::from_secs(5));
    let from = inst.local_address("sender");
    ok(inst.sendmail(&from, &["d@remote.example"], "Subject: later\n\nhi\n"));
    ok(sink.wait_received(1, GUARD));
    // The deferred message is due too: a deferred scan delivers it.
    ok(inst.postkick("D"));
    ok(inst.wait_queue_empty(GUARD));
    ok(inst.wait_for_log(|l| l.count(": removed") == 4, GUARD));
    let out = snapshot(&inst, &[&sink], &[]);
    assert_eq!(out.sink_recipients.len(), 4, "{:?}", out.sink_recipients);
    (out, lines_containing(&inst, "status=deferred"))
}

fn on_flush(qm: QueueManager) -> (Outcome, Vec<String>) {
    let (mut sink, inst) = dead_destination(qm, "300s");
    ok(sink.set_mode(SinkMode::Accept));
    ok(inst.postqueue_flush());
    ok(inst.wait_queue_empty(GUARD));
    ok(inst.wait_for_log(|l| l.count(": removed") == 3, GUARD));
    let out = snapshot(&inst, &[&sink], &[]);
    assert_eq!(out.sink_recipients.len(), 3, "{:?}", out.sink_recipients);
    (out, lines_containing(&inst, "status=deferred"))
}

/// The deferral lines without queue id and recipient: pickup's order of
/// the three messages, hence which one meets the dead host first, varies
/// from run to run for the stock qmgr as well.
fn anonymous(lines: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .map(|l| {
            l.split(' ')
                .map(|w| {
                    if w.starts_with("QID") {
                        "QID:"
                    } else if w.starts_with("to=<") {
                        "to=<RCPT>,"
                    } else {
                        w
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    out.sort();
    out
}

fn check(what: &str, scenario: fn(QueueManager) -> (Outcome, Vec<String>)) {
    let (stock, stock_deferred) = scenario(QueueManager::Stock);
    let (ours, our_deferred) = scenario(crate::common::rqmgr());
    let (stock_deferred, our_deferred) = (anonymous(stock_deferred), anonymous(our_deferred));
    assert_same(what, &stock, &ours);
    assert_eq!(
        stock_deferred, our_deferred,
        "{what}: deferral lines differ"
    );
}

#[test]
fn dead_destination_revives_after_backoff() {
    check("dead destination, backoff", after_backoff);
}

#[test]
fn dead_destination_revives_on_flush() {
    check("dead destination, F trigger", on_flush);
}
