#!/usr/bin/env bash
# Runs inside a throwaway Debian root (see scripts/package-test.sh), as
# root: the system's own Postfix, configured as the distribution configures
# it, started as its init script starts it, then rqmgr's package:
#   1. install the .deb: nothing switches by itself;
#   2. rqmgrctl enable: new mail is delivered, rqmgr logs postfix/qmgr lines;
#   3. mail deferred (far end down), rqmgrctl disable, far end back,
#      postqueue -f: the stock qmgr delivers it; master.cf byte-identical;
#   4. mail deferred by the stock qmgr, rqmgrctl enable: rqmgr delivers it;
#   5. rqmgrctl disable: master.cf byte-identical again;
#   6. enable once more, then remove the package: the stock qmgr is back
#      and delivers.
# Every message must reach the far end exactly once.
#   package-scenario.sh DEB
set -euo pipefail
deb="$1"
sink_dir=/tmp/sink
port=10025
log=/var/log/mail.log
sent=0

fail() {
    echo "package scenario FAILED: $*" >&2
    echo "--- $log (tail) ---" >&2
    tail -n 40 "$log" >&2 || true
    exit 1
}

# Polls "$@" for up to 60 s.
wait_for() {
    local what="$1"
    shift
    for _ in $(seq 600); do
        if "$@"; then return 0; fi
        sleep 0.1
    done
    fail "timed out waiting for $what"
}

received() { find "$sink_dir" -type f -size +0 | wc -l; }
received_is() { [ "$(received)" -eq "$1" ]; }
deferred_is() { [ "$(find /var/spool/postfix/deferred -type f | wc -l)" -eq "$1" ]; }
queue_empty() { [ -z "$(find /var/spool/postfix/{incoming,active,deferred,maildrop} -type f)" ]; }
master_pid() { tr -dc '0-9' </var/spool/postfix/pid/master.pid; }
pid_of() { pgrep -x -P "$(master_pid)" "$1" | head -n 1; }
runs() { [ -n "$(pid_of "$1")" ]; }

sink_pid=""
sink_up() {
    mkdir -p "$sink_dir" && chown postfix "$sink_dir"
    smtp-sink -u postfix -4 -d "$sink_dir/%H%M%S." "127.0.0.1:$port" 256 &
    sink_pid=$!
    wait_for "smtp-sink" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null
}
sink_down() { kill "$sink_pid"; wait "$sink_pid" 2>/dev/null || true; }

send() {
    local n
    for n in $(seq "$1"); do
        sent=$((sent + 1))
        printf 'Subject: m%s\n\nm%s\n' "$sent" "$sent" |
            sendmail -f sender@test.example "m$sent@remote.example"
    done
}

# Postfix as the distribution set it up, pointed at a local far end; no
# syslog here, so Postfix's own log file.
postconf -e myhostname=test.example mydestination=test.example \
    "relayhost=[127.0.0.1]:$port" inet_interfaces=loopback-only \
    maillog_file="$log" minimal_backoff_time=300s maximal_backoff_time=600s \
    queue_run_delay=300s
postfix start
sink_up
version="$(postconf -h mail_version)"
echo "==> Postfix $version running"
original="$(mktemp)"
cp /etc/postfix/master.cf "$original"

echo "==> 1. install the package"
dpkg -i "$deb" >/dev/null
cmp -s /etc/postfix/master.cf "$original" || fail "installing switched master.cf"
[ -x /usr/lib/postfix/sbin/rqmgr ] || fail "no rqmgr in the daemon directory"
[ -f /usr/share/man/man8/rqmgr.8.gz ] || fail "no rqmgr(8)"
[ -f /usr/share/man/man1/rqmgrctl.1.gz ] || fail "no rqmgrctl(1)"
rqmgrctl status | head -n 1 | grep -qx disabled || fail "status after install"

echo "==> 2. enable; mail goes through rqmgr"
rqmgrctl enable
rqmgr="$(pid_of rqmgr)"
[ -n "$rqmgr" ] || fail "rqmgr does not run after enable"
send 3
wait_for "3 received" received_is 3
wait_for "rqmgr's lines" grep -q "postfix/qmgr\[$rqmgr\]: .*(queue active)" "$log"

echo "==> 3. defer under rqmgr, disable, the stock qmgr delivers"
sink_down
send 3
wait_for "3 deferred" deferred_is 3
rqmgrctl disable
cmp -s /etc/postfix/master.cf "$original" || fail "master.cf differs after disable"
[ -n "$(pid_of qmgr)" ] || fail "the stock qmgr does not run after disable"
sink_up
postqueue -f
wait_for "6 received" received_is 6
wait_for "an empty queue" queue_empty

echo "==> 4. defer under the stock qmgr, enable, rqmgr delivers"
sink_down
send 3
wait_for "3 deferred" deferred_is 3
rqmgrctl enable
rqmgr="$(pid_of rqmgr)"
sink_up
postqueue -f
wait_for "9 received" received_is 9
wait_for "an empty queue" queue_empty
wait_for "rqmgr's lines" grep -q "postfix/qmgr\[$rqmgr\]: .*(queue active)" "$log"

echo "==> 5. disable"
rqmgrctl disable
cmp -s /etc/postfix/master.cf "$original" || fail "master.cf differs after the second disable"

echo "==> 6. enable, then remove the package"
rqmgrctl enable
dpkg -r rqmgr >/dev/null
[ ! -e /usr/lib/postfix/sbin/rqmgr ] || fail "rqmgr still installed"
cmp -s /etc/postfix/master.cf "$original" || fail "master.cf differs after removal"
wait_for "the stock qmgr" runs qmgr
send 1
wait_for "10 received" received_is 10
wait_for "an empty queue" queue_empty
postfix check || fail "postfix check"

unique="$(grep -h '^X-Rcpt-Args:' "$sink_dir"/* | sort -u | wc -l)"
[ "$unique" -eq "$sent" ] || fail "$unique distinct recipients received of $sent sent"
postfix stop
echo "==> package scenario passed on Postfix $version: $sent messages, each delivered once, four switches and a removal"
