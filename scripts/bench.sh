#!/usr/bin/env bash
# Benchmarks rqmgr side by side with Postfix's qmgr and oqmgr.
#
# Builds rqmgr and rqmgr-bench in release mode, installs Postfix when it is
# missing (non-interactively, without configuring a mail system), then runs
# every workload for several rounds and prints the tables (see
# docs/benchmarks.md). Must run as root: private Postfix instances need it.
#
# Usage: scripts/bench.sh [rqmgr-bench options]
#   e.g. scripts/bench.sh --quick --rounds 1
#        scripts/bench.sh --rounds 5 --workloads discard,smtp --tsv runs.tsv
#   BENCH_POSTFIX=bookworm|trixie|sid runs it against that Debian suite's
#   Postfix (3.7, 3.10, 3.11) inside a Debian root made by
#   scripts/debian-root.sh; the default is the host's own Postfix.
set -euo pipefail

cd "$(dirname "$0")/.."

# shellcheck source=scripts/prereqs.sh
source scripts/prereqs.sh
ensure_root "$@"
install_prereqs >&2
ensure_cargo

cargo build --release -p rqmgr -p rqmgr-bench >&2
target_dir="$(cargo_target_dir)"
# With BENCH_POSTFIX, files named in the options (--tsv, --perf-dir) are
# written inside that suite's root.
exec_with_postfix "${BENCH_POSTFIX:-}" "$target_dir" \
    "$target_dir/release/rqmgr-bench" --rqmgr "$target_dir/release/rqmgr" "$@"
