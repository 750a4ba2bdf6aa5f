//! Helpers shared by the end-to-end scenarios.

use rqmgr_harness::{Instance, InstanceBuilder, QueueManager, SinkMode, SmtpSink};
use std::process::{Command, Output};
use std::time::Duration;

/// Guard against hangs for one wait; generous because debug builds and two
/// busy cores can be slow. Never an assertion about speed.
pub(crate) const GUARD: Duration = Duration::from_secs(120);

/// The queue manager under test: this package's rqmgr binary.
pub(crate) fn rqmgr() -> QueueManager {
    QueueManager::Rqmgr(env!("CARGO_BIN_EXE_rqmgr").into())
}

/// Panics with the harness error's full text (it carries the log tail).
pub(crate) fn ok<T>(r: rqmgr_harness::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// A sink in `mode` and an instance running `qm` that relays to it; `tune`
/// adds scenario-specific settings.
pub(crate) fn instance_with_sink(
    qm: QueueManager,
    mode: SinkMode,
    tune: impl FnOnce(InstanceBuilder) -> InstanceBuilder,
) -> (SmtpSink, Instance) {
    let sink = ok(SmtpSink::start(mode));
    let builder = Instance::builder()
        .queue_manager(qm)
        .relay_to_port(sink.port());
    let inst = ok(tune(builder).start());
    (sink, inst)
}

/// Runs this package's rqmgrctl on `inst`, whatever its exit status.
pub(crate) fn rqmgrctl(inst: &Instance, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rqmgrctl"))
        .arg("-c")
        .arg(inst.config_dir())
        .args(args)
        .output()
        .expect("run rqmgrctl")
}

/// rqmgrctl's standard output; panics with its error if it failed.
pub(crate) fn stdout_of(inst: &Instance, args: &[&str]) -> String {
    let out = rqmgrctl(inst, args);
    assert!(
        out.status.success(),
        "rqmgrctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
