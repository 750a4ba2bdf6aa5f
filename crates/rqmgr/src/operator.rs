//! What operators' commands do (`rqmgrctl suspend`, `resume`, `clear`,
//! `flush`, `set`), and how their effect outlives the process.
//!
//! The scheduler carries out holds and limits (rqmgr-sched's control
//! module); the bookkeeping is [`crate::control`]; this module ties the
//! two to the queue: releasing mail renames it from `deferred/` to
//! `incoming/` with its time stamps set to now, as flush(8) does, and
//! asks for an incoming scan. A message still in the active queue when
//! its release is asked for is released as it leaves (`active/` to
//! `incoming/`, as a queue manager's start-up moves it).
//!
//! Every change is logged in one line, `ACTION TARGET: RESULT, by uid U`,
//! counted in `rqmgr_operator_changes_total`, and saved in the state file
//! (persist.rs) before the answer goes out. The learned part of the state
//! (`rqmgr_learned_state`) is saved every few seconds when it changed, and
//! at exit.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rqmgr_queue::dirs::QueueName;
use rqmgr_queue::queue_id::QueueId;
use rqmgr_sched::{Dsn, LearnedDestination, LiveLimit, Target};

use crate::control::{self, DeferredIndex, Override, OverrideKind, Overrides};
use crate::message::ActiveMessage;
use crate::metrics::ControlCounts;
use crate::persist::{self, Saved, StateDir};
use crate::state::Core;

/// How often learned state is saved while it changes.
const SAVE_EVERY: Duration = Duration::from_secs(5);
/// The status of mail deferred by a suspension.
const HOLD_STATUS: &str = "4.3.2";

/// The operators' side of the core; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Control {
    pub overrides: Overrides,
    pub deferred: DeferredIndex,
    /// Released while in the active queue: to `incoming/` when done.
    pub release_when_done: HashSet<QueueId>,
    /// Mail was released: the incoming queue wants a scan.
    pub rescan_incoming: bool,
    /// Where the state file lives; None: nowhere (a warning said why).
    pub store: Option<StateDir>,
    /// `rqmgr_learned_state`: save and restore what the scheduler learned.
    pub learned_state: bool,
    /// The overrides changed since the last save.
    pub overrides_dirty: bool,
    /// The index changed since the last save.
    pub index_dirty: bool,
    last_learned: Vec<(LearnedDestination, Option<i64>)>,
    next_save: Option<Instant>,
}

/// Which state files [`Core::save_state`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Save {
    /// The overrides, if they changed (an operator's change).
    Overrides,
    /// Also the index and the learned state, if the save timer is due.
    WhenDue,
    /// Everything that changed (exit).
    All,
}

/// What a command did, for its answer.
#[derive(Debug, PartialEq)]
pub(crate) enum Done {
    /// A new override, with the recipients it deferred at once.
    Added { id: u64, deferred: usize },
    /// Overrides ended, with the messages released.
    Ended { ids: Vec<u64>, released: usize },
    /// Mail released.
    Released(usize),
}

impl Core {
    /// Step 6 for a deferred message: stamp it and move it to `deferred/`
    /// (or to `incoming/`, if its release was asked for meanwhile), and
    /// note where it waits.
    pub(crate) fn defer_message(&mut self, m: &ActiveMessage, until: i64) {
        let id = &m.queue_id;
        if self.control.release_when_done.remove(id) {
            self.spool.defer(id, QueueName::Incoming, self.now.secs());
            self.control.rescan_incoming = true;
            return;
        }
        self.spool.defer(id, QueueName::Deferred, until);
        let dests: Vec<Target> = m
            .dests
            .deferred()
            .map(|d| Target::new(d.transport(), Some(d.nexthop())))
            .collect();
        if !self.control.overrides.is_empty() {
            for d in m.dests.deferred() {
                let held = self
                    .control
                    .overrides
                    .note_held(d.transport(), d.nexthop(), id);
                self.control.overrides_dirty |= held;
            }
        }
        if !dests.is_empty() {
            self.control.deferred.add(id, dests);
            self.control.index_dirty = true;
        }
    }

    /// `rqmgrctl suspend`.
    pub(crate) fn suspend(
        &mut self,
        target: Target,
        reason: String,
        for_secs: Option<u64>,
        uid: Option<u32>,
    ) -> Result<Done, String> {
        known_transport(&target)?;
        let o = self.new_override(target, OverrideKind::Suspend, reason, for_secs, uid);
        let dsn = Dsn::new(HOLD_STATUS, o.hold_text());
        let deferred = self.sched.hold(&o.target, dsn, self.now.sched());
        let what = o.target.name();
        let until = o.until.map_or(String::new(), |t| format!(" until {t}"));
        let why = if o.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", o.reason)
        };
        let id = self.control.overrides.add(o);
        self.control.overrides_dirty = true;
        let result = format!(": id {id}, {deferred} recipients deferred{until}{why}");
        self.operator_change("suspend", &what, &result, uid);
        Ok(Done::Added { id, deferred })
    }

    /// `rqmgrctl resume`: every suspension of exactly `target` ends.
    pub(crate) fn resume(&mut self, target: &Target, uid: Option<u32>) -> Done {
        let ids = self
            .control
            .overrides
            .on(target, |k| *k == OverrideKind::Suspend);
        let released = ids.iter().map(|&id| self.end_override(id)).sum();
        let result = format!(": {} ended, {released} messages released", ids.len());
        self.operator_change("resume", &target.name(), &result, uid);
        Done::Ended { ids, released }
    }

    /// `rqmgrctl clear ID`; None if there is no such override.
    pub(crate) fn clear(&mut self, id: u64, uid: Option<u32>) -> Option<Done> {
        let what = self.control.overrides.get(id)?.target.name();
        let released = self.end_override(id);
        let result = format!(": id {id} cleared, {released} messages released");
        self.operator_change("clear", &what, &result, uid);
        Some(Done::Ended {
            ids: vec![id],
            released,
        })
    }

    /// `rqmgrctl flush`: the deferred mail of `target` goes to the
    /// incoming queue now, the rest of the deferred queue stays.
    pub(crate) fn flush(&mut self, target: &Target, uid: Option<u32>) -> Done {
        let ids = self.control.deferred.take(target);
        self.control.index_dirty |= !ids.is_empty();
        let released = self.release_mail(&ids);
        let result = format!(": {released} messages released");
        self.operator_change("flush", &target.name(), &result, uid);
        Done::Released(released)
    }

    /// `rqmgrctl set`: a limit for a transport or one destination. An
    /// older override of the same limit on the same target is replaced.
    pub(crate) fn set_limit(
        &mut self,
        target: Target,
        limit: LiveLimit,
        for_secs: Option<u64>,
        uid: Option<u32>,
    ) -> Result<Done, String> {
        known_transport(&target)?;
        self.apply_limit(&target, limit)?;
        let same = |k: &OverrideKind| matches!(k, OverrideKind::Limit(l) if std::mem::discriminant(l) == std::mem::discriminant(&limit));
        for old in self.control.overrides.on(&target, same) {
            self.control.overrides.remove(old);
        }
        self.control.overrides_dirty = true;
        let what = target.name();
        let o = self.new_override(
            target,
            OverrideKind::Limit(limit),
            String::new(),
            for_secs,
            uid,
        );
        let until = o.until.map_or(String::new(), |t| format!(" until {t}"));
        let id = self.control.overrides.add(o);
        let (name, value) = limit_words(limit);
        let result = format!(" {name}={value}: id {id}{until}");
        self.operator_change("set", &what, &result, uid);
        Ok(Done::Added { id, deferred: 0 })
    }

    /// Ends the overrides whose time is up; true if any did.
    pub(crate) fn expire_overrides(&mut self) -> bool {
        let expired = self.control.overrides.expired(self.now.secs());
        for &id in &expired {
            let Some(what) = self.control.overrides.get(id).map(|o| o.target.name()) else {
                continue;
            };
            let released = self.end_override(id);
            let result = format!(": id {id} expired, {released} messages released");
            self.operator_change("expire", &what, &result, None);
        }
        !expired.is_empty()
    }

    /// What the metrics show of the overrides and the index.
    pub(crate) fn control_counts(&self) -> ControlCounts {
        let o = &self.control.overrides;
        let suspensions = o.iter().filter(|o| o.kind == OverrideKind::Suspend).count();
        ControlCounts {
            suspensions,
            limits: o.len() - suspensions,
            held: o.iter().map(|o| o.held.len()).sum(),
            indexed: self.control.deferred.len(),
        }
    }

    /// When the next override ends by itself, or the learned state is
    /// due a save, whichever is first.
    pub(crate) fn control_deadline(&self) -> Option<Instant> {
        let expiry = self.control.overrides.next_expiry().map(|t| {
            let left = u64::try_from(t.saturating_sub(self.now.secs())).unwrap_or(0);
            Instant::now() + Duration::from_secs(left)
        });
        [expiry, self.control.next_save].into_iter().flatten().min()
    }

    /// Removes an override and undoes its effect; returns the messages
    /// released.
    fn end_override(&mut self, id: u64) -> usize {
        let Some(o) = self.control.overrides.remove(id) else {
            return 0;
        };
        self.control.overrides_dirty = true;
        match o.kind {
            OverrideKind::Suspend => {
                let now = self.now.sched();
                // Another suspension of the same target goes on, and takes
                // over the mail this one held.
                if let Some(next) = self.control.overrides.newest_suspension(&o.target) {
                    let (next_id, dsn) = (next.id, Dsn::new(HOLD_STATUS, next.hold_text()));
                    self.sched.hold(&o.target, dsn, now);
                    if let Some(n) = self.control.overrides.get_mut(next_id) {
                        n.held.extend(o.held);
                    }
                    return 0;
                }
                self.sched.release(&o.target, now);
                let ids: Vec<QueueId> = o.held.into_iter().collect();
                for id in &ids {
                    self.control.deferred.remove(id);
                }
                self.control.index_dirty = true;
                self.release_mail(&ids)
            }
            OverrideKind::Limit(_) => {
                self.reapply_limits(&o.target);
                0
            }
        }
    }

    /// Puts the configured limits of `target` back, then applies the
    /// overrides of it that are left, oldest first.
    fn reapply_limits(&mut self, target: &Target) {
        match &target.nexthop {
            None => self.sched.reset_transport_limits(&target.transport),
            Some(hop) => {
                self.sched.clear_destination_limits(&target.transport, hop);
            }
        }
        let left = self
            .control
            .overrides
            .on(target, |k| matches!(k, OverrideKind::Limit(_)));
        for id in left {
            if let Some(OverrideKind::Limit(l)) =
                self.control.overrides.get(id).map(|o| o.kind.clone())
            {
                // It was accepted before, on the same configuration.
                let _ = self.apply_limit(target, l);
            }
        }
    }

    fn apply_limit(&mut self, target: &Target, limit: LiveLimit) -> Result<(), String> {
        let now = self.now.sched();
        match &target.nexthop {
            None => self
                .sched
                .set_transport_limit(&target.transport, limit, now),
            Some(hop) => self
                .sched
                .set_destination_limit(&target.transport, hop, limit, now),
        }
    }

    fn new_override(
        &self,
        target: Target,
        kind: OverrideKind,
        reason: String,
        for_secs: Option<u64>,
        uid: Option<u32>,
    ) -> Override {
        let since = self.now.secs();
        Override {
            id: 0,
            target,
            kind,
            reason,
            uid,
            since,
            until: for_secs.map(|s| since.saturating_add(i64::try_from(s).unwrap_or(i64::MAX))),
            held: Default::default(),
        }
    }

    /// Moves these messages from `deferred/` to `incoming/` (those in the
    /// active queue as they leave it); returns how many.
    fn release_mail(&mut self, ids: &[QueueId]) -> usize {
        let active: HashSet<&QueueId> = if ids.is_empty() {
            HashSet::new()
        } else {
            self.messages.values().map(|m| &m.queue_id).collect()
        };
        let mut released = 0;
        let mut later = Vec::new();
        for id in ids {
            if active.contains(id) {
                later.push(id.clone());
                released += 1;
                continue;
            }
            let layout = self.spool.layout();
            // Gone (delivered, deleted, held) since: nothing to release.
            if layout
                .set_times(QueueName::Deferred, id, self.now.secs())
                .is_err()
            {
                continue;
            }
            if layout
                .rename(QueueName::Deferred, QueueName::Incoming, id)
                .is_ok()
            {
                released += 1;
            }
        }
        self.control.release_when_done.extend(later);
        if released > 0 {
            self.control.rescan_incoming = true;
        }
        released
    }

    /// Logs an operator's change in one line (`ACTION WHAT RESULT, by uid
    /// U`), counts it, and saves the state it changed.
    pub(crate) fn operator_change(
        &mut self,
        action: &str,
        what: &[u8],
        result: &str,
        uid: Option<u32>,
    ) {
        let who = uid.map_or_else(|| "unknown".to_owned(), |u| u.to_string());
        let line = [
            format!("{action} ").as_bytes(),
            what,
            format!("{result}, by uid {who}").as_bytes(),
        ]
        .concat();
        self.log.info(&line);
        self.metrics.operator_change(action);
        self.save_state(Save::Overrides);
    }

    /// Takes over the state files at start-up: overrides (those whose
    /// time ran out meanwhile end now), the deferred index, and unless
    /// turned off the learned state, as far as it is still valid.
    pub(crate) fn load_state(&mut self) {
        if self.control.store.is_some() {
            self.control.next_save = Some(Instant::now() + SAVE_EVERY);
        }
        let now = self.now;
        let overrides = self.read_state_file(persist::OVERRIDES);
        for o in overrides.map(|s| s.overrides).unwrap_or_default() {
            let target = o.target.clone();
            match &o.kind {
                OverrideKind::Suspend => {
                    let dsn = Dsn::new(HOLD_STATUS, o.hold_text());
                    self.sched.hold(&target, dsn, now.sched());
                }
                OverrideKind::Limit(l) => {
                    if let Err(e) = self.apply_limit(&target, *l) {
                        let id = o.id;
                        self.log
                            .warning(&format!("saved override {id}: {e}: dropped"));
                        continue;
                    }
                }
            }
            self.control.overrides.restore(o);
        }
        let index = self.read_state_file(persist::DEFERRED);
        for (target, ids) in index.map(|s| s.deferred).unwrap_or_default() {
            for id in ids {
                self.control.deferred.add(&id, vec![target.clone()]);
            }
        }
        self.load_learned();
        self.expire_overrides();
    }

    fn load_learned(&mut self) {
        if !self.control.learned_state {
            return;
        }
        let Some(saved) = self.read_state_file(persist::LEARNED) else {
            return;
        };
        let now = self.now.secs();
        let fresh = now - saved.saved_at <= secs(self.p.minimal_backoff_time);
        let learned = saved
            .learned
            .into_iter()
            .filter_map(|(mut d, wake_at)| {
                match wake_at {
                    // Revived or resumed while we were away, or not.
                    Some(at) => {
                        let left = at.saturating_sub(now);
                        d.wake_in = (left > 0).then(|| Duration::from_secs(left.unsigned_abs()));
                        d.wake_in.as_ref()?;
                    }
                    // Windows are worth as much as they are fresh.
                    None if !fresh => return None,
                    None => {}
                }
                Some(d)
            })
            .collect();
        self.sched.restore(learned, self.now.sched());
    }

    /// State file `name`, decoded; None if there is none or it is no
    /// good (a warning says why).
    fn read_state_file(&self, name: &str) -> Option<Saved> {
        let store = self.control.store.as_ref()?;
        let decoded = match store.load(name) {
            Ok(None) => return None,
            Ok(Some(bytes)) => persist::from_bytes(&bytes),
            Err(e) => Err(e.to_string()),
        };
        decoded
            .map_err(|e| {
                let path = store.show(name);
                self.log
                    .warning(&format!("state file {path}: {e}: ignored"));
            })
            .ok()
    }

    /// Saves what changed, as `what` says.
    pub(crate) fn save_state(&mut self, what: Save) {
        if self.control.store.is_none() {
            return;
        }
        let now_secs = self.now.secs();
        if self.control.overrides_dirty {
            let saved = Saved {
                saved_at: now_secs,
                overrides: self.control.overrides.iter().cloned().collect(),
                ..Saved::default()
            };
            let bytes = persist::to_bytes(&saved);
            if self.write_state_file(persist::OVERRIDES, &bytes) {
                self.control.overrides_dirty = false;
            }
        }
        let due = self.control.next_save.is_none_or(|t| Instant::now() >= t);
        if what == Save::Overrides || (what == Save::WhenDue && !due) {
            return;
        }
        self.control.next_save = Some(Instant::now() + SAVE_EVERY);
        if self.control.index_dirty {
            let bytes = persist::index_bytes(now_secs, self.control.deferred.iter());
            if self.write_state_file(persist::DEFERRED, &bytes) {
                self.control.index_dirty = false;
            }
        }
        if !self.control.learned_state {
            return;
        }
        let learned: Vec<(LearnedDestination, Option<i64>)> = self
            .sched
            .learned()
            .into_iter()
            .map(|d| {
                let wake_at = d.wake_in.map(|w| now_secs + secs(w).max(1));
                (LearnedDestination { wake_in: None, ..d }, wake_at)
            })
            .collect();
        if learned != self.control.last_learned {
            let saved = Saved {
                saved_at: now_secs,
                learned: learned.clone(),
                ..Saved::default()
            };
            if self.write_state_file(persist::LEARNED, &persist::to_bytes(&saved)) {
                self.control.last_learned = learned;
            }
        }
    }

    fn write_state_file(&self, name: &str, bytes: &[u8]) -> bool {
        let Some(store) = &self.control.store else {
            return false;
        };
        match store.save(name, bytes) {
            Ok(()) => true,
            Err(e) => {
                let path = store.show(name);
                self.log.warning(&format!("state file {path}: save: {e}"));
                false
            }
        }
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// An operator's target must name a master.cf delivery service: one
/// with a socket in `private/` (we run in the queue directory, chrooted
/// or not). A typo is refused rather than kept as an override that never
/// applies.
fn known_transport(target: &Target) -> Result<(), String> {
    let name = String::from_utf8_lossy(&target.transport);
    let valid = !name.is_empty() && !name.contains('/') && name != "." && name != "..";
    if valid && std::path::Path::new("private").join(&*name).exists() {
        Ok(())
    } else {
        Err(format!(
            "no such transport: {name} (no socket private/{name})"
        ))
    }
}

/// A limit as `rqmgrctl set` names it, and its value as text.
pub(crate) fn limit_words(limit: LiveLimit) -> (&'static str, String) {
    let value = match limit {
        LiveLimit::Concurrency(n) | LiveLimit::RecipientLimit(n) => n.to_string(),
        LiveLimit::RateDelay(d) => format!("{}s", d.as_secs_f64()),
    };
    (control::limit_name(limit), value)
}
