//! rqmgrctl on a running instance: switch from the stock qmgr to rqmgr and
//! back twice, with mail deferred across each switch; nothing is lost, the
//! new queue manager delivers what the old one deferred, and master.cf
//! after `disable` is byte-identical to before `enable`. Also: `--dry-run`
//! changes nothing, both commands are idempotent, and an oqmgr entry
//! becomes rqmgr in oqmgr's role (logging as oqmgr).

use std::process::Command;

use crate::common::{instance_with_sink, ok, GUARD};
use rqmgr_harness::{Instance, QueueManager, SinkMode};

/// Runs rqmgrctl on `inst`; returns its stdout, panicking on failure.
fn rqmgrctl(inst: &Instance, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rqmgrctl"))
        .arg("-c")
        .arg(inst.config_dir())
        .args(args)
        .output()
        .expect("run rqmgrctl");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "rqmgrctl {args:?}: {stdout}{stderr}");
    stdout
}

/// Installs rqmgr into the instance's daemon_directory, as the package
/// does.
fn install_rqmgr(inst: &Instance) {
    std::fs::copy(env!("CARGO_BIN_EXE_rqmgr"), inst.daemon_path("rqmgr")).expect("install rqmgr");
}

fn master_cf(inst: &Instance) -> Vec<u8> {
    std::fs::read(inst.config_dir().join("master.cf")).expect("read master.cf")
}

/// Sends `n` messages numbered from `first`.
fn send(inst: &Instance, first: usize, n: usize) {
    for k in first..first + n {
        let text = format!("Subject: m{k}\n\nm{k}\n");
        ok(inst.sendmail(
            &inst.local_address("sender"),
            &[&format!("m{k}@example.com")],
            &text,
        ));
    }
}

/// Waits until the queue manager running `program` brought `count`
/// messages into the active queue (its `(queue active)` lines, by pid).
fn wait_activated_by(inst: &Instance, program: &str, count: usize) {
    let pids = inst.daemon_pids(program);
    assert!(!pids.is_empty(), "{program} runs");
    let activated = |l: &rqmgr_harness::Maillog| {
        l.text()
            .lines()
            .filter(|line| {
                line.contains("(queue active)")
                    && pids.iter().any(|p| line.contains(&format!("qmgr[{p}]: ")))
            })
            .count()
    };
    ok(inst.wait_for_log(|l| activated(l) >= count, GUARD));
}

#[test]
fn switch_over_and_back_twice_losing_nothing() {
    let (mut sink, inst) = instance_with_sink(QueueManager::Stock, SinkMode::Accept, |b| {
        b.main_cf("minimal_backoff_time", "300s")
            .main_cf("maximal_backoff_time", "600s")
            .main_cf("queue_run_delay", "300s")
    });
    install_rqmgr(&inst);
    let original = master_cf(&inst);

    // A dry run changes nothing.
    let plan = rqmgrctl(&inst, &["--dry-run", "enable"]);
    assert!(plan.contains("qmgr -> rqmgr"), "{plan}");
    assert_eq!(master_cf(&inst), original);

    // 1: enable; new mail goes through rqmgr.
    rqmgrctl(&inst, &["enable"]);
    assert_ne!(master_cf(&inst), original);
    assert!(rqmgrctl(&inst, &["status"]).starts_with("enabled\n"));
    let again = rqmgrctl(&inst, &["enable"]);
    assert!(again.contains("already"), "{again}");
    send(&inst, 0, 3);
    ok(sink.wait_received(3, GUARD));
    wait_activated_by(&inst, "rqmgr", 3);
    // Neither the records nor rqmgr's state directory upset `postfix
    // check` (everything under data_directory must be mail_owner's).
    let check = ok(inst.postfix_cmd(&["check"]));
    let warnings: Vec<&str> = check
        .stderr
        .lines()
        .filter(|l| l.contains("warning") && !l.contains("unused parameter: rqmgr_"))
        .collect();
    assert!(warnings.is_empty(), "postfix check: {warnings:?}");

    // 2: defer mail under rqmgr, disable, the stock qmgr delivers it.
    ok(sink.set_mode(SinkMode::SoftReject("RCPT".into())));
    send(&inst, 3, 3);
    ok(inst.wait_until(|i| i.queue_ids("deferred").len() == 3, GUARD));
    rqmgrctl(&inst, &["disable"]);
    assert_eq!(master_cf(&inst), original, "master.cf as before enable");
    assert!(rqmgrctl(&inst, &["status"]).starts_with("disabled\n"));
    let again = rqmgrctl(&inst, &["disable"]);
    assert!(again.contains("not the queue manager"), "{again}");
    ok(sink.set_mode(SinkMode::Accept));
    ok(inst.postqueue_flush());
    ok(sink.wait_received(6, GUARD));
    ok(inst.wait_queue_empty(GUARD));

    // 3: defer mail under the stock qmgr, enable, rqmgr delivers it.
    ok(sink.set_mode(SinkMode::SoftReject("RCPT".into())));
    send(&inst, 6, 3);
    ok(inst.wait_until(|i| i.queue_ids("deferred").len() == 3, GUARD));
    rqmgrctl(&inst, &["enable"]);
    ok(sink.set_mode(SinkMode::Accept));
    ok(inst.postqueue_flush());
    ok(sink.wait_received(9, GUARD));
    ok(inst.wait_queue_empty(GUARD));
    wait_activated_by(&inst, "rqmgr", 3);

    // 4: back to stock for good.
    rqmgrctl(&inst, &["disable"]);
    assert_eq!(master_cf(&inst), original, "master.cf as before enable");
    assert_eq!(sink.received(), 9, "each message delivered once");
}

#[test]
fn an_oqmgr_entry_becomes_rqmgr_in_the_oqmgr_role() {
    let (sink, inst) = instance_with_sink(QueueManager::Stock, SinkMode::Accept, |b| {
        b.master_cf_line("qmgr unix n - n 300 1 oqmgr")
    });
    install_rqmgr(&inst);
    let original = master_cf(&inst);
    rqmgrctl(&inst, &["enable"]);
    let status = rqmgrctl(&inst, &["status"]);
    assert!(
        status.contains("rqmgr -o rqmgr_scheduler=oqmgr"),
        "{status}"
    );
    send(&inst, 0, 2);
    ok(sink.wait_received(2, GUARD));
    let pid = inst.daemon_pids("rqmgr")[0];
    ok(inst.wait_for_log(|l| l.count(&format!("postfix/oqmgr[{pid}]: ")) >= 2, GUARD));
    rqmgrctl(&inst, &["disable"]);
    assert_eq!(master_cf(&inst), original);
}
