//! The seed corpora of the `attr_reader` and `agent_io` fuzz targets,
//! replayed through the targets' bodies (`rqmgr_ipc::fuzzing`) as
//! ordinary tests.

#[path = "../../../fuzz/replay.rs"]
mod replay;

#[test]
fn attr_reader_corpus() {
    let n = replay::replay("attr_reader", rqmgr_ipc::fuzzing::attr_reader);
    eprintln!("attr_reader: {n} corpus files replayed");
}

#[test]
fn agent_io_corpus() {
    let n = replay::replay("agent_io", rqmgr_ipc::fuzzing::agent_io);
    eprintln!("agent_io: {n} corpus files replayed");
}
