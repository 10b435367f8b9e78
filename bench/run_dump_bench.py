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
import ctypes
import json
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
BASELINE = "none"  # pseudo-tool: reset, wait, report, to show the noise floor


# --------------------------------------------------------------------------
# The target process.


class TargetError(RuntimeError):
    pass


def _die_with_parent() -> None:
    """Runs in the child before exec: if the harness is killed, so is the target."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass


class Target:
    """bench_target behind a line protocol on its stdin/stdout."""

    def __init__(self, path: Path, threads: int, start_timeout: float, cmd_timeout: float,
                 spinners: int = 0):
        self.cmd_timeout = cmd_timeout
        self._buf = b""
        self.proc = subprocess.Popen(
            [str(path), "--threads", str(threads), "--spinners", str(spinners)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # let its complaints reach the terminal
            preexec_fn=_die_with_parent,
        )
        line = self._readline(start_timeout)
        m = re.fullmatch(r"ready (\d+)", line)
        if not m:
            raise TargetError(f"bench_target did not say ready (got {line!r})")
        self.pid = int(m.group(1))
        self.mix = dict(kv.split("=", 1) for kv in self.command("mix").split()[1:])
        self.mix = {k: int(v) for k, v in self.mix.items()}

    def _readline(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TargetError(f"bench_target silent for {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise TargetError(f"bench_target exited (status {self.proc.poll()})")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode(errors="replace").strip()

    def command(self, cmd: str) -> str:
        if self.proc.poll() is not None:
            raise TargetError(f"bench_target is gone (status {self.proc.returncode})")
        try:
            self.proc.stdin.write(cmd.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError as e:
            raise TargetError("bench_target closed its stdin") from e
        return self._readline(self.cmd_timeout)

    def reset(self) -> None:
        answer = self.command("reset")
        if answer != "ok":
            raise TargetError(f"reset answered {answer!r}")

    def stats(self) -> dict[str, float]:
        answer = self.command("stats")
        if not answer.startswith("stats "):
            raise TargetError(f"stats answered {answer!r}")
        return {k: float(v) for k, v in (kv.split("=", 1) for kv in answer.split()[1:])}

    def report(self) -> dict[str, float]:
        answer = self.command("report")
        m = re.fullmatch(r"eintr=(\d+) max_stall_us=([0-9.]+)", answer)
        if not m:
            raise TargetError(f"report answered {answer!r}")
        return {"eintr": int(m.group(1)), "max_stall_us": float(m.group(2))}

    def unfreeze_if_stopped(self) -> bool:
        """A tool killed mid-dump may leave the target in group stop; undo it."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
        state = stat[stat.rfind(")") + 2]
        if state in "Tt":
            os.kill(self.pid, signal.SIGCONT)
            return True
        return False

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.flush()
                self.proc.stdin.close()
            except (BrokenPipeError, ValueError, OSError):
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                print(f"warning: bench_target {self.proc.pid} did not die", file=sys.stderr)
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


# --------------------------------------------------------------------------
# The tools.


@dataclass
class Tool:
    name: str
    argv: Callable[[int], list[str]]
    ok_codes: tuple[int, ...]
    # Parses stdout into {"captured": threads shown, ...tool-specific extras}.
    parse: Callable[[str], dict]
    version: str = ""


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
    }


def first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, encoding="utf-8",
                             errors="replace", timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def resolve(path: str) -> Path:
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return REPO_ROOT / p


def make_tools(args) -> tuple[list[Tool], list[str]]:
    tools: list[Tool] = []
    skipped: list[str] = []
    wanted = set(args.tools)

    if "stackaudit" in wanted:
        sa = resolve(args.stackaudit)
        if sa.is_file() and os.access(sa, os.X_OK):
            sa = sa.resolve()
            tools.append(Tool("stackaudit",
                              lambda pid: [str(sa), "dump", "--pid", str(pid), "--format", "json"],
                              (0, 1), parse_stackaudit,
                              first_line([str(sa), "--version"])))
        else:
            skipped.append(f"stackaudit (no executable at {sa})")

    if "eu-stack" in wanted:
        eu = shutil.which("eu-stack")
        if eu:
            # exit 1 means "some frames could not be unwound", still a dump
            tools.append(Tool("eu-stack", lambda pid: [eu, "-p", str(pid)], (0, 1),
                              parse_eu_stack, first_line([eu, "--version"])))
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
        tools.append(Tool(BASELINE, lambda pid: [], (0,), lambda out: {}, "no tool: idle window"))
    return tools, skipped


def tool_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DEBUGINFOD_URLS", None)  # no network lookups, ever
    env["LC_ALL"] = "C"
    return env


@dataclass
class Run:
    tool: str
    ok: bool
    wall_s: float
    eintr: int
    max_stall_us: float
    stats: dict
    parsed: dict = field(default_factory=dict)
    note: str = ""
    foreign_cpus: float = 0.0  # other processes' CPU use during this dump


def run_once(tool: Tool, target: Target, timeout: float, idle_window: float,
             settle: float) -> Run:
    time.sleep(settle)  # let the previous dump's aftermath die down
    others = ForeignCpu(live_pid=target.pid)
    target.reset()
    note = ""
    ok = True
    parsed: dict = {}
    if tool.name == BASELINE:
        t0 = time.perf_counter()
        time.sleep(idle_window)
        wall = time.perf_counter() - t0
    else:
        t0 = time.perf_counter()
        proc = subprocess.Popen(tool.argv(target.pid), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=tool_env(), start_new_session=True,
                                preexec_fn=_die_with_parent)
        try:
            out, err = proc.communicate(timeout=timeout)
            wall = time.perf_counter() - t0
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            wall = time.perf_counter() - t0
            ok, note = False, f"timed out after {timeout:g} s"
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM): do not leave a tracer behind.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        if ok and proc.returncode not in tool.ok_codes:
            ok = False
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
            note = f"exit {proc.returncode}: {tail[0][:120]}"
        if ok:
            try:
                parsed = tool.parse(out.decode(errors="replace"))
            except (ValueError, KeyError, TypeError) as e:
                ok, note = False, f"unparsable output: {e}"
        if target.unfreeze_if_stopped():
            note = (note + "; " if note else "") + "target left stopped, sent SIGCONT"
    rep = target.report()
    stats = target.stats()
    return Run(tool.name, ok, wall, rep["eintr"], rep["max_stall_us"], stats, parsed, note,
               others.cores())


# --------------------------------------------------------------------------
# Summaries.


def fmt_us(v: float | None) -> str:
    if v is None:
        return "–"
    if v < 1000:
        return f"{v:.0f} µs"
    if v < 1_000_000:
        return f"{v / 1000:.3g} ms"
    return f"{v / 1_000_000:.3g} s"


def fmt_range(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    if lo == hi:
        return f"{lo:g}"
    return f"{statistics.median(values):g} ({lo:g}–{hi:g})"


def numbers(runs: list[Run], key: str) -> list[float]:
    return [r.parsed[key] for r in runs if r.parsed.get(key) is not None]


@dataclass
class Row:
    threads: int
    total_threads: int
    prone: int
    tool: str
    runs: list[Run]


def summary_tables(rows: list[Row]) -> str:
    main = [
        "| threads | tool | ok runs | wall median | wall max | probe stall median | probe stall max "
        "| EINTR per run (prone threads) | threads shown | stop p50 / p99 / max (tool's own) "
        "| not stopped |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
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
            main.append(f"| {row.threads} | {row.tool} | {n_ok} | " + " | ".join(["–"] * 8) + " |")
            continue
        walls = [r.wall_s * 1e6 for r in good]
        stalls = [r.max_stall_us for r in good]
        eintr = fmt_range([r.eintr for r in good]) + f" ({row.prone})"
        shown = "–"
        caps = numbers(good, "captured")
        if caps:
            shown = fmt_range(caps) + f"/{row.total_threads}"
        stop = "–"
        not_stopped = "–"
        if row.tool == "stackaudit":
            p50, p99, mx = (numbers(good, k) for k in ("sa_stop_p50", "sa_stop_p99", "sa_stop_max"))
            if p50 and p99 and mx:
                stop = (f"{fmt_us(statistics.median(p50))} / {fmt_us(statistics.median(p99))}"
                        f" / {fmt_us(max(mx))}")
            ns = numbers(good, "sa_not_stopped")
            if ns:
                not_stopped = fmt_range(ns)
        if row.tool == BASELINE:
            walls_cell = ("–", "–")
            eintr = fmt_range([r.eintr for r in good])
        else:
            walls_cell = (fmt_us(statistics.median(walls)), fmt_us(max(walls)))
        main.append(
            f"| {row.threads} | {row.tool} | {n_ok} | {walls_cell[0]} | {walls_cell[1]} "
            f"| {fmt_us(statistics.median(stalls))} | {fmt_us(max(stalls))} | {eintr} "
            f"| {shown} | {stop} | {not_stopped} |")
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


class ForeignCpu:
    """CPU time the rest of the machine used while we measured.

    Machine-wide busy time from /proc/stat minus what this harness and its
    reaped children (target and tools) used: what is left is someone else's
    work competing with the tools and the probe, i.e. noise in the figures.
    """

    def __init__(self, live_pid: int | None = None) -> None:
        # live_pid: a child still running (the target) whose CPU is ours too;
        # os.times() only counts children once they are reaped.
        self.live_pid = live_pid
        self.t0, self.busy0, self.own0 = time.monotonic(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float:
        try:
            fields = Path("/proc/stat").read_text(encoding="utf-8", errors="replace").split("\n", 1)[0].split()[1:]
        except OSError:
            return 0.0
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
        return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")

    def _own(self) -> float:
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        if self.live_pid is not None:
            try:
                stat = Path(f"/proc/{self.live_pid}/stat").read_text(encoding="utf-8", errors="replace")
                utime, stime = stat[stat.rfind(")") + 2:].split()[11:13]
                own += (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")
            except (OSError, ValueError):
                pass
        return own

    def cores(self) -> float:
        wall = time.monotonic() - self.t0
        foreign = (self._busy() - self.busy0) - (self._own() - self.own0)
        return max(0.0, foreign / wall) if wall > 0 else 0.0


def environment(tools: list[Tool], target_path: Path) -> list[str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lines = [
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {os.cpu_count()} vCPU ({cpu}), kernel {platform.release()}, "
        f"glibc {platform.libc_ver()[1] or '?'}",
        f"- target: {target_path}",
    ]
    for t in tools:
        if t.name != BASELINE:
            lines.append(f"- {t.name}: {t.version}")
    return lines


# --------------------------------------------------------------------------
# Main.


def build_target_if_missing(path: Path) -> Path:
    if path.exists():
        return path
    src = REPO_ROOT / "bench" / "bench_target.cpp"
    cxx = shutil.which("g++")
    if not (src.exists() and cxx):
        sys.exit(f"error: no bench_target at {path}; build it with "
                 "`cmake --build build --target bench_target`")
    out = Path(tempfile.mkdtemp(prefix="stackaudit-bench-")) / "bench_target"
    print(f"note: {path} not found, compiling {src} -> {out}", file=sys.stderr)
    subprocess.run([cxx, "-std=c++20", "-O2", "-g", "-pthread", "-Wall", "-Wextra",
                    "-o", str(out), str(src)], check=True, timeout=300)
    return out


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
                    choices=["stackaudit", "eu-stack", "gdb", BASELINE],
                    help="tools to compare; 'none' is an idle window showing the noise floor")
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

    # Turn SIGTERM into an exception so the finally below still kills the target.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    tools, skipped = make_tools(args)
    for s in skipped:
        print(f"skipping {s}", file=sys.stderr)
    if not [t for t in tools if t.name != BASELINE]:
        sys.exit("error: no tool to benchmark")
    target_path = build_target_if_missing(resolve(args.target))

    quiet = ForeignCpu()
    time.sleep(1)
    if quiet.cores() > args.max_foreign:
        print(f"warning: other processes use {quiet.cores():.2f} CPUs right now; "
              "figures will be noisy", file=sys.stderr)
    rows: list[Row] = []
    raw: list[dict] = []
    foreign: list[str] = []
    disturbed: list[str] = []
    for n in args.threads:
        print(f"== {n} threads", file=sys.stderr)
        runs: dict[str, list[Run]] = {t.name: [] for t in tools}
        target = None
        try:
            target = Target(target_path, n, start_timeout=120, cmd_timeout=30)
            prone = target.mix["epoll"] + target.mix["recv_tmo"]
            for rnd in range(-args.warmup, args.reps):
                k = rnd % len(tools)
                for tool in tools[k:] + tools[:k]:
                    tag = "warmup" if rnd < 0 else f"rep {rnd + 1}"
                    for attempt in range(args.retries + 1):
                        run = run_once(tool, target, args.timeout, args.idle_window,
                                       args.settle)
                        if run.foreign_cpus <= args.max_foreign_run:
                            break
                        if attempt < args.retries:
                            print(f"  {tag:7} {tool.name:10} disturbed (other processes used "
                                  f"{run.foreign_cpus:.2f} CPUs), measuring again",
                                  file=sys.stderr)
                            time.sleep(args.retry_pause)
                        else:
                            run.note = (run.note + "; " if run.note else "") + (
                                f"disturbed: other processes used {run.foreign_cpus:.2f} CPUs")
                    print(f"  {tag:7} {tool.name:10} wall={run.wall_s * 1000:9.1f} ms "
                          f"stall={run.max_stall_us:10.1f} µs "
                          f"(stopped {run.stats['max_stopped_us']:.1f}, preempted "
                          f"{run.stats['max_preempted_us']:.1f}) eintr={run.eintr} "
                          f"shown={run.parsed.get('captured', '-')} "
                          f"others={run.foreign_cpus:.2f}"
                          + (f"  !! {run.note}" if run.note else ""), file=sys.stderr)
                    if rnd >= 0:
                        runs[tool.name].append(run)
                        raw.append({"threads": n, "round": rnd + 1, **run.__dict__})
            for tool in tools:
                rows.append(Row(n, target.mix["total"], prone, tool.name, runs[tool.name]))
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

    env_lines = environment(tools, target_path)
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
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": env_lines, "runs": raw}, indent=1),
                                   encoding="utf-8")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
