#!/usr/bin/env python3
"""How long stackaudit holds a thread stopped, on an idle and on a busy target.

Two targets, started in turn: bench_target with one running thread (its
stall probe; every other thread waits: an idle machine), and the same with
--spinners S more threads that never wait (with 2 vCPUs and S = 7, eight
threads compete for two CPUs: a busy target). Each is dumped D times per
repetition; repetitions alternate which target comes first, and with
--compare a second stackaudit binary takes turns with the first on the same
target, so that drift on the machine hits every figure alike.

For every stopped thread stackaudit reports how long it held it
(threads[].stop_us: from seeing the thread stopped to letting it go) and,
in capture.reach_stop_us, how long the thread took to reach its stop after
the interrupt (it is not held meanwhile: it runs, or waits for a CPU, as it
would have anyway). The target reports its own view: the longest gap its
probe saw that came with a voluntary context switch (a stop: it includes the
wait for a CPU after the thread is let go), and, for scale, the longest it
saw with only involuntary switches (the machine's own preemption). The result
that matters: the hold p99 on the busy target over the hold p99 on the idle
one (the goal: at most 2).

Standard library only; see docs/benchmarks.md section 4.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, from any directory
from harness import REPO_ROOT, BenchTarget, build_target_if_missing, rotated  # noqa: E402


@dataclass
class Figures:
    dumps: int = 0
    exit_codes: dict[int, int] = field(default_factory=dict)
    holds_us: list[float] = field(default_factory=list)  # one per stopped thread
    reach_p99_us: list[float] = field(default_factory=list)  # one per dump
    race_window_max_us: list[float] = field(default_factory=list)  # one per dump
    retries: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    probe_stopped_us: list[float] = field(default_factory=list)  # one per dump
    probe_preempted_us: list[float] = field(default_factory=list)  # the machine's own gaps
    wall_ms: list[float] = field(default_factory=list)
    priority: str = ""


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p * (len(v) - 1))))]


def dump_once(binary: str, target: BenchTarget, timeout: float, fig: Figures) -> None:
    target.reset()
    t0 = time.monotonic()
    proc = subprocess.run([binary, "dump", "--pid", str(target.pid), "--format", "json"],
                          capture_output=True, text=True, timeout=timeout)
    fig.wall_ms.append((time.monotonic() - t0) * 1000)
    stats = target.stats()
    fig.dumps += 1
    fig.exit_codes[proc.returncode] = fig.exit_codes.get(proc.returncode, 0) + 1
    fig.probe_stopped_us.append(stats["max_stopped_us"])
    fig.probe_preempted_us.append(stats["max_preempted_us"])
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return
    cap = doc.get("capture", {})
    for t in doc.get("threads", []):
        if t.get("captured") == "stopped":
            fig.holds_us.append(float(t.get("stop_us", 0)))
    reach = cap.get("reach_stop_us")
    if reach:
        fig.reach_p99_us.append(float(reach["p99"]))
    window = cap.get("race_window_us")
    if window and cap.get("threads_stopped"):
        fig.race_window_max_us.append(float(window["max"]))
    fig.retries.append(int(cap.get("stop_retries", 0)))
    fig.failed.append(int(cap.get("threads_failed", 0)))
    stopper = cap.get("stopper") or {}
    if stopper.get("priority"):
        fig.priority = stopper["priority"]


def fmt(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v / 1000:.1f} ms" if v >= 1000 else f"{v:.0f} µs"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=100, help="bench_target --threads (100)")
    ap.add_argument("--spinners", type=int, default=7, help="extra running threads when busy (7)")
    ap.add_argument("-r", "--reps", type=int, default=5, help="repetitions (5)")
    ap.add_argument("-d", "--dumps", type=int, default=10, help="dumps per target per rep (10)")
    ap.add_argument("--stackaudit", default="build/stackaudit", help="stackaudit binary")
    ap.add_argument("--compare", help="a second stackaudit binary, e.g. an older build")
    ap.add_argument("--target", default="build/bench/bench_target", help="bench_target binary")
    ap.add_argument("--timeout", type=float, default=120, help="seconds allowed per dump")
    args = ap.parse_args()

    os.chdir(REPO_ROOT)
    target_path = build_target_if_missing(Path(args.target))
    tools = [("stackaudit", args.stackaudit)]
    if args.compare:
        tools.append(("compared", args.compare))
    loads = [("idle", 0), ("busy", args.spinners)]
    figures = {(load, name): Figures() for load, _ in loads for name, _ in tools}

    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} vCPU, kernel "
          f"{os.uname().release}", flush=True)
    for rep in range(args.reps):
        order = loads if rep % 2 == 0 else list(reversed(loads))
        for load, spinners in order:
            target = BenchTarget(target_path, args.threads, 60, 30, spinners=spinners)
            try:
                time.sleep(0.5)  # let the spinners spread over the CPUs
                for d in range(args.dumps):
                    for name, binary in rotated(tools, d):
                        dump_once(binary, target, args.timeout, figures[(load, name)])
            finally:
                target.close()
        print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr, flush=True)

    print()
    print("| target | binary | dumps exit 0 | threads held: p50 / p99 / max | reach stop p99 "
          "(median of dumps) | retries per dump | probe's longest stopped gap, median / max "
          "| probe's longest preempted gap, median | wall median |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (load, name), f in figures.items():
        ok = f.exit_codes.get(0, 0)
        print(f"| {load} | {name} | {ok}/{f.dumps} | {fmt(percentile(f.holds_us, 0.5))} / "
              f"{fmt(percentile(f.holds_us, 0.99))} / {fmt(max(f.holds_us, default=None))} "
              f"({len(f.holds_us)} stops) | "
              f"{fmt(statistics.median(f.reach_p99_us) if f.reach_p99_us else None)} | "
              f"{statistics.mean(f.retries) if f.retries else 0:.1f} | "
              f"{fmt(statistics.median(f.probe_stopped_us))} / "
              f"{fmt(max(f.probe_stopped_us))} | {fmt(statistics.median(f.probe_preempted_us))} | "
              f"{statistics.median(f.wall_ms):.0f} ms |")
    print()
    for (load, name), f in figures.items():
        if f.race_window_max_us:
            print(f"- {name}, {load}: look-to-interrupt gap, largest per dump: median "
                  f"{fmt(statistics.median(f.race_window_max_us))}, max {fmt(max(f.race_window_max_us))}")
    for name, _ in tools:
        idle = percentile(figures[("idle", name)].holds_us, 0.99)
        busy = percentile(figures[("busy", name)].holds_us, 0.99)
        if idle and busy:
            print(f"- {name}: hold p99 busy / idle = {busy / idle:.2f} "
                  f"(stopper: {figures[('busy', name)].priority or 'in-process'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
