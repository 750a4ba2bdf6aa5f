//! The incoming and deferred queue scans, as `qmgr_scan.c` runs them.
//!
//! A scan walks one queue directory, handing out one queue ID at a time.
//! Requests (from triggers and timers) arrive as flag sets: a request that
//! says "start" begins a scan unless one is running, in which case it is
//! remembered and the scan starts over once it reaches the end, so that no
//! file written during a scan is missed. "Ignore time stamps" and
//! "override defer_transports" also apply to a scan already running.

use std::io;

use rqmgr_ipc::trigger::{ScanRequest, TriggerRequest};
use rqmgr_queue::dirs::{QueueLayout, QueueName};
use rqmgr_queue::queue_id::QueueId;
use rqmgr_queue::scan::Scanner;

/// Start a scan (`QMGR_SCAN_START`).
pub(crate) const SCAN_START: u32 = 1 << 0;
/// Ignore file time stamps (`QMGR_SCAN_ALL`).
pub(crate) const SCAN_ALL: u32 = 1 << 1;
/// Revive dead destinations first (`QMGR_FLUSH_ONCE`).
pub(crate) const FLUSH_ONCE: u32 = 1 << 2;
/// Override defer_transports (`QMGR_FLUSH_DFXP`).
pub(crate) const FLUSH_DFXP: u32 = 1 << 3;
/// This message is being flushed (`QMGR_FLUSH_EACH`).
pub(crate) const FLUSH_EACH: u32 = 1 << 4;
/// Expire this message now (`QMGR_FORCE_EXPIRE`).
pub(crate) const FORCE_EXPIRE: u32 = 1 << 5;

/// One queue's scan.
#[derive(Debug)]
pub(crate) struct QueueScan {
    queue: QueueName,
    walk: Option<Scanner>,
    /// Flags of the running scan.
    flags: u32,
    /// Flags for the next scan, and whether one was asked for.
    next_flags: u32,
    /// When the running scan started (for its duration, a metric).
    started: Option<std::time::Instant>,
    /// How long the last scan that went through the directory took, until
    /// taken.
    finished: Option<std::time::Duration>,
}

impl QueueScan {
    /// An idle scan of `queue`.
    pub(crate) fn new(queue: QueueName) -> QueueScan {
        QueueScan {
            queue,
            walk: None,
            flags: 0,
            next_flags: 0,
            started: None,
            finished: None,
        }
    }

    /// The queue this scan walks.
    pub(crate) fn queue(&self) -> QueueName {
        self.queue
    }

    /// Flags of the running scan, to be copied into each message it feeds.
    pub(crate) fn flags(&self) -> u32 {
        self.flags
    }

    /// Takes a request (`qmgr_scan_request()`). The caller handles
    /// `FLUSH_ONCE` (reviving dead destinations) itself.
    pub(crate) fn request(&mut self, layout: &QueueLayout, flags: u32) -> io::Result<()> {
        if self.walk.is_some() {
            self.flags |= flags & (SCAN_ALL | FLUSH_DFXP);
        }
        self.next_flags |= flags;
        if self.walk.is_none() && flags & SCAN_START != 0 {
            self.next_flags &= !SCAN_START;
            self.start(layout)?;
        }
        Ok(())
    }

    fn start(&mut self, layout: &QueueLayout) -> io::Result<()> {
        self.flags = self.next_flags;
        self.next_flags = 0;
        self.walk = Some(Scanner::new(layout, self.queue)?);
        self.started = Some(std::time::Instant::now());
        Ok(())
    }

    /// How long the last complete scan took, once.
    pub(crate) fn take_finished(&mut self) -> Option<std::time::Duration> {
        self.finished.take()
    }

    /// The next queue ID, restarting once at the end if a start request
    /// came in meanwhile (`qmgr_scan_next()`).
    pub(crate) fn next(&mut self, layout: &QueueLayout) -> io::Result<Option<QueueId>> {
        if let Some(walk) = &mut self.walk {
            if let Some(id) = walk.next_id()? {
                return Ok(Some(id));
            }
            self.walk = None;
            self.finished = self.started.take().map(|t| t.elapsed());
        }
        if self.next_flags & SCAN_START != 0 {
            self.start(layout)?;
            if let Some(walk) = &mut self.walk {
                return walk.next_id();
            }
        }
        Ok(None)
    }

    /// A scan is under way.
    pub(crate) fn is_running(&self) -> bool {
        self.walk.is_some()
    }
}

/// Turns the letters of one trigger read into per-scan flag sets
/// (`qmgr_trigger_event()`): (incoming, deferred).
pub(crate) fn trigger_flags(bytes: &[u8]) -> (u32, u32) {
    let req = TriggerRequest::from_letters(bytes);
    (scan_flags(req.incoming), scan_flags(req.deferred))
}

/// One scan's request as scan flags; a flush both revives dead
/// destinations and lifts `defer_transports`, as in Postfix.
fn scan_flags(req: ScanRequest) -> u32 {
    let mut flags = 0;
    if req.start {
        flags |= SCAN_START;
    }
    if req.scan_all {
        flags |= SCAN_ALL;
    }
    if req.flush_dead {
        flags |= FLUSH_ONCE | FLUSH_DFXP;
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The letters' meaning as this module had it before it moved to
    /// `rqmgr_ipc::trigger`: the reference the move must not change.
    fn flags_before_the_move(bytes: &[u8]) -> (u32, u32) {
        let mut incoming = 0;
        let mut deferred = 0;
        for b in bytes {
            match b {
                b'W' | b'I' => incoming |= SCAN_START,
                b'D' => deferred |= SCAN_START,
                b'F' => {
                    incoming |= FLUSH_ONCE | FLUSH_DFXP;
                    deferred |= FLUSH_ONCE | FLUSH_DFXP;
                }
                b'A' => {
                    incoming |= SCAN_ALL;
                    deferred |= SCAN_ALL;
                }
                _ => {}
            }
        }
        (incoming, deferred)
    }

    #[test]
    fn every_pair_of_bytes_means_what_it_meant() {
        for a in 0..=u8::MAX {
            for b in 0..=u8::MAX {
                let bytes = [a, b];
                assert_eq!(
                    trigger_flags(&bytes),
                    flags_before_the_move(&bytes),
                    "{bytes:?}"
                );
            }
        }
        assert_eq!(trigger_flags(b"WIDAF\0"), flags_before_the_move(b"WIDAF\0"));
    }

    #[test]
    fn trigger_letters_combine() {
        assert_eq!(trigger_flags(b"W\0"), (SCAN_START, 0));
        assert_eq!(
            trigger_flags(b"FADI"),
            (
                SCAN_START | SCAN_ALL | FLUSH_ONCE | FLUSH_DFXP,
                SCAN_START | SCAN_ALL | FLUSH_ONCE | FLUSH_DFXP
            )
        );
        assert_eq!(trigger_flags(b"DDDxyz"), (0, SCAN_START));
        assert_eq!(trigger_flags(b"A"), (SCAN_ALL, SCAN_ALL));
    }

    #[test]
    fn request_during_scan_restarts_at_end() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("incoming")).unwrap();
        std::fs::write(dir.path().join("incoming/ABCDEF12345"), b"").unwrap();
        let layout = QueueLayout::new(dir.path(), "deferred, defer", 1);
        let mut scan = QueueScan::new(QueueName::Incoming);
        assert_eq!(
            scan.next(&layout).unwrap(),
            None,
            "idle scan yields nothing"
        );
        scan.request(&layout, SCAN_START).unwrap();
        scan.request(&layout, SCAN_START | SCAN_ALL).unwrap();
        assert_eq!(
            scan.flags() & SCAN_ALL,
            SCAN_ALL,
            "A applies to the running scan"
        );
        assert!(scan.next(&layout).unwrap().is_some());
        // The remembered start request walks the directory again.
        assert!(scan.next(&layout).unwrap().is_some());
        assert_eq!(scan.next(&layout).unwrap(), None);
        assert!(!scan.is_running());
    }
}
