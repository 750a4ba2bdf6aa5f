//! Finding and stopping the processes that belong to a private instance.
//!
//! Job: after a test, no process of its instance may survive (a leftover
//! daemon holding CI's stdout makes CI hang). A process belongs to an instance
//! when its executable (`/proc/PID/exe`) or its working directory
//! (`/proc/PID/cwd`) lies inside the instance's directory: every Postfix
//! daemon of an instance is a copy inside its `libexec/` and works inside its
//! queue directory; smtp-sink names its dump directory on its command line.
//! Limits: Linux only (reads /proc); processes that exit
//! while being inspected are simply skipped.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Sends `signal` to `pid`, ignoring "no such process".
pub fn kill_pid(pid: i32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid), signal);
}

/// The resolved target of a /proc link, without the " (deleted)" marker that
/// the kernel appends when the file has been removed meanwhile.
fn proc_link(pid: i32, what: &str) -> Option<PathBuf> {
    let target = std::fs::read_link(format!("/proc/{pid}/{what}")).ok()?;
    let s = target.to_string_lossy();
    Some(PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s)))
}

/// Every live process id on the machine, except this process.
fn all_pids() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| p != me)
        .collect()
}

/// The state letter and the parent's pid from `/proc/PID/stat`.
fn state_and_parent(pid: i32) -> Option<(String, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // They follow the parenthesised command name, which may itself contain
    // spaces or parentheses.
    let mut rest = s[s.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.to_string();
    let parent = rest.next()?.parse().ok()?;
    Some((state, parent))
}

/// True when the process is a zombie (exited, waiting to be reaped): it holds
/// no resources and cannot be killed, so it does not count as running.
fn is_zombie(pid: i32) -> bool {
    state_and_parent(pid).is_some_and(|(state, _)| state == "Z")
}

/// True when the process's command line mentions `root` followed by `/`
/// (e.g. smtp-sink's dump template inside a sink directory).
fn mentions(pid: i32, root: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let needle = format!("{}/", root.display());
    cmdline
        .split(|&b| b == 0)
        .any(|arg| String::from_utf8_lossy(arg).contains(&needle))
}

/// Processes that belong to the directory `root`: their executable or
/// working directory lies under it, or their command line names a path
/// inside it.
pub fn pids_under(root: &Path) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| {
            let inside = |what| proc_link(p, what).is_some_and(|t| t.starts_with(root));
            (inside("exe") || inside("cwd") || mentions(p, root)) && !is_zombie(p)
        })
        .collect()
}

/// Processes whose executable is exactly `exe`.
pub fn pids_with_exe(exe: &Path) -> Vec<i32> {
    pids_with_any_exe(&[exe])
}

/// Processes whose executable is exactly one of `exes`, those of the
/// first executable first (one walk of `/proc`).
pub fn pids_with_any_exe(exes: &[&Path]) -> Vec<i32> {
    live_with_any_exe(exes, |_| true)
}

/// Like [`pids_with_any_exe`], but only processes whose parent runs
/// `parent_exe`. A daemon that master started is one; a child that the
/// daemon forks is not, although it runs the daemon's executable until it
/// executes another program (rqmgr runs `postconf` at start-up).
pub fn children_with_any_exe(parent_exe: &Path, exes: &[&Path]) -> Vec<i32> {
    live_with_any_exe(exes, |parent| {
        proc_link(parent, "exe").is_some_and(|exe| exe == parent_exe)
    })
}

/// The processes that run one of `exes`, are not zombies and whose
/// parent's pid passes `parent_ok`, ordered as `exes`; each process's
/// `stat` is read once.
fn live_with_any_exe(exes: &[&Path], parent_ok: impl Fn(i32) -> bool) -> Vec<i32> {
    let mut found: Vec<(usize, i32)> = all_pids()
        .into_iter()
        .filter_map(|p| {
            let exe = proc_link(p, "exe")?;
            let which = exes.iter().position(|e| exe == *e)?;
            let (state, parent) = state_and_parent(p)?;
            (state != "Z" && parent_ok(parent)).then_some((which, p))
        })
        .collect();
    found.sort_by_key(|&(which, _)| which);
    found.into_iter().map(|(_, p)| p).collect()
}

/// Polls until no process lies under `root` or `timeout` passes; returns the
/// survivors (empty on success).
pub fn wait_gone(root: &Path, timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = pids_under(root);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills (SIGKILL) every process under `root`, repeating until none is left
/// (a dying master may still fork) or `timeout` passes; returns survivors.
pub fn kill_all_under(root: &Path, timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = pids_under(root);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        for p in &left {
            kill_pid(*p, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kills and reaps the child when dropped, also when an assertion fails.
    struct Reaped(std::process::Child);

    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn children_are_told_apart_by_their_parent() {
        let child = Reaped(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .expect("sleep"),
        );
        let pid = child.0.id() as i32;
        // Until it has executed sleep, the child runs this program.
        let me = std::env::current_exe().expect("own executable");
        let deadline = Instant::now() + Duration::from_secs(10);
        let exe = loop {
            match proc_link(pid, "exe") {
                Some(e) if e != me => break e,
                _ if Instant::now() > deadline => panic!("the child never ran sleep"),
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        assert!(pids_with_any_exe(&[&exe]).contains(&pid));
        assert!(children_with_any_exe(&me, &[&exe]).contains(&pid));
        assert!(!children_with_any_exe(&exe, &[&exe]).contains(&pid));
    }
}
