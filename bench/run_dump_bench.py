#!/usr/bin/env python3
"""Side-by-side cost of one stack dump of a live process: stackaudit, eu-stack, gdb.

For each thread count, one bench_target is started and every tool dumps it R
times, the tools taking turns (round-robin, starting tool rotated each round)
so that drift on the machine hits all of them alike. Around each dump the
target is asked to reset and then report its own view of the damage:

  * max stall: the longest pause its spinning probe thread saw between two
    clock reads (split by the target into "stopped" and "preempted" time);
  * EINTRs: how many epoll_wait / recv(SO_RCVTIMEO) calls were interrupted.

The harness itself measures wall time, checks how many threads each tool
printed, and for stackaudit reads the figures it reports about itself.

Standard library only. See docs/benchmarks.md for what the figures mean.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, from any directory
from harness import (  # noqa: E402
    BASELINE,
    BenchTarget,
    ForeignCpu,
    Run,
    TargetError,
    Tool,
    add_note,
    build_target_if_missing,
    environment,
    eu_stack_tool,
    exit_on_sigterm,
    first_line,
    fmt_range,
    fmt_us,
    foreign_cpus_over,
    idle_tool,
    is_executable,
    measure_undisturbed,
    parsed_values,
    resolve,
    rotated,
    run_tool,
    stackaudit_tool,
    tool_versions,
    write_results,
)


# --------------------------------------------------------------------------
# The tools.


def parse_eu_stack(out: str) -> dict:
    return {"captured": sum(1 for l in out.splitlines() if l.startswith("TID "))}


_GDB_THREAD = re.compile(r"^Thread \d+ \(.*\):$")


def parse_gdb(out: str) -> dict:
    return {"captured": sum(1 for l in out.splitlines() if _GDB_THREAD.match(l))}


def parse_stackaudit(out: str) -> dict:
    doc = json.loads(out)
    cap = doc.get("capture", {})
    stop = cap.get("stop_us", {})
    threads = doc.get("threads")
    return {
        "captured": len(threads) if isinstance(threads, list) else None,
        "sa_duration_us": cap.get("duration_us"),
        "sa_stopped": cap.get("threads_stopped"),
        "sa_not_stopped": cap.get("threads_not_stopped"),
        "sa_stop_p50": stop.get("p50"),
        "sa_stop_p99": stop.get("p99"),
        "sa_stop_max": stop.get("max"),
        "sa_stop_total": stop.get("total"),
        "sa_window_us": (cap.get("consistent") or {}).get("window_us"),
        "sa_consistent": (cap.get("consistent") or {}).get("achieved"),
    }


CONSISTENT = "stackaudit-consistent"  # dump --consistent
STACKAUDITS = ("stackaudit", CONSISTENT)


def probe_tid(pid: int) -> int | None:
    """The bench target's spinning probe thread."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().strip() == "probe":
                return int(task.name)
        except OSError:
            continue
    return None


def measure_floor(floor: Path, pid: int, stops: int) -> float | None:
    """Median hold of `stops` bare seize-interrupt-getregs-detach stops of the
    probe thread (bench/stop_floor.cpp), in microseconds."""
    tid = probe_tid(pid)
    if tid is None:
        return None
    out = subprocess.run([str(floor), str(tid), str(stops)], capture_output=True, text=True,
                         timeout=60)
    m = re.search(r"p50_us=([\d.]+)", out.stdout)
    return float(m.group(1)) if out.returncode == 0 and m else None


def make_tools(args) -> tuple[list[Tool], list[str]]:
    tools: list[Tool] = []
    skipped: list[str] = []
    wanted = set(args.tools)

    if "stackaudit" in wanted:
        sa = resolve(args.stackaudit)
        if is_executable(sa):
            tools.append(stackaudit_tool(sa.resolve(), parse_stackaudit))
        else:
            skipped.append(f"stackaudit (no executable at {sa})")

    if CONSISTENT in wanted:
        sa = resolve(args.stackaudit)
        if is_executable(sa):
            plain = stackaudit_tool(sa.resolve(), parse_stackaudit)
            bound = args.consistent_max_stop
            tools.append(Tool(CONSISTENT,
                              lambda pid: plain.argv(pid) + ["--consistent", "--max-stop", bound],
                              (0, 1), parse_stackaudit, plain.version))
        else:
            skipped.append(f"{CONSISTENT} (no executable at {sa})")

    if "eu-stack" in wanted:
        eu = shutil.which("eu-stack")
        if eu:
            tools.append(eu_stack_tool(eu, parse_eu_stack))
        else:
            skipped.append("eu-stack (not installed; Debian package elfutils)")

    if "gdb" in wanted:
        gdb = shutil.which("gdb")
        if gdb:
            tools.append(Tool("gdb",
                              lambda pid: [gdb, "-nx", "-batch",
                                           "-iex", "set debuginfod enabled off",
                                           "-p", str(pid), "-ex", "thread apply all bt"],
                              (0,), parse_gdb, first_line([gdb, "--version"])))
        else:
            skipped.append("gdb (not installed)")

    if BASELINE in wanted:
        tools.append(idle_tool())
    return tools, skipped


def run_once(tool: Tool, target: BenchTarget, timeout: float, idle_window: float,
             settle: float) -> Run:
    time.sleep(settle)  # let the previous dump's aftermath die down
    others = ForeignCpu([target.pid])
    target.reset()
    out = run_tool(tool, target.pid, timeout, idle_window, measure_rss=True)
    note = ""
    ok = True
    parsed: dict = {}
    if tool.name != BASELINE:
        if out.timed_out:
            ok, note = False, f"timed out after {timeout:g} s"
        elif not tool.accepts(out.exit):
            ok, note = False, f"exit {out.exit}: {out.error_line()[:120]}"
        if ok:
            try:
                parsed = tool.parse(out.stdout.decode(errors="replace"))
            except (ValueError, KeyError, TypeError) as e:
                ok, note = False, f"unparsable output: {e}"
        if target.unfreeze_if_stopped():
            note = add_note(note, "target left stopped, sent SIGCONT")
    rep = target.report()
    stats = target.stats()
    return Run(tool.name, ok, out.wall_s, rep["eintr"], rep["max_stall_us"], stats, parsed, note,
               others.cores(), out.peak_rss_kib, out.cpu_s)


# --------------------------------------------------------------------------
# Summaries.


@dataclass
class Row:
    threads: int
    total_threads: int
    prone: int
    tool: str
    runs: list[Run]
    floor_us: list[float]  # the stop floor's median hold, once per round


def summary_tables(rows: list[Row]) -> str:
    main = [
        "| threads | tool | ok runs | wall median | wall max | probe stall median | probe stall max "
        "| EINTR per run (prone threads) | threads shown | stop p50 / p99 / max (tool's own) "
        "| stop p50 / floor | not stopped | tool CPU median | peak RSS median |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    detail = [
        "| threads | tool | probe stopped, max | probe preempted, max | probe other, max "
        "| probe stops per run | probe stopped total, median | unexpected wakeups |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        good = [r for r in row.runs if r.ok]
        n_ok = f"{len(good)}/{len(row.runs)}"
        n_disturbed = sum(1 for r in good if "disturbed" in r.note)
        if n_disturbed:
            n_ok += f" ({n_disturbed} disturbed)"
        if not good:
            main.append(f"| {row.threads} | {row.tool} | {n_ok} | " + " | ".join(["–"] * 11) + " |")
            continue
        walls = [r.wall_s * 1e6 for r in good]
        stalls = [r.max_stall_us for r in good]
        eintr = fmt_range([r.eintr for r in good]) + f" ({row.prone})"
        shown = "–"
        caps = parsed_values(good, "captured")
        if caps:
            shown = fmt_range(caps) + f"/{row.total_threads}"
        stop = "–"
        not_stopped = "–"
        ratio = "–"
        if row.tool in STACKAUDITS:
            p50, p99, mx = (parsed_values(good, k)
                            for k in ("sa_stop_p50", "sa_stop_p99", "sa_stop_max"))
            if p50 and p99 and mx:
                stop = (f"{fmt_us(statistics.median(p50))} / {fmt_us(statistics.median(p99))}"
                        f" / {fmt_us(max(mx))}")
                if row.floor_us:
                    floor = statistics.median(row.floor_us)
                    ratio = (f"{statistics.median(p50) / floor:.2f} "
                             f"({fmt_us(statistics.median(p50))} / {fmt_us(floor)})")
            windows = parsed_values(good, "sa_window_us")
            if windows:
                stop += f"; window max {fmt_us(max(windows))}"
                pinned = sum(1 for r in good if r.parsed.get("sa_consistent"))
                stop += f", consistent {pinned}/{len(good)}"
            ns = parsed_values(good, "sa_not_stopped")
            if ns:
                not_stopped = fmt_range(ns)
        rss = "–"
        cpu = "–"
        if row.tool != BASELINE and all(r.peak_rss_kib for r in good):
            rss = f"{statistics.median(r.peak_rss_kib for r in good) / 1024:.1f} MiB"
            cpu = fmt_us(statistics.median(r.cpu_s for r in good) * 1e6)
        if row.tool == BASELINE:
            walls_cell = ("–", "–")
            eintr = fmt_range([r.eintr for r in good])
        else:
            walls_cell = (fmt_us(statistics.median(walls)), fmt_us(max(walls)))
        main.append(
            f"| {row.threads} | {row.tool} | {n_ok} | {walls_cell[0]} | {walls_cell[1]} "
            f"| {fmt_us(statistics.median(stalls))} | {fmt_us(max(stalls))} | {eintr} "
            f"| {shown} | {stop} | {ratio} | {not_stopped} | {cpu} | {rss} |")
        st = [r.stats for r in good]
        detail.append(
            f"| {row.threads} | {row.tool} "
            f"| {fmt_us(max(s['max_stopped_us'] for s in st))} "
            f"| {fmt_us(max(s['max_preempted_us'] for s in st))} "
            f"| {fmt_us(max(s['max_other_us'] for s in st))} "
            f"| {fmt_range([s['probe_stops'] for s in st])} "
            f"| {fmt_us(statistics.median(s['probe_stopped_total_us'] for s in st))} "
            f"| {fmt_range([s['unexpected'] for s in st])} |")
    return "\n".join(main) + "\n\n" + "\n".join(detail) + "\n"


# --------------------------------------------------------------------------
# Main.


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("threads", nargs="*", type=int, default=[100, 200, 1000],
                    help="thread counts to test (default: 100 200 1000)")
    ap.add_argument("-r", "--reps", type=int, default=5, help="measured dumps per tool (5)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="unrecorded dumps per tool before measuring, to warm caches (1)")
    ap.add_argument("--stackaudit", default="build/stackaudit", help="stackaudit binary")
    ap.add_argument("--target", default="build/bench/bench_target", help="bench_target binary")
    ap.add_argument("--tools", nargs="+", default=["stackaudit", "eu-stack", "gdb", BASELINE],
                    choices=["stackaudit", CONSISTENT, "eu-stack", "gdb", BASELINE],
                    help="tools to compare; 'none' is an idle window showing the noise floor")
    ap.add_argument("--consistent-max-stop", default="500ms",
                    help="--max-stop for stackaudit-consistent (500ms): its window must hold "
                         "a check of every unstopped thread")
    ap.add_argument("--floor", metavar="BIN",
                    help="bench/stop_floor: measure the floor of a stop on the probe thread "
                         "once per round, and report stackaudit's stop p50 over it")
    ap.add_argument("--floor-stops", type=int, default=50,
                    help="stops per floor measurement (50)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds allowed per dump (300)")
    ap.add_argument("--settle", type=float, default=0.3,
                    help="seconds to wait before each reset (0.3)")
    ap.add_argument("--idle-window", type=float, default=0.5,
                    help="length of the 'none' baseline window in seconds (0.5)")
    ap.add_argument("--max-foreign", type=float, default=0.1,
                    help="warn at start if unrelated processes use more CPUs than this (0.1)")
    ap.add_argument("--max-foreign-run", type=float, default=0.25,
                    help="repeat a dump if unrelated processes used more CPUs than this "
                         "during it (0.25)")
    ap.add_argument("--retries", type=int, default=3,
                    help="how many times a disturbed dump is repeated (3)")
    ap.add_argument("--retry-pause", type=float, default=5,
                    help="seconds to wait before repeating a disturbed dump (5)")
    ap.add_argument("--markdown", metavar="FILE", help="also write the tables to FILE")
    ap.add_argument("--json", metavar="FILE", help="also write every run as JSON to FILE")
    args = ap.parse_args()
    if args.reps < 1 or any(n < 1 for n in args.threads):
        ap.error("reps and thread counts must be positive")

    exit_on_sigterm()

    tools, skipped = make_tools(args)
    for s in skipped:
        print(f"skipping {s}", file=sys.stderr)
    if not [t for t in tools if t.name != BASELINE]:
        sys.exit("error: no tool to benchmark")
    target_path = build_target_if_missing(resolve(args.target))

    used = foreign_cpus_over(1)
    if used > args.max_foreign:
        print(f"warning: other processes use {used:.2f} CPUs right now; "
              "figures will be noisy", file=sys.stderr)
    rows: list[Row] = []
    raw: list[dict] = []
    foreign: list[str] = []
    disturbed: list[str] = []
    for n in args.threads:
        print(f"== {n} threads", file=sys.stderr)
        runs: dict[str, list[Run]] = {t.name: [] for t in tools}
        floors: list[float] = []
        target = None
        try:
            target = BenchTarget(target_path, n, start_timeout=120, cmd_timeout=30)
            prone = target.mix["epoll"] + target.mix["recv_tmo"]
            for rnd in range(-args.warmup, args.reps):
                for tool in rotated(tools, rnd):
                    tag = "warmup" if rnd < 0 else f"rep {rnd + 1}"
                    run = measure_undisturbed(
                        lambda: run_once(tool, target, args.timeout, args.idle_window,
                                         args.settle),
                        f"{tag:7} {tool.name:10}", args.max_foreign_run, args.retries,
                        args.retry_pause)
                    print(f"  {tag:7} {tool.name:10} wall={run.wall_s * 1000:9.1f} ms "
                          f"stall={run.max_stall_us:10.1f} µs "
                          f"(stopped {run.stats['max_stopped_us']:.1f}, preempted "
                          f"{run.stats['max_preempted_us']:.1f}) eintr={run.eintr} "
                          f"shown={run.parsed.get('captured', '-')} "
                          f"rss={run.peak_rss_kib / 1024:.1f}MiB "
                          f"others={run.foreign_cpus:.2f}"
                          + (f"  !! {run.note}" if run.note else ""), file=sys.stderr)
                    if rnd >= 0:
                        runs[tool.name].append(run)
                        raw.append({"threads": n, "round": rnd + 1, **run.__dict__})
                if args.floor and rnd >= 0:
                    time.sleep(args.settle)
                    f = measure_floor(resolve(args.floor), target.pid, args.floor_stops)
                    print(f"  floor   p50={f} µs", file=sys.stderr)
                    if f:
                        floors.append(f)
                        raw.append({"threads": n, "round": rnd + 1, "floor_p50_us": f})
            for tool in tools:
                rows.append(Row(n, target.mix["total"], prone, tool.name, runs[tool.name], floors))
        except TargetError as e:
            print(f"error at {n} threads: {e}", file=sys.stderr)
        finally:
            if target is not None:
                target.close()
        kept = [r for rs in runs.values() for r in rs]
        if kept:
            worst = max(r.foreign_cpus for r in kept)
            foreign.append(f"{n} threads: {worst:.2f}")
            if worst > args.max_foreign_run:
                disturbed.append(f"{n} threads (up to {worst:.2f} CPUs)")

    env_lines = environment(target_path, tool_versions(tools))
    env_lines.append("- CPU used by unrelated processes during a recorded dump, worst case "
                     "(in CPUs): " + ", ".join(foreign))
    tables = summary_tables(rows)
    legend = (f"{args.reps} measured dumps per tool and thread count (after {args.warmup} "
              "warm-up), tools interleaved round-robin; one target process per thread count.")
    text = "\n".join(env_lines) + "\n\n" + legend + "\n\n" + tables
    if disturbed:
        text += ("\n**Warning: other processes competed for CPU during "
                 + ", ".join(disturbed) + "; those figures are not representative.**\n")
    if skipped:
        text += "\nSkipped: " + "; ".join(skipped) + "\n"
    write_results(text, args.markdown, args.json, {"environment": env_lines, "runs": raw})
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
