//! Peers: one job's share of one destination (`qmgr_peer.c`).
//!
//! A peer lists the job's waiting entries for its queue. Postfix picks a
//! job's next peer by walking the job's peer list for the first one whose
//! queue has room, rotating it to the end; with thousands of full
//! destinations that walk is long. Here a job keeps a ring of the peers
//! that may have work, and a peer met with its queue full is *parked* on
//! that queue instead of being walked over again; the queue hands its
//! parked peers back to their jobs when it gets room. Each peer is thus
//! moved O(1) times per change of its queue, and a selection costs
//! amortised O(1).
//!
//! Invariants: a peer exists while it has entries (waiting or busy,
//! `refcount`); `in_ring` means a live ring slot of its job names it;
//! `parked` means a live slot of its queue's `parked` names it; never both.
//! Slots carry the peer's `stamp` so that a slot left behind by a freed
//! peer (whose slab index may be reused) is recognised and skipped.
//!
//! Each job finds its peers by queue through its own [`PeerIndex`], as
//! Postfix's per-job `peer_byname`: a job's deliveries tend to come and go
//! together, so its small index stays in cache where one scheduler-wide
//! table of a million peers would miss on every lookup.

use crate::hash::FxHashMap;
use crate::list::{ix, List};
use crate::Scheduler;

/// Up to this many peers a job's index is a plain list.
const SMALL_INDEX: usize = 8;

/// One job's peers by queue: a short list for the many jobs with few
/// destinations, a hash table beyond that.
#[derive(Debug)]
pub(crate) enum PeerIndex {
    /// (queue, peer) pairs, unordered.
    Small(Vec<(u32, u32)>),
    /// Queue to peer.
    Big(FxHashMap<u32, u32>),
}

impl Default for PeerIndex {
    fn default() -> Self {
        PeerIndex::Small(Vec::new())
    }
}

impl PeerIndex {
    fn get(&self, q: u32) -> Option<u32> {
        match self {
            PeerIndex::Small(v) => v.iter().find(|&&(k, _)| k == q).map(|&(_, p)| p),
            PeerIndex::Big(m) => m.get(&q).copied(),
        }
    }

    fn insert(&mut self, q: u32, p: u32) {
        match self {
            PeerIndex::Small(v) if v.len() < SMALL_INDEX => v.push((q, p)),
            PeerIndex::Small(v) => {
                let mut m: FxHashMap<u32, u32> = v.drain(..).collect();
                m.insert(q, p);
                *self = PeerIndex::Big(m);
            }
            PeerIndex::Big(m) => {
                m.insert(q, p);
            }
        }
    }

    fn remove(&mut self, q: u32) {
        match self {
            PeerIndex::Small(v) => {
                if let Some(i) = v.iter().position(|&(k, _)| k == q) {
                    v.swap_remove(i);
                }
            }
            PeerIndex::Big(m) => {
                m.remove(&q);
            }
        }
    }
}

/// A job's entries for one destination queue.
#[derive(Debug)]
pub(crate) struct Peer {
    pub job: u32,
    pub queue: u32,
    pub entries: List,
    /// Entries of this peer, waiting or busy.
    pub refcount: u32,
    pub stamp: u32,
    pub in_ring: bool,
    pub parked: bool,
}

impl Scheduler {
    /// The job's peer for the queue, created on first use
    /// (`qmgr_peer_obtain()`).
    pub(crate) fn peer_obtain(&mut self, j: u32, q: u32) -> u32 {
        if let Some(p) = self.jobs[j as usize].peers.get(q) {
            return p;
        }
        self.stamp = self.stamp.wrapping_add(1);
        let p = ix(self.peers.insert(Peer {
            job: j,
            queue: q,
            entries: List::default(),
            refcount: 0,
            stamp: self.stamp,
            in_ring: false,
            parked: false,
        }));
        self.jobs[j as usize].peers.insert(q, p);
        p
    }

    pub(crate) fn peer_free(&mut self, p: u32) {
        let peer = self.peers.remove(p as usize);
        if peer.refcount != 0 || peer.entries.len != 0 {
            panic!(
                "peer_free: peer {p} still has {} entries ({} waiting)",
                peer.refcount, peer.entries.len
            );
        }
        self.jobs[peer.job as usize].peers.remove(peer.queue);
    }

    fn peer_valid(&self, p: u32, stamp: u32) -> bool {
        self.peers.get(p as usize).is_some_and(|x| x.stamp == stamp)
    }

    /// A peer got waiting entries: make sure its job will look at it,
    /// unless it is parked on a full queue (the queue will wake it).
    pub(crate) fn peer_offer(&mut self, p: u32) {
        if !self.cfg.preemptive {
            return;
        }
        let peer = &mut self.peers[p as usize];
        if peer.in_ring || peer.parked || peer.entries.len == 0 {
            return;
        }
        peer.in_ring = true;
        let slot = (p, peer.stamp);
        self.jobs[peer.job as usize].ring.push_back(slot);
    }

    /// The job's next peer whose queue can take a delivery now, rotated to
    /// the end of the ring (`qmgr_peer_select()`).
    pub(crate) fn peer_select(&mut self, j: u32) -> Option<u32> {
        while let Some((p, stamp)) = self.jobs[j as usize].ring.pop_front() {
            if !self.peer_valid(p, stamp) {
                continue;
            }
            let peer = &mut self.peers[p as usize];
            peer.in_ring = false;
            if peer.entries.len == 0 {
                continue;
            }
            let q = peer.queue as usize;
            if !self.queues[q].has_room() {
                if !peer.parked {
                    peer.parked = true;
                    self.queues[q].parked.push((p, stamp));
                }
                continue;
            }
            peer.in_ring = true;
            self.jobs[j as usize].ring.push_back((p, stamp));
            return Some(p);
        }
        None
    }

    /// The queue may have room again: give its parked peers back to their
    /// jobs, and if one of those jobs was a blocker, have the transport
    /// reconsider its job list from the start (`qmgr_job_blocker_update()`).
    pub(crate) fn queue_wake(&mut self, q: usize) {
        if self.queues[q].parked.is_empty() || !self.queues[q].has_room() {
            return;
        }
        let t = self.queues[q].transport;
        let tag = self.transports[t].blocker_tag;
        let parked = std::mem::take(&mut self.queues[q].parked);
        let mut unblocked = false;
        for (p, stamp) in parked {
            if !self.peer_valid(p, stamp) {
                continue;
            }
            let peer = &mut self.peers[p as usize];
            if !peer.parked {
                continue;
            }
            peer.parked = false;
            let j = peer.job as usize;
            unblocked |= self.jobs[j].blocker_tag == tag;
            self.peer_offer(p);
        }
        if unblocked {
            let tr = &mut self.transports[t];
            tr.blocker_tag = tr.blocker_tag.wrapping_add(2);
            tr.job_current = tr.job_list.head;
            tr.reset_candidate_cache();
        }
    }

    /// Hands every parked peer of the transport back to its job. Only for
    /// recovering from a broken invariant, never on the normal path.
    pub(crate) fn transport_unpark_all(&mut self, t: usize) {
        let mut queues: Vec<usize> = self.transports[t].queues.values().copied().collect();
        // HashMap order differs between runs; sorted, every run of the
        // same events makes the same decisions.
        queues.sort_unstable();
        for q in queues {
            for (p, stamp) in std::mem::take(&mut self.queues[q].parked) {
                if self.peer_valid(p, stamp) {
                    self.peers[p as usize].parked = false;
                    self.peer_offer(p);
                }
            }
        }
        let tr = &mut self.transports[t];
        tr.blocker_tag = tr.blocker_tag.wrapping_add(2);
        tr.job_current = tr.job_list.head;
        tr.reset_candidate_cache();
    }
}
