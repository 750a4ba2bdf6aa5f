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
target_dir="$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
bench=("$target_dir/release/rqmgr-bench" --rqmgr "$target_dir/release/rqmgr" "$@")
host_suite="$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")"
suite="${BENCH_POSTFIX:-$host_suite}"
if [ -z "$suite" ] || [ "$suite" = "$host_suite" ]; then
    exec "${bench[@]}"
fi
# Another suite's Postfix: the same programs, run inside its root, where the
# workspace and the target directory are mounted at the same paths. Files
# named in the options (--tsv, --perf-dir) are written inside the root.
workspace="$(pwd -P)"
binds=(--bind "$workspace")
case "$target_dir/" in "$workspace"/*) ;; *) binds+=(--bind "$target_dir") ;; esac
echo "==> Debian $suite's Postfix $(bash scripts/debian-root.sh run "$suite" -- postconf -dh mail_version)" >&2
exec bash scripts/debian-root.sh run "$suite" "${binds[@]}" -- "${bench[@]}"
