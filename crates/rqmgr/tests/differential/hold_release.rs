//! `postsuper -h` (hold), `-H` (release), `-r` (requeue) and `-d` (delete)
//! on mail that is deferred and on mail that is active, i.e. in the hands
//! of a delivery agent (a slow smtp-sink keeps it there). postsuper(1)
//! renames or removes the file behind the queue manager's back; the queue
//! manager must cope as Postfix's does: a finished delivery whose file has
//! gone is logged as a failed removal, a released file whose recipients
//! are all done is simply removed, a requeued file comes back under a new
//! queue id.
//!
//! The postsuper commands are issued only once the agent has the file open
//! (seen in /proc), so the stock qmgr's behaviour is deterministic.

use crate::common::{instance_with_sink, ok, GUARD};
use crate::compare::{assert_same, run_both, snapshot, wait, Outcome};
use crate::support::{kick_pickup, open_by_agent, submit};
use rqmgr_harness::{QueueManager, SinkMode};

/// How long the sink sits on DATA.
const SLOW: u32 = 3;

fn scenario(qm: QueueManager) -> Outcome {
    let (mut sink, inst) = instance_with_sink(qm, SinkMode::SoftReject("RCPT".into()), |b| b);
    let from = inst.local_address("sender");
    let qmgr = inst.queue_manager().log_program();

    // Deferred mail.
    let d: Vec<String> = ["d1", "d2", "d3", "d4"]
        .iter()
        .map(|to| {
            let rcpt = format!("{to}@example.com");
            submit(&inst, &from, &[&rcpt], &format!("Subject: {to}\n\nhi\n"))
        })
        .collect();
    wait(&inst, GUARD, "4 deferred", |i| {
        i.log().matching("postfix/smtp", "status=deferred").len() == 4
            && i.queue_ids("deferred").len() == 4
            && i.queued_count() == 4
    });
    ok(inst.postsuper(&["-h", &d[0]]));
    ok(inst.postsuper(&["-d", &d[1]]));
    ok(inst.postsuper(&["-h", &d[2]]));
    ok(inst.postsuper(&["-H", &d[2]]));
    ok(inst.postsuper(&["-r", &d[3]]));
    kick_pickup(&inst);
    // The requeued copy is tried again (and deferred again).
    wait(&inst, GUARD, "the requeued copy deferred", |i| {
        i.log().matching("postfix/smtp", "status=deferred").len() == 5
            && i.queue_ids("deferred").len() == 2
            && i.queued_count() == 2
    });

    // Active mail: in the agents' hands while postsuper acts.
    ok(sink.set_mode(SinkMode::SlowData(SLOW)));
    let a: Vec<String> = ["a1", "a2", "a3", "a4"]
        .iter()
        .map(|to| {
            let rcpt = format!("{to}@example.com");
            submit(&inst, &from, &[&rcpt], &format!("Subject: {to}\n\nhi\n"))
        })
        .collect();
    wait(&inst, GUARD, "4 files open in agents", |i| {
        a.iter().all(|id| open_by_agent(i, id))
    });
    ok(inst.postsuper(&["-h", &a[0]]));
    ok(inst.postsuper(&["-d", &a[1]]));
    ok(inst.postsuper(&["-r", &a[2]]));
    ok(inst.postsuper(&["-h", &a[3]]));
    ok(inst.postsuper(&["-H", &a[3]]));
    // The four deliveries finish; each file has gone from active/.
    ok(sink.wait_received(4, GUARD));
    ok(inst.wait_for_log(
        |l| {
            l.matching("postfix/smtp", "status=sent").len() == 4
                && l.matching(&qmgr, "from active: No such file").len() == 4
        },
        GUARD,
    ));
    // a3's requeued copy has no recipient left: pickup drops it.
    kick_pickup(&inst);
    wait(&inst, GUARD, "maildrop empty", |i| {
        i.queue_ids("maildrop").is_empty() && i.queue_ids("incoming").is_empty()
    });

    // Flush: the released d3, the requeued d4 and the released a4 (all
    // its recipients done) go.
    ok(inst.postqueue_flush());
    ok(sink.wait_received(6, GUARD));
    wait(&inst, GUARD, "all but held mail gone", |i| {
        i.queued_count() == 0 && i.queue_ids("hold").len() == 2
    });
    // Release the held d1 and a1 (all its recipients done) and flush.
    ok(inst.postsuper(&["-H", "ALL"]));
    ok(inst.postqueue_flush());
    ok(sink.wait_received(7, GUARD));
    wait(&inst, GUARD, "an empty queue", |i| {
        i.queued_count() == 0 && i.queue_ids("hold").is_empty()
    });
    // Removed: d3, d4's copy, a4, then d1 and a1.
    ok(inst.wait_for_log(|l| l.matching(&qmgr, ": removed").len() == 5, GUARD));
    snapshot(&inst, &[&sink], &["sender"])
}

#[test]
fn hold_release_requeue_delete_as_postfix_does() {
    let (stock, ours) = run_both(scenario);
    assert_same("postsuper on active and deferred mail", &stock, &ours);
}
