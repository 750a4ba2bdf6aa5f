#!/usr/bin/env bash
# Debian roots with a given suite's own Postfix, for testing rqmgr against
# the real binaries of each Postfix version Debian ships (bookworm: 3.7,
# trixie: 3.10, sid: 3.11).
#
#   debian-root.sh path SUITE
#       Creates the root of SUITE when it is missing or stale (debootstrap
#       from Debian's packages, minbase, with postfix, pflogsumm and procps),
#       and prints its directory. Roots are cached under $RQMGR_ROOTS
#       (default /var/cache/rqmgr/roots) and rebuilt after
#       $RQMGR_ROOT_MAX_AGE_DAYS days (default 14).
#   debian-root.sh run SUITE [--scratch] [--bind DIR]... -- COMMAND [ARG]...
#       Runs COMMAND as root inside the root of SUITE (created first if
#       needed), with DIR (an absolute path, e.g. the workspace and its
#       target directory) visible at the same path inside. Exits with
#       COMMAND's status. With --scratch, COMMAND sees a throwaway copy of
#       the root (an overlay whose changes live in a tmpfs of the run): it
#       may install packages and configure the system, and the cached root
#       stays as it was.
#
# Safety: the mounts a run needs (/proc, /dev, the --bind directories) are
# made in a private mount namespace that dies with the run, so the host never
# sees them and a cached root can be removed with no mount left inside; the
# run also has its own PID namespace, so every process started inside
# (Postfix daemons, smtp-sink) is killed when COMMAND ends, even one a
# failing test left behind.
#
# Environment: RQMGR_DEBIAN_MIRROR overrides the Debian mirror (default: the
# host's Debian mirror from its APT sources, else deb.debian.org).
set -euo pipefail

roots="${RQMGR_ROOTS:-/var/cache/rqmgr/roots}"
max_age_days="${RQMGR_ROOT_MAX_AGE_DAYS:-14}"
# What the tests need inside a root, beyond minbase.
include="postfix,pflogsumm,procps,libdate-calc-perl"
# Written into each finished root; a root without the same stamp is rebuilt.
stamp_text="rqmgr debian root v1 include=$include"

die() {
    echo "debian-root: $*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

check_suite() {
    case "$1" in
    bookworm | trixie | sid) ;;
    *) die "unknown suite '$1' (bookworm, trixie or sid)" ;;
    esac
}

# The host's Debian mirror, from its deb822 or one-line APT sources.
mirror() {
    if [ -n "${RQMGR_DEBIAN_MIRROR:-}" ]; then
        echo "$RQMGR_DEBIAN_MIRROR"
        return
    fi
    local uri
    uri="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
        sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)\/\{0,1\}[[:space:]]*$/\1/p' | head -n 1)"
    if [ -z "$uri" ]; then
        uri="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            sed -n 's/^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]*\/debian\)\/\{0,1\}[[:space:]].*/\2/p' |
            head -n 1)"
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

install_tools() {
    local missing=()
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    [ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
    command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
    if [ ${#missing[@]} -ne 0 ]; then
        echo "==> installing ${missing[*]}" >&2
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
    fi
}

# Refuses to remove a directory that has anything mounted below it.
remove_root() {
    local dir="$1"
    [ -e "$dir" ] || return 0
    if awk -v d="$(realpath "$dir")/" 'index($5 "/", d) == 1 { found = 1 } END { exit !found }' \
        /proc/self/mountinfo; then
        die "something is mounted below $dir: not removing it"
    fi
    rm -rf --one-file-system "$dir"
}

fresh() {
    local dir="$1"
    [ -f "$dir/.rqmgr-root" ] && [ "$(cat "$dir/.rqmgr-root")" = "$stamp_text" ] &&
        [ -z "$(find "$dir/.rqmgr-root" -mtime "+$max_age_days")" ]
}

# Prints the root of suite $1, creating it first when needed.
ensure_root_dir() {
    local suite="$1" dir="$roots/$1"
    if fresh "$dir"; then
        echo "$dir"
        return
    fi
    [ "$(id -u)" -eq 0 ] || die "creating a root needs root"
    install_tools
    mkdir -p "$roots"
    # One builder at a time per suite; a second caller waits, then reuses.
    exec 9>"$roots/.$suite.lock"
    flock 9
    if fresh "$dir"; then
        echo "$dir"
        return
    fi
    local tmp="$roots/.$suite.new"
    remove_root "$tmp"
    local m
    m="$(mirror)"
    echo "==> debootstrap $suite from $m (a few minutes, once)" >&2
    # Answer Postfix's configuration question as a distribution install
    # without a mail setup would: the tests run private instances only.
    # A second try covers a mirror that failed us once (a truncated
    # download, a moment of network trouble).
    local try
    for try in 1 2; do
        if debootstrap --variant=minbase --include="$include" \
            --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
            "$suite" "$tmp" "$m" >"$roots/.$suite.log" 2>&1; then
            break
        fi
        tail -n 30 "$roots/.$suite.log" >&2
        remove_root "$tmp"
        [ "$try" -eq 1 ] || die "debootstrap $suite failed (log above)"
        echo "==> debootstrap $suite failed; trying once more" >&2
    done
    # Nothing inside may start services on its own.
    printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
    chmod 755 "$tmp/usr/sbin/policy-rc.d"
    echo "$stamp_text" >"$tmp/.rqmgr-root"
    remove_root "$dir"
    mv "$tmp" "$dir"
    echo "==> root $suite ready: $(chroot "$dir" postconf -dh mail_version 2>/dev/null || echo '?')" >&2
    echo "$dir"
}

run_in_root() {
    local suite="$1"
    shift
    local binds=() scratch=0
    while [ $# -gt 0 ]; do
        case "$1" in
        --scratch)
            scratch=1
            shift
            ;;
        --bind)
            [ $# -ge 2 ] || usage
            case "$2" in /*) ;; *) die "--bind needs an absolute path: $2" ;; esac
            binds+=("$2")
            shift 2
            ;;
        --)
            shift
            break
            ;;
        *) usage ;;
        esac
    done
    [ $# -gt 0 ] || usage
    [ "$(id -u)" -eq 0 ] || die "running in a root needs root"
    local dir
    dir="$(ensure_root_dir "$suite")"
    # Inside: bash stays PID 1 of the new PID namespace (it reaps what the
    # daemons orphan); when it exits, the kernel kills whatever is left.
    local top=""
    [ "$scratch" = 0 ] || top="$(mktemp -d)"
    local rc=0
    unshare --mount --propagation private --pid --fork --kill-child -- \
        bash -c '
            set -e
            root="$1"; top="$2"; nbinds="$3"; shift 3
            if [ -n "$top" ]; then
                # Mounted in this namespace only: gone with the run.
                mount -t tmpfs -o mode=0755 scratch "$top"
                mkdir "$top/upper" "$top/work" "$top/root"
                mount -t overlay overlay \
                    -o "lowerdir=$root,upperdir=$top/upper,workdir=$top/work" "$top/root"
                root="$top/root"
            fi
            mount -t proc proc "$root/proc"
            mount --rbind /dev "$root/dev"
            for ((i = 0; i < nbinds; i++)); do
                mkdir -p "$root$1"
                mount --bind "$1" "$root$1"
                shift
            done
            set +e
            chroot "$root" /usr/bin/env TMPDIR=/tmp HOME=/root \
                PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
            rc=$?
            exit $rc
        ' rqmgr-root "$dir" "$top" "${#binds[@]}" "${binds[@]}" "$@" || rc=$?
    # Its mounts died with the namespace: only the empty mount point is left.
    [ -z "$top" ] || rmdir "$top"
    return "$rc"
}

[ $# -ge 2 ] || usage
cmd="$1"
suite="$2"
shift 2
check_suite "$suite"
case "$cmd" in
path) ensure_root_dir "$suite" ;;
run) run_in_root "$suite" "$@" ;;
*) usage ;;
esac
