//! The queue directory as the queue manager changes it: every rename,
//! removal, time stamp and in-place write of a queue file goes through
//! [`Spool`], each with the name and wording of the Postfix routine it
//! mirrors.
//!
//! The rule for failures is Postfix's and lives in one place
//! ([`Spool::outcome`]): a file that vanished under us (`ENOENT`: postsuper
//! deleted or requeued it, another process moved it) is passed over, with a
//! warning where Postfix warns; any other error means the queue is not as
//! we think and is fatal (logged, exit status 1, master restarts us).
//! Exceptions are Postfix's own, and say so where they are.
//!
//! Invariant: a queue file changes state only by a rename or an in-place
//! write that Postfix itself would make, in the same order, so a crash at
//! any point leaves a queue that the next start (or the stock qmgr) takes
//! up correctly.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rqmgr_queue::dirs::{QueueLayout, QueueName};
use rqmgr_queue::queue_id::QueueId;
use rqmgr_queue::scan::Scanner;

use crate::clock::Now;
use crate::logging::{os_error, Logger};

/// What to do about a file that vanished before an operation on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vanished {
    /// Pass over it without a word.
    Quietly,
    /// Pass over it with the operation's text as a warning.
    WithWarning,
}

/// The queue directory we run in, with the logger its fatal errors go to.
#[derive(Debug)]
pub(crate) struct Spool {
    layout: QueueLayout,
    log: Arc<Logger>,
}

impl Spool {
    /// The spool at `layout`, logging to `log`.
    pub(crate) fn new(layout: QueueLayout, log: Arc<Logger>) -> Spool {
        Spool { layout, log }
    }

    /// Where the queue files are, for scans.
    pub(crate) fn layout(&self) -> &QueueLayout {
        &self.layout
    }

    /// The path of a queue file, for messages and for opening.
    pub(crate) fn path(&self, q: QueueName, id: &QueueId) -> PathBuf {
        self.layout.path(q, id)
    }

    /// Postfix's rule: `Ok` is done (true); a vanished file is passed over
    /// (false); anything else is fatal with `text(error)`.
    fn outcome(
        &self,
        result: io::Result<()>,
        vanished: Vanished,
        text: impl FnOnce(&str) -> String,
    ) -> bool {
        match result {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if vanished == Vanished::WithWarning {
                    self.log.warning(&text(&os_error(&e)));
                }
                false
            }
            Err(e) => self.log.die(&text(&os_error(&e))),
        }
    }

    /// Start-up (`qmgr_move()` from `active/` to `incoming/`): what an
    /// earlier queue manager left in `active/` is read afresh; its in-core
    /// state died with it. The files are stamped `now`, so they are due.
    pub(crate) fn recover_active(&self, now: Now) {
        let mut walk = match Scanner::new(&self.layout, QueueName::Active) {
            Ok(w) => w,
            Err(e) => self.log.die(&format!("open active queue: {e}")),
        };
        loop {
            match walk.next_id() {
                Ok(Some(id)) => {
                    let _ = self.layout.set_times(QueueName::Active, &id, now.secs());
                    let moved = self
                        .layout
                        .rename(QueueName::Active, QueueName::Incoming, &id);
                    self.outcome(moved, Vanished::Quietly, |e| {
                        format!("qmgr_move: rename {id} from active to incoming: {e}")
                    });
                }
                Ok(None) => break,
                Err(e) => self.log.die(&format!("scan active queue: {e}")),
            }
        }
    }

    /// Whether a file of `q` may be taken: a regular file of mode 0700
    /// (`mail_open_ok()`); `None` if it vanished or is not ready.
    pub(crate) fn ready(&self, q: QueueName, id: &QueueId) -> Option<Metadata> {
        self.layout.open_ok(q, id).ok().flatten()
    }

    /// `qmgr_active_feed()`: moves a file of `from` into `active/`; false
    /// if it vanished first (with Postfix's warning).
    pub(crate) fn activate(&self, from: QueueName, id: &QueueId) -> bool {
        let moved = self.layout.rename(from, QueueName::Active, id);
        self.outcome(moved, Vanished::WithWarning, |e| {
            format!(
                "qmgr_active_feed: {id}: rename from {} to active: {e}",
                from.as_str()
            )
        })
    }

    /// Opens a file of `active/` for reading and in-place updates.
    fn open_active(&self, id: &QueueId) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(QueueName::Active, id))
    }

    /// `qmgr_message_open()`: opens a file of `active/` to read it. A file
    /// that vanished is `None`, with Postfix's warning; any other failure
    /// (permissions, no descriptors or memory left) is fatal, so master
    /// restarts us and the file is taken up again once the cause is gone,
    /// instead of being quarantined as if it were malformed.
    pub(crate) fn open_message(&self, id: &QueueId) -> Option<File> {
        let opened = self.open_active(id);
        let text = |e: &io::Error| format!("open active {id}: {}", os_error(e));
        match opened {
            Ok(file) => Some(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.log.warning(&text(&e));
                None
            }
            Err(e) => self.log.die(&text(&e)),
        }
    }

    /// Whether `q` (`defer/` or `bounce/`) holds a non-empty log for `id`.
    pub(crate) fn has_log(&self, q: QueueName, id: &QueueId) -> bool {
        self.log_size(q, id).is_some_and(|n| n > 0)
    }

    /// The size of the log `q` keeps for `id`, if there is one.
    pub(crate) fn log_size(&self, q: QueueName, id: &QueueId) -> Option<u64> {
        std::fs::metadata(self.path(q, id)).ok().map(|md| md.len())
    }

    /// `qmgr_message_alloc()`: the old `defer/` log goes once the file
    /// read cleanly (its `D` records now say what is done).
    pub(crate) fn remove_defer_log(&self, id: &QueueId) {
        let removed = self.layout.remove(QueueName::Defer, id);
        self.outcome(removed, Vanished::Quietly, |e| {
            format!("qmgr_message_alloc: {id}: remove defer {id}: {e}")
        });
    }

    /// `qmgr_active_done()`: an empty `bounce/` log is removed. Unlike the
    /// other removals, Postfix makes any failure fatal here, even a log
    /// that vanished since it was seen.
    pub(crate) fn remove_empty_bounce_log(&self, id: &QueueId) {
        if let Err(e) = self.layout.remove(QueueName::Bounce, id) {
            self.log
                .die(&format!("remove bounce {}: {}", id, os_error(&e)));
        }
    }

    /// `qmgr_active_corrupt()`: an unreadable file goes to `corrupt/`.
    pub(crate) fn save_corrupt(&self, id: &QueueId) {
        let moved = self
            .layout
            .rename(QueueName::Active, QueueName::Corrupt, id);
        let saved = self.outcome(moved, Vanished::Quietly, |e| {
            format!("qmgr_active_corrupt: save corrupt file queue active id {id}: {e}")
        });
        if saved {
            self.log.warning(&format!(
                "saving corrupt file \"{id}\" from queue \"active\" to queue \"corrupt\""
            ));
        }
    }

    /// `qmgr_active_defer()`: stamps a file of `active/` with `until` (its
    /// next attempt, in seconds) and moves it to `to`.
    pub(crate) fn defer(&self, id: &QueueId, to: QueueName, until: i64) {
        let stamped = self.layout.set_times(QueueName::Active, id, until);
        self.outcome(stamped, Vanished::Quietly, |e| {
            format!(
                "qmgr_active_defer: update {} time stamps: {e}",
                self.path(QueueName::Active, id).display()
            )
        });
        let moved = self.layout.rename(QueueName::Active, to, id);
        self.outcome(moved, Vanished::WithWarning, |e| {
            format!(
                "qmgr_active_defer: rename {id} from active to {}: {e}",
                to.as_str()
            )
        });
    }

    /// `qmgr_active_done_3_generic()`: a message with nothing left to do
    /// is unlinked and logged `removed`.
    pub(crate) fn remove_done(&self, id: &QueueId) {
        let removed = self.layout.remove(QueueName::Active, id);
        let done = self.outcome(removed, Vanished::WithWarning, |e| {
            format!("qmgr_active_done_3_generic: remove {id} from active: {e}")
        });
        if done {
            self.log.info(&format!("{id}: removed"));
        }
    }

    /// An in-place update of a file of `active/` (`D`, `W`, killed trace
    /// records). Any failure is fatal, as in Postfix: the file's state
    /// would be unknown.
    pub(crate) fn update(&self, id: &QueueId, f: impl FnOnce(&File) -> io::Result<()>) {
        if let Err(e) = self.open_active(id).and_then(|file| f(&file)) {
            self.log.die(&format!(
                "update queue file {}: {}",
                self.path(QueueName::Active, id).display(),
                os_error(&e)
            ));
        }
    }
}
