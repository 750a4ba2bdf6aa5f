//! The table of open agent connections, by [`ConnId`].
//!
//! Connection ids are handed out in sequence and most connections are
//! short-lived, so the table is a window of slots indexed by `id - base`:
//! a lookup is an index, not a hash probe into a table too big for the
//! cache (tens of thousands of deliveries may be busy at once). Leading
//! closed slots are dropped as they appear; a few long-lived connections
//! would still pin the window open, so once it is mostly holes its oldest
//! live connections move to a side hash table and the window shrinks.
//!
//! Invariants: `base + window.len()` is the next id to be inserted;
//! `live` counts the occupied slots of `window`; an id below `base` is
//! in `old` or closed.

use std::collections::VecDeque;

use crate::event::ConnId;
use crate::hash::FxHashMap;

/// A connection to a delivery agent.
#[derive(Debug)]
pub(crate) struct Conn {
    pub transport: usize,
    pub entry: Option<u32>,
}

/// Open connections; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Conns {
    base: u64,
    window: VecDeque<Option<Conn>>,
    live: usize,
    old: FxHashMap<u64, Conn>,
}

impl Conns {
    pub(crate) fn len(&self) -> usize {
        self.live + self.old.len()
    }

    /// Adds the connection with the next id in sequence.
    pub(crate) fn insert(&mut self, id: ConnId, conn: Conn) {
        if self.window.is_empty() {
            self.base = id.0;
        }
        debug_assert_eq!(
            self.base + self.window.len() as u64,
            id.0,
            "ids out of sequence"
        );
        self.window.push_back(Some(conn));
        self.live += 1;
        // Mostly holes: move the oldest out of the way (amortised O(1),
        // each slot leaves the window once).
        while self.window.len() > 1024 + 4 * self.live {
            if let Some(Some(c)) = self.window.pop_front() {
                self.live -= 1;
                self.old.insert(self.base, c);
            }
            self.base += 1;
        }
    }

    pub(crate) fn get(&self, id: ConnId) -> Option<&Conn> {
        match id.0.checked_sub(self.base) {
            Some(i) => self.window.get(usize::try_from(i).ok()?)?.as_ref(),
            None => self.old.get(&id.0),
        }
    }

    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        match id.0.checked_sub(self.base) {
            Some(i) => self.window.get_mut(usize::try_from(i).ok()?)?.as_mut(),
            None => self.old.get_mut(&id.0),
        }
    }

    pub(crate) fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let Some(i) = id.0.checked_sub(self.base) else {
            return self.old.remove(&id.0);
        };
        let c = self.window.get_mut(usize::try_from(i).ok()?)?.take()?;
        self.live -= 1;
        while let Some(None) = self.window.front() {
            self.window.pop_front();
            self.base += 1;
        }
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(t: usize) -> Conn {
        Conn {
            transport: t,
            entry: None,
        }
    }

    #[test]
    fn long_lived_connections_move_aside_and_stay_reachable() {
        let mut c = Conns::default();
        c.insert(ConnId(0), conn(7));
        for id in 1..10_000u64 {
            c.insert(ConnId(id), conn(1));
            assert!(c.remove(ConnId(id)).is_some());
            assert!(c.remove(ConnId(id)).is_none(), "removed twice");
        }
        assert!(c.window.len() <= 1024 + 4, "window kept open");
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(ConnId(0)).map(|x| x.transport), Some(7));
        assert!(c.get_mut(ConnId(0)).is_some());
        assert!(c.get(ConnId(5)).is_none());
        assert!(c.get(ConnId(1 << 40)).is_none());
        assert_eq!(c.remove(ConnId(0)).map(|x| x.transport), Some(7));
        assert_eq!(c.len(), 0);
    }
}
