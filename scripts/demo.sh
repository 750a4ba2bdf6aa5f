#!/usr/bin/env bash
# The demo: installs what is missing (Postfix, pflogsumm, a Rust toolchain),
# builds rqmgr in release mode, starts a private Postfix instance (in a
# temporary directory, never the machine's own /etc/postfix) with rqmgr as its
# queue manager, relays a few thousand smtp-source messages through it to
# smtp-sink, waits for the queue to drain, prints a summary, and stops
# everything. Run as root (re-runs itself with sudo).
#   DEMO_MESSAGES=N   number of messages (default 5000)
#   DEMO_QMGR=stock   run the same demo with Postfix's own qmgr, to compare
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/prereqs.sh
source scripts/prereqs.sh
ensure_root "$@"
install_prereqs
ensure_cargo

echo "==> cargo build --release -p rqmgr -p rqmgr-harness"
cargo build --release -p rqmgr -p rqmgr-harness
target_dir="$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
qmgr="${DEMO_QMGR:-$target_dir/release/rqmgr}"
exec "$target_dir/release/rqmgr-demo" --qmgr "$qmgr" --messages "${DEMO_MESSAGES:-5000}" --sessions 10
