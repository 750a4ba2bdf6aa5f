#!/usr/bin/env bash
# The one test command: installs what is missing (Postfix, pflogsumm, a Rust
# toolchain), builds everything, runs every test (unit, property, and the
# end-to-end tests against private Postfix instances), then clippy and rustfmt.
# Exits non-zero if any step fails. Run as root (re-runs itself with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/prereqs.sh
source scripts/prereqs.sh
ensure_root "$@"
install_prereqs
ensure_cargo

# End-to-end tests mostly wait on Postfix processes, not on the CPU: run
# more of them at once than there are cores, but not so many that the
# differential tests' comparisons of two runs suffer from CPU starvation
# (8 at once on 2 cores made timing-dependent outcomes drift). Each test has
# its own instance directory and leased ports, so they do not clash.
threads="${RQMGR_TEST_THREADS:-4}"

echo "==> cargo build --workspace --all-targets"
cargo build --workspace --all-targets

failed=()
echo "==> cargo test --workspace (test threads: $threads)"
cargo test --workspace --no-fail-fast -- --test-threads="$threads" || failed+=("cargo test")
echo "==> cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings || failed+=("cargo clippy")
echo "==> cargo fmt --all --check"
cargo fmt --all --check || failed+=("cargo fmt")

if [ ${#failed[@]} -ne 0 ]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "all checks passed"
