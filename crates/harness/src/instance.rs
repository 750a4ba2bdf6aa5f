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
//! * `ROOT/spool`: `queue_directory` (created by `postfix start`);
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
//! repeated until none is left) and ROOT removed, unless `RQMGR_KEEP_TEST_DIR`
//! is set. When dropped during a panic it prints the tail of its mail log.
//! If the test process dies without running drop handlers, the next harness
//! user reaps the orphaned instance (see the `orphans` module).
//!
//! Limits: start-up failures that Postfix reports only to syslog are not
//! visible (there is no /dev/log here); `start` reports `postfix check` and
//! `postfix start` output and the mail log instead, which covers the usual
//! culprits (bad main.cf/master.cf values).

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
}

/// The default master.cf: Debian's entries for the services a test needs,
/// all without chroot (the queue manager line is added separately).
const MASTER_CF: &[&str] = &[
    "pickup    unix  n       -       n       60      1       pickup",
    "cleanup   unix  n       -       n       -       0       cleanup",
    "rewrite   unix  -       -       n       -       -       trivial-rewrite",
    "bounce    unix  -       -       n       -       0       bounce",
    "defer     unix  -       -       n       -       0       bounce",
    "trace     unix  -       -       n       -       0       bounce",
    "verify    unix  -       -       n       -       1       verify",
    "flush     unix  n       -       n       1000?   0       flush",
    "proxymap  unix  -       -       n       -       -       proxymap",
    "proxywrite unix -       -       n       -       1       proxymap",
    "smtp      unix  -       -       n       -       -       smtp",
    "relay     unix  -       -       n       -       -       smtp",
    "showq     unix  n       -       n       -       -       showq",
    "error     unix  -       -       n       -       -       error",
    "retry     unix  -       -       n       -       -       error",
    "discard   unix  -       -       n       -       -       discard",
    "local     unix  -       n       n       -       -       local",
    "virtual   unix  -       n       n       -       -       virtual",
    "lmtp      unix  -       -       n       -       -       lmtp",
    "anvil     unix  -       -       n       -       1       anvil",
    "scache    unix  -       -       n       -       1       scache",
    "postlog   unix-dgram n  -       n       -       1       postlogd",
];

/// The key of a master.cf entry: its service name. A line given for a
/// service replaces the default one whatever its type, because two entries
/// of one name (`qmgr unix` and `qmgr fifo`) would both claim
/// `public/qmgr`.
fn master_key(entry: &str) -> String {
    entry.split_whitespace().next().unwrap_or("").to_string()
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
        };
        inst.lay_out(&b, &install)?;
        inst.postfix_start()?;
        Ok(inst)
    }

    fn lay_out(&self, b: &InstanceBuilder, install: &crate::PostfixInstall) -> Result<()> {
        let root = &self.root;
        let mkdir =
            |p: &Path| std::fs::create_dir_all(p).map_err(|e| Error::io(format!("mkdir {p:?}"), e));
        for sub in ["etc", "spool", "data", "libexec", "mail"] {
            mkdir(&root.join(sub))?;
        }
        crate::chown_to_user(&root.join("data"), "postfix")?;
        crate::set_mode(&root.join("mail"), 0o1777)?;

        // Stock daemons, copied (not linked: Postfix warns about symlinks).
        let entries = std::fs::read_dir(&install.daemon_directory)
            .map_err(|e| Error::io(format!("reading {:?}", install.daemon_directory), e))?;
        for e in entries {
            let e = e.map_err(|e| Error::io("reading daemon_directory", e))?;
            if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                let to = root.join("libexec").join(e.file_name());
                std::fs::copy(e.path(), &to)
                    .map_err(|err| Error::io(format!("copy {:?}", e.path()), err))?;
            }
        }
        if let Some(bin) = self.queue_manager.binary() {
            let to = self.daemon_path(self.queue_manager.command());
            // Remove first: overwriting a copy in place would fail with
            // ETXTBSY if something ran it, and copy keeps the mode bits.
            let _ = std::fs::remove_file(&to);
            std::fs::copy(bin, &to).map_err(|e| Error::io(format!("copy {bin:?} to {to:?}"), e))?;
            crate::set_mode(&to, 0o755)?;
        }
        for f in ["postfix-files", "dynamicmaps.cf"] {
            let from = install.meta_directory.join(f);
            std::fs::copy(&from, root.join("etc").join(f)).map_err(|e| {
                Error::io(format!("copy {from:?} (is Postfix fully installed?)"), e)
            })?;
        }
        for d in ["postfix-files.d", "dynamicmaps.cf.d"] {
            let _ = std::fs::create_dir_all(root.join("etc").join(d));
        }

        std::fs::write(root.join("etc/main.cf"), self.main_cf_text(b))
            .map_err(|e| Error::io("writing main.cf", e))?;
        std::fs::write(root.join("etc/master.cf"), self.master_cf_text(b))
            .map_err(|e| Error::io("writing master.cf", e))?;
        Ok(())
    }

    fn main_cf_text(&self, b: &InstanceBuilder) -> String {
        let r = self.root.display();
        let aliases: Vec<String> = b
            .local_users
            .iter()
            .map(|u| format!("{{ {u} = {r}/mail/{u} }}"))
            .collect();
        let mut params: Vec<(String, String)> = vec![
            // 3.6 defaults, and no "backwards-compatible default" warnings.
            ("compatibility_level", "3.6".to_string()),
            ("config_directory", format!("{r}/etc")),
            ("meta_directory", format!("{r}/etc")),
            ("queue_directory", format!("{r}/spool")),
            ("data_directory", format!("{r}/data")),
            ("daemon_directory", format!("{r}/libexec")),
            ("maillog_file", format!("{r}/maillog")),
            ("maillog_file_prefixes", format!("{r}")),
            ("inet_interfaces", "loopback-only".to_string()),
            ("inet_protocols", "ipv4".to_string()),
            ("smtp_dns_support_level", "disabled".to_string()),
            ("mynetworks", "127.0.0.0/8".to_string()),
            (
                "smtpd_relay_restrictions",
                "permit_mynetworks, reject".to_string(),
            ),
            ("myhostname", b.myhostname.clone()),
            ("mydestination", "$myhostname, localhost".to_string()),
            ("alias_maps", format!("inline:{{ {} }}", aliases.join(", "))),
            ("alias_database", String::new()),
            ("local_recipient_maps", "$alias_maps".to_string()),
            ("biff", "no".to_string()),
            ("append_dot_mydomain", "no".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        match b.relay_port {
            Some(p) => params.push(("relayhost".into(), format!("[127.0.0.1]:{p}"))),
            None => params.push(("default_transport".into(), "discard".into())),
        }
        for (k, v) in &b.main_cf {
            params.retain(|(n, _)| n != k);
            params.push((k.clone(), v.clone()));
        }
        let mut text = String::from("# Written by rqmgr-harness for one test instance.\n");
        for (k, v) in params {
            text.push_str(&format!("{k} = {v}\n"));
        }
        text
    }

    fn master_cf_text(&self, b: &InstanceBuilder) -> String {
        let mut entries: Vec<String> = vec![
            format!(
                "{}      inet  n       -       n       -       -       smtpd",
                self.smtpd.port()
            ),
            format!(
                "qmgr      unix  n       -       n       300     1       {}",
                self.queue_manager.command()
            ),
        ];
        entries.extend(MASTER_CF.iter().map(|s| s.to_string()));
        entries.retain(|e| !b.without_services.contains(&master_key(e)));
        for extra in &b.master_cf {
            let key = master_key(extra);
            match entries.iter().position(|e| master_key(e) == key) {
                Some(i) => entries[i] = extra.clone(),
                None => entries.push(extra.clone()),
            }
        }
        let mut text = String::from("# Written by rqmgr-harness for one test instance.\n");
        for e in entries {
            text.push_str(e.trim_end());
            text.push('\n');
        }
        text
    }

    fn postfix_start(&mut self) -> Result<()> {
        let check = self.postfix_cmd(&["check"])?;
        if !check.success() || !only_expected_notices(&check.stderr) {
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

    /// Submits a message with `sendmail -C CONFIG -f FROM -- TO…`; `message`
    /// is the message text (headers, blank line, body; a bare body also
    /// works). Picked up by pickup(8), which polls every 60 s but is woken by
    /// postdrop at once.
    pub fn sendmail(&self, from: &str, to: &[&str], message: &str) -> Result<()> {
        self.sendmail_with(&[], from, to, message)
    }

    /// [`Instance::sendmail`] with extra sendmail `options` before `-f`
    /// (`-O requiretls=yes` on Postfix 3.11, `-N success`, `-V`...).
    pub fn sendmail_with(
        &self,
        options: &[&str],
        from: &str,
        to: &[&str],
        message: &str,
    ) -> Result<()> {
        let mut c = Command::new("sendmail");
        c.arg("-C")
            .arg(self.config_dir())
            .args(options)
            .args(["-f", from, "--"])
            .args(to);
        cmd::run_ok(c, Some(message.as_bytes()), CMD_TIMEOUT).map(|_| ())
    }

    /// Sends `count` messages of `recipients_per_msg` recipients over
    /// `sessions` parallel SMTP sessions with smtp-source(1) to this
    /// instance's smtpd. Recipients are `N` + `to` (smtp-source numbers them
    /// when `recipients_per_msg` > 1); the sender is `sender@myhostname`.
    /// Blocks until smtp-source is done (guard: `timeout`).
    pub fn smtp_source(
        &self,
        count: u32,
        recipients_per_msg: u32,
        sessions: u32,
        to: &str,
        timeout: Duration,
    ) -> Result<Output> {
        let mut c = Command::new("smtp-source");
        let port = self.smtpd.port();
        c.args(["-4", "-M", &self.myhostname])
            .args(["-f", &self.local_address("sender"), "-t", to])
            .args(["-m", &count.to_string()])
            .args(["-r", &recipients_per_msg.to_string()])
            .args(["-s", &sessions.to_string()])
            .arg(format!("127.0.0.1:{port}"));
        // Watch the queue manager meanwhile: without one, smtpd gets no
        // in-flow tokens and crawls at one message per in_flow_delay.
        let mut watch = QmgrWatch::new();
        let shown = format!("{c:?}");
        let out = cmd::run_watched(c, None, timeout, || watch.check(self)).map_err(|e| {
            Error::new(format!(
                "{e}\n--- maillog (tail) ---\n{}",
                tail(&self.maillog(), 40)
            ))
        })?;
        if out.success() {
            Ok(out)
        } else {
            Err(Error::new(format!("{shown} failed: {}", out.describe())))
        }
    }

    /// Sends trigger `letters` to the queue manager (`postkick public qmgr`).
    pub fn postkick(&self, letters: &str) -> Result<()> {
        self.postkick_service("qmgr", letters)
    }

    /// Sends trigger `letters` to the public service `service` (e.g.
    /// `pickup`) with `postkick`.
    pub fn postkick_service(&self, service: &str, letters: &str) -> Result<()> {
        let mut c = Command::new("postkick");
        c.arg("-c")
            .arg(self.config_dir())
            .args(["public", service, letters]);
        // Watched: with no working queue manager postkick can block.
        let mut watch = QmgrWatch::new();
        let out = cmd::run_watched(c, None, CMD_TIMEOUT, || watch.check(self))?;
        // postkick writes the letters, then a NUL byte; the server reads
        // once and closes, so the second write may raise SIGPIPE after the
        // letters were delivered. That is success.
        if out.success() || out.signal == Some(Signal::SIGPIPE as i32) {
            Ok(())
        } else {
            Err(Error::new(format!("postkick failed: {}", out.describe())))
        }
    }

    /// `postqueue -f`: flush the queue (triggers `FADI`).
    pub fn postqueue_flush(&self) -> Result<()> {
        self.postqueue(&["-f"]).map(|_| ())
    }

    /// Runs `postqueue -c CONFIG ARGS…`; a non-zero status is an error.
    pub fn postqueue(&self, args: &[&str]) -> Result<Output> {
        let mut c = Command::new("postqueue");
        c.arg("-c").arg(self.config_dir()).args(args);
        cmd::run_ok(c, None, CMD_TIMEOUT)
    }

    /// Runs `postsuper -c CONFIG ARGS…`; a non-zero status is an error.
    pub fn postsuper(&self, args: &[&str]) -> Result<Output> {
        let mut c = Command::new("postsuper");
        c.arg("-c").arg(self.config_dir()).args(args);
        cmd::run_ok(c, None, CMD_TIMEOUT)
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

    /// The live queue manager process(es).
    pub fn qmgr_pids(&self) -> Vec<i32> {
        procs::pids_with_exe(&self.daemon_path(self.queue_manager.command()))
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

    /// Queue ids of the files in `queue` (e.g. "deferred"), walking hash
    /// subdirectories; sorted.
    pub fn queue_ids(&self, queue: &str) -> Vec<String> {
        let mut ids = Vec::new();
        walk_queue(&self.queue_dir().join(queue), &mut ids);
        ids.sort();
        ids
    }

    /// The path of queue file `id` in `queue`, if present (searching hash
    /// subdirectories).
    pub fn queue_file_path(&self, queue: &str, id: &str) -> Option<PathBuf> {
        find_in_queue(&self.queue_dir().join(queue), id)
    }

    /// Number of messages in maildrop, incoming, active and deferred.
    pub fn queued_count(&self) -> usize {
        MAIL_QUEUES.iter().map(|q| self.queue_ids(q).len()).sum()
    }

    // ----- log and mailboxes -----

    /// The mail log text so far (empty if none yet).
    pub fn maillog(&self) -> String {
        std::fs::read_to_string(self.maillog_path()).unwrap_or_default()
    }

    /// The mail log so far, parsed.
    pub fn log(&self) -> Maillog {
        Maillog::new(self.maillog())
    }

    /// The content of local user `user`'s mailbox file (empty if none).
    pub fn mailbox(&self, user: &str) -> String {
        std::fs::read_to_string(self.root.join("mail").join(user)).unwrap_or_default()
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
            watch.check(self)?;
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

/// Collects queue-id-named files below `dir` (descending into the
/// one-character hash subdirectories).
fn walk_queue(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        match e.file_type() {
            Ok(t) if t.is_dir() && name.len() == 1 => walk_queue(&e.path(), out),
            Ok(t) if t.is_file() && valid_queue_file_name(&name) => out.push(name),
            _ => {}
        }
    }
}

/// Postfix's `mail_queue_id_ok`: 1–255 characters of `[A-Za-z0-9_]`.
fn valid_queue_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn find_in_queue(dir: &Path, id: &str) -> Option<PathBuf> {
    let direct = dir.join(id);
    if direct.is_file() {
        return Some(direct);
    }
    let entries = std::fs::read_dir(dir).ok()?;
    entries.flatten().find_map(|e| {
        let name = e.file_name();
        (name.len() == 1 && e.path().is_dir())
            .then(|| find_in_queue(&e.path(), id))
            .flatten()
    })
}

impl Instance {
    /// Writes `content` as a ready queue file `queue/id` (mode 0700, owned by
    /// the mail owner), atomically via rename so the queue manager never sees
    /// a half-written file. For tests that plant files (e.g. a corrupt one).
    pub fn plant_queue_file(&self, queue: &str, id: &str, content: &[u8]) -> Result<PathBuf> {
        let inst = self;
        if !is_queue_id(id) {
            return Err(Error::new(format!("{id:?} is not shaped like a queue id")));
        }
        let tmp = inst.queue_dir().join(format!(".plant-{id}"));
        std::fs::write(&tmp, content).map_err(|e| Error::io(format!("write {tmp:?}"), e))?;
        crate::set_mode(&tmp, 0o700)?;
        crate::chown_to_user(&tmp, "postfix")?;
        let to = inst.queue_dir().join(queue).join(id);
        std::fs::rename(&tmp, &to).map_err(|e| Error::io(format!("rename to {to:?}"), e))?;
        Ok(to)
    }
}

/// True when `stderr` of `postfix check` says nothing but what is expected
/// of a test instance: the notice that Postfix 3.11 and later print
/// whenever `compatibility_level` is below the newest level (the instances
/// keep 3.6, so that every supported Postfix runs them with the same
/// defaults), and postconf's "unused parameter" warning for rqmgr's own
/// parameters (`rqmgr_*`), which Postfix does not know. Anything else there
/// is a problem.
fn only_expected_notices(stderr: &str) -> bool {
    const NOTICE: [&str; 3] = [
        "Postfix is using backwards-compatible default settings",
        "See https://www.postfix.org/COMPATIBILITY_README.html for details",
        "To disable backwards compatibility use ",
    ];
    stderr.lines().all(|line| {
        let text = line.trim();
        let text = text.strip_prefix("postfix: ").unwrap_or(text);
        let ours = text.contains(": warning: ")
            && text
                .split_once(": unused parameter: ")
                .is_some_and(|(_, p)| p.starts_with("rqmgr_"));
        text.is_empty() || ours || NOTICE.iter().any(|n| text.starts_with(n))
    })
}

#[cfg(test)]
mod tests {
    use super::only_expected_notices;

    #[test]
    fn compatibility_notices_and_our_parameters_are_not_check_failures() {
        let notice = "postfix: Postfix is using backwards-compatible default settings\n\
            postfix: See https://www.postfix.org/COMPATIBILITY_README.html for details\n\
            postfix: To disable backwards compatibility use \"postconf compatibility_level=3.11\" \
            and \"postfix reload\"\n";
        assert!(only_expected_notices(notice));
        assert!(only_expected_notices(""));
        assert!(only_expected_notices(
            "/usr/sbin/postconf: warning: /t/etc/main.cf: unused parameter: rqmgr_x=1\n"
        ));
        assert!(!only_expected_notices(
            "/usr/sbin/postconf: warning: /t/etc/main.cf: unused parameter: foo=1\n"
        ));
        assert!(!only_expected_notices(
            "postfix/postfix-script: warning: not owned by postfix: /x\n"
        ));
        assert!(!only_expected_notices(&format!(
            "{notice}postfix: fatal: bad main.cf\n"
        )));
    }
}
