//! A large recipient list whose file leaves `active/` in the middle of
//! its delivery (`postsuper -d` or `-h`), or is replaced there by garbage,
//! must not wedge its destination.
//!
//! The queue manager reads such a list in slices; a refill after the file
//! went fails. Postfix keeps the recipients already in core: they go to
//! agents, which fail to open the file and answer, so the destination's
//! and the transport's slots come back; the message leaves the active
//! queue once every delivery answered. Fresh mail to the same destination
//! must therefore still be delivered, and nothing may stay in `active/`.

use crate::common::{instance_with_sink, ok, rqmgr, GUARD};
use rqmgr_harness::{QueueManager, SinkMode};

const RECIPIENTS: usize = 6_000;
/// The recipient whose record is garbled.
const GARBLED: usize = 800;

/// What happens to the list's file while it is delivered.
#[derive(Clone, Copy, PartialEq)]
enum Pull {
    /// `postsuper -d`.
    Delete,
    /// `postsuper -h`.
    Hold,
    /// A recipient record far ahead of what was read gets a record type
    /// that does not belong in an envelope, in place: the agents still
    /// deliver what is in core (they read only the content), but the next
    /// read of recipients fails.
    Garble,
}

fn scenario(qm: QueueManager, pull: Pull) {
    let (sink, inst) = instance_with_sink(qm, SinkMode::SlowData(1), |b| {
        b.main_cf("smtp_destination_concurrency_limit", "2")
            .main_cf("qmgr_message_active_limit", "100")
            .main_cf("qmgr_message_recipient_limit", "100")
            .main_cf("smtp_recipient_limit", "300")
            .main_cf("smtp_recipient_refill_limit", "50")
            .main_cf("smtp_destination_recipient_limit", "50")
    });
    let from = inst.local_address("sender");
    let rcpts: Vec<String> = (0..RECIPIENTS)
        .map(|n| format!("r{n}@remote.example"))
        .collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    ok(inst.sendmail(&from, &rcpts, "Subject: list\n\nmany\n"));
    ok(sink.wait_received(2, GUARD));
    let ids = inst.queue_ids("active");
    assert_eq!(ids.len(), 1, "the list is in active/: {ids:?}");
    match pull {
        Pull::Delete => drop(ok(inst.postsuper(&["-d", &ids[0]]))),
        Pull::Hold => drop(ok(inst.postsuper(&["-h", &ids[0]]))),
        Pull::Garble => {
            let path = inst
                .queue_file_path("active", &ids[0])
                .expect("the list's file");
            garble_recipient(&path, GARBLED);
        }
    }

    ok(inst.sendmail(&from, &["fresh@remote.example"], "Subject: fresh\n\nnew\n"));
    let fresh_arrived = || {
        sink.messages()
            .iter()
            .any(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("Subject: fresh")))
    };
    ok(inst.wait_until(|_| fresh_arrived(), GUARD));
    ok(inst.wait_until(|i| i.queue_ids("active").is_empty(), GUARD));
    let only = |p: Pull| if pull == p { ids.clone() } else { Vec::new() };
    assert_eq!(inst.queue_ids("hold"), only(Pull::Hold), "what hold/ has");
    assert_eq!(
        inst.queue_ids("corrupt"),
        only(Pull::Garble),
        "what corrupt/ has"
    );
    if std::env::var_os("SHOWLOG").is_some() {
        eprintln!("{}", inst.maillog());
    }
    let delivered = sink.recipients_received();
    assert!(
        delivered < RECIPIENTS,
        "the list stopped: {delivered} delivered"
    );
    if pull == Pull::Garble {
        // Everything read before the bad record went out; the agents
        // never missed the file.
        assert!(delivered >= 2 * 50, "{delivered} delivered");
        let missed = inst.log().matching("postfix/smtp", "open active").len();
        assert_eq!(missed, 0, "agents failed to open the file");
    }
}

#[test]
fn stock_deleted() {
    scenario(QueueManager::Stock, Pull::Delete);
}

#[test]
fn rqmgr_deleted() {
    scenario(rqmgr(), Pull::Delete);
}

#[test]
fn stock_held() {
    scenario(QueueManager::Stock, Pull::Hold);
}

#[test]
fn rqmgr_held() {
    scenario(rqmgr(), Pull::Hold);
}

#[test]
fn stock_garbled() {
    scenario(QueueManager::Stock, Pull::Garble);
}

#[test]
fn rqmgr_garbled() {
    scenario(rqmgr(), Pull::Garble);
}

/// Overwrites the type of recipient `n`'s `R` record with `Z` (the
/// address is short, so its length takes one byte).
fn garble_recipient(path: &std::path::Path, n: usize) {
    use std::os::unix::fs::FileExt;
    let bytes = std::fs::read(path).expect("read the queue file");
    let addr = format!("r{n}@remote.example");
    let mut record = vec![b'R', u8::try_from(addr.len()).expect("a short address")];
    record.extend_from_slice(addr.as_bytes());
    let at = bytes
        .windows(record.len())
        .position(|w| w == record)
        .expect("the recipient's record");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open the queue file");
    file.write_all_at(b"Z", at as u64).expect("garble");
}
