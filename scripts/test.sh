#!/usr/bin/env bash
# The one test command: installs what is missing (Postfix, pflogsumm, a Rust
# toolchain, debootstrap), builds everything, runs every test (unit,
# property, and the end-to-end and differential tests against private
# Postfix instances of the host's Postfix), runs the end-to-end and
# differential tests again against the Postfix of each other Debian suite
# (Debian roots made by scripts/debian-root.sh, cached), lints the man
# pages, builds the Debian package and tests it on Debian systems' own
# Postfix (scripts/package-test.sh), then clippy and rustfmt. Exits
# non-zero if any step fails. Run as root (re-runs itself with sudo).
#   RQMGR_TEST_SUITES="trixie sid"  Debian suites to test in besides the
#                                   host (default: bookworm, trixie and sid,
#                                   less the host's own; "" for none)
#   RQMGR_TEST_THREADS=N            tests run at once (default 4)
#   RQMGR_PACKAGE_SUITES="trixie"   suites for the package test (default
#                                   trixie and bookworm; "" for none)
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

if [ -z "${RQMGR_TEST_SUITES+set}" ]; then
    suites=""
    for s in bookworm trixie sid; do
        [ "$s" = "$(host_suite)" ] || suites="$suites $s"
    done
else
    suites="$RQMGR_TEST_SUITES"
fi

now() { date +%s; }
timings=()
failed=()

echo "==> cargo build --workspace --all-targets"
cargo build --workspace --all-targets

host_version="$(postconf -dh mail_version)"
t0=$(now)
echo "==> cargo test --workspace (Postfix $host_version on the host; test threads: $threads)"
cargo test --workspace --no-fail-fast -- --test-threads="$threads" || failed+=("cargo test")
timings+=("host, Postfix $host_version: all tests $(($(now) - t0)) s")

if [ -n "${suites// /}" ]; then
    # The end-to-end and differential test programs, run as they are inside
    # each root: the workspace (where they and rqmgr live) is mounted at the
    # same path there, and so is the port lease directory, so that leases
    # hold across roots.
    tests_json="$(cargo test --workspace --no-run --message-format=json 2>/dev/null)"
    suite_tests=()
    for name in e2e differential; do
        exe="$(printf '%s\n' "$tests_json" | grep "\"name\":\"$name\"" | grep '"kind":\["test"\]' |
            sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
        [ -n "$exe" ] || { echo "error: no test program $name" >&2; exit 1; }
        suite_tests+=("$exe")
    done
    set_root_binds "$(cargo_target_dir)"
    leases="${TMPDIR:-/tmp}/rqmgr-harness-ports"
    mkdir -p "$leases"
    binds=("${root_binds[@]}" --bind "$leases")
    for suite in $suites; do
        t0=$(now)
        echo "==> Debian $suite: making or reusing its root"
        if ! bash scripts/debian-root.sh path "$suite" >/dev/null; then
            failed+=("root $suite")
            continue
        fi
        version="$(bash scripts/debian-root.sh run "$suite" -- postconf -dh mail_version)"
        t1=$(now)
        for exe in "${suite_tests[@]}"; do
            echo "==> Debian $suite, Postfix $version: $(basename "$exe")"
            bash scripts/debian-root.sh run "$suite" "${binds[@]}" -- \
                env RUST_BACKTRACE="${RUST_BACKTRACE:-1}" TMPDIR=/tmp \
                "$exe" --test-threads="$threads" ||
                failed+=("$suite $(basename "$exe")")
        done
        timings+=("Debian $suite, Postfix $version: root $((t1 - t0)) s, e2e and differential tests $(($(now) - t1)) s")
    done
fi

echo "==> man pages: mandoc -T lint, groff -ww"
command -v mandoc >/dev/null 2>&1 || apt_install mandoc
command -v groff >/dev/null 2>&1 || apt_install groff
for page in man/*.[1-8]; do
    warnings="$(groff -ww -man -Tutf8 "$page" 2>&1 >/dev/null)"
    if ! mandoc -T lint "$page" || [ -n "$warnings" ]; then
        printf '%s\n' "$warnings" >&2
        failed+=("man page $page")
    fi
done

t0=$(now)
package_suites="${RQMGR_PACKAGE_SUITES-trixie bookworm}"
if [ -n "${package_suites// /}" ]; then
    echo "==> the Debian package: build, then test on $package_suites"
    if deb="$(bash scripts/package.sh)"; then
        # shellcheck disable=SC2086
        bash scripts/package-test.sh "$deb" $package_suites || failed+=("package test")
    else
        failed+=("package build")
    fi
    timings+=("Debian package: build and test on $package_suites $(($(now) - t0)) s")
fi

echo "==> cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings || failed+=("cargo clippy")
echo "==> cargo fmt --all --check"
cargo fmt --all --check || failed+=("cargo fmt")

echo "==> timings"
printf '  %s\n' "${timings[@]}"
if [ ${#failed[@]} -ne 0 ]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "all checks passed"
