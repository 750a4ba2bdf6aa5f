//! How many in-flow tokens to give back after a turn of the loop
//! (`in_flow_delay`).
//!
//! cleanup(8) takes one token from master's pipe per message; finding
//! none, it first waits `in_flow_delay`. Postfix's queue manager gives one
//! token back for each message it reads from `incoming/`, fills the pipe
//! up to `default_process_limit` whenever no scan of `incoming/` is under
//! way, and takes back any excess. Senders are thus slowed only while the
//! queue manager reads more slowly than they write, or once its active
//! queue is full and it stops reading.
//!
//! rqmgr also stops reading while the agents have enough work ready (the
//! scheduler's intake module). That is not falling behind: the stock qmgr
//! would read on and let a sender through for every message it read. So a
//! turn that waits for that reason gives a token back as a turn that read
//! a message would, as long as the messages let through that way, added
//! to the active queue, stay under `qmgr_message_active_limit`, where the
//! stock qmgr would stop reading too.
//!
//! Invariant: `let_through` counts the tokens given back by turns that
//! read nothing; it drops by one for each message read from `incoming/`,
//! and to zero whenever no scan of `incoming/` is under way (everything
//! the last scan found was read).

/// What the turn did with `incoming/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// It read a message from `incoming/`.
    ReadIncoming,
    /// It read nothing because the agents have enough work ready.
    Held,
    /// Anything else: it read from `deferred/`, found nothing, or the
    /// active queue is full.
    Other,
}

/// Where things stood after the turn.
#[derive(Debug, Clone, Copy)]
pub(crate) struct After {
    /// What the turn did.
    pub turn: Turn,
    /// A scan of `incoming/` is under way.
    pub scanning_incoming: bool,
    /// Tokens in the pipe.
    pub pending: usize,
    /// `default_process_limit`: the pipe's level.
    pub limit: usize,
    /// Messages in the active queue.
    pub active: usize,
    /// `qmgr_message_active_limit`.
    pub active_limit: usize,
}

/// A change to the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Put(usize),
    Take(usize),
    Keep,
}

/// The tokens given back for turns that read nothing.
#[derive(Debug, Default)]
pub(crate) struct FlowTokens {
    let_through: usize,
}

impl FlowTokens {
    /// The change to make to the pipe after a turn.
    pub(crate) fn after_turn(&mut self, a: After) -> Change {
        if a.turn == Turn::ReadIncoming {
            self.let_through = self.let_through.saturating_sub(1);
        }
        if !a.scanning_incoming {
            self.let_through = 0;
        }
        if a.pending > a.limit {
            return Change::Take(a.pending - a.limit);
        }
        if a.pending == a.limit {
            return Change::Keep;
        }
        match a.turn {
            Turn::ReadIncoming => Change::Put(1),
            _ if !a.scanning_incoming => Change::Put(a.limit - a.pending),
            Turn::Held if a.active + self.let_through < a.active_limit => {
                self.let_through += 1;
                Change::Put(1)
            }
            _ => Change::Keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(turn: Turn, pending: usize) -> After {
        After {
            turn,
            scanning_incoming: true,
            pending,
            limit: 10,
            active: 0,
            active_limit: 20_000,
        }
    }

    #[test]
    fn a_message_read_gives_one_token_back() {
        let mut f = FlowTokens::default();
        assert_eq!(f.after_turn(after(Turn::ReadIncoming, 3)), Change::Put(1));
        assert_eq!(f.after_turn(after(Turn::ReadIncoming, 10)), Change::Keep);
    }

    #[test]
    fn without_a_scan_the_pipe_is_filled_and_excess_taken_back() {
        let mut f = FlowTokens::default();
        let idle = |pending| After {
            scanning_incoming: false,
            ..after(Turn::Other, pending)
        };
        assert_eq!(f.after_turn(idle(4)), Change::Put(6));
        assert_eq!(f.after_turn(idle(12)), Change::Take(2));
        assert_eq!(f.after_turn(after(Turn::Held, 15)), Change::Take(5));
    }

    #[test]
    fn a_turn_that_reads_deferred_mail_or_nothing_gives_nothing_back() {
        let mut f = FlowTokens::default();
        assert_eq!(f.after_turn(after(Turn::Other, 0)), Change::Keep);
    }

    #[test]
    fn a_held_turn_gives_a_token_back_as_a_read_would() {
        let mut f = FlowTokens::default();
        for _ in 0..5 {
            assert_eq!(f.after_turn(after(Turn::Held, 0)), Change::Put(1));
        }
        assert_eq!(f.let_through, 5);
        // Each message read afterwards was one of those let through.
        f.after_turn(after(Turn::ReadIncoming, 0));
        assert_eq!(f.let_through, 4);
    }

    #[test]
    fn held_turns_stop_where_the_stock_active_queue_would_be_full() {
        let mut f = FlowTokens::default();
        let busy = |pending| After {
            active: 97,
            active_limit: 100,
            ..after(Turn::Held, pending)
        };
        assert_eq!(f.after_turn(busy(0)), Change::Put(1));
        assert_eq!(f.after_turn(busy(0)), Change::Put(1));
        assert_eq!(f.after_turn(busy(0)), Change::Put(1));
        // 97 active and 3 let through: the stock qmgr's 100 would be full.
        assert_eq!(f.after_turn(busy(0)), Change::Keep);
        // Reading one of them moves it into the active queue: no room.
        let read = After {
            turn: Turn::ReadIncoming,
            active: 98,
            ..busy(0)
        };
        assert_eq!(f.after_turn(read), Change::Put(1));
        assert_eq!(f.let_through, 2);
        let held = After {
            active: 98,
            ..busy(0)
        };
        assert_eq!(f.after_turn(held), Change::Keep);
        // A message that leaves the active queue makes room for one more.
        let held = After {
            active: 97,
            ..busy(0)
        };
        assert_eq!(f.after_turn(held), Change::Put(1));
    }

    #[test]
    fn the_count_ends_with_the_scan() {
        let mut f = FlowTokens::default();
        f.after_turn(after(Turn::Held, 0));
        f.after_turn(after(Turn::Held, 0));
        f.after_turn(After {
            scanning_incoming: false,
            ..after(Turn::Other, 10)
        });
        assert_eq!(f.let_through, 0);
    }
}
