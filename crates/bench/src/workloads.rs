//! The benchmark workloads and the measuring loop they share.
//!
//! Job: for one (workload, queue manager) pair, build a fresh private
//! instance, stop it, fill its queue with prepared files, start it again and
//! measure until the workload's end condition holds; return one
//! [`Measurement`] per reported phase.
//!
//! Invariants: every instance and sink is owned by a local variable, so it
//! is stopped (and its directory removed) when the run ends, also on error
//! or panic. The queue manager's CPU time and peak RSS are read from `/proc`
//! before the instance stops. Wall time starts when the queue manager
//! process starts (its `/proc` start time, 10 ms resolution) and ends when
//! the poller sees the end condition (at most one poll interval late, plus
//! postlogd's lag). Nothing here asserts a timing: timeouts only guard
//! against hangs.
//!
//! Limits: the "removed"/"(queue active)" counts come from the mail log, so
//! a queue manager must log like Postfix's for the end conditions to fire
//! (rqmgr does); a drain is confirmed by one walk of the queue at the end.

use rqmgr_harness::{Instance, QueueManager, SinkMode, SmtpSink};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::prepare::{Filler, Placement};
use crate::probe::{LogCounter, QmgrTracker};
use crate::scrape::Scraper;
use crate::BenchResult;

/// Guard against hangs for one phase (never a speed requirement).
const GUARD: Duration = Duration::from_secs(1800);

/// How often the health check re-reads the whole mail log.
const HEALTH_EVERY: Duration = Duration::from_secs(10);

/// Sizes of the workloads (full or `--quick`).
#[derive(Debug, Clone)]
pub(crate) struct Sizes {
    /// Messages in the small discard drain.
    pub discard_small: usize,
    /// Messages in the large discard drain.
    pub discard_large: usize,
    /// Messages in the smtp drain.
    pub smtp: usize,
    /// Recipients of the fan-out message.
    pub fanout_rcpts: usize,
    /// Domains they are spread over.
    pub fanout_domains: usize,
    /// Messages in the deferred queue.
    pub deferred: usize,
    /// Length of the deferred-scan observation window.
    pub deferred_window: Duration,
    /// Messages waiting in the active queue for the memory workload.
    pub active_full: usize,
    /// Recipients in all of one small-message run (its messages have
    /// 2, 3, 5, 10 or 20 recipients each).
    pub small_rcpts: usize,
    /// Messages in the mixed stream.
    pub mixed: usize,
}

impl Sizes {
    /// The sizes of the full benchmark.
    pub(crate) fn full() -> Sizes {
        Sizes {
            discard_small: 20_000,
            discard_large: 100_000,
            smtp: 20_000,
            fanout_rcpts: 10_000,
            fanout_domains: 100,
            deferred: 100_000,
            deferred_window: Duration::from_secs(15),
            active_full: 20_000,
            small_rcpts: 20_000,
            mixed: 10_000,
        }
    }

    /// Small sizes for a smoke run.
    pub(crate) fn quick() -> Sizes {
        Sizes {
            discard_small: 2_000,
            discard_large: 5_000,
            smtp: 1_000,
            fanout_rcpts: 1_000,
            fanout_domains: 10,
            deferred: 5_000,
            deferred_window: Duration::from_secs(4),
            active_full: 2_000,
            small_rcpts: 2_000,
            mixed: 1_000,
        }
    }
}

/// The workloads, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Workload {
    /// Drain `discard_small` single-recipient messages via discard.
    Discard,
    /// Drain `discard_large` single-recipient messages via discard.
    DiscardLarge,
    /// Drain `smtp` messages via smtp to smtp-sink.
    Smtp,
    /// One message to `fanout_rcpts` recipients over `fanout_domains`
    /// domains, via discard.
    Fanout,
    /// A deferred queue with 1% due: scan cost, then `postqueue -f`.
    Deferred,
    /// Fill the active queue while the destination is slow (memory).
    ActiveFull,
    /// Messages of 2, 3, 5, 10 and 20 recipients in one domain, via
    /// discard (one run per size, `small_rcpts` recipients each).
    Small,
    /// The same, each message's recipients in as many domains.
    SmallSpread,
    /// The small messages through smtp to smtp-sink (one domain).
    SmallSmtp,
    /// A mixed stream via discard: mostly one recipient, some small lists,
    /// a few of 100 recipients.
    Mixed,
    /// The mixed stream through smtp to smtp-sink.
    MixedSmtp,
    /// rqmgr only: `rqmgrctl flush` of one destination's 100 deferred
    /// messages, in a deferred queue of `deferred` messages over as many
    /// destinations of 100, and in one of 1,000 (not in `ALL`).
    FlushOne,
}

impl Workload {
    /// Every workload, in the order they run.
    pub(crate) const ALL: [Workload; 11] = [
        Workload::Discard,
        Workload::DiscardLarge,
        Workload::Smtp,
        Workload::Fanout,
        Workload::Deferred,
        Workload::ActiveFull,
        Workload::Small,
        Workload::SmallSpread,
        Workload::SmallSmtp,
        Workload::Mixed,
        Workload::MixedSmtp,
    ];
}

/// One measured phase of one run.
#[derive(Debug, Clone)]
pub(crate) struct Measurement {
    /// Row name in the report, e.g. `discard 20000`.
    pub row: String,
    /// Units the per-unit CPU is divided by (messages, or recipients).
    pub units: usize,
    /// Wall-clock seconds.
    pub wall: f64,
    /// Queue manager CPU seconds (utime + stime, all its processes).
    pub cpu: f64,
    /// The user-space part of `cpu` (utime).
    pub user: f64,
    /// Peak RSS of the queue manager, kB.
    pub hwm_kb: u64,
    /// Queue manager restarts during the run.
    pub restarts: u32,
    /// Context switches of the queue manager.
    pub ctxsw: u64,
    /// CPU seconds the host took from this machine (steal, all CPUs)
    /// from the queue manager's start to the measurement: a run with
    /// much of it was slowed from outside.
    pub steal: f64,
    /// CPU seconds the whole machine ran anything (all CPUs) over the
    /// same span as `cpu`: with two vCPUs, a drain whose `busy` is near
    /// twice its wall time was bound by CPU, one well below it waited.
    pub busy: f64,
    /// The most messages in the active queue at once, from the queue
    /// manager's log lines (see `LogCounter::peak_active`; exact for the
    /// drains, an upper bound where messages are deferred).
    pub peak_active: usize,
    /// The mean number of messages in the active queue over the queue
    /// manager's events (see `LogCounter::mean_active`).
    pub mean_active: f64,
}

/// Settings shared by all runs.
#[derive(Debug, Clone)]
pub(crate) struct RunConfig {
    /// Workload sizes.
    pub sizes: Sizes,
    /// Poll interval of the measuring loop.
    pub poll: Duration,
    /// Clock ticks per second.
    pub ticks: f64,
    /// When set, every queue manager is recorded with `perf record -g` into
    /// this directory.
    pub perf_dir: Option<PathBuf>,
    /// `perf record`'s sampling rate, in Hz.
    pub perf_freq: u32,
    /// When set, every queue manager is watched by `strace -c` into this
    /// directory (syscall counts; slows the queue manager down).
    pub strace_dir: Option<PathBuf>,
    /// When set, rqmgr runs are scraped on the admin socket this often
    /// (scrape.rs); the answer times are printed per run.
    pub scrape_every: Option<Duration>,
    /// main.cf settings for every instance (`--main-cf`).
    pub main_cf: Vec<(String, String)>,
}

/// Runs `w` once with queue manager `qm` (labelled `label`).
pub(crate) fn run(
    cfg: &RunConfig,
    w: Workload,
    qm: &QueueManager,
    label: &str,
    round: usize,
) -> BenchResult<Vec<Measurement>> {
    let s = &cfg.sizes;
    let rcpt = |i: usize| format!("user{i}@example.com");
    match w {
        Workload::Discard | Workload::DiscardLarge => {
            let n = if w == Workload::Discard {
                s.discard_small
            } else {
                s.discard_large
            };
            let mut r = Run::new(cfg, qm, None, label, round, w)?;
            r.fill(|f| (0..n).try_for_each(|i| f.write(&[rcpt(i)], Placement::Incoming)))?;
            Ok(vec![r.drain(n, format!("discard {n}"), n)?])
        }
        Workload::Smtp => {
            let n = s.smtp;
            let mut r = Run::new(cfg, qm, Some(SinkMode::Accept), label, round, w)?;
            r.fill(|f| (0..n).try_for_each(|i| f.write(&[rcpt(i)], Placement::Incoming)))?;
            Ok(vec![r.drain(n, format!("smtp {n}"), n)?])
        }
        Workload::Fanout => {
            let (n, d) = (s.fanout_rcpts, s.fanout_domains.max(1));
            let rcpts: Vec<String> = (0..n).map(|i| format!("u{i}@d{}.example", i % d)).collect();
            let mut r = Run::new(cfg, qm, None, label, round, w)?;
            r.fill(|f| f.write(&rcpts, Placement::Incoming))?;
            Ok(vec![r.drain(1, format!("fanout 1x{n} rcpt/{d} dom"), n)?])
        }
        Workload::Deferred => deferred(cfg, qm, label, round),
        Workload::FlushOne => {
            if !matches!(qm, QueueManager::Rqmgr(_)) {
                return Ok(Vec::new());
            }
            let mut rows = Vec::new();
            for n in [1_000, s.deferred] {
                rows.push(flush_one(cfg, qm, label, round, n)?);
            }
            Ok(rows)
        }
        Workload::Small | Workload::SmallSpread | Workload::SmallSmtp => {
            small(cfg, w, qm, label, round)
        }
        Workload::Mixed | Workload::MixedSmtp => {
            let n = s.mixed;
            let sink = (w == Workload::MixedSmtp).then_some(SinkMode::Accept);
            let how = if sink.is_some() { "smtp" } else { "discard" };
            let mut r = Run::new(cfg, qm, sink, label, round, w)?;
            let mut rcpts_total = 0;
            r.fill(|f| {
                (0..n).try_for_each(|i| {
                    let rcpts = mixed_message(i);
                    rcpts_total += rcpts.len();
                    f.write(&rcpts, Placement::Incoming)
                })
            })?;
            let row = format!("mixed {how} {n} msg/{rcpts_total} rcpt");
            Ok(vec![r.drain(n, row, n)?])
        }
        Workload::ActiveFull => {
            let n = s.active_full;
            // Deliveries stall in DATA far longer than the run lasts, so
            // every message stays in the active queue.
            let mut r = Run::new(cfg, qm, Some(SinkMode::SlowData(900)), label, round, w)?;
            r.fill(|f| (0..n).try_for_each(|i| f.write(&[rcpt(i)], Placement::Incoming)))?;
            r.start()?;
            let end = r.wait(|l| l.activated >= n)?;
            Ok(vec![r.measure(format!("active-full {n}"), n, end)])
        }
    }
}

/// Recipients per message of the small-message workloads.
const SMALL_SIZES: [usize; 5] = [2, 3, 5, 10, 20];

/// One run per size in [`SMALL_SIZES`], each of `small_rcpts` recipients
/// in messages of that size; units are messages.
fn small(
    cfg: &RunConfig,
    w: Workload,
    qm: &QueueManager,
    label: &str,
    round: usize,
) -> BenchResult<Vec<Measurement>> {
    let spread = w == Workload::SmallSpread;
    let sink = (w == Workload::SmallSmtp).then_some(SinkMode::Accept);
    let how = match (spread, sink.is_some()) {
        (true, _) => "discard, k domains",
        (false, true) => "smtp, one domain",
        (false, false) => "discard, one domain",
    };
    let mut out = Vec::new();
    for k in SMALL_SIZES {
        let n = (cfg.sizes.small_rcpts / k).max(1);
        let mut r = Run::new(cfg, qm, sink.clone(), label, round, w)?;
        r.fill(|f| {
            (0..n).try_for_each(|i| {
                let rcpts: Vec<String> = (0..k)
                    .map(|j| {
                        let domain = if spread {
                            format!("d{j}.example")
                        } else {
                            "example.com".into()
                        };
                        format!("u{i}x{j}@{domain}")
                    })
                    .collect();
                f.write(&rcpts, Placement::Incoming)
            })
        })?;
        out.push(r.drain(n, format!("small {n}x{k} rcpt ({how})"), n)?);
    }
    Ok(out)
}

/// The recipients of message `i` of the mixed stream: one in 100 has 100
/// recipients (over 10 domains), one in 10 has 2 to 10, the rest one.
fn mixed_message(i: usize) -> Vec<String> {
    let k = if i.is_multiple_of(100) {
        100
    } else if i.is_multiple_of(10) {
        2 + (i / 10) % 9
    } else {
        1
    };
    (0..k)
        .map(|j| format!("m{i}x{j}@d{}.example", j % 10))
        .collect()
}

/// The deferred workload: 1% of the files are due. Phase 1 observes the
/// queue manager for a fixed window after start (its start-up deferred scan
/// skips the 99% not due and delivers the 1%): wall = time until the due
/// ones are removed, CPU = CPU over the window. Phase 2 runs `postqueue -f`
/// and measures until the queue is empty.
fn deferred(
    cfg: &RunConfig,
    qm: &QueueManager,
    label: &str,
    round: usize,
) -> BenchResult<Vec<Measurement>> {
    let n = cfg.sizes.deferred;
    let due = n.div_ceil(100);
    let mut r = Run::new(cfg, qm, None, label, round, Workload::Deferred)?;
    r.fill(|f| {
        (0..n).try_for_each(|i| {
            // Every 100th message is due; the rest wait a week.
            let when = if i % 100 == 0 { -60 } else { 7 * 86_400 };
            f.write(&[format!("user{i}@example.com")], Placement::Deferred(when))
        })
    })?;
    r.start()?;
    let window_end = r.tracker()?.started + cfg.sizes.deferred_window;
    let due_at = r.wait(|l| l.removed >= due)?;
    r.wait(|_| Instant::now() >= window_end)?;
    // Wall is until the due ones are gone; CPU is over the whole window.
    let scan = r.measure(format!("deferred scan {n} (1% due)"), n, due_at);

    let cpu0 = r.tracker()?.cpu();
    let ctx0 = scan.ctxsw;
    let user0 = r.tracker()?.user();
    let machine0 = r.tracker()?.machine();
    let t0 = Instant::now();
    r.inst.postqueue_flush()?;
    let end = r.wait(|l| l.removed >= n)?;
    r.confirm_empty()?;
    let mut flush = r.measure(format!("deferred flush {}", n - due), n - due, end);
    flush.wall = end.duration_since(t0).as_secs_f64();
    flush.cpu -= cpu0;
    flush.user -= user0;
    flush.ctxsw -= ctx0;
    flush.busy = (flush.busy - machine0.busy).max(0.0);
    flush.steal = (flush.steal - machine0.steal).max(0.0);
    Ok(vec![scan, flush])
}

/// Messages per destination in the flush-one workload.
const FLUSH_ONE_EACH: usize = 100;

/// The flush-one workload with `n` deferred messages (a week from due)
/// over `n / 100` destinations of the discard transport, all known to
/// rqmgr's deferred index as a state file saved by an earlier rqmgr gives
/// it (written here in rqmgr's format). After start-up (and its deferred
/// scan) one destination is flushed over the admin socket. Wall = from
/// the request to its 100 messages removed; CPU = over that time. The
/// request's round trip and rqmgr's own time for it go to stderr.
fn flush_one(
    cfg: &RunConfig,
    qm: &QueueManager,
    label: &str,
    round: usize,
    n: usize,
) -> BenchResult<Measurement> {
    let dests = (n / FLUSH_ONE_EACH).max(1);
    let mut r = Run::new(cfg, qm, None, label, round, Workload::FlushOne)?;
    let mut index: Vec<Vec<String>> = vec![Vec::new(); dests];
    r.fill(|f| {
        (0..n).try_for_each(|i| {
            let id = f.write_id(
                &[format!("user{i}@d{}.example", i % dests)],
                Placement::Deferred(7 * 86_400),
            )?;
            index[i % dests].push(id);
            Ok(())
        })
    })?;
    let deferred: Vec<serde_json::Value> = index
        .iter()
        .enumerate()
        .map(|(d, ids)| {
            serde_json::json!({
                "transport": "discard", "nexthop": format!("d{d}.example"), "ids": ids,
            })
        })
        .collect();
    let state = serde_json::json!({
        "format": "rqmgr-state", "version": 1, "saved_at": 0,
        "overrides": [], "learned": [], "deferred": deferred,
    });
    let dir = r.inst.root().join("data/rqmgr/state");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("deferred"), state.to_string())?;
    let user = nix::unistd::User::from_name("postfix")?.ok_or("no postfix user")?;
    for p in [dir.clone(), dir.join("deferred")] {
        std::os::unix::fs::chown(&p, Some(user.uid.as_raw()), Some(user.gid.as_raw()))?;
    }
    r.start()?;
    let socket = r.inst.queue_dir().join("private/rqmgr");
    // Until rqmgr answers and its start-up scan of the deferred queue is
    // over (nothing is due, so nothing is removed meanwhile).
    let answered = |path: &str| crate::scrape::request(&socket, "GET", path);
    let deadline = Instant::now() + GUARD;
    while !answered("/metrics")
        .is_some_and(|m| m.contains("rqmgr_queue_scan_seconds_count{queue=\"deferred\"} 1"))
    {
        if Instant::now() > deadline {
            return Err("rqmgr never finished its deferred scan".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(t) = r.tracker.as_mut() {
        t.poll(&r.inst, false);
    }
    let cpu0 = r.tracker()?.cpu();
    let user0 = r.tracker()?.user();
    let machine0 = r.tracker()?.machine();
    let t0 = Instant::now();
    let path = format!("/flush?transport=discard&nexthop=d{}.example", dests / 2);
    let answer = crate::scrape::request(&socket, "POST", &path).ok_or("flush failed")?;
    let round_trip = t0.elapsed();
    if !answer.contains(&format!("\"released\":{FLUSH_ONE_EACH}")) {
        return Err(format!("flush answered {answer}").into());
    }
    let end = r.wait(|l| l.removed >= FLUSH_ONE_EACH)?;
    let metrics = answered("/metrics").unwrap_or_default();
    let loop_ms = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rqmgr_admin_answer_seconds_sum{endpoint=\"flush\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(f64::NAN, |s| s * 1000.0);
    eprint!(
        "[flush of {FLUSH_ONE_EACH} in {n}: round trip {:.2} ms, rqmgr's loop {loop_ms:.2} ms] ",
        round_trip.as_secs_f64() * 1000.0
    );
    let mut m = r.measure(
        format!("flush-one {FLUSH_ONE_EACH} of {n}"),
        FLUSH_ONE_EACH,
        end,
    );
    m.wall = end.duration_since(t0).as_secs_f64();
    m.cpu -= cpu0;
    m.busy = (m.busy - machine0.busy).max(0.0);
    m.steal = (m.steal - machine0.steal).max(0.0);
    m.user -= user0;
    Ok(m)
}

/// Starts an observer with its output silenced.
fn spawn_quiet(mut c: Command) -> BenchResult<Child> {
    Ok(c.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?)
}

/// One run in progress: the sink (if any), the instance, and the probes.
struct Run<'a> {
    cfg: &'a RunConfig,
    label: String,
    round: usize,
    workload: Workload,
    // Field order matters for drop: observers (perf, strace) first, then the instance (stopped
    // before the sink it relays to disappears), then the sink.
    observers: Vec<Child>,
    inst: Instance,
    _sink: Option<SmtpSink>,
    tracker: Option<QmgrTracker>,
    log: LogCounter,
    last_health: Instant,
    scraper: Option<Scraper>,
    is_rqmgr: bool,
}

impl<'a> Run<'a> {
    fn new(
        cfg: &'a RunConfig,
        qm: &QueueManager,
        sink: Option<SinkMode>,
        label: &str,
        round: usize,
        workload: Workload,
    ) -> BenchResult<Run<'a>> {
        let sink = sink.map(SmtpSink::start).transpose()?;
        let mut b = Instance::builder()
            .queue_manager(qm.clone())
            // Nothing goes through cleanup here, but keep a stopped-qmgr
            // fill from ever stalling on flow control.
            .main_cf("in_flow_delay", "0")
            // rqmgr as installed: saving what its scheduler learns (the
            // test harness turns that off by default).
            .main_cf("rqmgr_learned_state", "yes");
        for (name, value) in &cfg.main_cf {
            b = b.main_cf(name, value);
        }
        if let Some(s) = &sink {
            b = b.relay_to_port(s.port());
        }
        let mut inst = b.start()?;
        inst.stop()?;
        let log = LogCounter::new(&inst.maillog_path(), &qm.log_program());
        Ok(Run {
            cfg,
            label: label.to_string(),
            round,
            workload,
            observers: Vec::new(),
            inst,
            _sink: sink,
            tracker: None,
            log,
            last_health: Instant::now(),
            scraper: None,
            is_rqmgr: matches!(qm, QueueManager::Rqmgr(_)),
        })
    }

    /// Fills the stopped instance's queue.
    fn fill(&mut self, f: impl FnOnce(&Filler) -> BenchResult<()>) -> BenchResult<()> {
        let filler = Filler::new(&self.inst)?;
        f(&filler)?;
        filler.finish()
    }

    /// Starts the instance and attaches the probes (and perf).
    fn start(&mut self) -> BenchResult<()> {
        // Skip what the first start logged.
        self.log.poll();
        self.log.reset_counts();
        self.inst.restart()?;
        let t = QmgrTracker::attach(&self.inst, self.cfg.ticks)?;
        let name = self.observer_file_name();
        if let Some(dir) = &self.cfg.perf_dir {
            let mut c = Command::new("perf");
            c.args([
                "record",
                "-q",
                // DWARF unwinding: Rust release code has no frame
                // pointers; the default rate keeps the files manageable.
                "-F",
                &self.cfg.perf_freq.to_string(),
                "--call-graph",
                "dwarf,8192",
                "-p",
            ])
            .arg(t.pid().to_string())
            .arg("-o")
            .arg(dir.join(format!("{name}.data")));
            self.observers.push(spawn_quiet(c)?);
        }
        if let Some(dir) = &self.cfg.strace_dir {
            let mut c = Command::new("strace");
            c.args(["-c", "-f", "-p"])
                .arg(t.pid().to_string())
                .arg("-o")
                .arg(dir.join(format!("{name}.strace")));
            self.observers.push(spawn_quiet(c)?);
        }
        self.tracker = Some(t);
        if let (Some(every), true) = (self.cfg.scrape_every, self.is_rqmgr) {
            let socket = self.inst.queue_dir().join("private/rqmgr");
            self.scraper = Some(Scraper::start(socket, every));
        }
        Ok(())
    }

    /// The stem of this run's perf and strace files: workload, queue
    /// manager and round, then `-1`, `-2`, ... for the later runs of a
    /// workload that runs several times per round (the small workloads, in
    /// the order of their sizes), so that none overwrites another.
    fn observer_file_name(&self) -> String {
        let base = format!("{:?}-{}-r{}", self.workload, self.label, self.round);
        let taken = |name: &str| {
            let perf = self
                .cfg
                .perf_dir
                .as_ref()
                .map(|d| d.join(format!("{name}.data")));
            let strace = self
                .cfg
                .strace_dir
                .as_ref()
                .map(|d| d.join(format!("{name}.strace")));
            [perf, strace].into_iter().flatten().any(|p| p.exists())
        };
        (0..)
            .map(|n| {
                if n == 0 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                }
            })
            .find(|name| !taken(name))
            .unwrap_or(base)
    }

    fn tracker(&self) -> BenchResult<&QmgrTracker> {
        Ok(self.tracker.as_ref().ok_or("run not started")?)
    }

    /// Polls until `done` holds for the log counts; returns when it did.
    fn wait(&mut self, mut done: impl FnMut(&LogCounter) -> bool) -> BenchResult<Instant> {
        let deadline = Instant::now() + GUARD;
        loop {
            self.log.poll();
            if let Some(t) = self.tracker.as_mut() {
                t.poll(&self.inst, false);
            }
            if done(&self.log) {
                return Ok(Instant::now());
            }
            if self.last_health.elapsed() >= HEALTH_EVERY {
                self.last_health = Instant::now();
                self.inst.check_qmgr_health()?;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{:?}/{}: no end after {GUARD:?} (removed {}, activated {})",
                    self.workload, self.label, self.log.removed, self.log.activated
                )
                .into());
            }
            std::thread::sleep(self.cfg.poll);
        }
    }

    /// Starts the queue manager on the filled queue and measures until
    /// `messages` are removed and the queue is empty; CPU is counted per
    /// `units`.
    fn drain(&mut self, messages: usize, row: String, units: usize) -> BenchResult<Measurement> {
        self.start()?;
        let end = self.wait(|l| l.removed >= messages)?;
        self.confirm_empty()?;
        Ok(self.measure(row, units, end))
    }

    /// Checks (once) that no message is left in the queue.
    fn confirm_empty(&self) -> BenchResult<()> {
        Ok(self.inst.wait_queue_empty(Duration::from_secs(120))?)
    }

    /// Reads CPU and memory now; wall time from queue manager start to `end`.
    fn measure(&mut self, row: String, units: usize, end: Instant) -> Measurement {
        let t = self.tracker.as_mut().expect("measure after start");
        t.poll(&self.inst, true);
        if let Some(scraper) = self.scraper.take() {
            eprintln!(
                "rqmgr-bench: {row} {}: scrapes: {}",
                self.label,
                scraper.finish().summary()
            );
        }
        let machine = t.machine();
        Measurement {
            row,
            units,
            wall: end.duration_since(t.started).as_secs_f64(),
            cpu: t.cpu(),
            user: t.user(),
            hwm_kb: t.hwm_kb(),
            restarts: t.restarts,
            ctxsw: t.ctxsw(),
            steal: machine.steal,
            busy: machine.busy,
            peak_active: self.log.peak_active,
            mean_active: self.log.mean_active(),
        }
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        for mut p in self.observers.drain(..) {
            // SIGINT makes perf and strace write complete output.
            rqmgr_harness::procs::kill_pid(p.id() as i32, nix::sys::signal::Signal::SIGINT);
            let _ = p.wait();
        }
    }
}
