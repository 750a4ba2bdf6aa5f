//! Helpers the trigger, flow and defer_transports scenarios share: raw
//! trigger writes, flush(8)-style requeueing, numbered submissions.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, SystemTime};

use crate::common::{ok, GUARD};
use rqmgr_harness::Instance;

/// Settings that keep the queue manager from retrying on its own during
/// a scenario: every scan is one the scenario asked for.
pub(crate) fn no_retries(b: rqmgr_harness::InstanceBuilder) -> rqmgr_harness::InstanceBuilder {
    b.main_cf("minimal_backoff_time", "3600s")
        .main_cf("maximal_backoff_time", "4000s")
        .main_cf("queue_run_delay", "3600s")
}

/// Writes `letters` on one connection to `public/qmgr`, then a NUL, as
/// Postfix's trigger clients do. The queue manager reads once and closes,
/// so the NUL may meet a closed socket; that is not an error.
pub(crate) fn raw_trigger(inst: &Instance, letters: &[u8]) {
    let path = inst.queue_dir().join("public/qmgr");
    let mut s = UnixStream::connect(&path).unwrap_or_else(|e| panic!("connect {path:?}: {e}"));
    s.write_all(letters)
        .unwrap_or_else(|e| panic!("write trigger: {e}"));
    let _ = s.write_all(b"\0");
}

/// Sends message `n` (Subject `mNN`: all the same size, so that log
/// lines differ only in queue ids) from `sender` to `to`, and waits until
/// pickup has taken it in: pickup walks maildrop in directory order, and
/// the log's queue id numbering (first appearance) must follow submission
/// order for two runs to compare.
pub(crate) fn send(inst: &Instance, n: usize, to: &str) {
    let from = inst.local_address("sender");
    let text = format!("Subject: m{n:02}\n\nmessage {n:02}\n");
    let before = submitted(inst).len();
    ok(inst.sendmail(&from, &[to], &text));
    ok(inst.wait_until(|i| submitted(i).len() > before, GUARD));
}

/// Queue ids in submission order (pickup's `uid=` lines; see [`send`]).
pub(crate) fn submitted(inst: &Instance) -> Vec<String> {
    inst.log().queue_ids_logged("postfix/pickup", "uid=")
}

/// Waits until `n` lines containing `needle` were logged.
pub(crate) fn wait_count(inst: &Instance, needle: &str, n: usize) {
    ok(inst.wait_for_log(|l| l.count(needle) >= n, GUARD));
}

/// Waits until `deferred/` holds exactly `n` files and nothing else is
/// queued.
pub(crate) fn wait_deferred(inst: &Instance, n: usize) {
    ok(inst.wait_until(
        |i| i.queue_ids("deferred").len() == n && i.queued_count() == n,
        GUARD,
    ));
}

/// Moves a deferred file to `incoming/` stamped now, exactly as flush(8)
/// does for a fast flush (without touching its mode).
pub(crate) fn deferred_to_incoming(inst: &Instance, id: &str) {
    let from = inst
        .queue_file_path("deferred", id)
        .unwrap_or_else(|| panic!("{id} is not in deferred/"));
    let now = SystemTime::now();
    let f = std::fs::File::options()
        .write(true)
        .open(&from)
        .unwrap_or_else(|e| panic!("open {from:?}: {e}"));
    f.set_times(
        std::fs::FileTimes::new()
            .set_accessed(now)
            .set_modified(now),
    )
    .unwrap_or_else(|e| panic!("utime {from:?}: {e}"));
    drop(f);
    let to = inst.queue_dir().join("incoming").join(id);
    std::fs::rename(&from, &to).unwrap_or_else(|e| panic!("rename {from:?}: {e}"));
}

/// Gives the queue manager time to act on something it should ignore;
/// the scenario then compares what it did (nothing) with the stock qmgr.
pub(crate) fn settle() {
    std::thread::sleep(Duration::from_secs(2));
}
