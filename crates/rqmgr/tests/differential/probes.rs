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

/// Address verification probes of verify(8), asked for by smtpd's
/// `reject_unverified_recipient`: mail from the double-bounce address that
/// the agents only verify (smtp ends the session after RCPT, local looks
/// the user up); the result goes back to verify(8), not to anyone's
/// mailbox. The probe's recipients are compared via smtpd's later answers.
fn mta_probes(qm: QueueManager) -> (Outcome, Vec<String>) {
    let (sink, inst) = instance_with_sink(qm, SinkMode::Accept, |b| {
        b.main_cf(
            "smtpd_recipient_restrictions",
            "reject_unverified_recipient",
        )
        .main_cf("address_verify_poll_delay", "1s")
    });
    let qmgr = inst.queue_manager().log_program();
    let rcpts = [
        inst.local_address("alice"),
        inst.local_address("no-such-user"),
        "bob@example.com".to_string(),
    ];
    let mut answers = Vec::new();
    for (n, rcpt) in rcpts.iter().enumerate() {
        // The first RCPT starts the probe (smtpd may wait for it up to
        // address_verify_poll_count times); once its result is known, a
        // second RCPT gets the final answer.
        let _ = rcpt_answer(&inst, rcpt);
        ok(inst.wait_for_log(|l| l.matching(&qmgr, ": removed").len() == n + 1, GUARD));
        answers.push(format!("{rcpt}: {}", rcpt_answer(&inst, rcpt)));
    }
    assert!(sink.received() == 0, "probes deliver nothing");
    // A file cleanup is still writing (mode 0600) is not part of the
    // outcome: let the queue settle first.
    ok(inst.wait_queue_empty(GUARD));
    (snapshot(&inst, &[&sink], &["sender", "alice"]), answers)
}

/// The first three characters (the reply code) of smtpd's answer to RCPT
/// TO:<rcpt>.
fn rcpt_answer(inst: &Instance, rcpt: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(("127.0.0.1", inst.smtpd_port())).expect("connect");
    stream.set_read_timeout(Some(GUARD)).expect("timeout");
    let mut w = stream.try_clone().expect("clone");
    let mut r = BufReader::new(stream);
    let mut reply = || {
        let mut last = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).expect("read") == 0 {
                return last;
            }
            let more = line.as_bytes().get(3) == Some(&b'-');
            last = line;
            if !more {
                return last;
            }
        }
    };
    reply();
    let from = inst.local_address("sender");
    for c in [
        "EHLO client.example".to_string(),
        format!("MAIL FROM:<{from}>"),
    ] {
        write!(w, "{c}\r\n").expect("write");
        reply();
    }
    write!(w, "RCPT TO:<{rcpt}>\r\n").expect("write");
    let answer = reply();
    write!(w, "QUIT\r\n").expect("write");
    reply();
    answer.get(..3).unwrap_or_default().to_string()
}

#[test]
fn mta_probes_as_postfix_does() {
    let (stock, ours) = crate::support::run_both_with(mta_probes);
    assert_same("address verification probes", &stock.0, &ours.0);
    assert_eq!(stock.1, ours.1, "smtpd's answers after the probes differ");
    let codes: Vec<&str> = stock
        .1
        .iter()
        .filter_map(|a| a.rsplit(' ').next())
        .collect();
    // unverified_recipient_reject_code is 450 by default.
    assert_eq!(codes, ["250", "450", "250"], "{:?}", stock.1);
    assert!(
        stock
            .0
            .qmgr_log
            .iter()
            .any(|l| l.contains("from=<double-bounce@")),
        "{:?}",
        stock.0.qmgr_log
    );
}
