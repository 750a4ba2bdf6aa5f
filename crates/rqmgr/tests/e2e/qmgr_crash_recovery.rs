//! Scenario 5: the queue manager, killed with SIGKILL in the middle of a run,
//! is restarted by master(8), and every message is delivered in the end.
//!
//! master restarts a crashed service on its next trigger (cleanup triggers the
//! queue manager after every new message) without throttling, because the
//! killed process had already served a request (master's start-up wakeup).
//! The new queue manager moves `active/` back to `incoming/`; messages whose
//! delivery finished meanwhile are removed, others delivered (possibly twice:
//! "at least once" is the contract, so the sink may count more).

use crate::common::{instance_with_sink, ok, rqmgr, GUARD};
use nix::sys::signal::Signal;
use rqmgr_harness::{Maillog, QueueManager, SinkMode};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const MESSAGES: usize = 1000;

fn scenario(qm: QueueManager) {
    let (sink, inst) = instance_with_sink(qm, SinkMode::Accept, |b| b);
    let old = ok(inst.wait_for_qmgr(GUARD));
    let qmgr = inst.queue_manager().log_program();
    let source_done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let source = s.spawn(|| {
            let r = inst.smtp_source(MESSAGES as u32, 1, 5, "user@example.com", GUARD * 2);
            source_done.store(true, Ordering::SeqCst);
            r
        });
        // Kill once deliveries are under way but mail is still arriving.
        ok(inst.wait_for_log(|l| l.matching(&qmgr, ": removed").len() >= 50, GUARD));
        let killed = ok(inst.kill_qmgr(Signal::SIGKILL));
        assert_eq!(killed, vec![old]);
        assert!(
            !source_done.load(Ordering::SeqCst),
            "smtp-source finished before the kill: the kill was not mid-run"
        );
        ok(inst.wait_until(|i| i.qmgr_pids().iter().any(|&p| p != old), GUARD));
        ok(source.join().expect("smtp-source thread"));
    });
    // A file an agent still had locked when the new queue manager started
    // went back to incoming/ with an mtime 60 s ahead ("skipped, still being
    // delivered"); only a flush (or master's 300 s wakeup) brings it back, so
    // flush now and then, as an operator would.
    let mut last_flush = Instant::now();
    ok(inst.wait_until(
        |i| {
            if i.queued_count() == 0 {
                return true;
            }
            if last_flush.elapsed() > Duration::from_secs(3) {
                let _ = i.postqueue_flush();
                last_flush = Instant::now();
            }
            false
        },
        GUARD,
    ));
    ok(sink.wait_received(MESSAGES, GUARD));
    // Not "every message has a `removed` line": the killed process may have
    // removed a file and died before logging it. The agents were not killed,
    // so every accepted message must have a `status=sent` line.
    let sent_ids = |l: &Maillog| -> HashSet<String> {
        l.lines()
            .iter()
            .filter(|x| x.program == "postfix/smtp" && x.text.contains("status=sent"))
            .filter_map(|x| x.queue_id().map(String::from))
            .collect()
    };
    let log = ok(inst.wait_for_log(|l| sent_ids(l).len() >= MESSAGES, GUARD));
    let sent = sent_ids(&log);
    let accepted = log.queue_ids_logged("postfix/smtpd", "client=");
    assert_eq!(accepted.len(), MESSAGES);
    for id in accepted {
        assert!(sent.contains(&id), "{id} was never delivered (lost?)");
    }
    assert!(
        log.count("killed by signal 9") >= 1,
        "master did not notice the kill:\n{}",
        log.text()
    );
}

#[test]
fn stock() {
    scenario(QueueManager::Stock);
}

#[test]
fn rqmgr_daemon() {
    scenario(rqmgr());
}
