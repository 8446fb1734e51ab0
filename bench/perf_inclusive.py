#!/usr/bin/env python3
"""Inclusive share of CPU samples per named frame, from `perf script -F comm,tid,ip,sym`.

    perf script -i perf.data -F comm,tid,ip,sym > stacks.txt
    bench/perf_inclusive.py stacks.txt LABEL=REGEX ...

A sample counts for a label when any frame of its stack matches the regex, so the
shares overlap (a frame and its callers both count)."""
import re
import sys


def samples(path):
    cur = None
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if cur:
                    yield cur
                cur = None
            elif not line[0].isspace() or cur is None:
                if cur:
                    yield cur
                cur = {"comm": line.split()[0], "frames": []}
            else:
                parts = line.strip().split(None, 1)
                cur["frames"].append(parts[1] if len(parts) > 1 else "")
    if cur:
        yield cur


def main():
    path, specs = sys.argv[1], sys.argv[2:]
    labels = [s.split("=", 1) for s in specs]
    regexes = [(label, re.compile(rx)) for label, rx in labels]
    all_samples = list(samples(path))
    n = len(all_samples) or 1
    threads = {}
    for s in all_samples:
        threads[s["comm"]] = threads.get(s["comm"], 0) + 1
    print(f"{len(all_samples)} samples; by thread: " + ", ".join(
        f"{c} {100 * k / n:.1f}%" for c, k in sorted(threads.items(), key=lambda x: -x[1])))
    for label, rx in regexes:
        k = sum(1 for s in all_samples if any(rx.search(f) for f in s["frames"]))
        print(f"{100 * k / n:6.1f}%  {label}")


if __name__ == "__main__":
    main()
