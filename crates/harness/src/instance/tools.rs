//! Postfix's own tools, run against the instance: sendmail, smtp-source,
//! postkick, postqueue, postsuper.

use super::*;

impl Instance {
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
}
