//! One Postfix instance as rqmgrctl sees it: its directories and version
//! (from `postconf`), its master.cf, and its running processes.
//!
//! Everything is asked of Postfix's own tools (`postconf`, `postfix`), so
//! a postmulti instance is handled like the default one: `-c` decides.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A Postfix instance.
pub(crate) struct Instance {
    pub(crate) config_dir: PathBuf,
    pub(crate) daemon_dir: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) queue_dir: PathBuf,
    pub(crate) mail_version: String,
    /// rqmgr's admin socket, looked up once (see [`Instance::admin_socket`]).
    admin_socket: std::cell::OnceCell<Option<PathBuf>>,
}

/// How long a reload may take to bring up the new queue manager.
const START_WAIT: Duration = Duration::from_secs(10);

impl Instance {
    /// Reads the instance's facts; an error if `postconf` cannot.
    pub(crate) fn open(config_dir: &Path) -> Result<Instance, String> {
        let out = postconf(
            config_dir,
            &[
                "-h",
                "mail_version",
                "daemon_directory",
                "data_directory",
                "queue_directory",
            ],
        )?;
        let lines: Vec<&str> = out.lines().collect();
        let [version, daemon, data, queue] = lines[..] else {
            return Err(format!("unexpected postconf output: {out:?}"));
        };
        Ok(Instance {
            config_dir: config_dir.to_path_buf(),
            daemon_dir: daemon.into(),
            data_dir: data.into(),
            queue_dir: queue.into(),
            mail_version: version.to_owned(),
            admin_socket: std::cell::OnceCell::new(),
        })
    }

    /// rqmgr's admin socket: `rqmgr_admin_socket` (default
    /// `private/rqmgr`) under the queue directory; `None` when it is set
    /// empty, which turns the socket off.
    pub(crate) fn admin_socket(&self) -> Option<&Path> {
        self.admin_socket
            .get_or_init(|| {
                // Postfix does not know the parameter: unset, postconf
                // prints nothing; set empty, an empty line.
                let value = self
                    .postconf(&["-h", "rqmgr_admin_socket"])
                    .unwrap_or_default();
                match value.trim() {
                    "" if value.contains('\n') => None,
                    "" => Some(self.queue_dir.join("private/rqmgr")),
                    path => Some(self.queue_dir.join(path)),
                }
            })
            .as_deref()
    }

    /// master.cf's path.
    pub(crate) fn master_cf(&self) -> PathBuf {
        self.config_dir.join("master.cf")
    }

    /// Runs postconf on this instance.
    pub(crate) fn postconf(&self, args: &[&str]) -> Result<String, String> {
        postconf(&self.config_dir, args)
    }

    /// The Postfix release as (major, minor); an error if it does not
    /// parse.
    pub(crate) fn release(&self) -> Result<(u32, u32), String> {
        let mut parts = self.mail_version.split('.');
        let mut next = || parts.next().and_then(|p| p.parse::<u32>().ok());
        match (next(), next()) {
            (Some(major), Some(minor)) => Ok((major, minor)),
            _ => Err(format!("cannot parse mail_version {:?}", self.mail_version)),
        }
    }

    /// master's pid, if this instance's Postfix is running.
    pub(crate) fn master_pid(&self) -> Option<i32> {
        let status = Command::new("postfix")
            .arg("-c")
            .arg(&self.config_dir)
            .arg("status")
            .output()
            .ok()?;
        if !status.status.success() {
            return None;
        }
        let text = std::fs::read_to_string(self.queue_dir.join("pid/master.pid")).ok()?;
        text.trim().parse().ok()
    }

    /// `postfix reload`.
    pub(crate) fn reload(&self) -> Result<(), String> {
        let out = Command::new("postfix")
            .arg("-c")
            .arg(&self.config_dir)
            .arg("reload")
            .output()
            .map_err(|e| format!("run postfix reload: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "postfix reload failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Waits until master runs `daemon_directory/program` as a child.
    pub(crate) fn wait_for_child(&self, master: i32, program: &str) -> Result<i32, String> {
        let exe = std::fs::canonicalize(self.daemon_dir.join(program))
            .unwrap_or_else(|_| self.daemon_dir.join(program));
        let deadline = Instant::now() + START_WAIT;
        loop {
            if let Some(pid) = child_running(master, &exe) {
                return Ok(pid);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no {} process of master (pid {master}) after {} seconds",
                    exe.display(),
                    START_WAIT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A child of `master` whose executable is `exe`.
fn child_running(master: i32, exe: &Path) -> Option<i32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        // The parent pid is the second field after the parenthesised name.
        let after = stat.rsplit_once(')')?.1;
        let ppid: i32 = after.split_whitespace().nth(1)?.parse().ok()?;
        let this_exe = std::fs::read_link(e.path().join("exe")).ok()?;
        (ppid == master && this_exe == exe).then_some(pid)
    })
}

fn postconf(config_dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("postconf")
        .arg("-c")
        .arg(config_dir)
        .args(args)
        .output()
        .map_err(|e| format!("run postconf: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "postconf {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
