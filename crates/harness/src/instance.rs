//! `Instance`: a private Postfix instance in a temporary directory.
//!
//! Job: run stock Postfix daemons with a chosen queue manager, isolated from
//! the machine's own Postfix and from other tests, and offer the operations
//! end-to-end tests need (submit mail, flush, kick, inspect queues and the
//! log, kill or reload the queue manager, stop).
//!
//! Layout of an instance directory `ROOT`:
//! * `ROOT/etc`: `config_directory` (main.cf, master.cf, and copies of
//!   `postfix-files` and `dynamicmaps.cf` from the installed Postfix, which
//!   `postfix start`'s integrity check needs; `meta_directory` points here);
//! * `ROOT/spool`: `queue_directory` (created by `postfix start`; a small
//!   tmpfs if [`InstanceBuilder::queue_on_tmpfs`] asked for one);
//! * `ROOT/data`: `data_directory`, owned by `postfix`;
//! * `ROOT/libexec`: `daemon_directory`: *copies* of the stock daemons
//!   (symlinks make Postfix warn) plus the chosen queue manager binary copied
//!   in as `qmgr` (or `oqmgr`);
//! * `ROOT/maillog`: `maillog_file`, written by the `postlog` service
//!   (`maillog_file_prefixes` = `ROOT`, else Postfix refuses to start);
//! * `ROOT/mail/USER`: local "mailboxes".
//!
//! Local delivery: local(8) needs real users for mailbox delivery, and
//! delivering to root's mailbox as root is special-cased (default_privs). To
//! avoid creating system users, every local user of the instance (see
//! [`InstanceBuilder::local_user`]; by default `root`, `postmaster`,
//! `MAILER-DAEMON`, `alice`, `bob`, `sender`) is an alias to the file
//! `ROOT/mail/USER` (`alias_maps = inline:{…}`, also used as
//! `local_recipient_maps`). local(8) appends to such files with the
//! `default_privs` user (`nobody`), hence `ROOT/mail` is mode 1777. Mail to
//! any other local address bounces as "unknown user".
//!
//! Network: smtpd listens on its own leased port on 127.0.0.1 only
//! (`inet_interfaces = loopback-only`, `inet_protocols = ipv4`); DNS is off
//! (`smtp_dns_support_level = disabled`); non-local mail goes to
//! `relayhost = [127.0.0.1]:PORT` when [`InstanceBuilder::relay_to_port`] is
//! given, else to the `discard` transport (never to the Internet).
//!
//! Invariants: on drop the instance is stopped (`postfix stop`, then SIGKILL
//! for any process whose executable or working directory lies inside ROOT,
//! repeated until none is left), its queue tmpfs unmounted (ROOT is kept if
//! that fails) and ROOT removed, unless `RQMGR_KEEP_TEST_DIR` is set. When
//! dropped during a panic it prints the tail of its mail log.
//! If the test process dies without running drop handlers, the next harness
//! user reaps the orphaned instance (see the `orphans` module).
//!
//! Limits: start-up failures that Postfix reports only to syslog are not
//! visible (there is no /dev/log here); `start` reports `postfix check` and
//! `postfix start` output and the mail log instead, which covers the usual
//! culprits (bad main.cf/master.cf values).

mod config;
mod queue;
pub use queue::QueueFiller;
mod tools;

use crate::cmd::{self, Output};
use crate::error::{Error, Result};
use crate::maillog::{is_queue_id, Maillog};
use crate::ports::PortLease;
use crate::procs;
use nix::sys::signal::Signal;
use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

/// Time limit for one Postfix command (a guard against hangs).
const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the waits tolerate having no queue manager process at all.
pub const QMGR_ABSENCE_LIMIT: Duration = Duration::from_secs(10);

/// How many different queue manager processes one wait tolerates (crash
/// and reload tests see two).
pub const QMGR_RESPAWN_LIMIT: usize = 5;

/// The queues that hold mail waiting for (or in) delivery.
const MAIL_QUEUES: [&str; 4] = ["maildrop", "incoming", "active", "deferred"];

/// Which program runs as the queue manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueManager {
    /// Postfix's own `qmgr`.
    Stock,
    /// Postfix's own `oqmgr` (the old queue manager), as command `oqmgr`.
    StockOqmgr,
    /// This binary, installed as `qmgr`.
    Rqmgr(PathBuf),
    /// This binary, installed as `oqmgr` (master.cf runs command `oqmgr`).
    RqmgrAsOqmgr(PathBuf),
}

impl QueueManager {
    /// The master.cf command name (and the file name in daemon_directory).
    pub fn command(&self) -> &'static str {
        match self {
            QueueManager::Stock | QueueManager::Rqmgr(_) => "qmgr",
            QueueManager::StockOqmgr | QueueManager::RqmgrAsOqmgr(_) => "oqmgr",
        }
    }

    /// The log tag its lines carry (`postfix/qmgr` or `postfix/oqmgr`):
    /// Postfix daemons log under their command name.
    pub fn log_program(&self) -> String {
        format!("postfix/{}", self.command())
    }

    /// The replacement binary, if not stock.
    pub fn binary(&self) -> Option<&Path> {
        match self {
            QueueManager::Rqmgr(p) | QueueManager::RqmgrAsOqmgr(p) => Some(p),
            _ => None,
        }
    }
}

/// Configures and starts an [`Instance`].
#[derive(Debug, Clone)]
pub struct InstanceBuilder {
    queue_manager: QueueManager,
    main_cf: Vec<(String, String)>,
    master_cf: Vec<String>,
    without_services: Vec<String>,
    relay_port: Option<u16>,
    local_users: Vec<String>,
    myhostname: String,
    queue_tmpfs_bytes: Option<u64>,
}

impl Default for InstanceBuilder {
    fn default() -> Self {
        InstanceBuilder {
            queue_manager: QueueManager::Stock,
            main_cf: Vec::new(),
            master_cf: Vec::new(),
            without_services: Vec::new(),
            relay_port: None,
            local_users: [
                "root",
                "postmaster",
                "MAILER-DAEMON",
                "alice",
                "bob",
                "sender",
            ]
            .map(String::from)
            .to_vec(),
            myhostname: "test.localdomain".to_string(),
            queue_tmpfs_bytes: None,
        }
    }
}

impl InstanceBuilder {
    /// Chooses the queue manager (default: stock qmgr).
    pub fn queue_manager(mut self, qm: QueueManager) -> Self {
        self.queue_manager = qm;
        self
    }

    /// Sets a main.cf parameter, replacing the harness's default or an earlier
    /// call for the same name.
    pub fn main_cf(mut self, name: &str, value: &str) -> Self {
        self.main_cf.retain(|(n, _)| n != name);
        self.main_cf.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds a master.cf entry (may contain continuation lines). An entry with
    /// the same service name as a default entry replaces it, e.g.
    /// `"qmgr unix n - n 300 1 qmgr -o queue_run_delay=5s"`.
    pub fn master_cf_line(mut self, line: &str) -> Self {
        self.master_cf.push(line.to_string());
        self
    }

    /// Leaves the service `name` out of master.cf (e.g. `retry`, to make
    /// that transport unavailable).
    pub fn without_master_service(mut self, name: &str) -> Self {
        self.without_services.push(name.to_string());
        self
    }

    /// Relays all non-local mail to `127.0.0.1:port` (e.g. an [`crate::SmtpSink`]).
    pub fn relay_to_port(mut self, port: u16) -> Self {
        self.relay_port = Some(port);
        self
    }

    /// Adds a local user whose mail lands in `ROOT/mail/NAME`.
    pub fn local_user(mut self, name: &str) -> Self {
        if !self.local_users.iter().any(|u| u == name) {
            self.local_users.push(name.to_string());
        }
        self
    }

    /// Sets `myhostname` (default `test.localdomain`).
    pub fn myhostname(mut self, name: &str) -> Self {
        self.myhostname = name.to_string();
        self
    }

    /// Puts the queue directory on a tmpfs of `bytes`, so that a test can
    /// fill it (see [`Instance::fill_queue_filesystem`]). The tmpfs is
    /// mounted before Postfix starts and unmounted when the instance is
    /// dropped, after every process of it is gone.
    pub fn queue_on_tmpfs(mut self, bytes: u64) -> Self {
        self.queue_tmpfs_bytes = Some(bytes);
        self
    }

    /// Creates the instance directory and starts Postfix.
    pub fn start(self) -> Result<Instance> {
        Instance::create(self)
    }
}

/// A running private Postfix instance; see the module documentation.
#[derive(Debug)]
pub struct Instance {
    dir: Option<crate::orphans::TestDir>,
    root: PathBuf,
    smtpd: PortLease,
    queue_manager: QueueManager,
    myhostname: String,
    running: bool,
    /// The queue directory is a tmpfs this instance mounted.
    queue_tmpfs: bool,
}

impl Instance {
    /// A builder with the defaults described in the module documentation.
    pub fn builder() -> InstanceBuilder {
        InstanceBuilder::default()
    }

    fn create(b: InstanceBuilder) -> Result<Instance> {
        let install = crate::require_postfix()?;
        if let Some(bin) = b.queue_manager.binary() {
            if !bin.is_file() {
                return Err(Error::new(format!(
                    "queue manager binary {bin:?} does not exist (build it first)"
                )));
            }
        }
        let smtpd = PortLease::new()?;
        let dir = crate::test_tempdir("rqmgr-pf-")?;
        let root = dir.path().to_path_buf();
        // From here on, `inst` owns the directory: an early return drops it,
        // which stops whatever was started and removes the directory.
        let mut inst = Instance {
            dir: Some(dir),
            root: root.clone(),
            smtpd,
            queue_manager: b.queue_manager.clone(),
            myhostname: b.myhostname.clone(),
            running: false,
            queue_tmpfs: false,
        };
        if let Some(bytes) = b.queue_tmpfs_bytes {
            inst.mount_queue_tmpfs(bytes)?;
        }
        inst.lay_out(&b, &install)?;
        inst.postfix_start()?;
        Ok(inst)
    }

    fn postfix_start(&mut self) -> Result<()> {
        let check = self.postfix_cmd(&["check"])?;
        if !check.success() || !config::only_expected_notices(&check.stderr) {
            return Err(Error::new(format!(
                "`postfix check` of the test instance failed: {}{}\n--- maillog ---\n{}",
                check.describe(),
                self.diagnose("check"),
                self.maillog()
            )));
        }
        let start = self.postfix_cmd(&["start"])?;
        // Set even on failure: master may be half up, and drop must stop it.
        self.running = true;
        if !start.success() {
            return Err(Error::new(format!(
                "`postfix start` failed: {}{}\n--- maillog ---\n{}",
                start.describe(),
                self.diagnose("start"),
                self.maillog()
            )));
        }
        let port = self.smtpd.port();
        crate::poll(Duration::from_secs(30), || {
            Ok(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok().map(|_| ()))
        })
        .map_err(|e| {
            Error::new(format!(
                "smtpd of the test instance is not listening on port {port}: {e}\n--- maillog ---\n{}",
                self.maillog()
            ))
        })
    }

    /// Postfix commands report early errors only to syslog, absent here, or
    /// to stderr when that is a terminal: re-run `postfix -c CONFIG ARG`
    /// under a pseudo-terminal (util-linux `script`) to show the reason.
    fn diagnose(&self, arg: &str) -> String {
        let mut c = Command::new("script");
        let line = format!("postfix -c {} {arg}", self.config_dir().display());
        c.args(["-qec", &line, "/dev/null"]);
        match cmd::run(c, None, CMD_TIMEOUT) {
            Ok(out) => format!(
                "\n--- `{line}` on a terminal (shows what went to syslog) ---\n{}{}",
                out.stdout, out.stderr
            ),
            Err(e) => format!("\n(could not re-run on a terminal: {e})"),
        }
    }

    // ----- paths and facts -----

    /// The instance directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config_directory` (pass to `postfix -c`, `sendmail -C`, …).
    pub fn config_dir(&self) -> PathBuf {
        self.root.join("etc")
    }

    /// `queue_directory`.
    pub fn queue_dir(&self) -> PathBuf {
        self.root.join("spool")
    }

    /// The path of a program in the instance's `daemon_directory`.
    pub fn daemon_path(&self, name: &str) -> PathBuf {
        self.root.join("libexec").join(name)
    }

    /// The mail log file.
    pub fn maillog_path(&self) -> PathBuf {
        self.root.join("maillog")
    }

    /// smtpd's TCP port on 127.0.0.1.
    pub fn smtpd_port(&self) -> u16 {
        self.smtpd.port()
    }

    /// The queue manager this instance runs.
    pub fn queue_manager(&self) -> &QueueManager {
        &self.queue_manager
    }

    /// `myhostname`; local users' addresses are `USER@myhostname`.
    pub fn myhostname(&self) -> &str {
        &self.myhostname
    }

    /// The address of local user `user`.
    pub fn local_address(&self, user: &str) -> String {
        format!("{user}@{}", self.myhostname)
    }

    // ----- Postfix commands -----

    /// Runs `postfix -c CONFIG ARGS…` and returns its output (any status).
    pub fn postfix_cmd(&self, args: &[&str]) -> Result<Output> {
        let mut c = Command::new("postfix");
        c.arg("-c").arg(self.config_dir()).args(args);
        cmd::run(c, None, CMD_TIMEOUT)
    }

    /// `postfix reload`.
    pub fn reload(&self) -> Result<()> {
        let out = self.postfix_cmd(&["reload"])?;
        if out.success() {
            Ok(())
        } else {
            Err(Error::new(format!(
                "postfix reload failed: {}",
                out.describe()
            )))
        }
    }

    /// `postfix stop`, then waits (guard 30 s) until no process of the
    /// instance is left. Unlike drop it kills nothing: survivors are an
    /// error, so a test can check that stop works with its queue manager.
    pub fn stop(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        let out = self.postfix_cmd(&["stop"])?;
        self.running = false;
        if !out.success() {
            return Err(Error::new(format!(
                "postfix stop failed: {}",
                out.describe()
            )));
        }
        let left = procs::wait_gone(&self.root, Duration::from_secs(30));
        if left.is_empty() {
            Ok(())
        } else {
            Err(Error::new(format!(
                "processes of the instance survived `postfix stop`: {}",
                describe_pids(&left)
            )))
        }
    }

    /// Starts Postfix again after [`Instance::stop`].
    pub fn restart(&mut self) -> Result<()> {
        self.postfix_start()
    }

    // ----- processes -----

    /// Every live process of the instance (executable or working directory
    /// inside its directory).
    pub fn pids(&self) -> Vec<i32> {
        procs::pids_under(&self.root)
    }

    /// The live queue manager process(es) that master runs: the chosen
    /// one, or another queue manager a test switched the instance to
    /// (rqmgrctl). A child a queue manager forked is not one, even while
    /// it still runs the queue manager's executable.
    pub fn qmgr_pids(&self) -> Vec<i32> {
        let chosen = self.queue_manager.command();
        let mut paths = vec![self.daemon_path(chosen)];
        for other in ["qmgr", "oqmgr", "rqmgr"]
            .into_iter()
            .filter(|&o| o != chosen)
        {
            paths.push(self.daemon_path(other));
        }
        let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        procs::children_with_any_exe(&self.daemon_path("master"), &paths)
    }

    /// The live processes running `daemon_directory/program`.
    pub fn daemon_pids(&self, program: &str) -> Vec<i32> {
        procs::pids_with_exe(&self.daemon_path(program))
    }

    /// Waits until a queue manager process runs and returns its pid.
    pub fn wait_for_qmgr(&self, timeout: Duration) -> Result<i32> {
        self.wait_for(timeout, "a queue manager process", || {
            Ok(self.qmgr_pids().first().copied())
        })
    }

    /// Sends `signal` to the queue manager; returns the pids signalled
    /// (an error if none runs).
    pub fn kill_qmgr(&self, signal: Signal) -> Result<Vec<i32>> {
        let pids = self.qmgr_pids();
        if pids.is_empty() {
            return Err(Error::new("no queue manager process to signal"));
        }
        for p in &pids {
            procs::kill_pid(*p, signal);
        }
        Ok(pids)
    }

    // ----- queue -----

    // ----- log and mailboxes -----

    /// The mail log text so far (empty if none yet).
    pub fn maillog(&self) -> String {
        crate::text_file(&self.maillog_path())
    }

    /// The mail log so far, parsed.
    pub fn log(&self) -> Maillog {
        Maillog::new(self.maillog())
    }

    /// The content of local user `user`'s mailbox file (empty if none).
    pub fn mailbox(&self, user: &str) -> String {
        crate::text_file(&self.root.join("mail").join(user))
    }

    // ----- waiting -----

    /// Fails fast when the queue manager is obviously broken: it logged a
    /// fatal error or panic, or master stopped restarting it ("bad command
    /// startup -- throttling"). Waiting on would only run into a timeout.
    pub fn check_qmgr_health(&self) -> Result<()> {
        let log = self.maillog();
        let tag = format!("{}[", self.queue_manager.log_program());
        let throttled = format!(
            "/{}: bad command startup -- throttling",
            self.queue_manager.command()
        );
        let bad = log.lines().find(|l| {
            (l.contains(&tag) && (l.contains("]: fatal: ") || l.contains("]: panic: ")))
                || l.contains(&throttled)
        });
        match bad {
            Some(line) => Err(Error::new(format!("the queue manager failed: {line}"))),
            None => Ok(()),
        }
    }

    /// Polls `f` until it yields a value, watching the queue manager in
    /// between (see `QmgrWatch`); the error names `what` and carries the log
    /// tail.
    fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        let mut watch = QmgrWatch::new();
        crate::poll(timeout, || {
            if let Some(v) = f()? {
                return Ok(Some(v));
            }
            if let Err(unhealthy) = watch.check(self) {
                // The awaited condition may be the very failure just seen
                // (a test that expects a fatal line), or may have come true
                // a moment before it: look once more before giving up.
                return match f()? {
                    Some(v) => Ok(Some(v)),
                    None => Err(unhealthy),
                };
            }
            Ok(None)
        })
        .map_err(|e| {
            Error::new(format!(
                "waiting for {what}: {e}\n--- queue: {} message(s) ---\n--- maillog (tail) ---\n{}",
                self.queued_count(),
                tail(&self.maillog(), 40)
            ))
        })
    }

    /// Waits until `pred` holds for the mail log; returns that log.
    pub fn wait_for_log(
        &self,
        mut pred: impl FnMut(&Maillog) -> bool,
        timeout: Duration,
    ) -> Result<Maillog> {
        self.wait_for(timeout, "a condition on the mail log", || {
            let log = self.log();
            Ok(pred(&log).then_some(log))
        })
    }

    /// Waits until `pred` holds for the instance.
    pub fn wait_until(
        &self,
        mut pred: impl FnMut(&Instance) -> bool,
        timeout: Duration,
    ) -> Result<()> {
        self.wait_for(timeout, "a condition on the instance", || {
            Ok(pred(self).then_some(()))
        })
    }

    /// Waits until maildrop, incoming, active and deferred are all empty.
    pub fn wait_queue_empty(&self, timeout: Duration) -> Result<()> {
        self.wait_for(timeout, "an empty queue", || {
            Ok((self.queued_count() == 0).then_some(()))
        })
    }

    /// Waits until local user `user`'s mailbox contains `needle`; returns the
    /// mailbox.
    pub fn wait_mailbox_contains(
        &self,
        user: &str,
        needle: &str,
        timeout: Duration,
    ) -> Result<String> {
        self.wait_for(timeout, &format!("{needle:?} in {user}'s mailbox"), || {
            let m = self.mailbox(user);
            Ok(m.contains(needle).then_some(m))
        })
    }

    /// Seconds since the epoch of a file's mtime (for deferred-queue checks).
    pub fn mtime_secs(path: &Path) -> Result<u64> {
        let m = std::fs::metadata(path).map_err(|e| Error::io(format!("stat {path:?}"), e))?;
        let t = m.modified().map_err(|e| Error::io("mtime", e))?;
        Ok(t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0))
    }

    fn shutdown(&mut self) {
        if self.running {
            let _ = self.postfix_cmd(&["stop"]);
            self.running = false;
            procs::wait_gone(&self.root, Duration::from_secs(10));
        }
        // Whatever survived (e.g. a queue manager that ignores SIGTERM, or an
        // agent stuck in delivery) is killed; repeat while master may fork.
        let left = procs::kill_all_under(&self.root, Duration::from_secs(20));
        if !left.is_empty() {
            eprintln!("rqmgr-harness: could not kill: {}", describe_pids(&left));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "rqmgr-harness: instance {} ({:?}) at panic; maillog tail:\n{}",
                self.root.display(),
                self.queue_manager,
                tail(&self.maillog(), 60)
            );
        }
        self.shutdown();
        if self.queue_tmpfs && !self.unmount_queue_tmpfs() {
            // Never remove a tree with something still mounted in it.
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "rqmgr-harness: {} left in place: its queue tmpfs is still mounted",
                    dir.path().display()
                );
                std::mem::forget(dir);
            }
        }
        if let Some(dir) = self.dir.take() {
            crate::dispose_dir(dir);
        }
    }
}

/// Watches the queue manager during a wait and fails early when it is
/// obviously broken, instead of running into the wait's timeout:
/// * [`Instance::check_qmgr_health`] errors (fatal/panic/throttling);
/// * no queue manager process for [`QMGR_ABSENCE_LIMIT`]: Postfix's runs
///   permanently, and master restarts it at once on the next trigger after a
///   crash;
/// * more than [`QMGR_RESPAWN_LIMIT`] different queue manager processes seen
///   during one wait: it keeps exiting and master keeps starting it again
///   (an exit with status 0 is not logged by master).
struct QmgrWatch {
    last_seen: Instant,
    pids: HashSet<i32>,
}

impl QmgrWatch {
    fn new() -> QmgrWatch {
        QmgrWatch {
            last_seen: Instant::now(),
            pids: HashSet::new(),
        }
    }

    fn check(&mut self, inst: &Instance) -> Result<()> {
        inst.check_qmgr_health()?;
        if !inst.running {
            self.last_seen = Instant::now();
            return Ok(());
        }
        let pids = inst.qmgr_pids();
        if !pids.is_empty() {
            self.last_seen = Instant::now();
            self.pids.extend(pids);
        } else if self.last_seen.elapsed() > QMGR_ABSENCE_LIMIT {
            return Err(Error::new(format!(
                "no queue manager process has run for {QMGR_ABSENCE_LIMIT:?} (it keeps exiting?)"
            )));
        }
        if self.pids.len() > QMGR_RESPAWN_LIMIT {
            return Err(Error::new(format!(
                "{} different queue manager processes ran during one wait: it keeps exiting \
                 and master keeps restarting it",
                self.pids.len()
            )));
        }
        Ok(())
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// "pid (exe)" for each pid, for error messages.
fn describe_pids(pids: &[i32]) -> String {
    pids.iter()
        .map(|p| {
            let exe = std::fs::read_link(format!("/proc/{p}/exe")).unwrap_or_default();
            format!("{p} ({})", exe.display())
        })
        .collect::<Vec<_>>()
        .join(", ")
}
