#!/usr/bin/env python3
"""Splits a queue manager's CPU samples by owner: rqmgr's components in
user space, system calls in the kernel, wake-ups, and the top functions.

Reads the text of `perf script` (recorded with DWARF call graphs; several
files may be concatenated) and prints, as shares of all samples and, with
--us-per-msg, as microseconds per message:
* user-space samples by the innermost rqmgr component on the stack
  (scheduler, attribute codec, IPC clients, queue files, logging, metrics,
  the daemon's glue, the tokio/mio runtime); a stock queue manager has
  none of these, so its user time is one line;
* kernel samples by the system call on the stack;
* samples that wake another process (try_to_wake_up) and samples of the
  queue manager's own context switches;
* the top functions by self share and rqmgr's functions by children
  (inclusive) share.

Usage: perf script -i FILE | scripts/perf-components.py [--us-per-msg N]
"""
import argparse
import collections
import re
import sys

COMPONENTS = [
    ("scheduler (rqmgr_sched)", r"rqmgr_sched"),
    ("attribute codec (rqmgr_ipc::attr)", r"rqmgr_ipc::attr"),
    ("IPC clients (rqmgr_ipc)", r"rqmgr_ipc"),
    ("queue files (rqmgr_queue)", r"rqmgr_queue"),
    ("logging", r"rqmgr::logging"),
    ("metrics", r"rqmgr::metrics"),
    ("delivery request (message.rs)", r"rqmgr::message"),
    ("tokio/mio runtime", r"^<?(tokio|mio)"),
    ("daemon glue (runtime, activate, resolve, deliver, finish)", r"rqmgr"),
]


def samples(lines):
    """Yields each sample's frames, leaf first, as (symbol, dso)."""
    frames = []
    for line in lines:
        if not line.strip() or not line[0].isspace():
            if frames:
                yield frames
            frames = []
            continue
        m = re.match(r"\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$", line)
        if m:
            frames.append((re.sub(r"\+0x[0-9a-f]+$", "", m.group(1)), m.group(2).split("/")[-1]))
    if frames:
        yield frames


def clean(sym):
    sym = re.sub(r"::\{\{closure\}\}", "", sym)
    sym = re.sub(r"<impl [^>]*>::", "", sym)
    return sym[:80]


def component(frames):
    for sym, _ in frames:
        for name, pat in COMPONENTS:
            if re.search(pat, sym):
                return name
    return "libc/std outside rqmgr's code (all of a stock queue manager)"


def syscall(frames):
    for sym, _ in frames:
        m = re.match(r"(?:__x64_sys_|__do_sys_|__se_sys_|ksys_)(\w+)", sym)
        if m:
            return m.group(1)
    if any("schedule" in s or "finish_task_switch" in s for s, _ in frames):
        return "(context switch, no system call frame)"
    return "(other kernel: interrupts, page faults)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--us-per-msg", type=float, default=0.0)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    user, kern, selfc, children = (collections.Counter() for _ in range(4))
    n = wake = switch = 0
    for frames in samples(sys.stdin):
        n += 1
        dso = next((d for _, d in frames if d != "inlined"), frames[0][1])
        in_kernel = "kernel" in dso
        stack = " ".join(s for s, _ in frames)
        if in_kernel:
            kern[syscall(frames)] += 1
        else:
            user[component(frames)] += 1
        if re.search(r"try_to_wake_up|sock_def_readable|__wake_up", stack):
            wake += 1
        elif re.search(r"finish_task_switch|__schedule", stack):
            switch += 1
        selfc[(clean(frames[0][0]), "k" if in_kernel else "u")] += 1
        for sym in {clean(s) for s, _ in frames}:
            if sym.startswith("rqmgr") and not re.search(r"rqmgr::(start|main)", sym):
                children[sym] += 1
    n = n or 1
    us = args.us_per_msg

    def line(count, text):
        extra = f" {us * count / n:6.1f} us" if us else ""
        print(f"{100 * count / n:6.1f}%{extra}  {text}")

    print(f"{n} samples, kernel {100 * sum(kern.values()) / n:.1f}%")
    print("-- user space by component")
    for k, v in user.most_common():
        line(v, k)
    print("-- kernel by system call")
    for k, v in kern.most_common(args.top):
        line(v, k)
    print("-- wake-ups and switches")
    line(wake, "waking another process (try_to_wake_up and the socket wake-ups)")
    line(switch, "own context switches (schedule, finish_task_switch)")
    print("-- top functions, self ([k]ernel or [u]ser)")
    for (k, where), v in selfc.most_common(args.top):
        line(v, f"{k} [{where}]")
    print("-- rqmgr functions, children (inclusive)")
    for k, v in children.most_common(args.top * 2):
        line(v, k)


if __name__ == "__main__":
    main()
