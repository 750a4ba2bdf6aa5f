//! Corpus replay for the workspace's tests: runs every file of
//! `fuzz/corpus/<target>/` through the fuzz target's body, on stable Rust
//! and without libFuzzer, so that CI checks every committed seed and every
//! minimized finding on each run.
//!
//! Included by `crates/queue/tests/fuzz_corpus.rs` and
//! `crates/ipc/tests/fuzz_corpus.rs` with `#[path]`, so both crates share
//! one copy without depending on each other.
//!
//! Invariant: a missing or empty corpus directory is a failure, never a
//! silent pass. A body that panics is reported with the file's name, after
//! every file has been tried.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// Replays `fuzz/corpus/<target>/` through `body`; returns how many files
/// it ran. Panics naming the files whose run panicked.
pub(crate) fn replay(target: &str, body: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "the seed corpus of fuzz target {target} ({}) cannot be read: {e}",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    files.retain(|p| p.is_file());
    files.sort();
    assert!(
        !files.is_empty(),
        "the seed corpus of fuzz target {target} ({}) is empty",
        dir.display()
    );
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz target {target} panicked on {} of {} corpus files: {failed:?}",
        failed.len(),
        files.len()
    );
    files.len()
}
