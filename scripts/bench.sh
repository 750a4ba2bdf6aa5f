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
set -euo pipefail

cd "$(dirname "$0")/.."

# shellcheck source=scripts/prereqs.sh
source scripts/prereqs.sh
ensure_root "$@"
install_prereqs >&2
ensure_cargo

cargo build --release -p rqmgr -p rqmgr-bench >&2
target_dir="$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
exec "$target_dir/release/rqmgr-bench" --rqmgr "$target_dir/release/rqmgr" "$@"
