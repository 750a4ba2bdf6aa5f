#!/usr/bin/env python3
"""Splits a queue manager's CPU samples into the phases of a delivery.

Reads the text of `perf script` (recorded with call graphs, as
`rqmgr-bench --perf-dir` does) and assigns each sample to the first phase
whose marker appears anywhere on its stack: sending log records, resolving
with trivial-rewrite, the agent connection's steps, the queue-file
operations, waiting for events, the scheduler. Prints each phase's share of
all samples and the part of it spent in the kernel.

Usage: perf script -i FILE | scripts/perf-phases.py [--since S --until S]
(--since/--until keep samples within S seconds of the first one.)
"""
import argparse
import collections
import sys

PHASES = [
    ("log records", ["Logger::send", "flush_locked", "Logger::log"]),
    ("resolve (trivial-rewrite)", ["RewriteClient"]),
    ("agent: connect", ["connect_addr", "connect_until"]),
    ("agent: close", ["PollEvented<E> as core::ops::drop::Drop"]),
    ("agent: send request", ["send_encoded"]),
    ("agent: read reply", ["read_reply"]),
    ("agent: announcement", ["wait_ready"]),
    ("queue: rename", ["QueueLayout::rename"]),
    ("queue: unlink", ["QueueLayout::remove"]),
    ("queue: open_ok (lstat)", ["open_ok"]),
    ("queue: open, lock, read", ["read_message", "OpenOptions", "lock_exclusive"]),
    ("queue: stat bounce/defer logs", ["has_log", "metadata"]),
    ("queue: directory scan", ["Scanner", "getdents"]),
    ("event wait (epoll)", ["epoll_wait"]),
    ("scheduler", ["rqmgr_sched::"]),
]


def samples(lines):
    """Yields (time, frames) per sample."""
    head, frames = None, []
    for line in lines:
        if line and not line[0].isspace():
            if head is not None:
                yield head, frames
            fields = line.split()
            when = next((f for f in fields if f.endswith(":") and "." in f), "0:")
            try:
                head = float(when.rstrip(":"))
            except ValueError:
                head = 0.0
            frames = []
        elif line.strip():
            frames.append(line.strip())
    if head is not None:
        yield head, frames


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--since", type=float, default=0.0)
    ap.add_argument("--until", type=float, default=float("inf"))
    args = ap.parse_args()
    total, kernel = collections.Counter(), collections.Counter()
    first = None
    for when, frames in samples(sys.stdin):
        if not frames:
            continue
        first = when if first is None else first
        if not args.since <= when - first < args.until:
            continue
        stack = "\n".join(frames)
        phase = next((name for name, keys in PHASES if any(k in stack for k in keys)), "other")
        total[phase] += 1
        if "kernel.kallsyms" in frames[0]:
            kernel[phase] += 1
    n = sum(total.values()) or 1
    print(f"{'phase':32s} {'share':>6s} {'kernel':>7s}")
    for phase, count in total.most_common():
        print(f"{phase:32s} {100 * count / n:5.1f}% {100 * kernel[phase] / n:6.1f}%")
    print(f"{sum(total.values())} samples, kernel {100 * sum(kernel.values()) / n:.1f}%")


if __name__ == "__main__":
    main()
