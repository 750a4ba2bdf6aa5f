//! Address probes and delivery traces: `sendmail -bv` (verify only, the
//! sender gets a "Mail Delivery Status Report" and nothing is delivered),
//! `sendmail -v` (deliver and report), and DSN NOTIFY=SUCCESS (`sendmail
//! -N success`: the sender gets a "Successful Mail Delivery Report"). The
//! queue manager passes the trace flags to the agents and has trace(8)
//! send the reports (sendmail(1), qmgr(8)).
//!
//! Compared besides the usual outcome: the reports' DSN fields per
//! recipient as the sender receives them.

use crate::common::{instance_with_sink, ok, GUARD};
use crate::compare::{assert_same, run_both, snapshot, wait, Outcome};
use crate::support::{dsn_summary, picked_up};
use rqmgr_harness::{cmd, Instance, QueueManager, SinkMode};
use std::process::Command;

fn scenario(qm: QueueManager) -> Outcome {
    let (sink, inst) = instance_with_sink(qm, SinkMode::Accept, |b| b);
    let from = inst.local_address("sender");
    let alice = inst.local_address("alice");
    let unknown = inst.local_address("no-such-user");
    let remote = "bob@example.com";
    let all = [alice.as_str(), unknown.as_str(), remote];
    let qmgr = inst.queue_manager().log_program();
    // One at a time, each with its report, so that queue ids appear in
    // the same order in every run.
    let done = |n: usize| {
        ok(inst.wait_for_log(|l| l.matching(&qmgr, ": removed").len() == 2 * n, GUARD));
        wait(&inst, GUARD, &format!("report {n}"), |i| {
            i.mailbox("sender").matches("From MAILER-DAEMON").count() == n && i.queued_count() == 0
        });
    };
    sendmail(&inst, &["-bv", "-f", &from, "--"], &all, "");
    done(1);
    sendmail(
        &inst,
        &["-v", "-f", &from, "--"],
        &[&alice, remote],
        "Subject: with a record\n\nhi\n",
    );
    done(2);
    sendmail(
        &inst,
        &["-N", "success", "-f", &from, "--"],
        &[&alice, remote],
        "Subject: tell me when it arrives\n\nhi\n",
    );
    done(3);
    // Only the two real deliveries reach the sink (the probe's smtp
    // session ends after RCPT).
    ok(sink.wait_received(2, GUARD));
    let mut out = snapshot(&inst, &[&sink], &["sender", "alice"]);
    out.mailboxes.insert(
        "sender (DSN fields)".into(),
        dsn_summary(&inst.mailbox("sender")),
    );
    out
}

/// Runs sendmail with `args` and recipients `to`, feeding `message`, and
/// waits until pickup(8) has taken the result.
fn sendmail(inst: &Instance, args: &[&str], to: &[&str], message: &str) {
    let before = picked_up(inst).len();
    let mut c = Command::new("sendmail");
    c.arg("-C").arg(inst.config_dir()).args(args).args(to);
    ok(cmd::run_ok(c, Some(message.as_bytes()), GUARD));
    ok(inst.wait_until(|i| picked_up(i).len() > before, GUARD));
}

#[test]
fn probes_and_traces_as_postfix_does() {
    let (stock, ours) = run_both(scenario);
    assert_same("probes and traces", &stock, &ours);
}
