#!/usr/bin/env bash
# The demo: installs what is missing (Postfix, pflogsumm, a Rust toolchain),
# builds rqmgr in release mode, starts a private Postfix instance (in a
# temporary directory, never the machine's own /etc/postfix) with rqmgr as its
# queue manager, relays a few thousand smtp-source messages through it to
# smtp-sink, waits for the queue to drain, prints a summary, and stops
# everything. Run as root (re-runs itself with sudo).
#   DEMO_MESSAGES=N   number of messages (default 5000)
#   DEMO_QMGR=stock   run the same demo with Postfix's own qmgr, to compare
#   DEMO_POSTFIX=bookworm|trixie|sid
#                     run it with that Debian suite's Postfix (3.7, 3.10,
#                     3.11), inside a Debian root made by
#                     scripts/debian-root.sh (a few minutes the first time);
#                     default: the host's own Postfix
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/prereqs.sh
source scripts/prereqs.sh
ensure_root "$@"
install_prereqs
ensure_cargo

echo "==> cargo build --release -p rqmgr -p rqmgr-harness"
cargo build --release -p rqmgr -p rqmgr-harness
target_dir="$(cargo_target_dir)"
qmgr="${DEMO_QMGR:-$target_dir/release/rqmgr}"
exec_with_postfix "${DEMO_POSTFIX:-}" "$target_dir" \
    "$target_dir/release/rqmgr-demo" --qmgr "$qmgr" --messages "${DEMO_MESSAGES:-5000}" --sessions 10
