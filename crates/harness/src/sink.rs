//! `SmtpSink`: Postfix's smtp-sink(1) test server on a private port.
//!
//! Job: be the far end of relayed mail. It accepts everything, or answers a
//! soft (4xx) or hard (5xx) error to chosen SMTP commands, and writes one dump
//! file per received message into its own directory so that messages can be
//! counted exactly. Switching modes restarts smtp-sink on the same port (the
//! port stays leased to this sink meanwhile).
//! Invariants: the smtp-sink process is killed on drop (also when a test
//! panics); the dump directory is removed with the sink unless
//! `RQMGR_KEEP_TEST_DIR` is set.
//! Limits: smtp-sink writes a dump file when a message's final "." arrives, so
//! the count is exact only for messages it has acknowledged.

use crate::error::{Error, Result};
use crate::ports::PortLease;
use crate::procs::kill_pid;
use nix::sys::signal::Signal;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the sink answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkMode {
    /// Accept every message.
    Accept,
    /// Answer `450 4.3.0` to the listed commands (e.g. `"RCPT"`, `"DATA"`,
    /// `"MAIL"`; comma-separated), i.e. smtp-sink `-r`.
    SoftReject(String),
    /// Answer `500 5.3.0` to the listed commands, i.e. smtp-sink `-f`.
    HardReject(String),
    /// Accept, but wait this many seconds before answering DATA (`-w`): keeps
    /// deliveries in flight for a while.
    SlowData(u32),
}

/// A running smtp-sink on 127.0.0.1.
#[derive(Debug)]
pub struct SmtpSink {
    lease: PortLease,
    dir: Option<crate::orphans::TestDir>,
    dump_dir: PathBuf,
    child: Option<Child>,
    mode: SinkMode,
}

impl SmtpSink {
    /// Starts a sink in `mode` on a fresh port.
    pub fn start(mode: SinkMode) -> Result<SmtpSink> {
        crate::require_postfix()?;
        let lease = PortLease::new()?;
        let dir = crate::test_tempdir("rqmgr-sink-")?;
        let dump_dir = dir.path().join("dump");
        std::fs::create_dir(&dump_dir).map_err(|e| Error::io("mkdir sink dump dir", e))?;
        // smtp-sink drops privileges to the postfix user before writing.
        crate::chown_to_user(&dump_dir, "postfix")?;
        let mut sink = SmtpSink {
            lease,
            dir: Some(dir),
            dump_dir,
            child: None,
            mode,
        };
        sink.spawn()?;
        Ok(sink)
    }

    fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new("smtp-sink");
        cmd.args(["-u", "postfix", "-4", "-d"])
            .arg(self.dump_dir.join("%H%M%S."));
        match &self.mode {
            SinkMode::Accept => {}
            SinkMode::SoftReject(cmds) => {
                cmd.args(["-r", cmds]);
            }
            SinkMode::HardReject(cmds) => {
                cmd.args(["-f", cmds]);
            }
            SinkMode::SlowData(secs) => {
                cmd.args(["-w", &secs.to_string()]);
            }
        }
        cmd.arg(format!("127.0.0.1:{}", self.lease.port()))
            .arg("256")
            .stdin(Stdio::null())
            // smtp-sink is quiet unless asked; keep its complaints visible in
            // the test output rather than in a pipe nobody reads.
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd
            .spawn()
            .map_err(|e| Error::io("cannot run smtp-sink (is Postfix installed?)", e))?;
        self.child = Some(child);
        // Ready once it accepts a TCP connection.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.lease.port())).is_ok() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(Error::new(format!(
                    "smtp-sink exited at start-up ({status}) on port {}",
                    self.lease.port()
                )));
            }
            if Instant::now() >= deadline {
                return Err(Error::new("smtp-sink did not start listening"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_pid(child.id() as i32, Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Switches to `mode` by restarting smtp-sink on the same port; messages
    /// received so far stay counted.
    pub fn set_mode(&mut self, mode: SinkMode) -> Result<()> {
        self.kill();
        self.mode = mode;
        self.spawn()
    }

    /// The current mode.
    pub fn mode(&self) -> &SinkMode {
        &self.mode
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.lease.port()
    }

    /// The directory holding one dump file per received message.
    pub fn dump_dir(&self) -> &Path {
        &self.dump_dir
    }

    /// The dump files, one per received message. smtp-sink creates a
    /// transaction's file at MAIL FROM and fills it at the final "."; an
    /// empty one is a transaction that never completed (rejected, or cut
    /// off by a mode switch), so it does not count.
    pub fn messages(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.dump_dir)
            .map(|d| {
                d.filter_map(|e| {
                    let e = e.ok()?;
                    (e.metadata().ok()?.len() > 0).then(|| e.path())
                })
                .collect()
            })
            .unwrap_or_default()
    }

    /// Number of messages received so far.
    pub fn received(&self) -> usize {
        self.messages().len()
    }

    /// Number of recipients received so far (over all messages).
    pub fn recipients_received(&self) -> usize {
        self.messages()
            .iter()
            .map(|p| crate::text_file(p))
            .map(|t| t.lines().filter(|l| l.starts_with("X-Rcpt-Args:")).count())
            .sum()
    }

    /// Polls until at least `n` messages were received; the timeout only
    /// guards against hangs.
    pub fn wait_received(&self, n: usize, timeout: Duration) -> Result<usize> {
        crate::poll(timeout, || {
            let got = self.received();
            Ok((got >= n).then_some(got))
        })
        .map_err(|e| {
            Error::new(format!(
                "sink received {} of {n} messages: {e}",
                self.received()
            ))
        })
    }

    /// Stops smtp-sink (also done on drop).
    pub fn stop(&mut self) {
        self.kill();
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = self.dir.take() {
            crate::dispose_dir(dir);
        }
    }
}
