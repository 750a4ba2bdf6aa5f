//! A transport whose delivery agent is missing or crashes.
//!
//! Missing: `transport_maps` routes `broken.example` to transport `broken`,
//! which has no master.cf entry, so connecting to `private/broken` fails.
//! The queue manager marks the transport dead for `transport_retry_time`:
//! mail arriving meanwhile is suspended without a new connection attempt,
//! mail arriving later tries again. Once the service exists (master.cf and
//! `postfix reload`) a flush delivers everything.
//!
//! Crashing: the smtp agent is killed (SIGKILL) in the middle of a
//! delivery; the queue manager defers the mail with Postfix's "unknown
//! mail transport error", and a flush after the sink recovers delivers it
//! exactly once.

use std::io::Write;
use std::time::Duration;

use crate::common::{instance_with_sink, ok, GUARD};
use crate::compare::{assert_same, run_both, snapshot, Outcome};
use nix::sys::signal::Signal;
use rqmgr_harness::{procs, QueueManager, SinkMode};

fn send(inst: &rqmgr_harness::Instance, to: &str, subject: &str) {
    let msg = format!("Subject: {subject}\n\nhello\n");
    ok(inst.sendmail(&inst.local_address("sender"), &[to], &msg));
}

fn missing_agent(qm: QueueManager) -> Outcome {
    let (sink, inst) = instance_with_sink(qm, SinkMode::Accept, |b| {
        b.main_cf("transport_maps", "inline:{ broken.example=broken: }")
            .main_cf("transport_retry_time", "5s")
    });
    let port = sink.port();
    send(&inst, "x@broken.example", "first");
    ok(inst.wait_until(|i| i.queue_ids("deferred").len() == 1, GUARD));
    // Within transport_retry_time: suspended, no new connection attempt.
    send(&inst, "y@broken.example", "second");
    ok(inst.wait_until(|i| i.queue_ids("deferred").len() == 2, GUARD));
    let log = inst.log();
    assert_eq!(
        log.count("connect to transport private/broken"),
        1,
        "{}",
        log.text()
    );
    // After it: the queue manager tries the transport again.
    std::thread::sleep(Duration::from_secs(7));
    send(&inst, "z@broken.example", "third");
    ok(inst.wait_until(|i| i.queue_ids("deferred").len() == 3, GUARD));
    let log = inst.log();
    assert_eq!(
        log.count("connect to transport private/broken"),
        2,
        "{}",
        log.text()
    );
    // The service appears; nothing was lost.
    let mut master_cf = ok(std::fs::OpenOptions::new()
        .append(true)
        .open(inst.config_dir().join("master.cf"))
        .map_err(|e| rqmgr_harness::Error::new(e.to_string())));
    ok(writeln!(master_cf, "broken unix - - n - - smtp")
        .map_err(|e| rqmgr_harness::Error::new(e.to_string())));
    drop(master_cf);
    ok(std::fs::write(
        inst.config_dir().join("main.cf"),
        std::fs::read_to_string(inst.config_dir().join("main.cf"))
            .unwrap_or_default()
            .replace(
                "broken.example=broken: }",
                &format!("broken.example=broken:[127.0.0.1]:{port} }}"),
            ),
    )
    .map_err(|e| rqmgr_harness::Error::new(e.to_string())));
    ok(inst.reload());
    ok(inst.wait_for_log(|l| l.count("reload -- version") == 1, GUARD));
    ok(inst.wait_until(|i| i.root().join("spool/private/broken").exists(), GUARD));
    ok(inst.postqueue_flush());
    ok(inst.wait_queue_empty(GUARD));
    ok(inst.wait_for_log(|l| l.count(": removed") == 3, GUARD));
    let out = snapshot(&inst, &[&sink], &[]);
    assert_eq!(out.sink_recipients.len(), 3, "{:?}", out.sink_recipients);
    out
}

fn crashing_agent(qm: QueueManager) -> Outcome {
    let (mut sink, inst) = instance_with_sink(qm, SinkMode::SlowData(60), |b| {
        // master throttles an agent killed before its first use; keep
        // that pause short.
        b.main_cf("transport_retry_time", "3s")
            .main_cf("service_throttle_time", "2s")
    });
    send(&inst, "x@remote.example", "crash");
    let smtp = inst.daemon_path("smtp");
    ok(inst.wait_until(|_| !procs::pids_with_exe(&smtp).is_empty(), GUARD));
    // Let the agent get well into the SMTP session (the sink holds DATA).
    std::thread::sleep(Duration::from_secs(2));
    for pid in procs::pids_with_exe(&smtp) {
        procs::kill_pid(pid, Signal::SIGKILL);
    }
    ok(inst.wait_until(|i| i.queue_ids("deferred").len() == 1, GUARD));
    ok(sink.set_mode(SinkMode::Accept));
    // Past transport_retry_time the transport is usable again.
    std::thread::sleep(Duration::from_secs(4));
    ok(inst.postqueue_flush());
    ok(inst.wait_queue_empty(GUARD));
    ok(inst.wait_for_log(|l| l.count(": removed") == 1, GUARD));
    let out = snapshot(&inst, &[&sink], &[]);
    assert_eq!(out.sink_recipients.len(), 1, "{:?}", out.sink_recipients);
    out
}

#[test]
fn missing_delivery_agent() {
    let (stock, ours) = run_both(missing_agent);
    assert_same("missing delivery agent", &stock, &ours);
}

#[test]
fn crashing_delivery_agent() {
    let (stock, ours) = run_both(crashing_agent);
    assert_same("crashing delivery agent", &stock, &ours);
}
