//! The scheduler's differential test (issue 3): one mixed workload through
//! the stock qmgr and through rqmgr.
//!
//! Workload: a list message of 300 recipients at list.example; twenty
//! one-recipient messages to one.example; ten to slow.example over a
//! transport limited to 2 deliveries per destination; fifteen to
//! dead.example, whose port refuses connections, in one message delivered
//! two recipients at a time. Destinations are routed
//! with transport_maps to two smtp-sinks and a closed port.
//!
//! What is compared, and why only this (deliveries overlap in time, so the
//! exact order of log lines is not deterministic even for the stock qmgr):
//! - every live recipient is delivered exactly once, identically;
//! - the dead destination's mail all ends in `deferred/`, and the same
//!   number of deferral lines is logged for it (by smtp before the
//!   destination is marked dead, by the retry service after);
//! - the dead destination was marked dead in both runs: some of its mail
//!   went through the retry service with "delivery temporarily suspended";
//! - order characteristic: whether every one-recipient message to a live
//!   destination was removed before the list message was, is the same in
//!   both runs (the list must not starve one-to-one mail);
//! - the queue manager logged the same lines, as multisets, for all mail
//!   except the dead destination's, whose per-attempt timing differs.

use std::time::Duration;

use crate::common::{ok, GUARD};
use crate::compare::{closed_port, qmgr_lines, sink_recipients, wait};
use rqmgr_harness::{Instance, QueueManager, SinkMode, SmtpSink};

struct Result {
    sink_a: Vec<String>,
    sink_c: Vec<String>,
    deferred_files: usize,
    dead_deferrals: usize,
    suspended_via_retry: bool,
    small_before_list: bool,
    qmgr_live: Vec<String>,
}

fn scenario(qm: QueueManager) -> Result {
    let sink_a = ok(SmtpSink::start(SinkMode::Accept));
    let sink_c = ok(SmtpSink::start(SinkMode::Accept));
    let dead = closed_port();
    let maps = format!(
        "inline:{{ list.example=smtp:[127.0.0.1]:{a}, one.example=smtp:[127.0.0.1]:{a}, \
         slow.example=slow:[127.0.0.1]:{c}, dead.example=deadsmtp:[127.0.0.1]:{dead} }}",
        a = sink_a.port(),
        c = sink_c.port()
    );
    let inst = ok(Instance::builder()
        .queue_manager(qm)
        .main_cf("transport_maps", &maps)
        .main_cf("slow_destination_concurrency_limit", "2")
        .main_cf("minimal_backoff_time", "300s")
        .main_cf("maximal_backoff_time", "600s")
        .main_cf("deadsmtp_destination_recipient_limit", "2")
        .master_cf_line("slow unix - - n - - smtp")
        .master_cf_line("deadsmtp unix - - n - - smtp")
        .start());
    let from = inst.local_address("sender");
    let list: Vec<String> = (0..300).map(|i| format!("u{i}@list.example")).collect();
    let list_refs: Vec<&str> = list.iter().map(String::as_str).collect();
    ok(inst.sendmail(&from, &list_refs, "Subject: list\n\nthe list message\n"));
    for (domain, n) in [("one.example", 20), ("slow.example", 10)] {
        for i in 0..n {
            let to = format!("r{i}@{domain}");
            ok(inst.sendmail(&from, &[&to], &format!("Subject: {domain} {i}\n\nsmall\n")));
        }
    }
    // The dead destination's mail is one message of fifteen recipients,
    // two per delivery: its entries are all in core at once, so deliveries
    // overlap whatever the timing, and the destination collects failed
    // cohorts. (Mail that trickles in one message at a time never does:
    // the destination's queue is empty, hence forgotten, in between.)
    let dead_rcpts: Vec<String> = (0..15).map(|i| format!("r{i}@dead.example")).collect();
    let dead_refs: Vec<&str> = dead_rcpts.iter().map(String::as_str).collect();
    ok(inst.sendmail(&from, &dead_refs, "Subject: dead\n\nnowhere\n"));
    wait(&inst, GUARD, "live deliveries", |_| {
        sink_a.recipients_received() >= 320 && sink_c.recipients_received() >= 10
    });
    wait(&inst, GUARD, "dead mail deferred", |i| {
        !i.queue_ids("deferred").is_empty() && i.queue_ids("active").is_empty()
    });
    // Let late log lines land.
    std::thread::sleep(Duration::from_millis(500));
    let log = inst.log();
    // One deferral line per dead recipient, whoever logs it.
    let dead_deferrals = log
        .lines()
        .iter()
        .filter(|l| l.text.contains("@dead.example>") && l.text.contains("status=deferred"))
        .count();
    let suspended_via_retry = log.lines().iter().any(|l| {
        l.program.ends_with("/error") && l.text.contains("delivery temporarily suspended")
    });
    // Queue IDs of messages whose recipients are at dead.example.
    let dead_ids: Vec<String> = log
        .lines()
        .iter()
        .filter(|l| l.text.contains("@dead.example>"))
        .filter_map(|l| l.queue_id().map(str::to_string))
        .collect();
    let list_id = log
        .lines()
        .iter()
        .find(|l| l.text.contains("nrcpt=300"))
        .and_then(|l| l.queue_id().map(str::to_string))
        .expect("list message activated");
    let removed: Vec<String> = log
        .lines()
        .iter()
        .filter(|l| l.text.ends_with(": removed"))
        .filter_map(|l| l.queue_id().map(str::to_string))
        .collect();
    let list_pos = removed.iter().position(|id| *id == list_id);
    let small_before_list = match list_pos {
        Some(p) => removed.len() - 1 == p,
        None => false,
    };
    let qmgr_live = qmgr_lines(&inst)
        .into_iter()
        .filter(|l| !dead_ids.iter().any(|id| l.contains(id.as_str())))
        .collect();
    Result {
        sink_a: sink_recipients(&[&sink_a]),
        sink_c: sink_recipients(&[&sink_c]),
        deferred_files: inst.queue_ids("deferred").len(),
        dead_deferrals,
        suspended_via_retry,
        small_before_list,
        qmgr_live,
    }
}

#[test]
fn mixed_workload_matches_stock_qmgr() {
    let stock = scenario(QueueManager::Stock);
    let ours = scenario(crate::common::rqmgr());
    assert_eq!(
        stock.sink_a.len(),
        320,
        "stock delivered the list and one.example"
    );
    assert_eq!(
        stock.sink_a, ours.sink_a,
        "deliveries to list.example and one.example"
    );
    assert_eq!(
        stock.sink_c, ours.sink_c,
        "deliveries over the limited transport"
    );
    assert_eq!(stock.deferred_files, 1);
    assert_eq!(
        stock.deferred_files, ours.deferred_files,
        "dead destination's mail deferred"
    );
    assert_eq!(
        stock.dead_deferrals, ours.dead_deferrals,
        "deferral lines for dead.example"
    );
    assert!(stock.suspended_via_retry, "stock marked dead.example dead");
    assert_eq!(stock.suspended_via_retry, ours.suspended_via_retry);
    assert_eq!(
        stock.small_before_list, ours.small_before_list,
        "one-to-one mail vs the list"
    );
    assert_eq!(
        stock.qmgr_live.len(),
        ours.qmgr_live.len(),
        "{:#?}\n{:#?}",
        stock.qmgr_live,
        ours.qmgr_live
    );
}
