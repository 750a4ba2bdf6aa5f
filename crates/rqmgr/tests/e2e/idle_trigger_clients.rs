//! Trigger clients that connect to `public/qmgr` and never write: rqmgr
//! reads at most a bounded number of them at once (each reader waits up to
//! 10 s for its letters), so a crowd of idle clients cannot take all its
//! descriptors, and mail is still delivered (new mail waits behind the idle
//! clients in the listen queue, a few 10-second turns). rqmgr's own: the
//! stock qmgr reads trigger clients one after another, each for up to 10 s.

use std::os::unix::net::UnixStream;

use crate::common::{instance_with_sink, ok, rqmgr, GUARD};
use rqmgr_harness::SinkMode;

const IDLE_CLIENTS: usize = 80;
const MESSAGES: usize = 3;
/// Trigger clients rqmgr reads at once (runtime.rs, `TRIGGER_READERS`).
const READERS: usize = 32;

fn open_descriptors(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn idle_trigger_clients_are_bounded_and_mail_flows() {
    let (sink, inst) = instance_with_sink(rqmgr(), SinkMode::Accept, |b| b);
    let pid = ok(inst.wait_for_qmgr(GUARD));
    // Counted once start-up is done: the admin socket is among the last
    // descriptors rqmgr opens.
    let admin = inst.queue_dir().join("private/rqmgr");
    ok(inst.wait_until(|_| admin.exists(), GUARD));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let before = open_descriptors(pid);
    let path = inst.queue_dir().join("public/qmgr");
    // Connects that would wait for a full listen queue are given up.
    let idle: Vec<UnixStream> = (0..IDLE_CLIENTS)
        .filter_map(|_| {
            let s = UnixStream::connect(&path).ok()?;
            s.set_nonblocking(true).ok()?;
            Some(s)
        })
        .collect();
    assert!(idle.len() >= 72, "only {} clients connected", idle.len());
    std::thread::sleep(std::time::Duration::from_secs(1));
    let during = open_descriptors(pid);
    // At most READERS clients are read at once; a few more descriptors
    // (trivial-rewrite, an agent) may come and go meanwhile.
    assert!(
        during <= before + READERS + 8,
        "{during} descriptors with {} idle clients (before: {before})",
        idle.len()
    );
    let from = inst.local_address("sender");
    for n in 0..MESSAGES {
        let text = format!("Subject: m{n}\n\nmessage {n}\n");
        ok(inst.sendmail(&from, &["user@example.com"], &text));
    }
    ok(sink.wait_received(MESSAGES, GUARD));
    ok(inst.wait_queue_empty(GUARD));
    drop(idle);
    let log = inst.log();
    let errors: Vec<_> = log
        .of_program("postfix/qmgr")
        .into_iter()
        .filter(|l| l.text.starts_with("error:") || l.text.starts_with("fatal:"))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}
