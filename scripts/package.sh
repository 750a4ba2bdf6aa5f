#!/usr/bin/env bash
# Builds rqmgr's Debian package with cargo-deb (installed with
# `cargo install` when missing) and prints the path of the .deb. The
# package holds rqmgr (in /usr/lib/postfix/sbin), rqmgrctl (in /usr/sbin)
# and their man pages; see README.md, "Use it with your Postfix".
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/prereqs.sh
source scripts/prereqs.sh
ensure_cargo
# cargo-deb works out the libc dependency with dpkg-shlibdeps.
command -v dpkg-shlibdeps >/dev/null 2>&1 || apt_install dpkg-dev >&2
if ! cargo deb --version >/dev/null 2>&1; then
    echo "==> cargo install cargo-deb" >&2
    cargo install cargo-deb --locked >&2
fi
out="$(cargo_target_dir)/debian"
mkdir -p "$out"
cargo deb -p rqmgr --output "$out" >&2
ls -t "$out"/rqmgr_*.deb | head -n 1
