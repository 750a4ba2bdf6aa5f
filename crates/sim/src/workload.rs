//! Workload generators: the messages the simulated incoming queue holds.
//!
//! Job: build [`MessageSpec`]s — a message's full, already resolved
//! recipient list and the virtual time it reaches the incoming queue — in
//! the shapes that matter to a scheduler: many one-recipient messages to a
//! few destinations, one list message with thousands of recipients across
//! domains, and mixes of both.
//!
//! Invariants: recipient indexes of a message are 0..n in list order, as
//! the queue file's recipient records are; destination names are
//! `d<j>.example`, so tests can name them with [`domain`]. Generators are
//! deterministic.
//!
//! Limits: routing is fixed at generation time (trivial-rewrite is not
//! simulated), so a message always resolves the same way on refill.

use rqmgr_sched::{MessageId, Route, Time};

/// One message waiting in the incoming queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageSpec {
    /// The message's name.
    pub id: MessageId,
    /// When it reaches the incoming queue.
    pub arrival: Time,
    /// Every recipient, resolved, in queue-file order.
    pub routes: Vec<Route>,
}

/// The name of the `j`th generated destination.
pub fn domain(j: usize) -> String {
    format!("d{j}.example")
}

/// A resolved recipient `user<rcpt>@nexthop` for `transport`.
pub fn route(rcpt: u32, transport: &str, nexthop: &str) -> Route {
    Route {
        rcpt,
        transport: transport.into(),
        nexthop: nexthop.into(),
        address: format!("user{rcpt}@{nexthop}").into(),
    }
}

/// `n` one-recipient messages, ids `first_id..`, the `i`th to destination
/// `i % m`, all arriving at `arrival`.
pub fn one_recipient_messages(
    first_id: u64,
    n: usize,
    m: usize,
    transport: &str,
    arrival: Time,
) -> Vec<MessageSpec> {
    let m = m.max(1);
    (0..n)
        .map(|i| MessageSpec {
            id: MessageId(first_id + i as u64),
            arrival,
            routes: vec![route(0, transport, &domain(i % m))],
        })
        .collect()
}

/// One message with `n` recipients spread round robin over `d` domains
/// (recipient `k` goes to `domain(k % d)`), as a mailing list's.
pub fn list_message(id: u64, n: usize, d: usize, transport: &str, arrival: Time) -> MessageSpec {
    let d = d.max(1);
    MessageSpec {
        id: MessageId(id),
        arrival,
        routes: (0..n)
            .map(|k| {
                let rcpt = u32::try_from(k).unwrap_or(u32::MAX);
                route(rcpt, transport, &domain(k % d))
            })
            .collect(),
    }
}

/// Gives the messages arrival times `start`, `start + gap`, ... in order.
pub fn spaced(
    mut specs: Vec<MessageSpec>,
    start: Time,
    gap: std::time::Duration,
) -> Vec<MessageSpec> {
    let mut at = start;
    for s in &mut specs {
        s.arrival = at;
        at = at + gap;
    }
    specs
}

/// Merges workloads into one arrival-ordered list; messages arriving at
/// the same time keep the order of the parts (first part first).
pub fn mix(parts: Vec<Vec<MessageSpec>>) -> Vec<MessageSpec> {
    let mut all: Vec<MessageSpec> = parts.into_iter().flatten().collect();
    all.sort_by_key(|s| s.arrival);
    all
}
