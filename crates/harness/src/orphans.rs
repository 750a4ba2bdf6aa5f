//! Test directories that know whether their owner is alive, and clean-up of
//! those whose owner died.
//!
//! Job: a test process that aborts (e.g. a panic while panicking, SIGKILL)
//! runs no drop handlers, so its Postfix daemons and smtp-sink would run on
//! forever, holding ports and possibly CI's output. Every harness directory
//! therefore holds an owner lock: an exclusive `flock` on `DIR/.owner.lock`,
//! held by the creating process for the directory's lifetime (the lock dies
//! with that process; daemons do not inherit it, Rust opens files
//! close-on-exec). Before creating a directory the harness reaps orphans:
//! directories under the same parent whose lock file exists but can be
//! locked, i.e. whose owner is gone. Their processes (executable or working
//! directory inside, or the directory named on the command line, as for
//! smtp-sink's dump template) are killed and the directory removed.
//! Invariants: `.owner.lock` is locked from the moment it exists (it is
//! locked under another name, then renamed); a directory without a lock file (kept on purpose with
//! `RQMGR_KEEP_TEST_DIR`, or made by an older harness) is never touched; a
//! live owner's directory is never touched.

use crate::error::{Error, Result};
use crate::procs;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LOCK_NAME: &str = ".owner.lock";
/// The lock file's name until it is locked; reapers never open it.
const FRESH_LOCK_NAME: &str = ".owner.lock.new";
/// Name prefixes of harness directories.
pub(crate) const PREFIXES: [&str; 2] = ["rqmgr-pf-", "rqmgr-sink-"];

/// A temporary directory with its owner lock.
#[derive(Debug)]
pub(crate) struct TestDir {
    dir: tempfile::TempDir,
    lock: Option<Flock<File>>,
}

impl TestDir {
    /// Creates a directory `PREFIX…` under `base` and takes its owner lock.
    pub(crate) fn new(base: &Path, prefix: &str) -> Result<TestDir> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(base)
            .map_err(|e| Error::io(format!("cannot create a directory in {base:?}"), e))?;
        // The lock file appears under its real name only once it is locked:
        // a reaper in another thread or process that opened an unlocked
        // `.owner.lock` would take the new directory for an orphan and remove
        // it under its creator.
        let fresh = dir.path().join(FRESH_LOCK_NAME);
        let file = File::create(&fresh).map_err(|e| Error::io(format!("create {fresh:?}"), e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| Error::io(format!("lock {fresh:?}"), e))?;
        let path = dir.path().join(LOCK_NAME);
        std::fs::rename(&fresh, &path)
            .map_err(|e| Error::io(format!("rename {fresh:?} to {path:?}"), e))?;
        Ok(TestDir {
            dir,
            lock: Some(lock),
        })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Removes the directory, or keeps it (without its lock file, so that no
    /// reaper removes it later) and returns its path.
    pub(crate) fn dispose(mut self, keep: bool) -> std::io::Result<Option<PathBuf>> {
        if keep {
            let _ = std::fs::remove_file(self.dir.path().join(LOCK_NAME));
            self.lock.take();
            Ok(Some(self.dir.keep()))
        } else {
            // The lock is held until the directory is gone, or a reaper
            // could take the half-removed directory for an orphan.
            let removed = self.dir.close().map(|_| None);
            self.lock.take();
            removed
        }
    }
}

/// Kills the processes of, and removes, every orphaned harness directory
/// under `base`; returns how many were reaped. Errors are reported on stderr
/// and otherwise ignored: reaping is a courtesy, not part of a test.
pub(crate) fn reap(base: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    let mut reaped = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let root = e.path();
        let Ok(file) = File::open(root.join(LOCK_NAME)) else {
            continue;
        };
        // Locked by a live owner: leave it alone.
        let Ok(_lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        let left = procs::kill_all_under(&root, Duration::from_secs(10));
        if !left.is_empty() {
            eprintln!("rqmgr-harness: orphan {root:?}: could not kill {left:?}");
            continue;
        }
        // A queue tmpfs the dead test mounted comes off first; never remove
        // a tree with something mounted in it.
        let spool = root.join("spool");
        let _ = nix::mount::umount(&spool);
        if is_mount_point(&spool) {
            eprintln!("rqmgr-harness: orphan {root:?}: {spool:?} is still mounted");
            continue;
        }
        match std::fs::remove_dir_all(&root) {
            Ok(()) => {
                eprintln!("rqmgr-harness: reaped the orphaned test directory {root:?}");
                reaped += 1;
            }
            Err(err) => eprintln!("rqmgr-harness: cannot remove orphan {root:?}: {err}"),
        }
    }
    reaped
}

/// Whether `path` is on another file system than its parent.
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| std::fs::symlink_metadata(p).map(|m| m.dev()).ok();
    match (dev(path), path.parent().and_then(dev)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A reaper running while directories are created must never take a
    /// new one for an orphan (it did, when the lock file appeared before it
    /// was locked).
    #[test]
    fn reaper_never_removes_a_directory_being_created() {
        let base = tempfile::tempdir().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let reaper = {
            let (base, stop) = (base.path().to_owned(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut reaped = 0;
                while !stop.load(Ordering::Relaxed) {
                    reaped += reap(&base);
                }
                reaped
            })
        };
        let mut lost = 0;
        for _ in 0..2000 {
            let dir = TestDir::new(base.path(), PREFIXES[0]).unwrap();
            if !dir.path().join(LOCK_NAME).exists() {
                lost += 1;
            }
            dir.dispose(false).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        let reaped = reaper.join().unwrap();
        assert_eq!((lost, reaped), (0, 0));
    }

    /// A directory whose owner lock is free is an orphan and is removed.
    #[test]
    fn a_directory_with_a_free_lock_is_reaped() {
        let base = tempfile::tempdir().unwrap();
        let dir = TestDir::new(base.path(), PREFIXES[1]).unwrap();
        let mut dir = dir;
        dir.lock.take();
        let path = dir.path().to_owned();
        assert_eq!(reap(base.path()), 1);
        assert!(!path.exists());
    }
}
