//! A bounce service that accepts a request and never answers must not stop
//! the queue manager: notices are asynchronous in Postfix (abounce,
//! adefer, atrace), so only the message waiting for its notice waits.
//!
//! A message is deferred (its defer log exists), the defer service is then
//! pointed at a socket that accepts and never answers, and the message is
//! force-expired: its expiry notice hangs. New mail must still be
//! delivered, and the expired message waits in `active/` for its notice.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{instance_with_sink, ok, rqmgr, GUARD};
use rqmgr_harness::{QueueManager, SinkMode};

const HUNG_SERVICE: &str = "hungdefer";
const NEW_MESSAGES: usize = 3;

/// A UNIX socket that accepts connections and holds them unanswered until
/// dropped.
struct HungService {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HungService {
    fn start(path: &std::path::Path) -> HungService {
        let listener = UnixListener::bind(path).expect("bind the hung service");
        // The queue manager runs as postfix and must be able to connect.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut held: Vec<UnixStream> = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        HungService {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HungService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn scenario(qm: QueueManager) {
    let (mut sink, inst) = instance_with_sink(qm, SinkMode::SoftReject("RCPT".into()), |b| {
        b.main_cf("minimal_backoff_time", "3600s")
            .main_cf("maximal_backoff_time", "4000s")
            .main_cf("queue_run_delay", "3600s")
    });
    let from = inst.local_address("sender");
    ok(inst.sendmail(&from, &["old@example.com"], "Subject: old\n\nold\n"));
    ok(inst.wait_until(
        |i| i.queue_ids("deferred").len() == 1 && !i.queue_ids("defer").is_empty(),
        GUARD,
    ));
    let id = inst.queue_ids("deferred")[0].clone();

    let _hung = HungService::start(&inst.queue_dir().join("private").join(HUNG_SERVICE));
    let set = Command::new("postconf")
        .arg("-c")
        .arg(inst.config_dir())
        .arg("-e")
        .arg(format!("defer_service_name = {HUNG_SERVICE}"))
        .status()
        .expect("run postconf");
    assert!(set.success());
    ok(inst.reload());
    ok(sink.set_mode(SinkMode::Accept));
    ok(inst.postsuper(&["-e", &id]));
    ok(inst.postqueue(&["-i", &id]));
    let qmgr = inst.queue_manager().log_program();
    let expired = format!("{id}: from=<{from}>, status=force-expired, returned to sender");
    ok(inst.wait_for_log(|l| !l.matching(&qmgr, &expired).is_empty(), GUARD));

    // The expiry notice hangs; new mail goes on.
    for n in 0..NEW_MESSAGES {
        let text = format!("Subject: new {n}\n\nnew {n}\n");
        ok(inst.sendmail(&from, &["new@example.com"], &text));
    }
    ok(sink.wait_received(NEW_MESSAGES, GUARD));
    // The new messages leave active/ once their deliveries are done; the
    // expired one stays there, waiting for its notice.
    ok(inst.wait_until(|i| i.queue_ids("active") == [id.clone()], GUARD));
    assert_eq!(inst.queue_ids("incoming"), Vec::<String>::new());
}

#[test]
fn stock() {
    scenario(QueueManager::Stock);
}

#[test]
fn rqmgr_daemon() {
    scenario(rqmgr());
}
