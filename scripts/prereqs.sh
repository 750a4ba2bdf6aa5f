# shellcheck shell=bash
# Shared set-up for scripts/test.sh and scripts/demo.sh (sourced, not run).
#
# - ensure_root "$@": re-runs the calling script as root via sudo (private
#   Postfix instances need root), keeping PATH so a user's cargo stays found.
# - install_prereqs: installs Postfix (with smtp-sink, smtp-source, postkick,
#   …) and pflogsumm from the distribution when missing, without configuring
#   or starting the machine's own Postfix ("No configuration"). Tests and the
#   demo only ever run private instances in temporary directories.
# - ensure_cargo: installs the distribution's cargo/rustc (and rustfmt,
#   clippy when packaged) when cargo is missing; a fallback only, rustup's
#   stable toolchain is what the project is developed with.
# - cargo_target_dir, host_suite, set_root_binds, exec_with_postfix: running
#   the programs built here with the Postfix of another Debian suite, inside
#   its root (scripts/debian-root.sh); see each function.

ensure_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "==> not root: re-running with sudo" >&2
        exec sudo -E env "PATH=$PATH" bash "$0" "$@"
    fi
}

apt_updated=""
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: $* missing and apt-get not available: install them by hand" >&2
        exit 1
    fi
    if [ -z "$apt_updated" ]; then
        apt-get update
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

install_prereqs() {
    # Always refresh the package lists and (re)install: a machine that
    # happens to have Postfix from an earlier session proves nothing about
    # a bare one, and apt-get install is a no-op when all is there.
    echo "==> installing postfix, pflogsumm" >&2
    # "No configuration": no /etc/postfix/main.cf, so the package does not
    # set up or start a system mail server.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    # In containers, also keep maintainer scripts from starting services.
    local policy=/usr/sbin/policy-rc.d made_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    local rc=0
    apt_install postfix pflogsumm || rc=$?
    [ -n "$made_policy" ] && rm -f "$policy"
    return $rc
}

ensure_cargo() {
    # rustup installs into ~/.cargo/bin, which a non-login shell may lack.
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "==> cargo missing: installing the distribution's Rust toolchain" >&2
        apt_install cargo rustc
        apt_install rustfmt || echo "warning: rustfmt not packaged" >&2
        apt_install rust-clippy || echo "warning: clippy not packaged" >&2
    fi
}

# cargo_target_dir: prints cargo's target directory.
cargo_target_dir() {
    cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'
}

# host_suite: prints the host's Debian or Ubuntu code name (may be empty).
host_suite() {
    (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
}

# set_root_binds TARGET_DIR: sets the array root_binds to the --bind options
# of scripts/debian-root.sh that make the workspace and TARGET_DIR visible at
# the same paths inside a Debian root, so that programs built here run there
# as they are.
set_root_binds() {
    local workspace
    workspace="$(pwd -P)"
    root_binds=(--bind "$workspace")
    case "$1/" in "$workspace"/*) ;; *) root_binds+=(--bind "$1") ;; esac
}

# exec_with_postfix SUITE TARGET_DIR COMMAND...: runs COMMAND (built in
# TARGET_DIR) with the Postfix of Debian SUITE: the host's own when SUITE is
# empty or the host's suite, else inside that suite's root.
exec_with_postfix() {
    local suite="$1" target="$2"
    shift 2
    if [ -z "$suite" ] || [ "$suite" = "$(host_suite)" ]; then
        exec "$@"
    fi
    set_root_binds "$target"
    echo "==> Debian $suite's Postfix $(bash scripts/debian-root.sh run "$suite" -- postconf -dh mail_version)" >&2
    exec bash scripts/debian-root.sh run "$suite" "${root_binds[@]}" -- "$@"
}
