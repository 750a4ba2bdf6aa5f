//! Leaving the active queue, and reading more recipients
//! (`qmgr_active.c`'s `qmgr_active_done()`, and the refill rules of
//! `qmgr_job.c` and oqmgr's `qmgr_entry.c`).
//!
//! A message whose in-core entries are all done either asks for its next
//! recipients ([`Action::Refill`], when the file holds more) or ends with
//! exactly one [`Action::MessageDone`].
//!
//! Reading more while deliveries are still busy (early refill) needs the
//! caller to keep recipient indexes unique across batches, so it is
//! enabled by [`Scheduler::set_early_refill`]. Then qmgr asks for a refill
//! when the message has at least `_recipient_refill_limit` free slots, or
//! some free slots and `_recipient_refill_delay` has passed since the last
//! read, or when a job of the message has nothing selectable left; oqmgr
//! asks when the in-core recipients drop below fudge-factor percent of
//! `qmgr_message_recipient_limit` minus 100.
//!
//! Invariant: at most one refill per message is outstanding.

use crate::event::Action;
use crate::Scheduler;

impl Scheduler {
    fn ask_refill(&mut self, m: u32) {
        let message = &mut self.messages[m as usize];
        message.refilling = true;
        let msg = message.id;
        self.actions.push_back(Action::Refill { msg });
    }

    /// qmgr's early refill (`qmgr_job_peer_select()`). With `dry`, the
    /// job found nothing selectable: any free slot is reason enough.
    pub(crate) fn qmgr_refill_check(&mut self, m: u32, t: usize, dry: bool) {
        if !self.early_refill {
            return;
        }
        let message = &self.messages[m as usize];
        if !message.more || message.refilling || message.refcount == 0 {
            return;
        }
        let free = message.rcpt_limit - message.rcpt_count;
        let tr = &self.transports[t];
        let wanted = if dry {
            free > 0
        } else {
            free >= tr.refill_limit
                || (free > 0 && self.now.saturating_since(message.refill_time) >= tr.refill_delay)
        };
        if wanted {
            self.ask_refill(m);
        }
    }

    /// oqmgr's early refill (`qmgr_entry_done()` there): read more of this
    /// message once the active queue has drained well below its limit.
    pub(crate) fn oqmgr_refill_check(&mut self, m: u32) {
        if self.cfg.preemptive || !self.early_refill {
            return;
        }
        let message = &self.messages[m as usize];
        if !message.more || message.refilling || message.refcount == 0 {
            return;
        }
        let fudged =
            self.cfg.message_recipient_limit as f64 * f64::from(self.cfg.fudge_factor) / 100.0;
        if (self.recipients as f64) < fudged - 100.0 {
            self.ask_refill(m);
        }
    }

    /// `qmgr_active_done()`: a message with no entries left reads its
    /// next recipients or is finished.
    pub(crate) fn maybe_message_done(&mut self, m: u32) {
        let message = &self.messages[m as usize];
        if message.refcount > 0 || message.refilling {
            return;
        }
        if message.more {
            self.ask_refill(m);
            return;
        }
        let (msg, deferred) = (message.id, message.deferred);
        self.message_free(m);
        self.actions
            .push_back(Action::MessageDone { msg, deferred });
    }

    /// The caller gave up on a message (see [`crate::Event::MessageAbandoned`]).
    pub(crate) fn message_abandoned(&mut self, msg: crate::MessageId) {
        let Some(&m) = self.message_ids.get(&msg) else {
            return;
        };
        let message = &mut self.messages[m as usize];
        message.more = false;
        message.refilling = false;
        if message.refcount == 0 {
            self.message_free(m);
        }
    }

    /// `qmgr_message_free()`: the message and its jobs go.
    pub(crate) fn message_free(&mut self, m: u32) {
        for j in self.messages[m as usize].jobs.clone() {
            self.job_free(j);
        }
        let message = self.messages.remove(m as usize);
        if message.refcount != 0 || message.rcpt_count != 0 {
            panic!(
                "message_free: {} still has {} entries, {} recipients",
                message.id, message.refcount, message.rcpt_count
            );
        }
        self.message_ids.remove(&message.id);
    }
}
