//! Running external commands (postfix, postqueue, sendmail, smtp-source, …)
//! with a time limit.
//!
//! Job: a test must never hang on a stuck child, so every command runs with a
//! guard timeout after which it is killed (SIGKILL) and an error is returned.
//! The timeout is a guard against hangs, never an assertion about speed.
//! Limits: only the direct child is killed on timeout; the Postfix commands we
//! run do not leave background children, except `postfix start` whose master
//! daemon is owned and cleaned up by [`crate::Instance`].

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished command produced.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code, or `None` if killed by a signal.
    pub code: Option<i32>,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Output {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Standard output and standard error, for error messages.
    pub fn describe(&self) -> String {
        format!(
            "exit status {:?}, signal {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.signal, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion, feeding it `stdin` (if any), and kills it if it
/// takes longer than `timeout`. Returns its output whatever its exit status;
/// use [`run_ok`] to demand success.
///
/// Output goes to anonymous temporary files, not pipes: `postfix start`
/// leaves a daemon behind, and a daemon that inherited a pipe would keep the
/// reader waiting for end-of-file forever.
pub fn run(cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    run_watched(cmd, stdin, timeout, || Ok(()))
}

/// Like [`run`], but calls `watch` about every 100 ms while the command runs;
/// if it returns an error, the command is killed and that error returned.
/// Lets a caller give up early when the system under test is broken.
pub fn run_watched(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
    mut watch: impl FnMut() -> Result<()>,
) -> Result<Output> {
    let shown = format!("{cmd:?}");
    let out_file = tempfile::tempfile().map_err(|e| Error::io("temporary file", e))?;
    let err_file = tempfile::tempfile().map_err(|e| Error::io("temporary file", e))?;
    let clone = |f: &File| {
        f.try_clone()
            .map_err(|e| Error::io("dup temporary file", e))
    };
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(clone(&out_file)?)
    .stderr(clone(&err_file)?);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("cannot run {shown}"), e))?;
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().expect("stdin was piped");
        // A child that exits early closes its stdin; the write error is then
        // irrelevant, its exit status tells the story.
        let _ = pipe.write_all(data);
        drop(pipe);
    }
    let deadline = Instant::now() + timeout;
    let mut next_watch = Instant::now() + Duration::from_millis(100);
    let status = loop {
        if Instant::now() >= next_watch {
            next_watch = Instant::now() + Duration::from_millis(100);
            if let Err(e) = watch() {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::new(format!("gave up on {shown}: {e}")));
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::new(format!(
                    "{shown} did not finish within {timeout:?}; killed it"
                )));
            }
            Err(e) => return Err(Error::io(format!("waiting for {shown}"), e)),
        }
    };
    let read = |mut f: File| {
        let mut s = Vec::new();
        let _ = f.seek(SeekFrom::Start(0));
        let _ = f.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    };
    Ok(Output {
        code: status.code(),
        signal: status.signal(),
        stdout: read(out_file),
        stderr: read(err_file),
    })
}

/// Like [`run`], but a non-zero exit status is an error carrying the output.
pub fn run_ok(cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    let shown = format!("{cmd:?}");
    let out = run(cmd, stdin, timeout)?;
    if out.success() {
        Ok(out)
    } else {
        Err(Error::new(format!("{shown} failed: {}", out.describe())))
    }
}
