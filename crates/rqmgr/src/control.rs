//! What operators changed (`rqmgrctl suspend`, `set`), and which deferred
//! messages wait for which destination.
//!
//! * [`Overrides`]: the operators' changes in force, each with an id, who
//!   made it (uid), when, why and until when. A suspension also remembers
//!   the queue IDs it sent to `deferred/`, so that ending it releases
//!   exactly that mail. The scheduler holds the effect (a hold, a limit);
//!   this table holds the bookkeeping, and main.rs' state file keeps both
//!   across restarts (persist.rs).
//! * [`DeferredIndex`]: queue IDs in `deferred/` by the destinations
//!   (transport and next hop) whose recipients were deferred, so that
//!   `rqmgrctl flush DEST` costs what that destination has deferred, not
//!   what the deferred queue holds. A message leaves the index when it
//!   enters the active queue, and comes back with the destinations of
//!   that attempt if it is deferred again. Mail deferred before rqmgr ran
//!   (or by another queue manager) is not in it.
//!
//! Nothing here does I/O. Invariant: the index's two maps agree: a queue
//! ID is listed under a destination exactly when the destination is
//! listed for the ID.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rqmgr_queue::queue_id::QueueId;
use rqmgr_sched::{LiveLimit, Target};

/// What an override does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OverrideKind {
    /// No deliveries to the target.
    Suspend,
    /// A limit other than main.cf's.
    Limit(LiveLimit),
}

impl OverrideKind {
    /// Its name, as `rqmgrctl overrides` shows it and the state file
    /// keeps it: `suspend`, or the limit's (`concurrency`, `rate_delay`,
    /// `recipient_limit`).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            OverrideKind::Suspend => "suspend",
            OverrideKind::Limit(l) => limit_name(*l),
        }
    }
}

/// A limit's name, as `rqmgrctl set` takes it.
pub(crate) fn limit_name(limit: LiveLimit) -> &'static str {
    match limit {
        LiveLimit::Concurrency(_) => "concurrency",
        LiveLimit::RecipientLimit(_) => "recipient_limit",
        LiveLimit::RateDelay(_) => "rate_delay",
    }
}

/// One operator's change in force.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Override {
    pub id: u64,
    pub target: Target,
    pub kind: OverrideKind,
    /// Why, in the operator's words (may be empty).
    pub reason: String,
    /// Who: the caller's uid, if known.
    pub uid: Option<u32>,
    /// When it was made, and when it ends by itself (seconds since the
    /// epoch).
    pub since: i64,
    pub until: Option<i64>,
    /// Suspensions: the mail it sent to `deferred/`.
    pub held: BTreeSet<QueueId>,
}

impl Override {
    /// The status a suspension defers mail with: what mailq and delay
    /// warnings show.
    pub(crate) fn hold_text(&self) -> String {
        let name = self.target.name();
        if self.reason.is_empty() {
            format!("delivery to {name} suspended by operator")
        } else {
            format!("delivery to {name} suspended by operator: {}", self.reason)
        }
    }

    /// Whether a recipient routed to `transport` and `nexthop` falls under
    /// this override.
    pub(crate) fn covers(&self, transport: &[u8], nexthop: &[u8]) -> bool {
        self.target.transport[..] == *transport
            && self
                .target
                .nexthop
                .as_ref()
                .is_none_or(|hop| hop.eq_ignore_ascii_case(nexthop))
    }
}

/// The overrides in force, by id.
#[derive(Debug, Default)]
pub(crate) struct Overrides {
    next_id: u64,
    by_id: BTreeMap<u64, Override>,
}

impl Overrides {
    /// Adds one; returns its id.
    pub(crate) fn add(&mut self, mut o: Override) -> u64 {
        self.next_id = self.next_id.max(1);
        o.id = self.next_id;
        self.next_id += 1;
        let id = o.id;
        self.by_id.insert(id, o);
        id
    }

    /// Takes over an override saved by an earlier run, with its id.
    pub(crate) fn restore(&mut self, o: Override) {
        self.next_id = self.next_id.max(o.id + 1);
        self.by_id.insert(o.id, o);
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<Override> {
        self.by_id.remove(&id)
    }

    pub(crate) fn get(&self, id: u64) -> Option<&Override> {
        self.by_id.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut Override> {
        self.by_id.get_mut(&id)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Override> {
        self.by_id.values()
    }

    /// The ids of the overrides on exactly `target` for which `pick` holds,
    /// oldest first.
    pub(crate) fn on(&self, target: &Target, pick: impl Fn(&OverrideKind) -> bool) -> Vec<u64> {
        self.by_id
            .values()
            .filter(|o| o.target == *target && pick(&o.kind))
            .map(|o| o.id)
            .collect()
    }

    /// The newest suspension on exactly `target`.
    pub(crate) fn newest_suspension(&self, target: &Target) -> Option<&Override> {
        self.by_id
            .values()
            .rev()
            .find(|o| o.target == *target && o.kind == OverrideKind::Suspend)
    }

    /// Notes that `id` went to `deferred/` while a suspension covering
    /// `transport`/`nexthop` was in force; true if one took it.
    pub(crate) fn note_held(&mut self, transport: &[u8], nexthop: &[u8], id: &QueueId) -> bool {
        let mut taken = false;
        for o in self.by_id.values_mut() {
            if o.kind == OverrideKind::Suspend && o.covers(transport, nexthop) {
                taken |= o.held.insert(id.clone());
            }
        }
        taken
    }

    /// When the next override ends by itself.
    pub(crate) fn next_expiry(&self) -> Option<i64> {
        self.by_id.values().filter_map(|o| o.until).min()
    }

    /// The ids of overrides whose time is up at `now`.
    pub(crate) fn expired(&self, now: i64) -> Vec<u64> {
        self.by_id
            .values()
            .filter(|o| o.until.is_some_and(|t| t <= now))
            .map(|o| o.id)
            .collect()
    }
}

/// Deferred mail by destination; see the module documentation.
/// Destinations are numbered once, so that a message costs its queue ID
/// twice and a number per destination, whatever the names' lengths.
#[derive(Debug, Default)]
pub(crate) struct DeferredIndex {
    names: Vec<Target>,
    numbers: HashMap<Target, u32>,
    /// By destination number.
    by_dest: Vec<BTreeSet<QueueId>>,
    by_id: HashMap<QueueId, Vec<u32>>,
}

impl DeferredIndex {
    fn number(&mut self, d: Target) -> u32 {
        if let Some(&n) = self.numbers.get(&d) {
            return n;
        }
        let n = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(d.clone());
        self.numbers.insert(d, n);
        self.by_dest.push(BTreeSet::new());
        n
    }

    /// `id` went to `deferred/` with recipients for these destinations.
    pub(crate) fn add(&mut self, id: &QueueId, dests: Vec<Target>) {
        self.remove(id);
        if dests.is_empty() {
            return;
        }
        let mut numbers: Vec<u32> = dests.into_iter().map(|d| self.number(d)).collect();
        numbers.sort_unstable();
        numbers.dedup();
        for &n in &numbers {
            self.by_dest[n as usize].insert(id.clone());
        }
        self.by_id.insert(id.clone(), numbers);
    }

    /// `id` left `deferred/` (or is about to); false if it was not
    /// indexed.
    pub(crate) fn remove(&mut self, id: &QueueId) -> bool {
        let Some(numbers) = self.by_id.remove(id) else {
            return false;
        };
        for n in numbers {
            self.by_dest[n as usize].remove(id);
        }
        true
    }

    /// Takes out every message deferred for `target`: one destination,
    /// or each of a transport's.
    pub(crate) fn take(&mut self, target: &Target) -> Vec<QueueId> {
        let numbers: Vec<u32> = match &target.nexthop {
            Some(_) => self.numbers.get(target).copied().into_iter().collect(),
            None => (0..self.names.len())
                .filter(|&n| self.names[n].transport == target.transport)
                .filter_map(|n| u32::try_from(n).ok())
                .collect(),
        };
        let mut ids = BTreeSet::new();
        for n in numbers {
            ids.append(&mut std::mem::take(&mut self.by_dest[n as usize]));
        }
        for id in &ids {
            self.remove(id);
        }
        ids.into_iter().collect()
    }

    /// Messages indexed.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Every destination with its messages, for saving.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Target, &BTreeSet<QueueId>)> {
        self.names
            .iter()
            .zip(&self.by_dest)
            .filter(|(_, ids)| !ids.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> QueueId {
        QueueId::parse(s).unwrap_or_else(|| panic!("bad id {s}"))
    }

    fn dest(t: &str, n: &str) -> Target {
        Target::new(t.as_bytes(), Some(n.as_bytes()))
    }

    #[test]
    fn index_takes_one_destinations_mail_and_forgets_it_everywhere() {
        let mut ix = DeferredIndex::default();
        ix.add(&id("4ABC1"), vec![dest("smtp", "a.example")]);
        ix.add(
            &id("4ABC2"),
            vec![dest("smtp", "a.example"), dest("smtp", "b.example")],
        );
        ix.add(&id("4ABC3"), vec![dest("smtp", "B.Example")]);
        assert_eq!(ix.len(), 3);
        assert_eq!(
            ix.take(&dest("smtp", "A.EXAMPLE")),
            vec![id("4ABC1"), id("4ABC2")]
        );
        // 4ABC2 is gone from b.example's list too.
        assert_eq!(ix.take(&dest("smtp", "b.example")), vec![id("4ABC3")]);
        assert_eq!(ix.len(), 0);
        assert!(ix.take(&dest("smtp", "a.example")).is_empty());
    }

    #[test]
    fn index_takes_a_whole_transport_and_re_adding_replaces() {
        let mut ix = DeferredIndex::default();
        ix.add(&id("4ABC1"), vec![dest("smtp", "a.example")]);
        ix.add(&id("4ABC1"), vec![dest("relay", "b.example")]);
        ix.add(&id("4ABC2"), vec![dest("smtp", "c.example")]);
        assert_eq!(
            ix.take(&Target::new(b"relay", None)),
            vec![id("4ABC1")],
            "the second add replaced the first"
        );
        ix.remove(&id("4ABC2"));
        assert_eq!(ix.len(), 0);
        assert_eq!(ix.iter().count(), 0);
    }

    fn suspend(target: Target, until: Option<i64>) -> Override {
        Override {
            id: 0,
            target,
            kind: OverrideKind::Suspend,
            reason: "maintenance".into(),
            uid: Some(0),
            since: 100,
            until,
            held: BTreeSet::new(),
        }
    }

    #[test]
    fn overrides_get_ids_expire_and_collect_held_mail() {
        let mut o = Overrides::default();
        let a = o.add(suspend(dest("smtp", "a.example"), Some(200)));
        let b = o.add(suspend(Target::new(b"smtp", None), None));
        assert_eq!((a, b), (1, 2));
        assert_eq!(o.next_expiry(), Some(200));
        assert!(o.expired(199).is_empty());
        assert_eq!(o.expired(200), vec![a]);
        o.note_held(b"smtp", b"A.example", &id("4ABC1"));
        o.note_held(b"smtp", b"z.example", &id("4ABC2"));
        o.note_held(b"local", b"a.example", &id("4ABC3"));
        let held = |i| o.get(i).map(|x| x.held.len());
        assert_eq!((held(a), held(b)), (Some(1), Some(2)));
        assert_eq!(
            o.get(a).map(Override::hold_text).as_deref(),
            Some("delivery to smtp:a.example suspended by operator: maintenance")
        );
        assert!(o.remove(a).is_some());
        o.restore(suspend(dest("smtp", "q.example"), None));
        assert_eq!(o.add(suspend(dest("x", "y"), None)), 3);
    }
}
