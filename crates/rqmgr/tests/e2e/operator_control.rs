//! An operator steers a running rqmgr with rqmgrctl (issue "control"):
//! suspend and resume one destination, let a suspension end by itself,
//! flush one destination's deferred mail, cap one destination's
//! concurrency (counted at the sink), and keep an override and a dead
//! destination across `postfix reload` and a SIGKILL; a damaged state
//! file is ignored with a warning.
//!
//! The stock qmgr has none of these; where it has a behaviour (mail to
//! other destinations goes on, deferred mail waits for its time) the
//! scenarios assert it directly. Retry times are an hour, so mail that
//! arrives within a scenario's bounds was released, not retried.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{ok, rqmgr, rqmgrctl, stdout_of, GUARD};
use nix::sys::signal::Signal;
use rqmgr_harness::ports::PortLease;
use rqmgr_harness::{Instance, InstanceBuilder, SinkMode, SmtpSink};
use serde_json::Value;

/// Waits until rqmgr answers on its admin socket (it makes the socket as
/// it starts, a moment after Postfix does; `status` would answer from
/// master.cf alone).
fn answering(inst: &Instance) {
    ok(inst.wait_until(|i| rqmgrctl(i, &["transports"]).status.success(), GUARD));
}

fn json_of(inst: &Instance, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&stdout_of(inst, &all)).expect("rqmgrctl's JSON")
}

/// Nothing is retried by time within a scenario.
fn slow_retries(b: InstanceBuilder) -> InstanceBuilder {
    b.main_cf("queue_run_delay", "3600s")
        .main_cf("minimal_backoff_time", "3600s")
        .main_cf("maximal_backoff_time", "3600s")
}

fn send(inst: &Instance, to: &str, n: usize) {
    let from = inst.local_address("sender");
    for i in 0..n {
        ok(inst.sendmail(&from, &[to], &format!("Subject: {i}\n\n{i}\n")));
    }
}

#[test]
fn suspend_defers_with_the_reason_and_resume_releases_that_mail() {
    let held_sink = ok(SmtpSink::start(SinkMode::Accept));
    let other_sink = ok(SmtpSink::start(SinkMode::Accept));
    let held_hop = format!("[127.0.0.1]:{}", held_sink.port());
    let dest = format!("smtp:{held_hop}");
    let inst = ok(slow_retries(Instance::builder())
        .queue_manager(rqmgr())
        .relay_to_port(other_sink.port())
        .main_cf(
            "transport_maps",
            &format!("inline:{{ held.example={dest} }}"),
        )
        .start());
    answering(&inst);
    let out = stdout_of(
        &inst,
        &[
            "suspend",
            &dest,
            "--for",
            "1h",
            "--reason",
            "maintenance window",
        ],
    );
    assert!(
        out.starts_with(&format!("{dest}: suspended, override 1")),
        "{out}"
    );
    send(&inst, "user@held.example", 10);
    send(&inst, "user@other.example", 5);
    ok(other_sink.wait_received(5, GUARD));
    ok(inst.wait_until(|i| i.queue_ids("deferred").len() == 10, GUARD));
    // Five seconds on, still nothing for the suspended destination.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(held_sink.received(), 0);
    assert_eq!(inst.queue_ids("deferred").len(), 10);
    let mailq = inst.postqueue(&["-p"]).expect("mailq");
    let mailq = &mailq.stdout;
    let reason = format!("delivery to {dest} suspended by operator: maintenance window");
    assert_eq!(mailq.matches(&reason).count(), 10, "{mailq}");

    let metrics = stdout_of(&inst, &["metrics"]);
    for line in [
        "rqmgr_overrides{kind=\"suspend\"} 1",
        "rqmgr_suspended_messages 10",
        "rqmgr_deferred_indexed_messages 10",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    let list = json_of(&inst, &["overrides"]);
    let o = &list[0];
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(o["kind"], "suspend");
    assert_eq!(o["target"], dest.as_str());
    assert_eq!(o["reason"], "maintenance window");
    assert_eq!(o["uid"], 0);
    assert_eq!(o["held_messages"], 10);
    assert!(
        o["remaining_seconds"].as_i64().is_some_and(|s| s > 3500),
        "{o}"
    );
    let table = stdout_of(&inst, &["overrides"]);
    assert!(table.starts_with("ID"), "{table}");

    // Resume: exactly those ten go out at once.
    let started = Instant::now();
    let out = stdout_of(&inst, &["resume", &dest]);
    assert_eq!(
        out,
        format!("{dest}: resumed, 1 overrides ended, 10 messages released\n")
    );
    ok(held_sink.wait_received(10, Duration::from_secs(10)));
    assert!(started.elapsed() < Duration::from_secs(10));
    ok(inst.wait_queue_empty(GUARD));
    assert_eq!(other_sink.received(), 5);
    let log = inst.log();
    let qmgr = inst.queue_manager().log_program();
    let lines: Vec<String> = log
        .matching(&qmgr, "suspend ")
        .iter()
        .map(|l| l.text.to_string())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!(
            "suspend {dest}: id 1, 0 recipients deferred until "
        )),
        "{lines:?}"
    );
    assert!(
        lines[0].ends_with(" (maintenance window), by uid 0"),
        "{lines:?}"
    );
    assert_eq!(
        log.matching(
            &qmgr,
            &format!("resume {dest}: 1 ended, 10 messages released, by uid 0")
        )
        .len(),
        1
    );
    let metrics = stdout_of(&inst, &["metrics"]);
    assert!(
        metrics.contains("rqmgr_operator_changes_total{action=\"suspend\"} 1"),
        "{metrics}"
    );
    assert!(json_of(&inst, &["overrides"])
        .as_array()
        .is_some_and(Vec::is_empty));
    let out = rqmgrctl(&inst, &["resume", &dest]);
    assert!(!out.status.success(), "resume of what is not suspended");
}

#[test]
fn a_suspension_with_a_duration_ends_by_itself() {
    let sink = ok(SmtpSink::start(SinkMode::Accept));
    let dest = format!("smtp:[127.0.0.1]:{}", sink.port());
    let inst = ok(slow_retries(Instance::builder())
        .queue_manager(rqmgr())
        .relay_to_port(sink.port())
        .start());
    answering(&inst);
    stdout_of(&inst, &["suspend", &dest, "--for", "6s"]);
    send(&inst, "user@example.com", 2);
    ok(inst.wait_until(|i| i.queue_ids("deferred").len() == 2, GUARD));
    assert_eq!(sink.received(), 0);
    // Retries are an hour away: only the end of the suspension sends them.
    ok(sink.wait_received(2, GUARD));
    let qmgr = inst.queue_manager().log_program();
    let line = format!("expire {dest}: id 1 expired, 2 messages released, by uid unknown");
    assert_eq!(inst.log().matching(&qmgr, &line).len(), 1);
    assert!(json_of(&inst, &["overrides"])
        .as_array()
        .is_some_and(Vec::is_empty));
    ok(inst.wait_queue_empty(GUARD));
}

#[test]
fn flush_releases_one_destinations_deferred_mail_only() {
    let mut a_sink = ok(SmtpSink::start(SinkMode::SoftReject("RCPT".into())));
    let mut b_sink = ok(SmtpSink::start(SinkMode::SoftReject("RCPT".into())));
    let a = format!("smtp:[127.0.0.1]:{}", a_sink.port());
    let b = format!("smtp:[127.0.0.1]:{}", b_sink.port());
    let mut inst = ok(slow_retries(Instance::builder())
        .queue_manager(rqmgr())
        .main_cf(
            "transport_maps",
            &format!("inline:{{ a.example={a}, b.example={b} }}"),
        )
        .start());
    send(&inst, "user@a.example", 20);
    send(&inst, "user@b.example", 20);
    ok(inst.wait_until(|i| i.queue_ids("deferred").len() == 40, GUARD));
    ok(inst.wait_until(|i| i.queued_count() == 40, GUARD));
    // A planned restart at once: the index is saved as rqmgr stops, not
    // only by its timer.
    ok(inst.stop());
    ok(inst.restart());
    answering(&inst);
    // Both come back; neither's mail is due for an hour.
    ok(a_sink.set_mode(SinkMode::Accept));
    ok(b_sink.set_mode(SinkMode::Accept));

    let started = Instant::now();
    let out = stdout_of(&inst, &["flush", &a]);
    assert_eq!(out, format!("{a}: 20 messages released\n"));
    ok(a_sink.wait_received(20, Duration::from_secs(10)));
    assert!(started.elapsed() < Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(b_sink.received(), 0);
    assert_eq!(inst.queue_ids("deferred").len(), 20);
    // Flushed again: nothing left to release there.
    assert_eq!(
        stdout_of(&inst, &["flush", &a]),
        format!("{a}: 0 messages released\n")
    );
    // The whole transport: b's mail goes too.
    assert_eq!(
        stdout_of(&inst, &["flush", "smtp"]),
        "smtp: 20 messages released\n"
    );
    ok(b_sink.wait_received(20, GUARD));
    ok(inst.wait_queue_empty(GUARD));
}

/// An SMTP server that counts deliveries in flight (from MAIL to the
/// reply to the message's end) and keeps the largest count; each message
/// takes `hold` before it is accepted.
struct CountingSink {
    port: u16,
    in_flight: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    received: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl CountingSink {
    fn start(hold: Duration) -> CountingSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let sink = CountingSink {
            port,
            in_flight: Arc::default(),
            most: Arc::default(),
            received: Arc::default(),
            stop: Arc::default(),
        };
        let (in_flight, most, received, stop) = (
            Arc::clone(&sink.in_flight),
            Arc::clone(&sink.most),
            Arc::clone(&sink.received),
            Arc::clone(&sink.stop),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (in_flight, most, received) = (
                    Arc::clone(&in_flight),
                    Arc::clone(&most),
                    Arc::clone(&received),
                );
                std::thread::spawn(move || {
                    let _ = session(conn, hold, &in_flight, &most, &received);
                });
            }
        });
        sink
    }

    fn reset_most(&self) {
        self.most
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

impl Drop for CountingSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn session(
    conn: TcpStream,
    hold: Duration,
    in_flight: &AtomicUsize,
    most: &AtomicUsize,
    received: &AtomicUsize,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut out = conn.try_clone()?;
    let mut lines = BufReader::new(conn);
    out.write_all(b"220 counting ESMTP\r\n")?;
    let mut line = String::new();
    let mut busy = false;
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            break;
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" => out.write_all(b"250 counting\r\n")?,
            "MAIL" => {
                if !busy {
                    busy = true;
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                }
                out.write_all(b"250 ok\r\n")?;
            }
            "DATA" => {
                out.write_all(b"354 go on\r\n")?;
                loop {
                    line.clear();
                    if lines.read_line(&mut line)? == 0 || line == ".\r\n" || line == ".\n" {
                        break;
                    }
                }
                std::thread::sleep(hold);
                // Counted out before the reply: the client can start its
                // next delivery only once it has the reply.
                busy = false;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                received.fetch_add(1, Ordering::SeqCst);
                out.write_all(b"250 queued\r\n")?;
            }
            "QUIT" => {
                out.write_all(b"221 bye\r\n")?;
                break;
            }
            "RSET" => {
                if busy {
                    busy = false;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                }
                out.write_all(b"250 ok\r\n")?;
            }
            _ => out.write_all(b"250 ok\r\n")?,
        }
    }
    if busy {
        in_flight.fetch_sub(1, Ordering::SeqCst);
    }
    Ok(())
}

#[test]
fn a_destinations_concurrency_set_live_holds_at_the_sink() {
    let sink = CountingSink::start(Duration::from_millis(700));
    let hop = format!("[127.0.0.1]:{}", sink.port);
    let dest = format!("smtp:{hop}");
    let inst = ok(Instance::builder()
        .queue_manager(rqmgr())
        .relay_to_port(sink.port)
        .start());
    let wait_received = |n: usize| {
        ok(inst.wait_until(|_| sink.received.load(Ordering::SeqCst) >= n, GUARD));
    };
    // Unlimited but for the transport: several at once.
    send(&inst, "user@example.com", 10);
    wait_received(10);
    let before = sink.most.load(Ordering::SeqCst);
    assert!(before >= 2, "deliveries never overlapped: {before}");

    let out = stdout_of(&inst, &["set", &dest, "concurrency=1"]);
    assert!(
        out.starts_with(&format!("{dest}: concurrency=1, override ")),
        "{out}"
    );
    sink.reset_most();
    send(&inst, "user@example.com", 10);
    wait_received(20);
    assert_eq!(sink.most.load(Ordering::SeqCst), 1);
    let list = json_of(&inst, &["overrides"]);
    assert_eq!(list[0]["kind"], "concurrency", "{list}");
    assert_eq!(list[0]["value"], "1", "{list}");
    let id = list[0]["id"].as_u64().expect("id").to_string();

    // Cleared: the transport's limits again.
    assert!(stdout_of(&inst, &["clear", &id]).starts_with(&format!("override {id}: cleared")));
    sink.reset_most();
    send(&inst, "user@example.com", 10);
    wait_received(30);
    assert!(sink.most.load(Ordering::SeqCst) >= 2);
    ok(inst.wait_queue_empty(GUARD));
    for bad in [
        ["smtp:x.example", "concurrency=x"],
        ["smtp:x.example", "recipient_limit=1"],
        ["smtp:", "concurrency=1"],
    ] {
        assert!(
            !rqmgrctl(&inst, &["set", bad[0], bad[1]]).status.success(),
            "{bad:?}"
        );
    }
    assert!(!rqmgrctl(&inst, &["clear", "999"]).status.success());
}

/// Master starts a queue manager on demand: a trigger (not `F`, which
/// would revive dead destinations) brings the next one after a kill.
fn restarted(inst: &Instance, old: i32) {
    ok(inst.wait_until(
        |i| {
            let _ = i.postkick("I");
            i.qmgr_pids().iter().any(|&p| p != old)
        },
        GUARD,
    ));
}

/// The destination rqmgrctl shows for `hop`, if rqmgr has it.
fn destination(inst: &Instance, hop: &str) -> Option<Value> {
    let v = json_of(
        inst,
        &["destinations", "--transport", "smtp", "--nexthop", hop],
    );
    v.as_array().and_then(|a| a.first().cloned())
}

#[test]
fn overrides_and_dead_destinations_survive_reload_and_sigkill() {
    let live = ok(SmtpSink::start(SinkMode::Accept));
    let closed = PortLease::new().expect("a port nobody listens on");
    let dead_hop = format!("[127.0.0.1]:{}", closed.port());
    let held_hop = format!("[127.0.0.1]:{}", live.port());
    let held = format!("smtp:{held_hop}");
    let mut inst = ok(slow_retries(Instance::builder())
        .queue_manager(rqmgr())
        .main_cf("rqmgr_learned_state", "yes")
        .main_cf("smtp_initial_destination_concurrency", "1")
        .main_cf(
            "transport_maps",
            &format!("inline:{{ dead.example=smtp:{dead_hop}, held.example={held} }}"),
        )
        .start());
    answering(&inst);
    stdout_of(&inst, &["suspend", &held, "--reason", "migration"]);
    send(&inst, "user@dead.example", 1);
    ok(inst.wait_for_log(|l| l.count("Connection refused") >= 1, GUARD));
    let dead_now =
        |i: &Instance| destination(i, &dead_hop).is_some_and(|d| d["state"] == "throttled");
    ok(inst.wait_until(dead_now, GUARD));
    let state_dir = inst.root().join("data/rqmgr/state");
    ok(inst.wait_until(
        |_| std::fs::read_to_string(state_dir.join("learned")).is_ok_and(|t| t.contains(&dead_hop)),
        GUARD,
    ));

    // Reload: a new process, the same override and dead destination.
    let old = ok(inst.wait_for_qmgr(GUARD));
    ok(inst.reload());
    ok(inst.wait_until(|i| i.qmgr_pids().iter().any(|&p| p != old), GUARD));
    let check = |i: &Instance, when: &str| {
        answering(i);
        let list = json_of(i, &["overrides"]);
        assert_eq!(list[0]["target"], held.as_str(), "{when}: {list}");
        assert_eq!(list[0]["reason"], "migration", "{when}: {list}");
        let d = destination(i, &dead_hop).unwrap_or_else(|| panic!("{when}: no {dead_hop}"));
        assert_eq!(d["state"], "throttled", "{when}: {d}");
        assert!(
            d["reason"]
                .as_str()
                .is_some_and(|r| r.contains("Connection refused")),
            "{when}: {d}"
        );
        assert!(
            d["next_retry_seconds"].as_f64().is_some_and(|s| s > 3000.0),
            "{when}: {d}"
        );
    };
    check(&inst, "after reload");

    // SIGKILL: master starts another; the same again.
    let old = ok(inst.wait_for_qmgr(GUARD));
    ok(inst.kill_qmgr(Signal::SIGKILL));
    restarted(&inst, old);
    check(&inst, "after SIGKILL");
    // The hold works in the new process.
    send(&inst, "user@held.example", 1);
    ok(inst.wait_for_log(|l| l.count("suspended by operator: migration") >= 1, GUARD));
    assert_eq!(live.received(), 0);

    // A damaged state file: a warning, and a queue manager that works.
    // (Damaged while no queue manager runs, which might save it anew.)
    let old = ok(inst.wait_for_qmgr(GUARD));
    ok(inst.kill_qmgr(Signal::SIGKILL));
    let damaged = b"{\"format\": \"rqmgr-state\", \"vers";
    std::fs::write(state_dir.join("overrides"), damaged).unwrap();
    restarted(&inst, old);
    ok(inst.wait_for_log(
        |l| l.count("/overrides: not a state file: ") == 1 && l.count(": ignored") >= 1,
        GUARD,
    ));
    answering(&inst);
    assert!(json_of(&inst, &["overrides"])
        .as_array()
        .is_some_and(Vec::is_empty));
    send(&inst, "user@held.example", 1);
    let _ = inst.postqueue_flush();
    ok(inst.wait_until(|_| live.received() >= 1, GUARD));
    ok(inst.stop());
}
