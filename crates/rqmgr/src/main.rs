//! rqmgr: a queue manager for Postfix, run by master(8) in place of qmgr.
//!
//! Start-up follows a Postfix single-server daemon: read main.cf (through
//! `postconf`, with master.cf's `-o` overrides) before anything else,
//! connect the log socket, change to the queue directory, drop privileges
//! (`-u`) and chroot (`-c`), then run the event loop until master closes
//! the status descriptor. Exit status: 0 when master goes away, 1 on a
//! fatal error (logged as Postfix logs one), so master restarts us.
//!
//! Started as `oqmgr` rqmgr schedules as oqmgr does, as `qmgr` as qmgr
//! does; under its own name the `rqmgr_scheduler` parameter chooses
//! (role.rs).

#![deny(unsafe_code)]

mod activate;
mod address;
mod adhoc;
mod admin;
mod clock;
mod control;
mod deliver;
mod disposition;
mod finish;
mod flow;
mod logging;
mod message;
mod metrics;
mod notify;
mod operator;
mod params;
mod persist;
mod postfix_version;
mod resolve;
mod role;
mod routing;
mod runtime;
mod scan;
mod spool;
mod state;
mod triggers;
mod watchdog;

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use rqmgr_ipc::master::{self, DaemonArgs, InFlowPipe, StatusChannel};
use rqmgr_sched::{Config, Scheduler};

use crate::logging::{LogConfig, Logger};
use crate::params::{QmgrParams, RawParams};
use crate::runtime::{MasterLink, Runtime};

fn main() {
    // Arguments are bytes to Postfix; ours are read the same, never refused.
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let program = argv.first().cloned().unwrap_or_else(|| "qmgr".to_owned());
    let file_name = Path::new(&program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // What to log as until main.cf is read (see role.rs).
    let process_name = role::queue_manager_name(&file_name, None).unwrap_or("qmgr");
    let mut log = None;
    let status = match start(argv, &file_name, &mut log) {
        Ok(status) => status,
        // Every start-up failure ends here: in the mail log (or syslog,
        // before main.cf is read); on stderr only if no log can be had.
        Err(text) => {
            match &log {
                Some(log) => log.fatal(&text),
                None => eprintln!("{process_name}: fatal: {text}"),
            }
            1
        }
    };
    std::process::exit(status);
}

/// Everything before the event loop, then the loop; returns the exit
/// status, or the text of a fatal start-up error. `log` is set as soon as
/// logging is up.
fn start(argv: Vec<String>, file_name: &str, log: &mut Option<Arc<Logger>>) -> Result<i32, String> {
    let process_name = role::queue_manager_name(file_name, None).unwrap_or("qmgr");
    // Until the configuration is read and checked, fatal errors go where
    // Postfix sends them then (see LogConfig::early).
    *log = Logger::new(&LogConfig::early(None, process_name, false))
        .ok()
        .map(Arc::new);
    let args = DaemonArgs::parse(argv).map_err(|e| e.to_string())?;
    // postconf, run below, must not inherit master's descriptors.
    let last_listener = master::MASTER_LISTEN_FD + i32::try_from(args.listen_fds).unwrap_or(1);
    master::close_on_exec(3..last_listener);
    let config_dir = std::env::var_os("MAIL_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/postfix"));
    let mut raw = RawParams::load(&config_dir, &args.overrides).map_err(|e| e.to_string())?;
    let process_name = role::queue_manager_name(file_name, raw.get(role::SCHEDULER_PARAM))?;
    raw.set("process_name", process_name);
    if let Ok(early) = Logger::new(&LogConfig::early(Some(&raw), process_name, args.stderr_log)) {
        *log = Some(Arc::new(early));
    }
    let (p, warnings) = QmgrParams::from_raw(&raw).map_err(|e| e.to_string())?;
    let logger = Logger::new(&LogConfig::from_params(&p, args.stderr_log))
        .map_err(|e| format!("open log: {e}"))?;
    let logger = &*log.insert(Arc::new(logger));
    for w in &warnings {
        logger.warning(w);
    }
    // The other daemons' protocol dialect, chosen once (postfix_version.rs).
    let choice = postfix_version::choose(
        raw.get("mail_version"),
        raw.get(postfix_version::DIALECT_PARAM),
    )
    .map_err(|e| e.to_string())?;
    if let Some(w) = &choice.warning {
        logger.warning(w);
    } else if args.verbose > 0 {
        logger.info(&choice.info);
    }
    // A broken invariant of our own is logged as Postfix logs a panic,
    // where the operator looks, and the process dies as Postfix's
    // msg_panic() makes it (abort), so that master starts a fresh one. Also
    // in a task: the runtime would otherwise catch the panic and run on
    // without what that task was doing.
    let panic_log = Arc::clone(logger);
    std::panic::set_hook(Box::new(move |info| {
        panic_log.panic(&info.to_string());
        std::process::abort();
    }));
    if !args.solitary {
        return Err(format!(
            "service {} requires a process limit of 1",
            args.service_name()
        ));
    }
    std::env::set_current_dir(&p.queue_directory)
        .map_err(|e| format!("chdir(\"{}\"): {}", p.queue_directory, e))?;
    // Looked up before a chroot hides the password file.
    let owner = nix::unistd::User::from_name(&p.mail_owner).ok().flatten();
    let owner_uid = owner.as_ref().map_or(0, |u| u.uid.as_raw());
    // data_directory is outside the chroot: its state directory is opened
    // now (operator.rs). Without it rqmgr runs on, forgetting at exit.
    let mut control = operator::Control::default();
    control.learned_state = learned_state(&raw);
    let ids = owner
        .filter(|_| nix::unistd::geteuid().is_root())
        .map(|u| (u.uid.as_raw(), u.gid.as_raw()));
    match persist::StateDir::open(raw.get("data_directory").unwrap_or(""), ids) {
        Ok(dir) => control.store = Some(dir),
        Err(e) => logger.warning(&format!(
            "state directory: {e}: overrides will not outlive this process"
        )),
    }
    drop_privileges(&p, &args)?;
    let mut sched = Scheduler::new(sched_config(&p, &raw, process_name, logger));
    // Read more of a large message while its deliveries run, as Postfix
    // does; the runtime appends such batches (activate.rs, `refill`).
    sched.set_early_refill(true);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("event loop: {e}"))?;
    // The descriptors master hands us join the event loop's reactor.
    let _in_runtime = rt.enter();
    let link = adopt_master().map_err(|e| format!("master descriptors: {e}"))?;
    let admin = admin_config(&raw, owner_uid);
    let top = raw
        .get(METRICS_TOP_PARAM)
        .and_then(|v| v.trim().parse().ok());
    let mail_version = raw.get("mail_version").unwrap_or("unknown").to_owned();
    let metrics = metrics::Metrics::new(&mail_version, process_name, top);
    let mut runtime = Runtime::new(
        p,
        choice.compat,
        Arc::clone(logger),
        sched,
        metrics,
        control,
    );
    let local = tokio::task::LocalSet::new();
    Ok(local.block_on(&rt, async move {
        runtime.serve_admin(admin::start(&admin, &Arc::clone(logger)));
        runtime.run(link).await
    }))
}

fn adopt_master() -> std::io::Result<MasterLink> {
    // Without GENERATION master would drop our status updates; 0 is what
    // a daemon started by hand (no master) can live with.
    let generation = master::generation_from_env().unwrap_or(0);
    Ok(MasterLink {
        status: StatusChannel::adopt(generation)?,
        flow: InFlowPipe::adopt().ok(),
        triggers: master::adopt_trigger_endpoint(master::MASTER_LISTEN_FD)?,
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
    let transports = Box::new(move |name: &[u8]| {
        let (p, raw) = &*params;
        // Parameter names are text (postconf's output); a transport name
        // that is not UTF-8 cannot name one of them.
        match p.transport(raw, &String::from_utf8_lossy(name)) {
            Ok((config, notes)) => {
                for w in &notes.warnings {
                    fatal_log.warning(w);
                }
                for line in &notes.debug {
                    fatal_log.info(line);
                }
                config
            }
            Err(e) => fatal_log.die(&e.to_string()),
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

/// Where the admin socket goes, relative to the queue directory (empty:
/// none).
const ADMIN_SOCKET_PARAM: &str = "rqmgr_admin_socket";
/// `host:port` for `/metrics` over TCP (empty, the default: none).
const METRICS_LISTEN_PARAM: &str = "rqmgr_metrics_listen";
/// How many destinations get gauges of their own besides throttled ones.
const METRICS_TOP_PARAM: &str = "rqmgr_metrics_top";
/// `no`: what the scheduler learned (windows, dead destinations, pauses)
/// dies with the process, as with the stock qmgr; overrides still persist.
const LEARNED_STATE_PARAM: &str = "rqmgr_learned_state";

fn learned_state(raw: &RawParams) -> bool {
    !matches!(
        raw.get(LEARNED_STATE_PARAM)
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref(),
        Some("no" | "false" | "0")
    )
}

/// The admin endpoints' settings (admin.rs), from main.cf and `-o`.
fn admin_config(raw: &RawParams, owner_uid: u32) -> admin::AdminConfig {
    admin::AdminConfig {
        socket: raw
            .get(ADMIN_SOCKET_PARAM)
            .unwrap_or("private/rqmgr")
            .trim()
            .to_owned(),
        metrics_listen: raw
            .get(METRICS_LISTEN_PARAM)
            .unwrap_or("")
            .trim()
            .to_owned(),
        owner_uid,
    }
}
