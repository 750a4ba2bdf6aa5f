//! Helpers shared by the simulation tests: a start time, configurations
//! built from Postfix's defaults with per-transport overrides, and the
//! audit every run must pass.
//!
//! Each test binary uses a different subset, hence the `dead_code` allow.

#![allow(dead_code)]

use rqmgr_sched::{Config, Scheduler, Time, TransportConfig};
use rqmgr_sim::{Sim, Stop, World};

/// A plausible start of the virtual clock (Nov 2023), far from zero so
/// that no arithmetic near the epoch hides a bug.
pub(crate) fn t0() -> Time {
    Time::from_secs(1_700_000_000)
}

/// Postfix's defaults (local limited to 2 / 1), with `tweak` applied to
/// every transport's configuration after the defaults.
pub(crate) fn config(tweak: impl Fn(&[u8], &mut TransportConfig) + 'static) -> Config {
    let base = Config::default();
    let defaults = base.transports;
    Config {
        transports: Box::new(move |name| {
            let mut t = defaults(name);
            tweak(name, &mut t);
            t
        }),
        ..base
    }
}

/// A simulation of a fresh scheduler with `cfg` in `world`, from `t0()`.
pub(crate) fn sim(cfg: Config, world: World) -> Sim {
    Sim::new(Scheduler::new(cfg), world, t0())
}

/// Runs to the end and insists that the scheduler kept its contract.
pub(crate) fn run_clean(sim: &mut Sim) {
    let stop = sim.drive();
    assert_eq!(stop, Stop::Idle, "{sim:?}");
    let problems = sim.audit();
    assert!(problems.is_empty(), "contract broken: {problems:#?}");
}
