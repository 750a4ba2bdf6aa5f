//! Log-based reports: a mixed run (local delivery, relayed mail, bounces,
//! deferrals) gives the same queue manager log lines, the same pflogsumm
//! report and the same qshape of the deferred queue with both queue
//! managers — the tools operators run on a Postfix system must not see a
//! difference.
//!
//! What is compared: `assert_same` on the outcomes (normalised qmgr lines
//! included); pflogsumm's report without what depends on the clock, the
//! run or byte counts (the per-hour table, delay columns, byte totals and
//! size rankings — the same message is a byte or two longer when its queue
//! ID is, and queue IDs embed inode numbers — the refusing port and the
//! instance's path); qshape's table of the deferred queue, whose age
//! buckets are all "now" in a run this short.

use std::process::Command;

use crate::common::{ok, GUARD};
use crate::compare::{assert_same, closed_port, snapshot, wait, Outcome};
use crate::support::{run_both_with, submit};
use rqmgr_harness::{cmd, Instance, QueueManager, SinkMode, SmtpSink};

fn run(qm: QueueManager) -> (Outcome, (Vec<String>, Vec<String>)) {
    let sink = ok(SmtpSink::start(SinkMode::Accept));
    let maps = format!(
        "inline:{{ relay.example=smtp:[127.0.0.1]:{}, deferred.example=smtp:[127.0.0.1]:{} }}",
        sink.port(),
        closed_port()
    );
    let inst = ok(Instance::builder()
        .queue_manager(qm)
        .main_cf("transport_maps", &maps)
        .start());
    let from = inst.local_address("sender");
    let alice = inst.local_address("alice");
    let nobody = inst.local_address("no-such-user");
    // Each message (and the bounce it may cause) is dealt with before the
    // next arrives, so queue IDs appear in the log in the same order in
    // both runs and normalise to the same names.
    let send = |to: &str, subject: String| {
        submit(
            &inst,
            &from,
            &[to],
            &format!("Subject: {subject}\n\nhello\n"),
        );
        wait(&inst, GUARD, "the queue to settle", |i| {
            i.queue_ids("incoming").is_empty() && i.queue_ids("active").is_empty()
        });
    };
    for i in 0..3 {
        send(&alice, format!("local {i}"));
        send(&format!("r{i}@relay.example"), format!("relayed {i}"));
    }
    for i in 0..2 {
        send(&nobody, format!("bounced {i}"));
        send(&format!("d{i}@deferred.example"), format!("deferred {i}"));
    }
    wait(&inst, GUARD, "deliveries, bounces and deferrals", |i| {
        sink.received() == 3
            && i.queue_ids("deferred").len() == 2
            && i.queue_ids("incoming").is_empty()
            && i.queue_ids("active").is_empty()
            && i.mailbox("sender")
                .matches("Subject: Undelivered Mail")
                .count()
                == 2
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = snapshot(&inst, &[&sink], &["alice", "sender"]);
    (out, (pflogsumm(&inst), qshape(&inst)))
}

/// pflogsumm's report of the instance's log, without clock- and
/// size-dependent parts.
fn pflogsumm(inst: &Instance) -> Vec<String> {
    let mut c = Command::new("pflogsumm");
    c.args(["--detail", "10"]).arg(inst.maillog_path());
    let text = ok(cmd::run_ok(c, None, GUARD)).stdout;
    let mut out = Vec::new();
    let mut skip_section = false;
    for line in text.lines() {
        // Clock-dependent tables and the size rankings (sizes vary with
        // queue ID length) go whole.
        if line.starts_with("Per-Hour Traffic Summary")
            || line.starts_with("Per-Day Traffic Summary")
            || line.contains("by message size")
        {
            skip_section = true;
            continue;
        }
        if skip_section {
            if line.trim().is_empty() {
                skip_section = false;
            }
            continue;
        }
        if line.contains("bytes") || line.contains("daemon started") {
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        let numeric = |i: usize| cols.get(i).is_some_and(|c| c.parse::<u64>().is_ok());
        if cols.len() == 8 && numeric(0) && numeric(2) && cols[4] == "s" {
            // Delivery summary: count, defers, host (no bytes, no delays).
            out.push(format!("{} {} {}", cols[0], cols[2], cols[7]));
        } else if cols.len() == 3 && numeric(0) && numeric(1) {
            // Received summary: count and host, no bytes.
            out.push(format!("{} {}", cols[0], cols[2]));
        } else {
            out.push(mask_port(line.trim_end()));
        }
    }
    out
}

/// `host[addr]:PORT` with the port masked: the closed port is chosen per
/// run.
fn mask_port(line: &str) -> String {
    match line.find("]:") {
        Some(i) => {
            let rest = &line[i + 2..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            format!("{}]:PORT{}", &line[..i], &rest[digits..])
        }
        None => line.to_string(),
    }
}

/// qshape's table of the deferred queue.
fn qshape(inst: &Instance) -> Vec<String> {
    let mut c = Command::new("qshape");
    c.arg("-c").arg(inst.config_dir()).arg("deferred");
    let text = ok(cmd::run_ok(c, None, GUARD)).stdout;
    text.lines().map(|l| l.trim_end().to_string()).collect()
}

#[test]
fn reports_match_stock_qmgr() {
    let ((stock, (stock_pfl, stock_qs)), (ours, (our_pfl, our_qs))) = run_both_with(run);
    assert_same("mixed run for reports", &stock, &ours);
    assert!(
        stock_pfl.iter().any(|l| l.contains("delivered")),
        "pflogsumm produced a report: {stock_pfl:#?}"
    );
    assert_eq!(stock_pfl, our_pfl, "pflogsumm reports differ");
    assert!(
        stock_qs.iter().any(|l| l.contains("deferred.example")),
        "qshape shows the deferred domain: {stock_qs:#?}"
    );
    assert_eq!(stock_qs, our_qs, "qshape reports differ");
}
