#!/usr/bin/env bash
# The package's test, on a Debian system's own Postfix: for each SUITE
# (default: trixie and bookworm), in a throwaway copy of that suite's root
# (scripts/debian-root.sh run --scratch), configure Postfix as the
# distribution does, start it, install the .deb and run
# scripts/package-scenario.sh: four switches with mail deferred across
# each, master.cf restored byte for byte, and removal of the package while
# rqmgr is enabled. Exits non-zero if any suite fails.
#   package-test.sh DEB [SUITE]...
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 DEB [SUITE]..." >&2; exit 2; }
deb="$(realpath "$1")"
shift
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(trixie bookworm)
here="$(pwd)"
failed=()
for suite in "${suites[@]}"; do
    echo "==> package test on Debian $suite"
    bash scripts/debian-root.sh run "$suite" --scratch \
        --bind "$(dirname "$deb")" --bind "$here/scripts" -- \
        bash "$here/scripts/package-scenario.sh" "$deb" || failed+=("$suite")
done
if [ ${#failed[@]} -ne 0 ]; then
    echo "package test FAILED on: ${failed[*]}" >&2
    exit 1
fi
echo "package test passed on: ${suites[*]}"
