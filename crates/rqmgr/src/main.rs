//! rqmgr: a queue manager for Postfix, run by master(8) in place of qmgr.
//!
//! Start-up follows a Postfix single-server daemon: read main.cf (through
//! `postconf`, with master.cf's `-o` overrides) before anything else,
//! connect the log socket, change to the queue directory, drop privileges
//! (`-u`) and chroot (`-c`), then run the event loop until master closes
//! the status descriptor. Exit status: 0 when master goes away, 1 on a
//! fatal error (logged as Postfix logs one), so master restarts us.
//!
//! Started as `oqmgr` (by its command name in master.cf) rqmgr schedules
//! as oqmgr does; under any other name as qmgr does.

#![deny(unsafe_code)]

mod activate;
mod adhoc;
mod deliver;
mod finish;
mod logging;
mod message;
mod params;
mod postfix_version;
mod runtime;
mod scan;
mod watchdog;

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use rqmgr_ipc::master::{self, DaemonArgs, InFlowPipe, StatusChannel};
use rqmgr_sched::{Config, Feedback, Scheduler, TransportConfig};

use crate::logging::{LogConfig, Logger};
use crate::params::{FeedbackKind, QmgrParams, RawParams};
use crate::runtime::{MasterLink, Runtime};

fn main() {
    std::process::exit(start());
}

/// Everything before the event loop; returns the exit status.
fn start() -> i32 {
    let argv: Vec<String> = std::env::args().collect();
    let program = argv.first().cloned().unwrap_or_else(|| "qmgr".to_owned());
    let process_name = Path::new(&program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "qmgr".to_owned());
    let args = match DaemonArgs::parse(argv.iter().cloned()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{process_name}: fatal: {e}");
            return 1;
        }
    };
    let config_dir = std::env::var_os("MAIL_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/postfix"));
    let mut raw = match RawParams::load(&config_dir, &args.overrides) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{process_name}: fatal: {e}");
            return 1;
        }
    };
    raw.set("process_name", &process_name);
    let (p, warnings) = match QmgrParams::from_raw(&raw) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{process_name}: fatal: {e}");
            return 1;
        }
    };
    let log = match Logger::new(&LogConfig::from_params(&p, args.stderr_log)) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            eprintln!("{process_name}: fatal: open log: {e}");
            return 1;
        }
    };
    for w in &warnings {
        log.warning(w);
    }
    // The other daemons' protocol dialect, chosen once (postfix_version.rs).
    let compat = match postfix_version::choose(
        raw.get("mail_version"),
        raw.get(postfix_version::DIALECT_PARAM),
    ) {
        Ok(choice) => {
            if let Some(w) = &choice.warning {
                log.warning(w);
            } else if args.verbose > 0 {
                log.info(&choice.info);
            }
            choice.compat
        }
        Err(e) => {
            log.fatal(&e.to_string());
            return 1;
        }
    };
    // A broken invariant of our own is logged as Postfix logs a panic,
    // where the operator looks, before the process dies.
    let panic_log = Arc::clone(&log);
    std::panic::set_hook(Box::new(move |info| panic_log.panic(&info.to_string())));
    if !args.solitary {
        log.fatal(&format!(
            "service {} requires a process limit of 1",
            args.service_name()
        ));
        return 1;
    }
    if let Err(e) = std::env::set_current_dir(&p.queue_directory) {
        log.fatal(&format!("chdir(\"{}\"): {}", p.queue_directory, e));
        return 1;
    }
    if let Err(text) = drop_privileges(&p, &args) {
        log.fatal(&text);
        return 1;
    }
    let mut sched = Scheduler::new(sched_config(&p, &raw, &process_name, &log));
    // Read more of a large message while its deliveries run, as Postfix
    // does; the runtime appends such batches (activate.rs, `refill`).
    sched.set_early_refill(true);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log.fatal(&format!("event loop: {e}"));
            return 1;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let link = match adopt_master() {
            Ok(link) => link,
            Err(e) => {
                log.fatal(&format!("master descriptors: {e}"));
                return 1;
            }
        };
        Runtime::new(p, compat, log, sched).run(link).await
    })
}

fn adopt_master() -> std::io::Result<MasterLink> {
    // Without GENERATION master would drop our status updates; 0 is what
    // a daemon started by hand (no master) can live with.
    let generation = master::generation_from_env().unwrap_or(0);
    Ok(MasterLink {
        status: StatusChannel::adopt(generation)?,
        flow: InFlowPipe::adopt().ok(),
        listener: master::adopt_listener(master::MASTER_LISTEN_FD)?,
    })
}

/// `-u`: become mail_owner; `-c`: chroot to the queue directory first.
fn drop_privileges(p: &QmgrParams, args: &DaemonArgs) -> Result<(), String> {
    use nix::unistd::{chroot, initgroups, setgid, setuid, User};
    let user = if args.unprivileged {
        match User::from_name(&p.mail_owner) {
            Ok(Some(u)) => Some(u),
            Ok(None) => {
                return Err(format!(
                    "unknown mail privilege user name: {}",
                    p.mail_owner
                ))
            }
            Err(e) => return Err(format!("getpwnam {}: {}", p.mail_owner, e.desc())),
        }
    } else {
        None
    };
    if let Some(u) = &user {
        setgid(u.gid).map_err(|e| format!("setgid({}): {}", u.gid, e.desc()))?;
        let name =
            std::ffi::CString::new(u.name.as_bytes()).map_err(|_| "bad user name".to_owned())?;
        initgroups(&name, u.gid).map_err(|e| format!("initgroups: {}", e.desc()))?;
    }
    if args.chroot {
        chroot(".").map_err(|e| format!("chroot({}): {}", p.queue_directory, e.desc()))?;
        std::env::set_current_dir("/").map_err(|e| format!("chdir(\"/\"): {e}"))?;
    }
    if let Some(u) = &user {
        setuid(u.uid).map_err(|e| format!("setuid({}): {}", u.uid, e.desc()))?;
    }
    Ok(())
}

/// The scheduler's configuration from main.cf. Per-transport values are
/// looked up when a transport first appears, as Postfix does; a bad
/// per-transport value is fatal then, with Postfix's message.
fn sched_config(p: &QmgrParams, raw: &RawParams, process_name: &str, log: &Arc<Logger>) -> Config {
    let params = Rc::new((p.clone(), raw.clone()));
    let fatal_log = Arc::clone(log);
    let transports = Box::new(move |name: &str| {
        let (p, raw) = &*params;
        match p.transport(raw, name) {
            Ok((t, warnings)) => {
                for w in warnings {
                    fatal_log.warning(&w);
                }
                if p.destination_concurrency_feedback_debug {
                    let init = t.initial_dest_concurrency;
                    for fb in [
                        &t.dest_concurrency_positive_feedback,
                        &t.dest_concurrency_negative_feedback,
                    ] {
                        fatal_log.info(&params::TransportParams::feedback_debug_line(
                            name, fb, init,
                        ));
                    }
                }
                transport_config(&t)
            }
            Err(e) => {
                fatal_log.fatal(&e.to_string());
                std::process::exit(1);
            }
        }
    });
    Config {
        message_active_limit: usize::try_from(p.qmgr_message_active_limit)
            .unwrap_or(1)
            .max(1),
        message_recipient_limit: usize::try_from(p.qmgr_message_recipient_limit)
            .unwrap_or(1)
            .max(1),
        message_recipient_minimum: usize::try_from(p.qmgr_message_recipient_minimum)
            .unwrap_or(1)
            .max(1),
        min_backoff: p.minimal_backoff_time,
        max_backoff: p.maximal_backoff_time,
        transport_retry_time: p.transport_retry_time,
        fudge_factor: u32::try_from(p.qmgr_fudge_factor).unwrap_or(100),
        site_hog_factor: u32::try_from(p.qmgr_site_hog_factor).unwrap_or(100),
        preemptive: process_name != "oqmgr",
        clog_warn_time: if p.helpful_warnings {
            p.qmgr_clog_warn_time
        } else {
            std::time::Duration::ZERO
        },
        recipient_delimiter: p.recipient_delimiter.clone(),
        transports,
    }
}

fn transport_config(t: &params::TransportParams) -> TransportConfig {
    let n = |v: i32| u32::try_from(v).unwrap_or(0);
    let fb = |f: &params::Feedback| Feedback {
        value: f.base,
        per_concurrency: f.kind == FeedbackKind::PerConcurrency,
    };
    TransportConfig {
        dest_concurrency_limit: n(t.dest_concurrency_limit),
        dest_recipient_limit: n(t.dest_recipient_limit),
        init_dest_concurrency: n(t.initial_dest_concurrency),
        positive_feedback: fb(&t.dest_concurrency_positive_feedback),
        negative_feedback: fb(&t.dest_concurrency_negative_feedback),
        failed_cohort_limit: n(t.dest_concurrency_failed_cohort_limit),
        dest_rate_delay: t.dest_rate_delay,
        transport_rate_delay: t.transport_rate_delay,
        recipient_limit: n(t.recipient_limit),
        extra_recipient_limit: n(t.extra_recipient_limit),
        recipient_refill_limit: n(t.recipient_refill_limit),
        recipient_refill_delay: t.recipient_refill_delay,
        delivery_slot_cost: n(t.delivery_slot_cost),
        delivery_slot_loan: n(t.delivery_slot_loan),
        delivery_slot_discount: n(t.delivery_slot_discount),
        minimum_delivery_slots: n(t.minimum_delivery_slots),
    }
}
