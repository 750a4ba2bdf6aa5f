#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a given time each, one after
# the other, in one process each (no -jobs/-workers: the reference machine
# has two cores and shares them). Not part of scripts/test.sh: CI has no
# nightly toolchain and replays the seed corpora as ordinary tests instead
# (crates/queue/tests/fuzz_corpus.rs, crates/ipc/tests/fuzz_corpus.rs).
#
#   scripts/fuzz.sh [SECONDS [TARGET...]]   default: 300 s, every target
#
# Needs a nightly Rust toolchain and cargo-fuzz; says which is missing.
# Each target starts from its committed seeds in fuzz/corpus/<target>/
# (only read) and grows its working corpus in fuzz/work/<target>/ (not
# committed; kept between runs, so later runs start further on). The
# libFuzzer output goes to fuzz/work/<target>.log, a crash input to
# fuzz/artifacts/<target>/. Ends with one line per target: runs, time,
# coverage (cov/ft) and corpus size as libFuzzer reports them; exits
# non-zero if a target found a crash.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-300}"
[ $# -gt 0 ] && shift
case "$seconds" in
'' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [SECONDS [TARGET...]]" >&2
    exit 2
    ;;
esac

missing=()
if ! command -v rustup >/dev/null 2>&1 || ! rustup run nightly rustc --version >/dev/null 2>&1; then
    missing+=("a nightly Rust toolchain: rustup toolchain install nightly")
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    missing+=("cargo-fuzz: cargo install cargo-fuzz")
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "scripts/fuzz.sh needs:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    exit 2
fi

cd fuzz
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "==> cargo +nightly fuzz build"
cargo +nightly fuzz build

summary=()
crashed=()
for t in "${targets[@]}"; do
    mkdir -p "work/$t"
    log="work/$t.log"
    echo "==> $t for $seconds s (log: fuzz/$log)"
    status=0
    cargo +nightly fuzz run "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
    # The last status line, e.g. "#170800 DONE cov: 1613 ft: 2505 corp: 326/143Kb ...",
    # and "Done 170800 runs in 16 second(s)".
    last="$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
    done_line="$(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1 || true)"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
    ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
    corp="$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")"
    if [ "$status" -ne 0 ]; then
        crashed+=("$t")
        summary+=("$t: FAILED (exit $status), see fuzz/$log and fuzz/artifacts/$t/")
    else
        summary+=("$t: ${done_line:-no final line}; cov $cov, ft $ft, corpus $corp (files/bytes)")
    fi
done

echo "==> summary"
printf '  %s\n' "${summary[@]}"
[ ${#crashed[@]} -eq 0 ]
