//! Queue directory layout: queue names, hashed paths, moves and file checks.
//!
//! Job: map (queue, queue ID) to a path the way Postfix's `mail_queue_path`
//! does, move files between queues as `mail_queue_rename` does, and decide
//! whether a file is ready for use as `mail_open_ok` does.
//!
//! Invariants: paths are `ROOT/QUEUE/[H1/…/Hn/]ID`, where the hash levels
//! exist only for queues named in `hash_queue_names` (case-insensitive) and
//! are the first `hash_queue_depth` characters of the ID's hash key
//! (`QueueId::hash_key_cow`), padded with `_`. A layout never creates
//! anything but missing hash directories (mode 0700).
//!
//! Failure: operating-system errors come back as `io::Error` unchanged, so
//! callers can treat `ENOENT` as the benign race with postsuper that it is.
//! [`QueueLayout::rename`] reports success when the source vanished but the
//! target exists (someone else completed the same move).
//!
//! Limits: a hash depth of 0 means "no hashing" (Postfix refuses it at
//! configuration time); no `sane_rename` NFS heuristics beyond that check.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, Metadata};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::queue_id::QueueId;

/// The queues of a Postfix queue directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueName {
    /// `maildrop`: postdrop output, pickup input (qmgr ignores it).
    Maildrop,
    /// `incoming`: cleanup output.
    Incoming,
    /// `active`: messages owned by the queue manager.
    Active,
    /// `deferred`: messages waiting for a retry.
    Deferred,
    /// `hold`: messages put on hold.
    Hold,
    /// `corrupt`: unreadable queue files.
    Corrupt,
    /// `bounce`: per-message bounce logs.
    Bounce,
    /// `defer`: per-message defer logs.
    Defer,
    /// `trace`: per-message trace logs.
    Trace,
    /// `flush`: fast-flush logs.
    Flush,
    /// `saved`: created by postfix-files.
    Saved,
}

impl QueueName {
    /// Every queue, in Postfix's order of definition.
    const ALL: [QueueName; 11] = [
        QueueName::Maildrop,
        QueueName::Hold,
        QueueName::Incoming,
        QueueName::Active,
        QueueName::Deferred,
        QueueName::Trace,
        QueueName::Defer,
        QueueName::Bounce,
        QueueName::Corrupt,
        QueueName::Flush,
        QueueName::Saved,
    ];

    /// The directory name.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Maildrop => "maildrop",
            QueueName::Incoming => "incoming",
            QueueName::Active => "active",
            QueueName::Deferred => "deferred",
            QueueName::Hold => "hold",
            QueueName::Corrupt => "corrupt",
            QueueName::Bounce => "bounce",
            QueueName::Defer => "defer",
            QueueName::Trace => "trace",
            QueueName::Flush => "flush",
            QueueName::Saved => "saved",
        }
    }

    /// The queue with directory name `s` (exact, lower case).
    #[cfg(test)]
    fn parse(s: &str) -> Option<QueueName> {
        QueueName::ALL.into_iter().find(|q| q.as_str() == s)
    }
}

impl std::fmt::Display for QueueName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Owner permission bits that mark a file as complete and ready.
const MODE_READY: u32 = 0o700;
/// Group-read: "flush this message" (set by flush(8)).
pub const MODE_UNTHROTTLE: u32 = 0o040;
/// Group-execute: force-expire (set by `postsuper -e/-f`).
pub const MODE_EXPIRE: u32 = 0o010;

/// Where the queues live and which of them are hashed.
#[derive(Debug, Clone)]
pub struct QueueLayout {
    root: PathBuf,
    hashed: Vec<QueueName>,
    depth: usize,
}

impl QueueLayout {
    /// A layout rooted at `root` (the queue directory). `hash_queue_names`
    /// is the parameter value, e.g. `"deferred, defer"`; unknown names are
    /// ignored, as they can never match a queue.
    pub fn new(root: impl Into<PathBuf>, hash_queue_names: &str, hash_queue_depth: usize) -> Self {
        let hashed = hash_queue_names
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|s| !s.is_empty())
            .filter_map(|s| {
                QueueName::ALL
                    .into_iter()
                    .find(|q| q.as_str().eq_ignore_ascii_case(s))
            })
            .collect();
        QueueLayout {
            root: root.into(),
            hashed,
            depth: hash_queue_depth,
        }
    }

    /// Directory of queue `q` itself (no hash levels).
    pub fn queue_dir(&self, q: QueueName) -> PathBuf {
        self.root.join(q.as_str())
    }

    /// True if files of `q` live in hash subdirectories.
    pub fn is_hashed(&self, q: QueueName) -> bool {
        self.depth > 0 && self.hashed.contains(&q)
    }

    /// Path relative to the queue directory, as Postfix names the file in
    /// logs and in its own paths (e.g. `deferred/1/154E7990181`).
    #[cfg(test)]
    fn relative_path(&self, q: QueueName, id: &QueueId) -> PathBuf {
        let mut rel = Vec::new();
        self.push_relative(&mut rel, q, id);
        PathBuf::from(OsString::from_vec(rel))
    }

    /// Appends [`Self::relative_path`] to `out`.
    fn push_relative(&self, out: &mut Vec<u8>, q: QueueName, id: &QueueId) {
        out.extend_from_slice(q.as_str().as_bytes());
        if self.is_hashed(q) {
            let key = id.hash_key_cow();
            let mut chars = key.bytes();
            for _ in 0..self.depth {
                out.push(b'/');
                out.push(chars.next().unwrap_or(b'_'));
            }
        }
        out.push(b'/');
        out.extend_from_slice(id.as_str().as_bytes());
    }

    /// Absolute path of the file `id` in queue `q`, built in one
    /// allocation: the queue manager computes several paths per message.
    pub fn path(&self, q: QueueName, id: &QueueId) -> PathBuf {
        let root = self.root.as_os_str().as_bytes();
        let levels = if self.is_hashed(q) { self.depth } else { 0 };
        let len = root.len() + 1 + q.as_str().len() + 2 * levels + 1 + id.as_str().len();
        let mut p = Vec::with_capacity(len);
        // As `Path::push` joins them: no separator after an empty root or
        // one that ends in a slash.
        p.extend_from_slice(root);
        if !root.is_empty() && !root.ends_with(b"/") {
            p.push(b'/');
        }
        self.push_relative(&mut p, q, id);
        PathBuf::from(OsString::from_vec(p))
    }

    /// Moves `id` from queue `from` to queue `to`.
    ///
    /// On failure, creates missing hash directories and retries once. A
    /// source that is gone while the target exists counts as success.
    pub fn rename(&self, from: QueueName, to: QueueName, id: &QueueId) -> io::Result<()> {
        let old = self.path(from, id);
        let new = self.path(to, id);
        let first = match sane_rename(&old, &new) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // Like Postfix, retry after creating whatever part of the target
        // directory is missing, hashed or not.
        match new.parent() {
            Some(dir)
                if DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .is_ok() =>
            {
                sane_rename(&old, &new)
            }
            _ => Err(first),
        }
    }

    /// Opens `id` in queue `q` for reading and in-place updates (`O_RDWR`,
    /// as qmgr opens queue files).
    #[cfg(test)]
    fn open(&self, q: QueueName, id: &QueueId) -> io::Result<fs::File> {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(q, id))
    }

    /// Removes `id` from queue `q`.
    pub fn remove(&self, q: QueueName, id: &QueueId) -> io::Result<()> {
        fs::remove_file(self.path(q, id))
    }

    /// `mail_open_ok`: the file's metadata if it is a regular file whose
    /// owner bits are exactly rwx; `Ok(None)` if it is missing or not ready.
    pub fn open_ok(&self, q: QueueName, id: &QueueId) -> io::Result<Option<Metadata>> {
        let md = match fs::symlink_metadata(self.path(q, id)) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if !md.file_type().is_file() || md.permissions().mode() & 0o700 != MODE_READY {
            return Ok(None);
        }
        Ok(Some(md))
    }

    /// Sets access and modification time of `id` in `q` to `when_secs`;
    /// for `deferred` this is the earliest next delivery attempt.
    pub fn set_times(&self, q: QueueName, id: &QueueId, when_secs: i64) -> io::Result<()> {
        let tv = nix::sys::time::TimeVal::new(when_secs, 0);
        nix::sys::stat::utimes(&self.path(q, id), &tv, &tv).map_err(io::Error::from)
    }
}

/// `rename` that treats "source gone, target present" as success, because
/// an NFS retry, a concurrent postsuper or an earlier interrupted attempt
/// may have done the move already.
fn sane_rename(old: &Path, new: &Path) -> io::Result<()> {
    match fs::rename(old, new) {
        Ok(()) => Ok(()),
        Err(e) => {
            if fs::metadata(old).is_err() && fs::metadata(new).is_ok() {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

/// Helper for [`MetadataExt`] users: modification time in seconds.
pub fn mtime_secs(md: &Metadata) -> i64 {
    md.mtime()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> QueueId {
        QueueId::parse(s).unwrap_or_else(|| QueueId::short(0, 0))
    }

    #[test]
    fn names_round_trip() {
        for q in QueueName::ALL {
            assert_eq!(QueueName::parse(q.as_str()), Some(q));
        }
        assert_eq!(QueueName::parse("Active"), None);
    }

    #[test]
    fn hashed_paths_match_postfix() {
        let l = QueueLayout::new("/q", "Deferred,  defer", 1);
        assert_eq!(
            l.path(QueueName::Deferred, &id("154E7990181")),
            PathBuf::from("/q/deferred/1/154E7990181")
        );
        assert_eq!(
            l.path(QueueName::Defer, &id("4FDA39901B9")),
            PathBuf::from("/q/defer/4/4FDA39901B9")
        );
        assert_eq!(
            l.path(QueueName::Active, &id("154E7990181")),
            PathBuf::from("/q/active/154E7990181")
        );
        let l = QueueLayout::new("/q", "deferred", 3);
        assert_eq!(
            l.relative_path(QueueName::Deferred, &id("AB")),
            PathBuf::from("deferred/A/B/_/AB")
        );
        let long = QueueId::long(1_795_960_876, 80_096, 7);
        assert_eq!(
            l.relative_path(QueueName::Deferred, &long),
            PathBuf::from(format!("deferred/1/3/8/{long}"))
        );
    }

    #[test]
    fn path_is_root_joined_with_relative_path() {
        for root in ["", ".", "/q", "/q/", "q/r"] {
            let l = QueueLayout::new(root, "deferred", 2);
            for q in [QueueName::Deferred, QueueName::Active] {
                let qid = id("154E7990181");
                assert_eq!(
                    l.path(q, &qid),
                    Path::new(root).join(l.relative_path(q, &qid)),
                    "root {root:?}"
                );
            }
        }
    }

    #[test]
    fn rename_creates_hash_dirs_and_tolerates_races() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let l = QueueLayout::new(tmp.path(), "deferred", 2);
        for q in QueueName::ALL {
            fs::create_dir(l.queue_dir(q))?;
        }
        let qid = id("ABCDE12");
        fs::write(l.path(QueueName::Active, &qid), b"x")?;
        l.rename(QueueName::Active, QueueName::Deferred, &qid)?;
        assert!(l
            .path(QueueName::Deferred, &qid)
            .ends_with("deferred/A/B/ABCDE12"));
        assert!(l.path(QueueName::Deferred, &qid).exists());
        // Source gone, target present: someone else did it.
        l.rename(QueueName::Active, QueueName::Deferred, &qid)?;
        // Source gone, target absent: a real error.
        let err = l.rename(QueueName::Active, QueueName::Incoming, &qid);
        assert_eq!(err.map_err(|e| e.kind()), Err(io::ErrorKind::NotFound));
        Ok(())
    }

    #[test]
    fn open_ok_and_times() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let l = QueueLayout::new(tmp.path(), "", 1);
        fs::create_dir(l.queue_dir(QueueName::Incoming))?;
        let qid = id("ABC");
        let p = l.path(QueueName::Incoming, &qid);
        assert!(l.open_ok(QueueName::Incoming, &qid)?.is_none());
        fs::write(&p, b"x")?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600))?;
        assert!(l.open_ok(QueueName::Incoming, &qid)?.is_none());
        fs::set_permissions(&p, fs::Permissions::from_mode(0o750))?;
        assert!(l.open_ok(QueueName::Incoming, &qid)?.is_some());
        l.set_times(QueueName::Incoming, &qid, 1_700_000_000)?;
        assert!(l.open(QueueName::Incoming, &qid).is_ok());
        let md = l.open_ok(QueueName::Incoming, &qid)?;
        assert_eq!(
            md.map(|m| (mtime_secs(&m), m.atime())),
            Some((1_700_000_000, 1_700_000_000))
        );
        let dir_id = id("DIR");
        fs::create_dir(l.path(QueueName::Incoming, &dir_id))?;
        assert!(l.open_ok(QueueName::Incoming, &dir_id)?.is_none());
        Ok(())
    }
}
