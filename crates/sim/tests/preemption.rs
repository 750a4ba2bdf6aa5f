//! Simulations of behaviour the lead is still adding to the scheduler:
//! Postfix 3.7's preemptive job scheduling (qmgr, `Config::preemptive =
//! true`) against oqmgr's plain round robin (`preemptive = false`), and
//! the site hog factor (`Config::site_hog_factor`).
//!
//! These tests are written against the documented behaviour, not against
//! the core.
//!
//! Sources: SCHEDULER_README "Preemptive scheduling" (sections "How the
//! entry selection works" and "How the preemption works": a job with few
//! recipients preempts a large one once the large one has accumulated
//! enough delivery slots; `_delivery_slot_cost` 5, `_delivery_slot_loan`
//! 3, `_delivery_slot_discount` 50, `_minimum_delivery_slots` 3), oqmgr(8)
//! (no preemption: destinations round robin, each destination's mail
//! first in, first out), and for the hog factor Postfix's HISTORY entry of
//! 2000-01-26 ("qmgr_site_hog_factor ... limits the amount of resources
//! that Postfix devotes to a single destination ... defers the excess
//! mail"). Note: HISTORY 2002-08-18 removed that parameter from Postfix;
//! Postfix 3.7 has no site hog factor, so that test follows early
//! Postfix's `qmgr_message_resolve()`.

mod common;

use std::time::Duration;

use common::{run_clean, sim, t0};
use rqmgr_sched::{Config, MessageId};
use rqmgr_sim::workload::{list_message, route};
use rqmgr_sim::{DestProfile, MessageSpec, Sim, TransportProfile, World};

const SEC: Duration = Duration::from_secs(1);
const SMALL: MessageId = MessageId(2);

/// A 5,000-recipient list to ten domains, then (five seconds later) one
/// one-recipient message to one of those domains. master.cf's maxproc of
/// 10 for smtp keeps the list's 100 requests from all going out at once,
/// so there is something to overtake.
fn list_then_small(preemptive: bool) -> Sim {
    let cfg = Config {
        preemptive,
        ..Config::default()
    };
    let world = World::default()
        .with_transport(
            "smtp",
            TransportProfile {
                process_limit: Some(10),
                ..TransportProfile::default()
            },
        )
        .with_dest("d0.example", DestProfile::ok(10 * SEC));
    let world = World {
        default_dest: DestProfile::ok(10 * SEC),
        ..world
    };
    let mut s = sim(cfg, world);
    s.submit([list_message(1, 5_000, 10, "smtp", t0())]);
    s.submit([MessageSpec {
        id: SMALL,
        arrival: t0() + 5 * SEC,
        routes: vec![route(0, "smtp", "d0.example")],
    }]);
    run_clean(&mut s);
    s
}

/// Dispatch index of the small message's delivery.
fn small_index(s: &Sim) -> usize {
    s.record()
        .deliveries
        .iter()
        .find(|d| d.msg == SMALL)
        .expect("small message delivered")
        .index
}

/// qmgr: the one-recipient message preempts the list job almost at once:
/// at most the requests already promised to connecting agents go first.
#[test]
fn one_recipient_mail_overtakes_list_under_preemption() {
    let s = list_then_small(true);
    let r = s.record();
    let arrival = t0() + 5 * SEC;
    let small = small_index(&s);
    let list_between = r.deliveries[..small]
        .iter()
        .filter(|d| d.msg == MessageId(1) && d.at >= arrival)
        .count();
    assert!(
        list_between <= 3,
        "{list_between} list deliveries went out between the small message's arrival and its delivery"
    );
    let small_done = r.completion(SMALL).expect("small done").at;
    let list_done = r.completion(MessageId(1)).expect("list done").at;
    assert!(small_done < list_done);
    assert!(
        small_done <= arrival + 2 * 10 * SEC,
        "small done at {small_done:?}"
    );
}

/// oqmgr: no preemption; the small message waits behind every list
/// request already queued for its destination (first in, first out).
#[test]
fn one_recipient_mail_waits_behind_list_under_oqmgr() {
    let s = list_then_small(false);
    let r = s.record();
    let small = small_index(&s);
    let last_d0_list = r
        .deliveries
        .iter()
        .filter(|d| d.msg == MessageId(1) && d.nexthop == "d0.example")
        .map(|d| d.index)
        .max()
        .expect("list went to d0");
    assert!(small > last_d0_list, "oqmgr does not preempt");
}

/// Site hog factor 50, as early Postfix applied it in
/// `qmgr_message_resolve()` (the seed's qmgr(8): "the percentage of
/// delivery resources that a busy mail system will use up for delivery to
/// a single site"): a destination whose entries (waiting plus busy) exceed
/// half of `qmgr_message_active_limit` (while in-core recipients stay
/// below 80% of `qmgr_message_recipient_limit`) takes no more recipients;
/// the excess is deferred with "site destination queue overflow" and comes
/// back in a later queue run. Other destinations are not affected.
#[test]
fn site_hog_factor_caps_one_destinations_share() {
    let cfg = Config {
        site_hog_factor: 50,
        message_active_limit: 10,
        ..Config::default()
    };
    let world = World {
        default_dest: DestProfile::ok(60 * SEC),
        ..World::default()
    };
    let mut s = sim(cfg, world);
    // Eight one-recipient messages to big.example and two elsewhere, all
    // in the active queue at once (limit 10).
    let mut specs: Vec<MessageSpec> = (0..8)
        .map(|i| MessageSpec {
            id: MessageId(100 + i),
            arrival: t0(),
            routes: vec![route(0, "smtp", "big.example")],
        })
        .collect();
    specs.extend((0..2).map(|i| MessageSpec {
        id: MessageId(200 + i),
        arrival: t0(),
        routes: vec![route(0, "smtp", &format!("other{i}.example"))],
    }));
    s.submit(specs);
    run_clean(&mut s);
    let r = s.record();
    let big = r
        .deliveries
        .iter()
        .filter(|d| d.nexthop == "big.example")
        .count();
    let hogged: Vec<_> = r
        .sync_deferred
        .iter()
        .filter(|(_, _, _, dsn)| dsn.reason == "site destination queue overflow")
        .collect();
    // Entries 1..=5 are within 50% of 10; from the sixth on, the queue
    // holds more than 5 and each further recipient is deferred.
    assert_eq!(big, 6, "{:?}", r.deliveries);
    assert_eq!(hogged.len(), 2);
    let others = r
        .deliveries
        .iter()
        .filter(|d| d.nexthop.starts_with(b"other"))
        .count();
    assert_eq!(others, 2, "other destinations are not held back");
    // Nothing is lost: every message completes, the hogged ones deferred.
    assert_eq!(r.completions.len(), 10);
    assert_eq!(r.completions.iter().filter(|c| c.deferred).count(), 2);
}
