//! SIGKILL soak: rqmgr is killed at pseudo-random moments, at least
//! [`KILLS`] times, while 5,000 single-recipient messages and one message
//! to a 1,000-recipient list flow through a private instance; in the end
//! every recipient of every message that Postfix accepted has reached a
//! sink, at least once.
//!
//! Set-up: the flood (smtp-source into smtpd, each message to a recipient
//! of its own, `user@example.com` numbered by `-N`) is relayed to one
//! smtp-sink; the list (`sendmail`, so through pickup, recipients
//! `l1@list.example` to `l1000@list.example`, submitted first so that it
//! is under way when the kills begin) goes over the `relay` transport to a
//! second, slow sink (one second before each DATA answer),
//! [`LIST_RCPTS_PER_REQUEST`] recipients per delivery, so that its
//! deliveries are in flight for a while and it is delivered over many
//! seconds; at most [`IN_CORE`] recipients are held in core, so it is read
//! in several batches. Each sink writes one dump file per transaction; a
//! delivery is named by the queue id in the instance's own `Received:`
//! header and the RCPT TO address, so every delivery of every recipient is
//! counted exactly.
//!
//! The killer (a thread, stopped and joined by a guard also when the test
//! panics) waits for a live queue manager it has not killed yet, waits
//! until work is in flight (a file in `active/`; every fourth kill waits
//! for the list itself to be in `active/` and partly delivered), sleeps a
//! pseudo-random time from a seeded generator, and sends SIGKILL. The seed
//! is printed; `RQMGR_SOAK_SEED=N` replays the same delays (not the same
//! interleaving: the machine's timing still varies). Meanwhile the test
//! flushes the queue every second, as an operator would: a file that an
//! agent of a killed queue manager still held goes back to `incoming/`
//! with a time stamp 60 s ahead ("skipped, still being delivered"), and
//! the flush's `A` brings it back at once. `service_throttle_time = 1s`
//! keeps master from pausing the service for a minute when a kill hits a
//! queue manager that had not yet served a request ("bad command startup
//! -- throttling", counted in the summary); short back-off times let mail
//! deferred by an interrupted delivery come back quickly.
//!
//! Invariants checked: no recipient lost (every queue id that smtpd or
//! pickup logged reaches its sink with all its recipients); nothing in
//! `corrupt/`; no bounce to the sender; no `panic` in the log and no
//! `fatal` from the queue manager; master saw every kill ("killed by
//! signal 9" for each pid killed); at least [`FLOOD_KILLS`] kills landed
//! while flood messages were in `active/`, and at least [`LIST_KILLS`]
//! while the list was partly delivered.
//!
//! Duplicates are allowed by Postfix only for deliveries in flight when the
//! queue manager dies, and they are counted and printed. The bound: at a
//! kill at most `default_destination_concurrency_limit` ([`CONCURRENCY`])
//! deliveries run per destination; a flood delivery carries one recipient,
//! a list delivery [`LIST_RCPTS_PER_REQUEST`]. So no kill can leave more
//! than `CONCURRENCY * (1 + LIST_RCPTS_PER_REQUEST)` recipients whose
//! outcome the next queue manager cannot know, and the duplicates must stay
//! below that times the number of kills. (The agents are not killed: they
//! mark each recipient done in the queue file right after the sink accepts
//! it, so in practice a duplicate needs a delivery that the sink accepted
//! but whose agent could not record it, and none is expected.)
//!
//! `stock` runs the same scenario with Postfix's own qmgr, for the
//! comparison in `docs/reliability.md`, and to show that the scenario's
//! expectations hold for Postfix itself.

use crate::common::{ok, rqmgr, GUARD};
use nix::sys::signal::Signal;
use rqmgr_harness::{cmd, procs, Instance, QueueManager, SinkMode, SmtpSink};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Single-recipient messages of the flood.
const MESSAGES: usize = 5000;
/// Recipients of the list message.
const LIST_RCPTS: usize = 1000;
/// Kills the run must reach (each at a live queue manager with work in flight).
const KILLS: usize = 30;
/// Kills that must land while the list is partly delivered.
const LIST_KILLS: usize = 3;
/// Kills that must land while flood messages are in `active/`.
const FLOOD_KILLS: usize = 5;
/// Parallel SMTP sessions of the flood.
const SESSIONS: u32 = 10;
/// `default_destination_concurrency_limit`, set explicitly for the bound.
const CONCURRENCY: usize = 20;
/// `relay_destination_recipient_limit`: recipients per list delivery.
const LIST_RCPTS_PER_REQUEST: usize = 5;
/// `qmgr_message_recipient_limit` (and the active limit, which may not be
/// larger): below the list's size, so that the list is read in several
/// batches and kills also land between them.
const IN_CORE: usize = 400;
/// Upper end of the pseudo-random pause before a kill, once work is in flight.
const MAX_PAUSE_MS: u64 = 300;
/// How often the queue is flushed while the test runs.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Guard for one wait of the killer (a new queue manager, work in flight).
const KILLER_GUARD: Duration = Duration::from_secs(30);

/// splitmix64: a few lines, good enough to spread kill moments, and
/// replayable from its seed.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    match std::env::var("RQMGR_SOAK_SEED") {
        Ok(s) => s.trim().parse().expect("RQMGR_SOAK_SEED must be a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// What was true when one kill was sent.
#[derive(Debug, Clone)]
struct Kill {
    pid: i32,
    at: Duration,
    /// Files in `active/` just before the kill.
    active: usize,
    /// Distinct list recipients the list sink had received.
    list_received: usize,
    /// The list's file was in `active/`.
    list_active: bool,
}

impl Kill {
    fn mid_flood(&self) -> bool {
        self.active > usize::from(self.list_active)
    }

    fn mid_list(&self) -> bool {
        self.list_active && self.list_received > 0 && self.list_received < LIST_RCPTS
    }
}

/// Stops the killer when dropped, so that a panic of the test body ends it
/// too (the enclosing thread scope then joins it).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// One delivery as a sink recorded it: the instance's queue id and the
/// RCPT TO addresses of the transaction.
fn parse_dump(text: &str) -> Option<(String, Vec<String>)> {
    let rcpts = text
        .lines()
        .filter_map(|l| l.strip_prefix("X-Rcpt-Args: "))
        .filter_map(|a| {
            let a = a.trim_start().strip_prefix('<')?;
            Some(a[..a.find('>')?].to_string())
        })
        .collect();
    // Unfold the headers and take the id of the first Received: header that
    // Postfix wrote (smtpd's "with ESMTP id X", pickup's "id X;"); the
    // sink's own header comes first and says "(smtp-sink)".
    let mut headers: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        match headers.last_mut() {
            Some(h) if line.starts_with([' ', '\t']) => {
                h.push(' ');
                h.push_str(line.trim());
            }
            _ => headers.push(line.to_string()),
        }
    }
    let received = headers
        .iter()
        .find(|h| h.starts_with("Received:") && h.contains("(Postfix"))?;
    let mut words = received.split_whitespace();
    words.find(|w| *w == "id")?;
    let id = words.next()?.trim_end_matches(';').to_string();
    Some((id, rcpts))
}

/// Every delivery a sink recorded: (queue id, recipient) → how many times;
/// and the number of dumps without a complete message (smtp-sink creates
/// the file before the message arrives, so a transaction under way shows
/// up as one).
fn deliveries(dir: &Path) -> (HashMap<(String, String), usize>, usize) {
    let mut out = HashMap::new();
    let mut incomplete = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let parsed = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|t| parse_dump(&t));
        let Some((id, rcpts)) = parsed else {
            incomplete += 1;
            continue;
        };
        for r in rcpts {
            *out.entry((id.clone(), r)).or_insert(0) += 1;
        }
    }
    (out, incomplete)
}

/// Distinct recipients the list sink has received so far.
fn list_progress(sink: &SmtpSink) -> usize {
    deliveries(sink.dump_dir()).0.len()
}

/// Fails fast (instead of waiting into a guard) when the queue manager
/// logged a fatal error or anything panicked. Master's throttling after a
/// kill at start-up is expected here, so the harness's own health check,
/// which counts it as a failure, is not used.
fn healthy(inst: &Instance) -> rqmgr_harness::Result<()> {
    let tag = format!("{}[", inst.queue_manager().log_program());
    let log = inst.maillog();
    match log
        .lines()
        .find(|l| (l.contains(&tag) && l.contains("]: fatal: ")) || l.contains("panic"))
    {
        Some(l) => Err(rqmgr_harness::Error::new(format!("unhealthy: {l}"))),
        None => Ok(()),
    }
}

/// Polls `done` while flushing the queue every [`FLUSH_EVERY`]; the guard
/// only catches hangs.
fn wait_flushing(
    inst: &Instance,
    what: &str,
    guard: Duration,
    mut done: impl FnMut() -> bool,
) -> rqmgr_harness::Result<()> {
    let mut last_flush = Instant::now();
    rqmgr_harness::poll(guard, || {
        if done() {
            return Ok(Some(()));
        }
        if last_flush.elapsed() >= FLUSH_EVERY {
            healthy(inst)?;
            // Refused while master throttles the service ("mail system is
            // down"); the next tick tries again.
            let _ = inst.postqueue_flush();
            last_flush = Instant::now();
        }
        Ok(None)
    })
    .map_err(|e| {
        rqmgr_harness::Error::new(format!(
            "waiting for {what}: {e}; {} message(s) queued",
            inst.queued_count()
        ))
    })
}

/// The killer's loop; returns the kills made, or why it gave up.
fn killer(
    inst: &Instance,
    list_sink: &SmtpSink,
    list_id: &str,
    seed: u64,
    stop: &AtomicBool,
    start: Instant,
) -> Result<Vec<Kill>, String> {
    let mut rng = Prng(seed);
    let mut kills: Vec<Kill> = Vec::new();
    let list_active = || inst.queue_file_path("active", list_id).is_some();
    // Polls `cond` every 20 ms; false on stop or after the guard.
    let wait = |cond: &mut dyn FnMut() -> bool| {
        let deadline = Instant::now() + KILLER_GUARD;
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    };
    while kills.len() < KILLS && !stop.load(Ordering::SeqCst) {
        let last = kills.last().map(|k| k.pid);
        let mut pid = None;
        if !wait(&mut || {
            pid = inst.qmgr_pids().into_iter().find(|&p| Some(p) != last);
            pid.is_some()
        }) {
            return Err(format!(
                "no new queue manager after {} kill(s) (stopped: {})",
                kills.len(),
                stop.load(Ordering::SeqCst)
            ));
        }
        let pid = pid.expect("set by the wait");
        // Every fourth kill aims at the list while it is partly delivered;
        // once it is complete, any work in flight will do.
        let aim_list = kills.len() % 4 == 1;
        let in_flight = |aim_list: bool| {
            if aim_list && list_progress(list_sink) < LIST_RCPTS {
                list_active() && list_progress(list_sink) > 0
            } else {
                !inst.queue_ids("active").is_empty()
            }
        };
        if !wait(&mut || in_flight(aim_list)) {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            return Err(format!(
                "no work in flight after {} kill(s) (aimed at the list: {aim_list}): \
                 the run ended before the kills did",
                kills.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(rng.below(MAX_PAUSE_MS)));
        let active = inst.queue_ids("active").len();
        if active == 0 || !inst.qmgr_pids().contains(&pid) {
            // The moment passed (work done, or the process went): draw again.
            continue;
        }
        let kill = Kill {
            pid,
            at: start.elapsed(),
            active,
            list_received: list_progress(list_sink),
            list_active: list_active(),
        };
        procs::kill_pid(pid, Signal::SIGKILL);
        kills.push(kill);
    }
    Ok(kills)
}

fn scenario(qm: QueueManager) {
    let seed = seed();
    println!("sigkill_soak: seed {seed} (RQMGR_SOAK_SEED={seed} replays the kill delays)");
    let start = Instant::now();
    let flood_sink = ok(SmtpSink::start(SinkMode::Accept));
    let list_sink = ok(SmtpSink::start(SinkMode::SlowData(1)));
    let inst = ok(Instance::builder()
        .queue_manager(qm)
        .relay_to_port(flood_sink.port())
        .main_cf(
            "transport_maps",
            &format!(
                "inline:{{ list.example=relay:[127.0.0.1]:{} }}",
                list_sink.port()
            ),
        )
        .main_cf("service_throttle_time", "1s")
        .main_cf("queue_run_delay", "1s")
        .main_cf("minimal_backoff_time", "1s")
        .main_cf("maximal_backoff_time", "2s")
        .main_cf(
            "default_destination_concurrency_limit",
            &CONCURRENCY.to_string(),
        )
        .main_cf(
            "relay_destination_recipient_limit",
            &LIST_RCPTS_PER_REQUEST.to_string(),
        )
        .main_cf("qmgr_message_recipient_limit", &IN_CORE.to_string())
        .main_cf("qmgr_message_active_limit", &IN_CORE.to_string())
        .start());
    ok(inst.wait_for_qmgr(GUARD));
    let qmgr = inst.queue_manager().log_program();
    let sender = inst.local_address("sender");

    // The list first, so that it is under way when the kills begin.
    let list: Vec<String> = (1..=LIST_RCPTS)
        .map(|n| format!("l{n}@list.example"))
        .collect();
    let list_refs: Vec<&str> = list.iter().map(String::as_str).collect();
    ok(inst.sendmail(&sender, &list_refs, "Subject: soak list\n\nlist body\n"));
    let log = ok(inst.wait_for_log(
        |l| !l.queue_ids_logged("postfix/pickup", "uid=").is_empty(),
        GUARD,
    ));
    let list_id = log.queue_ids_logged("postfix/pickup", "uid=")[0].clone();

    let stop = AtomicBool::new(false);
    let kills = Mutex::new(None);
    let submitted = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let killer = s.spawn(|| {
            let r = killer(&inst, &list_sink, &list_id, seed, &stop, start);
            *kills.lock().unwrap() = Some(r);
        });
        let source = s.spawn(|| {
            // Not the harness's smtp_source: its watch gives up after a few
            // queue manager restarts, which is the point here.
            let mut c = Command::new("smtp-source");
            c.args(["-4", "-N", "-M", inst.myhostname()])
                .args(["-f", &sender, "-t", "user@example.com"])
                .args(["-m", &MESSAGES.to_string(), "-r", "1"])
                .args(["-s", &SESSIONS.to_string()])
                .arg(format!("127.0.0.1:{}", inst.smtpd_port()));
            // Killed if the test body panics (the guard sets `stop`).
            let r = cmd::run_watched(c, None, GUARD * 2, || {
                if stop.load(Ordering::SeqCst) {
                    Err(rqmgr_harness::Error::new("stopped"))
                } else {
                    Ok(())
                }
            });
            (r, start.elapsed())
        });
        ok(wait_flushing(&inst, "the kills", GUARD * 2, || {
            killer.is_finished()
        }));
        let (out, at) = source.join().expect("smtp-source thread");
        let out = ok(out);
        assert!(out.success(), "smtp-source failed: {}", out.describe());
        at
    });
    let kills = match kills.into_inner().unwrap().expect("killer result") {
        Ok(k) => k,
        Err(e) => panic!("killer: {e}"),
    };
    let kills_done = kills.last().map(|k| k.at).unwrap_or_default();

    ok(wait_flushing(&inst, "an empty queue", GUARD, || {
        inst.queued_count() == 0
    }));
    let emptied = start.elapsed();
    // postlogd writes asynchronously: wait until master's line for every
    // kill has arrived (it proves each kill hit a live process).
    let killed_line = |pid: i32| format!(" pid {pid} killed by signal 9");
    // (Not inst.wait_for_log: its health check counts master's throttling
    // after a kill at start-up as a failure.)
    let log = rqmgr_harness::poll(GUARD, || {
        let l = inst.log();
        let complete = kills.iter().all(|k| l.text().contains(&killed_line(k.pid)))
            && l.count(": client=") >= MESSAGES;
        Ok(complete.then_some(l))
    })
    .unwrap_or_else(|e| {
        // Say what is missing, and what the log says of each pid concerned.
        let l = inst.log();
        let missing: Vec<String> = kills
            .iter()
            .filter(|k| !l.text().contains(&killed_line(k.pid)))
            .map(|k| {
                let said: Vec<&str> = l
                    .text()
                    .lines()
                    .filter(|line| {
                        line.contains(&format!("[{}]", k.pid))
                            || line.contains(&format!(" pid {} ", k.pid))
                    })
                    .collect();
                format!(
                    "pid {} (killed at {:.2} s; its last lines: {:?})",
                    k.pid,
                    k.at.as_secs_f64(),
                    &said[said.len().saturating_sub(3)..]
                )
            })
            .collect();
        panic!(
            "the log is incomplete ({e}): {} of {MESSAGES} client= lines; \
             kills master did not log: {}",
            l.count(": client="),
            if missing.is_empty() {
                "none".to_string()
            } else {
                missing.join("; ")
            }
        )
    });
    let elapsed = start.elapsed();

    // Accepted: smtpd or pickup gave the message a queue id.
    let flood_ids: HashSet<String> = log
        .queue_ids_logged("postfix/smtpd", "client=")
        .into_iter()
        .collect();
    assert_eq!(flood_ids.len(), MESSAGES, "messages smtpd accepted");

    let (flood, flood_incomplete) = deliveries(flood_sink.dump_dir());
    let (listed, list_incomplete) = deliveries(list_sink.dump_dir());
    // Every transaction has ended (the queue is empty and the agents
    // survive the kills), so each dump must hold a whole message.
    assert_eq!(
        (flood_incomplete, list_incomplete),
        (0, 0),
        "sink dumps without a complete message (flood, list)"
    );
    // Each flood message has one recipient of its own (smtp-source -N
    // numbers them; where the number goes differs between releases), so
    // a queue id with no recipient at the sink is a lost message.
    let mut lost: Vec<String> = Vec::new();
    let mut per_id: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (i, r) in flood.keys() {
        per_id.entry(i.as_str()).or_default().insert(r.as_str());
    }
    for id in &flood_ids {
        match per_id.get(id.as_str()).map(HashSet::len) {
            None => lost.push(format!("message {id}")),
            Some(1) => {}
            Some(n) => panic!("{id} reached the sink with {n} different recipients"),
        }
    }
    let distinct: HashSet<&str> = flood.keys().map(|(_, r)| r.as_str()).collect();
    for r in &list {
        if !listed.contains_key(&(list_id.clone(), r.clone())) {
            lost.push(format!("{list_id} to {r}"));
        }
    }
    let strangers: Vec<_> = flood
        .keys()
        .filter(|(i, _)| !flood_ids.contains(i))
        .chain(listed.keys().filter(|(i, _)| *i != list_id))
        .collect();
    assert!(strangers.is_empty(), "unexpected deliveries: {strangers:?}");
    assert!(
        !lost.is_empty() || distinct.len() == MESSAGES,
        "{} distinct flood recipients for {MESSAGES} messages",
        distinct.len()
    );

    let dups: Vec<_> = flood
        .iter()
        .chain(listed.iter())
        .filter(|(_, &n)| n > 1)
        .map(|((i, r), n)| format!("{i} to {r} x{n}"))
        .collect();
    let duplicates: usize = flood.values().chain(listed.values()).map(|n| n - 1).sum();
    let mid_list = kills.iter().filter(|k| k.mid_list()).count();
    let mid_flood = kills.iter().filter(|k| k.mid_flood()).count();
    let throttled = log.count("bad command startup -- throttling");
    let skipped = log.matching(&qmgr, "skipped, still being delivered").len();
    for k in &kills {
        println!(
            "sigkill_soak: kill at {:>6.2} s: pid {}, {} in active/, list {}/{}{}",
            k.at.as_secs_f64(),
            k.pid,
            k.active,
            k.list_received,
            LIST_RCPTS,
            if k.mid_list() { " (mid-list)" } else { "" }
        );
    }
    if !dups.is_empty() {
        println!("sigkill_soak: duplicates: {}", dups.join(", "));
    }
    println!(
        "sigkill_soak: {}: seed {seed}, kills {}, of them mid-flood {mid_flood} and mid-list {mid_list}, messages {}, \
         recipients {}, lost {}, duplicates {duplicates}, throttled restarts {throttled}, \
         skipped files {skipped}, submitted at {:.1} s, kills done at {:.1} s, queue empty at {:.1} s, total {:.1} s",
        if inst.queue_manager().binary().is_some() {
            "rqmgr"
        } else {
            "stock qmgr"
        },
        kills.len(),
        MESSAGES + 1,
        MESSAGES + LIST_RCPTS,
        lost.len(),
        submitted.as_secs_f64(),
        kills_done.as_secs_f64(),
        emptied.as_secs_f64(),
        elapsed.as_secs_f64(),
    );

    assert!(lost.is_empty(), "lost: {}", lost.join(", "));
    assert!(kills.len() >= KILLS, "only {} kills", kills.len());
    assert!(
        mid_flood >= FLOOD_KILLS,
        "only {mid_flood} kills landed while flood messages were in active/"
    );
    assert!(
        mid_list >= LIST_KILLS,
        "only {mid_list} kills landed while the list was partly delivered"
    );
    let bound = kills.len() * CONCURRENCY * (1 + LIST_RCPTS_PER_REQUEST);
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates, more than the {bound} deliveries that can have been in flight"
    );
    assert!(
        inst.queue_ids("corrupt").is_empty(),
        "files in corrupt/: {:?}",
        inst.queue_ids("corrupt")
    );
    assert_eq!(inst.mailbox("sender"), "", "the sender got a notice");
    assert_eq!(log.count("panic"), 0, "a panic was logged");
    assert!(
        log.matching(&qmgr, "fatal").is_empty(),
        "the queue manager logged a fatal error: {:?}",
        log.matching(&qmgr, "fatal")
    );
}

#[test]
fn rqmgr_daemon() {
    scenario(rqmgr());
}

#[test]
fn stock() {
    scenario(QueueManager::Stock);
}
