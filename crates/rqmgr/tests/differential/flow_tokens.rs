//! The in-flow token pipe (qmgr(8) "in_flow_delay"): cleanup(8) takes one
//! token per connection and, finding none, waits `in_flow_delay` before it
//! serves the client. The queue manager keeps the pipe filled up to
//! `default_process_limit` tokens, so while it keeps up no cleanup waits.
//!
//! A small `default_process_limit` makes the pipe small, so that a burst
//! of messages uses up the initial tokens and only the queue manager's
//! refills keep cleanup from waiting. Postfix logs nothing about these
//! waits; the scenario times each SMTP transaction on the client side and
//! counts those that took at least `in_flow_delay` (the wait is a timer of
//! exactly that length, far above the time of an unhindered transaction).
//! What is compared: rqmgr's run has no more such waits than the stock
//! run, and the outcomes (deliveries, queue manager log) are the same.
//! No absolute speed is asserted.
//!
//! A second scenario sends messages of many domains each, discarded, so
//! that rqmgr's active queue holds enough ready work for it to wait before
//! reading more (the scheduler's intake module); the wait must not cost
//! senders tokens that the stock qmgr, reading on, would give back.
//!
//! The pipe is empty until the queue manager's first loop fills it, and
//! the instance counts as up once smtpd listens, which can be earlier; so
//! one untimed message is delivered first, and only the transactions after
//! it, when the queue manager certainly runs, are timed.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{instance_with_sink, ok, rqmgr, GUARD};
use crate::compare::{assert_same, snapshot, Outcome};
use crate::kick::wait_count;
use rqmgr_harness::{Instance, InstanceBuilder, QueueManager, SinkMode};

const MESSAGES: usize = 40;
const IN_FLOW_DELAY: Duration = Duration::from_secs(3);
/// Recipients (and domains) per message in the busy-agents scenario.
const WIDE: usize = 200;

/// Reads one (possibly multi-line) SMTP reply and checks its class.
fn reply(r: &mut impl BufRead, class: u8, after: &str) {
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).expect("SMTP reply");
        assert!(n >= 4, "SMTP connection closed after {after}: {line:?}");
        assert_eq!(line.as_bytes()[0], class, "after {after}: {line}");
        if line.as_bytes()[3] != b'-' {
            return;
        }
    }
}

fn command(w: &mut TcpStream, r: &mut impl BufRead, text: &str, class: u8) {
    w.write_all(format!("{text}\r\n").as_bytes())
        .expect("SMTP write");
    reply(r, class, text);
}

/// Sends messages `numbers` in one SMTP session, message `n` to the
/// recipients `rcpts(n)`; returns each transaction's duration (MAIL FROM
/// to the reply after the final dot).
fn transactions(
    port: u16,
    from: &str,
    numbers: std::ops::Range<usize>,
    rcpts: &impl Fn(usize) -> Vec<String>,
) -> Vec<Duration> {
    let mut w = TcpStream::connect(("127.0.0.1", port)).expect("connect to smtpd");
    w.set_read_timeout(Some(GUARD)).expect("read timeout");
    let mut r = BufReader::new(w.try_clone().expect("clone stream"));
    reply(&mut r, b'2', "connect");
    command(&mut w, &mut r, "EHLO client.example", b'2');
    let mut times = Vec::new();
    for n in numbers {
        let start = Instant::now();
        command(&mut w, &mut r, &format!("MAIL FROM:<{from}>"), b'2');
        for rcpt in rcpts(n) {
            command(&mut w, &mut r, &format!("RCPT TO:<{rcpt}>"), b'2');
        }
        command(&mut w, &mut r, "DATA", b'3');
        let body = format!("Subject: m{n:02}\r\n\r\nmessage {n:02}\r\n.");
        command(&mut w, &mut r, &body, b'2');
        times.push(start.elapsed());
    }
    command(&mut w, &mut r, "QUIT", b'2');
    times
}

/// One recipient at the sink's domain.
fn one_remote(n: usize) -> Vec<String> {
    vec![format!("r{n:02}@remote.example")]
}

/// `WIDE` recipients, each in a domain of its own: as many entries in
/// the active queue, each ready for an agent at once.
fn many_domains(n: usize) -> Vec<String> {
    (0..WIDE)
        .map(|d| format!("r{n:02}@d{d:03}.example"))
        .collect()
}

/// Sends one untimed message, waits until the queue manager has removed
/// it (so it certainly runs), then times messages 1 to `MESSAGES`; returns
/// the numbers of those that waited for a flow token.
fn timed_burst(inst: &Instance, rcpts: impl Fn(usize) -> Vec<String>) -> Vec<usize> {
    let from = inst.local_address("sender");
    transactions(inst.smtpd_port(), &from, 0..1, &rcpts);
    wait_count(inst, ": removed", 1);
    let times = transactions(inst.smtpd_port(), &from, 1..MESSAGES + 1, &rcpts);
    let waited: Vec<usize> = (1..)
        .zip(&times)
        .filter(|(_, t)| **t >= IN_FLOW_DELAY)
        .map(|(n, _)| n)
        .collect();
    ok(inst.wait_queue_empty(GUARD));
    wait_count(inst, ": removed", MESSAGES + 1);
    eprintln!(
        "{:?}: messages {waited:?} of 1..={MESSAGES} waited for a flow token",
        inst.queue_manager()
    );
    waited
}

/// A pipe of 10 tokens, and a wait long enough to tell from a transaction.
fn small_pipe(b: InstanceBuilder) -> InstanceBuilder {
    b.main_cf("in_flow_delay", &format!("{}s", IN_FLOW_DELAY.as_secs()))
        .main_cf("default_process_limit", "10")
}

/// Runs `scenario` with both queue managers: rqmgr's run has no more
/// waits than the stock run, and the same outcome.
fn compare_waits(what: &str, scenario: fn(QueueManager) -> (usize, Outcome)) {
    let (stock_waits, stock) = scenario(QueueManager::Stock);
    let (our_waits, ours) = scenario(rqmgr());
    assert!(
        our_waits <= stock_waits,
        "{what}: with rqmgr {our_waits} transactions waited in_flow_delay, with the stock qmgr {stock_waits}"
    );
    assert_same(what, &stock, &ours);
}

fn scenario(qm: QueueManager) -> (usize, Outcome) {
    let (sink, inst) = instance_with_sink(qm, SinkMode::Accept, small_pipe);
    let waited = timed_burst(&inst, one_remote);
    ok(sink.wait_received(MESSAGES + 1, GUARD));
    (waited.len(), snapshot(&inst, &[&sink], &[]))
}

#[test]
fn cleanup_never_waits_for_flow_tokens() {
    compare_waits("in-flow tokens", scenario);
}

/// Messages of many domains each, discarded: the active queue holds
/// hundreds of entries ready for fast agents, enough for rqmgr to stop
/// reading `incoming/` for a moment (the scheduler's intake module). The
/// stock qmgr reads on and returns a token for each message it reads;
/// rqmgr must keep cleanup as free of waits while it holds its reading.
fn busy_agents_scenario(qm: QueueManager) -> (usize, Outcome) {
    let inst = ok(small_pipe(Instance::builder().queue_manager(qm))
        .main_cf("default_transport", "discard")
        .start());
    let waited = timed_burst(&inst, many_domains);
    (waited.len(), snapshot(&inst, &[], &[]))
}

#[test]
fn cleanup_never_waits_while_agents_are_busy() {
    compare_waits("in-flow tokens, busy agents", busy_agents_scenario);
}
