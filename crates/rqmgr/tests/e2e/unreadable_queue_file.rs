//! A well-formed queue file the queue manager cannot open (owned by root,
//! mode 0700, as after a queue restored by root) is not corrupt: the open
//! failure is fatal (`fatal: open active ID: Permission denied`), the file
//! stays in `active/`, master restarts the queue manager after its throttle
//! time, and once the owner is fixed the mail is delivered. Only ENOENT is
//! harmless (`qmgr_message_open()`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{instance_with_sink, ok, rqmgr, GUARD};
use rqmgr_harness::{QueueManager, SinkMode};
use rqmgr_queue::writer::QueueFileBuilder;

const ID: &str = "ABCDEF01235";

/// Wakes the queue manager with `I` on `public/qmgr` directly: postkick
/// through the harness gives up once the queue manager has failed, which is
/// what this scenario expects it to do. A refused connection (master is
/// still throttling the service) is fine: the restarted queue manager scans
/// `incoming/` anyway.
fn kick(inst: &rqmgr_harness::Instance) {
    use std::io::Write;
    if let Ok(mut s) = std::os::unix::net::UnixStream::connect(inst.queue_dir().join("public/qmgr"))
    {
        let _ = s.write_all(b"I");
    }
}

fn scenario(qm: QueueManager) {
    let (sink, inst) = instance_with_sink(qm, SinkMode::Accept, |b| {
        b.main_cf("service_throttle_time", "2s")
    });
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let mut file = QueueFileBuilder::new(i64::try_from(now).unwrap_or(0), 0);
    file.sender(inst.local_address("sender"))
        .recipient("user@example.com")
        .body(["Subject: restored as root", "", "hello"]);
    let planted = ok(inst.plant_queue_file("incoming", ID, &file.build()));
    let root = Some(nix::unistd::Uid::from_raw(0));
    nix::unistd::chown(&planted, root, Some(nix::unistd::Gid::from_raw(0))).expect("chown root");
    kick(&inst);
    let fatal = format!("fatal: open active {ID}: Permission denied");
    let qmgr = inst.queue_manager().log_program();
    ok(inst.wait_for_log(|l| !l.matching(&qmgr, &fatal).is_empty(), GUARD));
    let log = inst.log();
    assert!(
        log.matching(&qmgr, "saving corrupt file").is_empty(),
        "{}",
        log.text()
    );
    assert!(inst.queue_ids("corrupt").is_empty());
    // The file waits in active/ (or, once a restarted queue manager moved
    // it back, in incoming/) until its owner is fixed.
    let path = ok(rqmgr_harness::poll(GUARD, || {
        Ok(inst
            .queue_file_path("active", ID)
            .or_else(|| inst.queue_file_path("incoming", ID)))
    }));
    let postfix = nix::unistd::User::from_name("postfix")
        .ok()
        .flatten()
        .expect("user postfix");
    nix::unistd::chown(&path, Some(postfix.uid), Some(postfix.gid)).expect("chown postfix");
    kick(&inst);
    ok(sink.wait_received(1, GUARD));
    // Polled plainly: the harness's own waits fail on the fatal line this
    // scenario expects, if the removal comes a moment after the sink's
    // receipt.
    ok(rqmgr_harness::poll(GUARD, || {
        Ok((inst.queued_count() == 0).then_some(()))
    }));
}

#[test]
fn stock() {
    scenario(QueueManager::Stock);
}

#[test]
fn rqmgr_daemon() {
    scenario(rqmgr());
}
