//! What a differential scenario compares between the stock qmgr and rqmgr.
//!
//! A scenario runs twice, once per queue manager, each time on a fresh
//! private Postfix instance, and ends by taking an [`Outcome`]: what each
//! recipient got (smtp-sink dumps, local mailboxes, DSN subjects), what
//! stayed in which queue with which mode and retry time, and the queue
//! manager's own log lines. Everything that legitimately differs between
//! two runs is normalised away: queue IDs (numbered by first appearance in
//! the log), process IDs, times and delays, and file times (kept as
//! "seconds after the file's arrival", compared within `TIME_SLACK`).
//!
//! Log lines are compared as sorted multisets, because the order in which
//! concurrent deliveries finish is not deterministic even for the stock
//! qmgr; a scenario that cares about order says so itself.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use rqmgr_harness::{Instance, QueueManager, SmtpSink};

/// File times may differ by scheduling jitter between the two runs.
const TIME_SLACK: i64 = 5;

/// One queue file's state, normalised.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct FileState {
    /// Permission bits (0700 ready, 0710 force-expired, ...).
    pub mode: u32,
    /// mtime minus the arrival time in its `T` record: the retry schedule
    /// Postfix's backoff rule gives. Compared within `TIME_SLACK`.
    pub retry_after: i64,
}

/// Everything a scenario compares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Recipients the sink(s) received, sorted (one entry per delivery).
    pub sink_recipients: Vec<String>,
    /// Per local user: the subjects of the messages in the mailbox, sorted.
    pub mailboxes: BTreeMap<String, Vec<String>>,
    /// Per queue: the states of its files, sorted.
    pub queues: BTreeMap<String, Vec<FileState>>,
    /// The queue manager's log lines, normalised and sorted.
    pub qmgr_log: Vec<String>,
}

/// Queues whose contents a scenario's outcome includes.
const QUEUES: [&str; 6] = [
    "incoming", "active", "deferred", "hold", "corrupt", "maildrop",
];

/// Takes the outcome of a run. `users` are the local users whose
/// mailboxes count.
pub(crate) fn snapshot(inst: &Instance, sinks: &[&SmtpSink], users: &[&str]) -> Outcome {
    let sink_recipients = sink_recipients(sinks);
    let mut mailboxes = BTreeMap::new();
    for user in users {
        let mbox = inst.mailbox(user);
        let mut subjects: Vec<String> = mbox
            .lines()
            .filter_map(|l| l.strip_prefix("Subject: "))
            .map(str::to_string)
            .collect();
        subjects.sort();
        mailboxes.insert((*user).to_string(), subjects);
    }
    let mut queues = BTreeMap::new();
    for q in QUEUES {
        let mut files: Vec<FileState> = inst
            .queue_ids(q)
            .iter()
            .filter_map(|id| inst.queue_file_path(q, id))
            .filter_map(|p| file_state(&p))
            .collect();
        files.sort();
        queues.insert(q.to_string(), files);
    }
    Outcome {
        sink_recipients,
        mailboxes,
        queues,
        qmgr_log: qmgr_lines(inst),
    }
}

/// A local port nothing listens on: a destination that refuses
/// connections. It comes from the kernel's ephemeral range, where the
/// harness never puts a listener (its leased ports lie below that range).
pub(crate) fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The recipients the sinks received (one entry per delivery), sorted.
pub(crate) fn sink_recipients(sinks: &[&SmtpSink]) -> Vec<String> {
    let mut all: Vec<String> = sinks
        .iter()
        .flat_map(|s| s.messages())
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.strip_prefix("X-Rcpt-Args:"))
                .map(|a| a.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    all.sort();
    all
}

/// The queue manager's lines of the instance's log, normalised, sorted.
/// Both queue managers log as `postfix/qmgr` (rqmgr is installed under
/// that name), so the program name is part of the comparison. Message
/// sizes are normalised too: the same message differs by a byte or two
/// between runs because its queue ID, whose length varies with the inode
/// number, is part of its Received: header. (The e2e tests check sizes.)
pub(crate) fn qmgr_lines(inst: &Instance) -> Vec<String> {
    let program = inst.queue_manager().log_program();
    let mut lines: Vec<String> = inst
        .log()
        .normalized()
        .into_iter()
        .filter(|l| l.starts_with(&format!("{program}[")))
        .map(|l| normalize_size(&l))
        .collect();
    lines.sort();
    lines
}

fn normalize_size(line: &str) -> String {
    line.split(' ')
        .map(|w| match w.strip_prefix("size=") {
            Some(rest)
                if rest
                    .trim_end_matches(',')
                    .bytes()
                    .all(|b| b.is_ascii_digit()) =>
            {
                let comma = if rest.ends_with(',') { "," } else { "" };
                format!("size=S{comma}")
            }
            _ => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn file_state(path: &std::path::Path) -> Option<FileState> {
    let md = std::fs::metadata(path).ok()?;
    let arrival = arrival_time(path).unwrap_or(md.mtime());
    let after = md.mtime() - arrival;
    Some(FileState {
        mode: md.mode() & 0o7777,
        retry_after: after,
    })
}

/// Seconds from the file's `T` record (arrival).
fn arrival_time(path: &std::path::Path) -> Option<i64> {
    let t = crate::support::record_payload(path, b'T')?;
    std::str::from_utf8(&t)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Runs `scenario` with the stock qmgr and with rqmgr, returning both
/// outcomes (stock first).
pub(crate) fn run_both(scenario: impl Fn(QueueManager) -> Outcome) -> (Outcome, Outcome) {
    let stock = scenario(QueueManager::Stock);
    let ours = scenario(crate::common::rqmgr());
    (stock, ours)
}

/// Asserts two outcomes are equal, showing both in full when not.
pub(crate) fn assert_same(what: &str, stock: &Outcome, ours: &Outcome) {
    assert_eq!(
        stock.sink_recipients, ours.sink_recipients,
        "{what}: sink deliveries differ"
    );
    assert_eq!(stock.mailboxes, ours.mailboxes, "{what}: mailboxes differ");
    assert!(
        same_queues(stock, ours),
        "{what}: queue states differ\nstock: {:?}\nrqmgr: {:?}",
        stock.queues,
        ours.queues
    );
    assert_eq!(
        stock.qmgr_log,
        ours.qmgr_log,
        "{what}: queue manager log lines differ\nstock:\n{}\nrqmgr:\n{}",
        stock.qmgr_log.join("\n"),
        ours.qmgr_log.join("\n")
    );
}

/// Same files in the same queues with the same modes, and retry times
/// within `TIME_SLACK` of each other (scheduling jitter between runs).
fn same_queues(a: &Outcome, b: &Outcome) -> bool {
    a.queues.len() == b.queues.len()
        && a.queues.iter().zip(&b.queues).all(|((qa, fa), (qb, fb))| {
            qa == qb
                && fa.len() == fb.len()
                && fa.iter().zip(fb).all(|(x, y)| {
                    x.mode == y.mode && (x.retry_after - y.retry_after).abs() <= TIME_SLACK
                })
        })
}

/// Waits until `f` holds, panicking with the log tail after `timeout`.
pub(crate) fn wait(inst: &Instance, timeout: Duration, what: &str, f: impl Fn(&Instance) -> bool) {
    let start = std::time::Instant::now();
    while !f(inst) {
        if start.elapsed() > timeout {
            panic!("timed out waiting for {what}\n{}", inst.maillog());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
