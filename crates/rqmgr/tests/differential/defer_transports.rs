//! `defer_transports` (postconf(5)): mail for a listed transport is not
//! delivered but deferred through the `retry` transport with "4.3.2
//! deferred transport", also when a plain deferred scan (`AD`) takes it
//! up again. Postfix lifts the restriction only where a flush asks for it
//! (`QMGR_FLUSH_DFXP`): `postqueue -i` (flush(8) marks the file
//! group-readable), `postqueue -s` (flush(8) sends `F` before moving the
//! site's files to incoming), `postqueue -f` (`FADI`), and `F` on its own
//! for the next scan; mail arriving after the flush is deferred again.

use crate::common::{instance_with_sink, ok, rqmgr, GUARD};
use crate::compare::{assert_same, snapshot, Outcome};
use crate::kick::{no_retries, raw_trigger, send, settle, submitted, wait_count, wait_deferred};
use rqmgr_harness::{QueueManager, SinkMode};

const DEFERRED: &str = "status=deferred (deferred transport)";

fn scenario(qm: QueueManager) -> Vec<(&'static str, Outcome)> {
    let (sink, inst) = instance_with_sink(qm, SinkMode::Accept, |b| {
        no_retries(b)
            .main_cf("defer_transports", "smtp")
            .main_cf("fast_flush_domains", "site.example")
    });
    send(&inst, 1, "r1@remote.example");
    send(&inst, 2, "r2@site.example");
    send(&inst, 3, "r3@remote.example");
    wait_deferred(&inst, 3);
    wait_count(&inst, DEFERRED, 3);
    let ids = submitted(&inst);
    let mut out = vec![("deferred transport", snapshot(&inst, &[&sink], &[]))];

    raw_trigger(&inst, b"AD");
    wait_count(&inst, DEFERRED, 6);
    wait_deferred(&inst, 3);
    out.push(("after AD", snapshot(&inst, &[&sink], &[])));

    ok(inst.postqueue(&["-i", &ids[0]]));
    ok(sink.wait_received(1, GUARD));
    wait_count(&inst, ": removed", 1);
    wait_deferred(&inst, 2);
    settle();
    out.push(("after postqueue -i", snapshot(&inst, &[&sink], &[])));

    ok(inst.postqueue(&["-s", "site.example"]));
    ok(sink.wait_received(2, GUARD));
    wait_count(&inst, ": removed", 2);
    wait_deferred(&inst, 1);
    settle();
    out.push(("after postqueue -s", snapshot(&inst, &[&sink], &[])));

    ok(inst.postqueue_flush());
    ok(sink.wait_received(3, GUARD));
    ok(inst.wait_queue_empty(GUARD));
    wait_count(&inst, ": removed", 3);
    out.push(("after postqueue -f", snapshot(&inst, &[&sink], &[])));

    send(&inst, 4, "r4@remote.example");
    wait_count(&inst, DEFERRED, 7);
    wait_deferred(&inst, 1);
    out.push(("new mail after the flush", snapshot(&inst, &[&sink], &[])));

    ok(inst.postkick("F"));
    settle();
    raw_trigger(&inst, b"AD");
    ok(sink.wait_received(4, GUARD));
    ok(inst.wait_queue_empty(GUARD));
    wait_count(&inst, ": removed", 4);
    out.push(("after F, then AD", snapshot(&inst, &[&sink], &[])));
    out
}

#[test]
fn defer_transports_as_postfix() {
    let stock = scenario(QueueManager::Stock);
    let ours = scenario(rqmgr());
    for ((what, s), (_, o)) in stock.iter().zip(&ours) {
        assert_same(what, s, o);
    }
}
