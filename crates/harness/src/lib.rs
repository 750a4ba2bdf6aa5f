//! End-to-end test harness for rqmgr: private Postfix instances, an
//! smtp-sink, and mail-log helpers.
//!
//! Job: let tests, the demo and benchmarks run stock Postfix daemons with
//! a chosen queue manager (stock `qmgr`/`oqmgr` or rqmgr) in a throw-away
//! directory, drive it with Postfix's own tools (sendmail, smtp-source,
//! postqueue, postkick, postsuper) and observe the result (queue files, the
//! mail log, local mailboxes, messages received by smtp-sink).
//!
//! Invariants: every instance and sink lives in its own temporary directory
//! and on its own leased TCP ports, so tests run in parallel without
//! clashing; nothing touches the machine's own Postfix (`/etc/postfix`, the
//! system queue); every process started is stopped on drop, also when a test
//! panics; the directories are removed unless `RQMGR_KEEP_TEST_DIR` is set.
//! Timeouts are guards against hangs, never assertions about speed.
//!
//! Limits: Linux only; must run as root (Postfix's `postfix start` and
//! smtp-sink's privilege drop need it) with Postfix 3.7 or later installed
//! (`scripts/test.sh` installs it; it also runs the tests inside Debian
//! roots of other suites, each with its own Postfix). A missing Postfix is an error with a
//! clear message, never a silent skip.

pub mod cmd;
mod error;
pub mod instance;
pub mod maillog;
mod orphans;
pub mod ports;
pub mod procs;
pub mod sink;

pub use error::{Error, Result};
pub use instance::{Instance, InstanceBuilder, QueueFiller, QueueManager};
pub use maillog::{LogLine, Maillog};
pub use sink::{SinkMode, SmtpSink};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Environment variable: when set (to anything), test directories are kept
/// and their paths printed, for post-mortem inspection.
pub const KEEP_DIR_ENV: &str = "RQMGR_KEEP_TEST_DIR";

/// Environment variable: parent directory for test directories (default: the
/// system temporary directory). Keep it short: Postfix's UNIX socket paths
/// live below it.
pub const TMPDIR_ENV: &str = "RQMGR_TEST_TMPDIR";

/// Facts about the installed Postfix, from its built-in defaults.
#[derive(Debug, Clone)]
pub struct PostfixInstall {
    /// `mail_version`, e.g. `3.7.11`.
    pub version: String,
    /// Where the stock daemons live (`daemon_directory`).
    pub daemon_directory: PathBuf,
    /// Where `postfix-files` and `dynamicmaps.cf` live (`meta_directory`).
    pub meta_directory: PathBuf,
}

impl PostfixInstall {
    /// True when this Postfix is release `major.minor` or later (scenarios
    /// whose expected outcome depends on the release ask this).
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        let mut parts = self
            .version
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let have = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        have >= (major, minor)
    }
}

/// Checks that we run as root and that Postfix is installed, and describes
/// the installation; the error says how to fix the machine.
pub fn require_postfix() -> Result<PostfixInstall> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::new(
            "the end-to-end harness must run as root (private Postfix instances need it); \
             run `sudo bash scripts/test.sh`",
        ));
    }
    let mut cmd = Command::new("postconf");
    cmd.args([
        "-d",
        "-h",
        "mail_version",
        "daemon_directory",
        "meta_directory",
    ]);
    let out = cmd::run_ok(cmd, None, Duration::from_secs(30)).map_err(|e| {
        Error::new(format!(
            "Postfix is not installed or not usable ({e}); `bash scripts/test.sh` installs it"
        ))
    })?;
    let v: Vec<&str> = out.stdout.lines().collect();
    if v.len() != 3 {
        return Err(Error::new(format!(
            "unexpected postconf output: {}",
            out.describe()
        )));
    }
    let install = PostfixInstall {
        version: v[0].to_string(),
        daemon_directory: PathBuf::from(v[1]),
        meta_directory: PathBuf::from(v[2]),
    };
    for tool in ["smtp-sink", "smtp-source", "postkick"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            return Err(Error::new(format!(
                "{tool} not found in PATH: install Postfix (`bash scripts/test.sh` does)"
            )));
        }
    }
    Ok(install)
}

/// Polls `f` until it yields a value, an error, or `timeout` passes (then an
/// error). The timeout is a guard against hangs, not a speed requirement.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(Error::new(format!("timed out after {timeout:?}")));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// A file's text, empty if it cannot be read (not there yet). Bytes that
/// are not UTF-8 (an 8-bit address in the mail log, a raw message body)
/// become U+FFFD rather than making the whole file read as empty, which
/// would let a check for a line's absence pass without looking.
pub fn text_file(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        },
        Err(_) => String::new(),
    }
}

/// The parent directory of test directories.
pub(crate) fn test_base() -> PathBuf {
    std::env::var_os(TMPDIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// A fresh, world-traversable (0755) temporary directory for an instance or
/// a sink (daemons running as `postfix` or `nobody` must reach inside it),
/// after reaping the directories of dead test processes (see [`orphans`]).
pub(crate) fn test_tempdir(prefix: &str) -> Result<orphans::TestDir> {
    let base = test_base();
    orphans::reap(&base);
    let dir = orphans::TestDir::new(&base, prefix)?;
    set_mode(dir.path(), 0o755)?;
    Ok(dir)
}

/// Removes a test directory, or keeps it (printing its path) when
/// [`KEEP_DIR_ENV`] is set.
pub(crate) fn dispose_dir(dir: orphans::TestDir) {
    match dir.dispose(std::env::var_os(KEEP_DIR_ENV).is_some()) {
        Ok(Some(path)) => eprintln!("rqmgr-harness: kept {}", path.display()),
        Ok(None) => {}
        Err(e) => eprintln!("rqmgr-harness: could not remove a test directory: {e}"),
    }
}

/// Sets the permission bits of `path`.
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("chmod {mode:o} {path:?}"), e))
}

/// Gives `path` to the system user `user` (and that user's group).
pub(crate) fn chown_to_user(path: &Path, user: &str) -> Result<()> {
    let u = nix::unistd::User::from_name(user)
        .map_err(|e| Error::io(format!("looking up user {user}"), e))?
        .ok_or_else(|| {
            Error::new(format!(
                "no user {user:?}: is Postfix installed (`bash scripts/test.sh`)?"
            ))
        })?;
    nix::unistd::chown(path, Some(u.uid), Some(u.gid))
        .map_err(|e| Error::io(format!("chown {user} {path:?}"), e))
}

#[cfg(test)]
mod tests {
    use super::{text_file, PostfixInstall};
    use std::path::PathBuf;

    #[test]
    fn a_byte_that_is_not_utf8_keeps_the_rest_of_the_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maillog");
        std::fs::write(&path, b"one\nto=<\xe9@example.com>\nthree\n").unwrap();
        let text = text_file(&path);
        assert_eq!(text.lines().count(), 3, "{text:?}");
        assert!(text.contains("one") && text.contains("three"), "{text:?}");
        assert!(text.contains("to=<\u{fffd}@example.com>"), "{text:?}");
        assert_eq!(text_file(&dir.path().join("absent")), "");
    }

    #[test]
    fn release_comparison() {
        let at = |v: &str| PostfixInstall {
            version: v.into(),
            daemon_directory: PathBuf::new(),
            meta_directory: PathBuf::new(),
        };
        assert!(at("3.11.7").at_least(3, 11));
        assert!(at("3.11.7").at_least(3, 10));
        assert!(!at("3.10.13").at_least(3, 11));
        assert!(at("3.10.13").at_least(3, 7));
        assert!(!at("3.7.11").at_least(3, 10));
        assert!(at("3.12-20260821").at_least(3, 11));
        assert!(at("4.0.0").at_least(3, 11));
    }
}
