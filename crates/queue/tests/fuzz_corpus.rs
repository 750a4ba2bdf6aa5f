//! The `record_reader` fuzz target's seed corpus, replayed through the
//! target's body (`rqmgr_queue::fuzzing`) as an ordinary test.

#[path = "../../../fuzz/replay.rs"]
mod replay;

#[test]
fn record_reader_corpus() {
    let n = replay::replay("record_reader", rqmgr_queue::fuzzing::record_reader);
    eprintln!("record_reader: {n} corpus files replayed");
}
