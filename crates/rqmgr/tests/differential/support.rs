//! Helpers for scenarios that compare more than an [`Outcome`]: queue file
//! records and the reports a sender receives.

use std::path::Path;

use crate::common::{ok, GUARD};
use crate::compare::Outcome;
use rqmgr_harness::{Instance, QueueManager};

/// [`crate::compare::run_both`] for scenarios that return more than an
/// [`Outcome`] (stock first).
pub(crate) fn run_both_with<T>(
    scenario: impl Fn(QueueManager) -> (Outcome, T),
) -> ((Outcome, T), (Outcome, T)) {
    let stock = scenario(QueueManager::Stock);
    let ours = scenario(crate::common::rqmgr());
    (stock, ours)
}

/// The payload of the first envelope record of type `kind` in a queue file,
/// read with the project's own record reader; `None` if absent.
pub(crate) fn record_payload(path: &Path, kind: u8) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).ok()?;
    let mut reader = rqmgr_queue::record::RecordReader::new(file);
    while let Ok(Some(rec)) = reader.next() {
        if rec.rec_type == kind {
            return Some(rec.data);
        }
        if rec.rec_type == b'M' {
            return None;
        }
    }
    None
}

/// The delivery status notifications in `mailbox` (an mbox text),
/// normalised for comparison: per message its Subject and the
/// per-recipient DSN fields (`Final-Recipient`, `Original-Recipient`,
/// `Action`, `Status`). Texts with queue ids, times or host-specific detail
/// are left out. Recipient blocks are sorted within a report: their order
/// is the order in which concurrent delivery agents finished, which is not
/// deterministic even for the stock qmgr.
pub(crate) fn dsn_summary(mailbox: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for msg in mailbox.split("\nFrom ") {
        let mut blocks: Vec<Vec<String>> = Vec::new();
        let mut subject = String::new();
        for line in msg.lines() {
            if let Some(s) = line.strip_prefix("Subject: ") {
                if subject.is_empty() {
                    subject = s.to_string();
                }
            }
            if line.starts_with("Final-Recipient:") {
                blocks.push(Vec::new());
            }
            for key in [
                "Final-Recipient:",
                "Original-Recipient:",
                "Action:",
                "Status:",
            ] {
                if let Some(block) = blocks.last_mut().filter(|_| line.starts_with(key)) {
                    block.push(line.trim_end().to_string());
                }
            }
        }
        blocks.sort();
        if !subject.is_empty() {
            let fields: Vec<String> = blocks.into_iter().map(|b| b.join(", ")).collect();
            out.push(format!("{subject} | {}", fields.join(" | ")));
        }
    }
    out.sort();
    out
}

/// Queue ids pickup(8) logged, in order.
pub(crate) fn picked_up(inst: &Instance) -> Vec<String> {
    inst.log().queue_ids_logged("postfix/pickup", "uid=")
}

/// Submits a message with sendmail and waits until pickup(8) has taken
/// it; returns its queue id. Submitting one at a time keeps the order in
/// which queue ids first appear in the log (their normalised names) the
/// same in every run: pickup walks maildrop in directory order.
pub(crate) fn submit(inst: &Instance, from: &str, to: &[&str], message: &str) -> String {
    let before = picked_up(inst).len();
    ok(inst.sendmail(from, to, message));
    ok(inst.wait_until(|i| picked_up(i).len() > before, GUARD));
    picked_up(inst)[before].clone()
}

/// Wakes pickup(8) (`postkick public pickup W`), e.g. after `postsuper
/// -r`, which leaves the file for pickup's next periodic scan.
pub(crate) fn kick_pickup(inst: &Instance) {
    ok(inst.postkick_service("pickup", "W"));
}

/// True when a process of the instance other than the queue manager has
/// the queue file `id` open.
pub(crate) fn open_by_agent(inst: &Instance, id: &str) -> bool {
    let qmgr = inst.qmgr_pids();
    inst.pids().iter().filter(|p| !qmgr.contains(p)).any(|p| {
        std::fs::read_dir(format!("/proc/{p}/fd"))
            .map(|d| {
                d.flatten().any(|e| {
                    std::fs::read_link(e.path())
                        .map(|l| l.to_string_lossy().ends_with(&format!("/{id}")))
                        .unwrap_or(false)
                })
            })
            .unwrap_or(false)
    })
}
