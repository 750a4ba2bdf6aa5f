//! Messages into the simulated active queue: the leaky bucket that lets
//! them in, the batches of recipients handed to the scheduler, and the
//! bookkeeping when a recipient is finished.

use super::*;

impl Sim {
    /// Lets waiting messages into the active queue while the leaky bucket
    /// allows (`qmgr_active_feed()`).
    pub(crate) fn feed(&mut self) -> bool {
        let mut did = false;
        while self.incoming.front().is_some_and(|s| s.arrival <= self.now)
            && self.sched.can_accept_message()
        {
            let Some(spec) = self.incoming.pop_front() else {
                break;
            };
            if self.messages.contains_key(&spec.id) {
                self.violate(format!("workload reuses {}", spec.id));
                continue;
            }
            let n = spec.routes.len();
            self.messages.insert(
                spec.id,
                SimMessage {
                    routes: spec.routes,
                    rcpts: vec![RcptState::default(); n],
                    next: 0,
                    in_flight: 0,
                    done: false,
                },
            );
            self.active += 1;
            self.record.entered.push((self.now, spec.id));
            self.hand_batch(spec.id, false);
            let active = self.sched.message_count();
            self.record.max_active_messages = self.record.max_active_messages.max(active);
            let limit = self.sched.config().message_active_limit;
            if active > limit {
                self.violate(format!("{active} active messages, limit {limit}"));
            }
            did = true;
        }
        did
    }

    /// Reads the next batch of a message's recipients into the scheduler:
    /// at most the scheduler's budget, as `qmgr_message_realloc()` reads.
    pub(crate) fn hand_batch(&mut self, msg: MessageId, refill: bool) {
        let budget = if refill {
            self.sched.refill_budget(msg)
        } else {
            self.sched.recipient_budget()
        };
        let Some(m) = self.messages.get_mut(&msg) else {
            return;
        };
        let start = m.next;
        let end = m.routes.len().min(start.saturating_add(budget));
        m.next = end;
        let more = end < m.routes.len();
        for r in &mut m.rcpts[start..end] {
            r.handed_in = true;
        }
        let routes = m.routes[start..end].to_vec();
        let n = end - start;
        if self.shares.is_some() {
            for r in &routes {
                let key = self.dest_key(&r.transport, &r.nexthop, &r.address);
                if let Some(shares) = self.shares.as_mut() {
                    *shares.entry(key).or_default() += 1;
                }
            }
        }
        let before = self.sched.recipient_count();
        self.outstanding += n;
        self.sched.handle(
            Event::Message {
                msg,
                routes,
                more,
                flush_each: false,
                single_rcpt: false,
            },
            self.now,
        );
        if more {
            // What the daemon knows from the size record: how big the job
            // will get, for qmgr's preemption (`rcpt_unread`).
            let unread = u32::try_from(
                self.messages
                    .get(&msg)
                    .map_or(0, |m| m.routes.len() - m.next),
            )
            .unwrap_or(u32::MAX);
            self.sched
                .handle(Event::MessageInfo { msg, unread }, self.now);
        }
        let after = self.sched.recipient_count();
        self.record.max_in_core = self.record.max_in_core.max(after);
        if after > before + n {
            self.violate(format!(
                "{msg}: {n} recipients handed in, in-core count went {before} -> {after}"
            ));
        }
        // qmgr: the global limit, plus the minimum every message may
        // read however full core is. oqmgr reads up to a fudge-factor
        // share of the limit per message, and the global limit only stops
        // it from opening files (oqmgr `qmgr_message_read()`).
        let cfg = self.sched.config();
        let messages = self.sched.message_count();
        let minimum = cfg.message_recipient_minimum.max(1);
        let allowed = if cfg.preemptive {
            // qmgr(8): per-transport pools (`default_recipient_limit` plus
            // `default_extra_recipient_limit` for preempting jobs) bound
            // what jobs may hold; refills read into a job's free slots.
            let pools: usize = self
                .transports
                .values()
                .filter_map(|t| t.cfg.as_ref())
                .map(|c| c.recipient_limit as usize + c.extra_recipient_limit as usize)
                .sum();
            cfg.message_recipient_limit.max(pools) + minimum * messages
        } else {
            let per_message =
                (cfg.message_recipient_limit * cfg.fudge_factor as usize / 100).max(minimum);
            cfg.message_recipient_limit.max(per_message * messages)
        };
        if after > allowed {
            self.violate(format!("{after} recipients in core, allowed {allowed}"));
        }
        self.measure_shares();
    }

    pub(crate) fn measure_shares(&mut self) {
        let Some(shares) = &self.shares else {
            return;
        };
        let total: usize = shares.values().sum();
        let busy_dests = shares.values().filter(|&&n| n > 0).count();
        if total == 0 || busy_dests < 2 {
            return;
        }
        let Some((key, &n)) = shares
            .iter()
            .max_by_key(|(k, &n)| (n, std::cmp::Reverse((*k).clone())))
        else {
            return;
        };
        let pct = 100.0 * n as f64 / total as f64;
        let higher = match &self.record.peak_share {
            Some((p, _)) => pct > *p,
            None => true,
        };
        if higher {
            self.record.peak_share = Some((pct, key.clone()));
        }
    }

    /// One recipient is finished: update the daemon's books.
    pub(crate) fn finish_rcpt(&mut self, msg: MessageId, rcpt: u32, fate: Fate) {
        let mut key = None;
        let mut problem = None;
        match self
            .messages
            .get_mut(&msg)
            .and_then(|m| m.rcpts.get_mut(rcpt as usize).map(|r| (r, &m.routes)))
        {
            Some((r, routes)) => {
                r.fates = r.fates.saturating_add(1);
                if r.fates > 1 {
                    problem = Some(format!("{msg} recipient {rcpt} finished twice"));
                }
                r.fate = Some(fate);
                if let Some(route) = routes.get(rcpt as usize) {
                    key = Some((
                        route.transport.clone(),
                        route.nexthop.clone(),
                        route.address.clone(),
                    ));
                }
            }
            None => problem = Some(format!("{msg} recipient {rcpt} unknown")),
        }
        if let Some(p) = problem {
            self.violate(p);
        }
        self.outstanding = self.outstanding.saturating_sub(1);
        if self.shares.is_some() {
            if let Some((t, nh, addr)) = key {
                let k = self.dest_key(&t, &nh, &addr);
                if let Some(n) = self.shares.as_mut().and_then(|s| s.get_mut(&k)) {
                    *n = n.saturating_sub(1);
                }
            }
        }
    }
}
