//! Log lines of any program, for scenarios that compare more than the
//! queue manager's own lines (e.g. the deferral text the retry agent
//! logs on the queue manager's behalf).

use rqmgr_harness::Instance;

/// The normalised log lines (any program) containing `needle`, sorted.
pub(crate) fn lines_containing(inst: &Instance, needle: &str) -> Vec<String> {
    let mut lines: Vec<String> = inst
        .log()
        .normalized()
        .into_iter()
        .filter(|l| l.contains(needle))
        .collect();
    lines.sort();
    lines
}
