//! Trigger letters on `public/qmgr` (qmgr(8) "TRIGGERS"; `qmgr_trigger_event()`):
//! `W`/`I` start an incoming scan, `D` a deferred scan that honours file
//! times, `A` makes the running and next scans ignore file times but starts
//! nothing, `F` revives dead destinations; the letters of one read are
//! OR-ed, so order and repetition do not matter. Also the clients that
//! send them: `postqueue -f` (`FADI`), `postqueue -s site` (flush(8): `F`,
//! move the site's files to incoming, `I`), `postqueue -i ID` (flush(8):
//! mark the file group-readable, move it to incoming, `I`; the queue
//! manager flushes that message and clears the bit); and a flood of
//! trigger connections from an unprivileged user, which must not stop
//! delivery.
//!
//! Every scenario keeps the queue manager from retrying on its own (long
//! back-off and queue run delay), so each scan is one a trigger asked for.
//! Checkpoints are compared with the stock qmgr one by one; where a step
//! must have no effect, the checkpoint is taken after a short pause.

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use crate::common::{instance_with_sink, ok, rqmgr, GUARD};
use crate::compare::{assert_same, snapshot, Outcome};
use crate::kick::{
    deferred_to_incoming, no_retries, raw_trigger, send, settle, submitted, wait_count,
    wait_deferred,
};
use rqmgr_harness::{QueueManager, SinkMode};

/// Runs `scenario` with both queue managers and compares each checkpoint.
fn compare_checkpoints(scenario: impl Fn(QueueManager) -> Vec<(&'static str, Outcome)>) {
    let stock = scenario(QueueManager::Stock);
    let ours = scenario(rqmgr());
    assert_eq!(stock.len(), ours.len());
    for ((what, s), (_, o)) in stock.iter().zip(&ours) {
        assert_same(what, s, o);
    }
}

/// `D` and `A` alone move nothing whose retry time lies ahead; `W` and `I`
/// scan incoming; `DADA` in one write is a deferred scan that ignores
/// file times; `WIWI` in one write is one incoming scan.
fn letters(qm: QueueManager) -> Vec<(&'static str, Outcome)> {
    let (mut sink, inst) = instance_with_sink(qm, SinkMode::SoftReject("RCPT".into()), no_retries);
    for n in 1..=4 {
        send(&inst, n, &format!("r{n}@remote.example"));
    }
    wait_deferred(&inst, 4);
    wait_count(&inst, "status=deferred", 4);
    let ids = submitted(&inst);
    assert_eq!(ids.len(), 4, "{}", inst.maillog());
    ok(sink.set_mode(SinkMode::Accept));
    let mut out = Vec::new();

    ok(inst.postkick("D"));
    ok(inst.postkick("A"));
    settle();
    out.push(("after D and A", snapshot(&inst, &[&sink], &[])));

    deferred_to_incoming(&inst, &ids[0]);
    ok(inst.postkick("W"));
    ok(sink.wait_received(1, GUARD));
    deferred_to_incoming(&inst, &ids[1]);
    ok(inst.postkick("I"));
    ok(sink.wait_received(2, GUARD));
    deferred_to_incoming(&inst, &ids[2]);
    raw_trigger(&inst, b"WIWI");
    ok(sink.wait_received(3, GUARD));
    wait_deferred(&inst, 1);
    settle();
    out.push(("after W, I and WIWI", snapshot(&inst, &[&sink], &[])));

    raw_trigger(&inst, b"DADA");
    ok(sink.wait_received(4, GUARD));
    ok(inst.wait_queue_empty(GUARD));
    wait_count(&inst, ": removed", 4);
    out.push(("after DADA", snapshot(&inst, &[&sink], &[])));
    out
}

#[test]
fn trigger_letters_as_postfix() {
    compare_checkpoints(letters);
}

/// `F` revives a destination that the queue manager marked dead: before
/// it, new mail for that destination is deferred without a delivery
/// attempt ("delivery temporarily suspended"); after it, new mail goes out.
fn flush_dead(qm: QueueManager) -> Vec<(&'static str, Outcome)> {
    // One failed connection declares a destination dead only when its
    // concurrency window is 1 (the failure counts 1/window of a cohort).
    let (mut sink, inst) = instance_with_sink(qm, SinkMode::Accept, |b| {
        no_retries(b).main_cf("initial_destination_concurrency", "1")
    });
    sink.stop();
    send(&inst, 1, "r1@remote.example");
    wait_deferred(&inst, 1);
    wait_count(&inst, "status=deferred", 1);
    ok(sink.set_mode(SinkMode::Accept));
    send(&inst, 2, "r2@remote.example");
    wait_deferred(&inst, 2);
    wait_count(&inst, "delivery temporarily suspended", 1);
    let mut out = vec![("dead destination", snapshot(&inst, &[&sink], &[]))];

    ok(inst.postkick("F"));
    settle();
    send(&inst, 3, "r3@remote.example");
    ok(sink.wait_received(1, GUARD));
    wait_count(&inst, ": removed", 1);
    wait_deferred(&inst, 2);
    out.push(("after F", snapshot(&inst, &[&sink], &[])));
    out
}

#[test]
fn flush_dead_revives_destinations_as_postfix() {
    compare_checkpoints(flush_dead);
}

/// `postqueue -s site`, `postqueue -i ID` and `postqueue -f`, each
/// delivering only what Postfix delivers.
fn postqueue(qm: QueueManager) -> Vec<(&'static str, Outcome)> {
    let (mut sink, inst) = instance_with_sink(qm, SinkMode::SoftReject("RCPT".into()), |b| {
        no_retries(b).main_cf("fast_flush_domains", "site.example")
    });
    send(&inst, 1, "r1@site.example");
    send(&inst, 2, "r2@other.example");
    send(&inst, 3, "r3@other.example");
    wait_deferred(&inst, 3);
    wait_count(&inst, "status=deferred", 3);
    let ids = submitted(&inst);
    ok(sink.set_mode(SinkMode::Accept));
    let mut out = Vec::new();

    ok(inst.postqueue(&["-s", "site.example"]));
    ok(sink.wait_received(1, GUARD));
    wait_count(&inst, ": removed", 1);
    wait_deferred(&inst, 2);
    settle();
    out.push(("after postqueue -s", snapshot(&inst, &[&sink], &[])));

    ok(inst.postqueue(&["-i", &ids[1]]));
    ok(sink.wait_received(2, GUARD));
    wait_count(&inst, ": removed", 2);
    wait_deferred(&inst, 1);
    settle();
    out.push(("after postqueue -i", snapshot(&inst, &[&sink], &[])));

    ok(inst.postqueue_flush());
    ok(sink.wait_received(3, GUARD));
    ok(inst.wait_queue_empty(GUARD));
    wait_count(&inst, ": removed", 3);
    out.push(("after postqueue -f", snapshot(&inst, &[&sink], &[])));
    out
}

#[test]
fn postqueue_flushes_as_postfix() {
    compare_checkpoints(postqueue);
}

/// A file flush(8) marked group-readable (`postqueue -i`) that fails again
/// goes back to deferred/ with the bit cleared (mode 0700, not 0740).
fn fast_flush_bit(qm: QueueManager) -> Vec<(&'static str, Outcome)> {
    let (sink, inst) = instance_with_sink(qm, SinkMode::SoftReject("RCPT".into()), no_retries);
    send(&inst, 1, "r1@remote.example");
    wait_deferred(&inst, 1);
    wait_count(&inst, "status=deferred", 1);
    let ids = submitted(&inst);
    ok(inst.postqueue(&["-i", &ids[0]]));
    wait_count(&inst, "status=deferred", 2);
    wait_deferred(&inst, 1);
    let path = inst
        .queue_file_path("deferred", &ids[0])
        .expect("file in deferred/");
    let mode = std::fs::metadata(&path).map(|m| m.mode()).unwrap_or(0);
    assert_eq!(mode & 0o7777, 0o700, "flush bit not cleared");
    vec![("after postqueue -i", snapshot(&inst, &[&sink], &[]))]
}

#[test]
fn fast_flush_bit_is_cleared_as_postfix() {
    compare_checkpoints(fast_flush_bit);
}

/// An unprivileged user floods `public/qmgr` with trigger connections
/// (letters, junk, repeated bytes) while mail arrives; all of it is still
/// delivered. The flood runs as `nobody` with the `postdrop` group, the
/// access Postfix's set-gid clients (postqueue, postdrop) lend any local
/// user to the public directory.
fn flood(qm: QueueManager) -> Vec<(&'static str, Outcome)> {
    const MESSAGES: usize = 10;
    let (sink, inst) = instance_with_sink(qm, SinkMode::Accept, |b| b);
    let socket = inst.queue_dir().join("public/qmgr");
    let script = r#"
        use IO::Socket::UNIX;
        $SIG{PIPE} = 'IGNORE';
        my ($path, $n) = @ARGV;
        my @bodies = ("W", "I", "D", "A", "F", "xyz", "WWWWWWWW", "\0", "FADI" x 200);
        for my $i (1 .. $n) {
            my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $path) or next;
            syswrite($s, $bodies[$i % @bodies]);
            syswrite($s, "\0");
            close($s);
        }
    "#;
    let mut flooder = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=postdrop", "--clear-groups", "--"])
        .args(["perl", "-e", script])
        .arg(&socket)
        .arg("3000")
        .stdin(Stdio::null())
        .spawn()
        .expect("start the flood");
    for n in 1..=MESSAGES {
        send(&inst, n, &format!("r{n}@remote.example"));
    }
    ok(sink.wait_received(MESSAGES, GUARD));
    ok(inst.wait_queue_empty(GUARD));
    wait_count(&inst, ": removed", MESSAGES);
    let status = flooder.wait().expect("flood ends");
    assert!(status.success(), "flood: {status}");
    vec![("after the flood", snapshot(&inst, &[&sink], &[]))]
}

#[test]
fn trigger_flood_does_not_stop_delivery() {
    compare_checkpoints(flood);
}
