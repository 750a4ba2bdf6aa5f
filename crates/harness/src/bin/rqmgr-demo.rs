//! `rqmgr-demo`: a private Postfix instance running a chosen queue manager
//! relays a few thousand smtp-source messages to smtp-sink; prints a summary.
//!
//! Usage: `rqmgr-demo [--qmgr PATH|stock|oqmgr] [--messages N]
//! [--recipients R] [--sessions S]`. `scripts/demo.sh` runs it with the
//! release build of rqmgr. Exit status 0 only if every message reached the
//! sink and the queue ended empty. Everything started is stopped on exit
//! (the harness's drop handlers), also on failure.

use rqmgr_harness::{Instance, QueueManager, SinkMode, SmtpSink};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Command-line options.
struct Options {
    queue_manager: QueueManager,
    messages: u32,
    recipients: u32,
    sessions: u32,
}

fn usage() -> String {
    "usage: rqmgr-demo [--qmgr PATH|stock|oqmgr] [--messages N] [--recipients R] [--sessions S]"
        .to_string()
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        queue_manager: QueueManager::Stock,
        messages: 5000,
        recipients: 1,
        sessions: 10,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{a} needs a value\n{}", usage()))
        };
        let number = |v: String| v.parse::<u32>().map_err(|e| format!("{a} {v}: {e}"));
        match a.as_str() {
            "--qmgr" => {
                o.queue_manager = match value()?.as_str() {
                    "stock" => QueueManager::Stock,
                    "oqmgr" => QueueManager::StockOqmgr,
                    path => QueueManager::Rqmgr(path.into()),
                }
            }
            "--messages" => o.messages = number(value()?)?,
            "--recipients" => o.recipients = number(value()?)?,
            "--sessions" => o.sessions = number(value()?)?,
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    Ok(o)
}

fn run(o: &Options) -> Result<bool, String> {
    let guard = Duration::from_secs(600);
    let sink = SmtpSink::start(SinkMode::Accept).map_err(|e| e.to_string())?;
    let inst = Instance::builder()
        .queue_manager(o.queue_manager.clone())
        .relay_to_port(sink.port())
        .start()
        .map_err(|e| e.to_string())?;
    println!(
        "queue manager: {:?}\ninstance: {} (smtpd port {}), smtp-sink port {}",
        o.queue_manager,
        inst.root().display(),
        inst.smtpd_port(),
        sink.port()
    );
    let expected = (o.messages * o.recipients) as usize;
    println!(
        "sending {} messages x {} recipient(s) over {} SMTP sessions ...",
        o.messages, o.recipients, o.sessions
    );
    let t0 = Instant::now();
    inst.smtp_source(
        o.messages,
        o.recipients,
        o.sessions,
        "user@example.com",
        guard,
    )
    .map_err(|e| e.to_string())?;
    let submitted = t0.elapsed();
    let drained = inst.wait_queue_empty(guard);
    let got = sink.wait_received(o.messages as usize, Duration::from_secs(30));
    let elapsed = t0.elapsed();
    // Let postlogd catch up before counting log lines.
    std::thread::sleep(Duration::from_millis(500));
    let log = inst.log();
    let qmgr = inst.queue_manager().log_program();

    println!("--- summary ---");
    println!("messages sent by smtp-source:   {}", o.messages);
    println!("messages received by smtp-sink: {}", sink.received());
    println!(
        "recipients received by smtp-sink: {} (expected {expected})",
        sink.recipients_received()
    );
    println!(
        "submission took:                {:.2} s",
        submitted.as_secs_f64()
    );
    println!(
        "submission to empty queue:      {:.2} s",
        elapsed.as_secs_f64()
    );
    println!(
        "{qmgr} log lines: {} total, {} '(queue active)', {} 'removed', {} warnings",
        log.of_program(&qmgr).len(),
        log.matching(&qmgr, "(queue active)").len(),
        log.matching(&qmgr, ": removed").len(),
        log.matching(&qmgr, "warning:").len()
    );
    println!(
        "delivery results: {} sent, {} deferred, {} bounced",
        log.count("status=sent"),
        log.count("status=deferred"),
        log.count("status=bounced")
    );
    println!(
        "queue at the end: {}",
        match &drained {
            Ok(()) => "empty".to_string(),
            Err(_) => format!("NOT empty ({} messages)", inst.queued_count()),
        }
    );
    if let Err(e) = &drained {
        eprintln!("{e}");
    }
    if let Err(e) = &got {
        eprintln!("{e}");
    }
    Ok(drained.is_ok() && got.is_ok() && sink.recipients_received() >= expected)
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&o) {
        Ok(true) => {
            println!("demo OK: every message was delivered; everything stopped");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("demo FAILED: not every message was delivered");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("demo FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
