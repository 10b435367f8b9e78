#!/usr/bin/env python3
"""Steady-state cost of the continuous agent (`stackaudit agent`) on a live process.

For each thread count, one agent_target (bench/agent_target.cpp) is started:
N threads, all parked (condition variable, sleep, epoll, recv, mutex) except
two workers that repeat a fixed unit of CPU work and count it. Then windows of
--seconds each take turns on that same process:

    baseline, agent at interval 1, baseline, agent at interval 2, baseline

so every agent window sits between two baseline windows (no agent), and the
target's throughput with the agent is compared with the mean of those two.
Before an agent window the agent is started and allowed to finish its first
full round (and --warmup seconds) so the window sees the steady state only;
it is stopped with SIGTERM after the window, and its audit JSON read.

Per agent window:

  * agent CPU, % of one core: utime+stime of the agent from /proc/PID/stat
    over the window (cross-checked with process_cpu_seconds_total);
  * agent RSS: VmRSS sampled every second over the agent's whole life
    (start-up included), and VmHWM (the kernel's peak) at the end;
  * stop p50 / p99 / max and the reused share, from the audit JSON's
    window.cost; the same figures for the window alone from /metrics deltas;
  * target throughput loss: 1 - rate(with agent) / mean rate(baselines),
    rates measured inside the target (units of work per wall second).

Other processes' CPU is measured during every window (machine-wide busy time
minus the harness, the target and the agent); a window disturbed by more than
--max-foreign-run CPUs is measured again. The workers keep both vCPUs of a
2-vCPU machine busy, so anything else that runs takes its CPU time from them.

Standard library only; helpers shared with the other benchmarks come from
harness.py. See docs/benchmarks.md, section 3.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, from any directory
from harness import (  # noqa: E402
    ForeignCpu,
    Target,
    TargetError,
    add_note,
    compile_target,
    die_with_parent,
    environment,
    exit_on_sigterm,
    file_identity,
    first_line,
    fmt_us,
    is_executable,
    proc_cpu_split,
    resolve,
    rotated,
    tool_env,
    wait_for_quiet,
    write_results,
)


# --------------------------------------------------------------------------
# The target.


class AgentTarget(Target):
    """agent_target: the same line protocol as bench_target, other figures."""

    def __init__(self, path: Path, threads: int, start_timeout: float, cmd_timeout: float):
        # Its worker count comes from $AGENT_TARGET_WORKERS, set by main().
        super().__init__([str(path), "--threads", str(threads)], "agent_target",
                         start_timeout, cmd_timeout)

    def report(self) -> dict[str, float]:  # type: ignore[override]
        answer = self.command("report")
        m = re.fullmatch(r"iterations=(\d+) elapsed_ns=(\d+)", answer)
        if not m:
            raise TargetError(f"report answered {answer!r}")
        return {"iterations": int(m.group(1)), "elapsed_ns": int(m.group(2))}


def build_target(path_arg: str | None) -> Path:
    """The given binary, or bench/agent_target.cpp compiled into /tmp (cached by content)."""
    if path_arg:
        p = resolve(path_arg)
        if not is_executable(p):
            sys.exit(f"error: no executable agent_target at {p}")
        return p
    return compile_target("agent_target", "need g++ and bench/agent_target.cpp, or --target BINARY",
                          cache_prefix="stackaudit-agent-bench")


# --------------------------------------------------------------------------
# Reading processes and the agent's /metrics.


def proc_status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def scrape(port: int, timeout: float = 10) -> dict[str, float]:
    """/metrics as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        text = r.read().decode("utf-8", errors="replace")
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and not line.startswith("#"):
            try:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    """One `stackaudit agent` process, always killed in close()."""

    def __init__(self, binary: Path, pid: int, interval: str, max_seconds: float, workdir: Path):
        self.port = free_port()
        self.audit_path = workdir / f"audit-{pid}-{interval}-{time.monotonic_ns()}.json"
        self.log_path = self.audit_path.with_suffix(".log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(binary), "agent", "--pid", str(pid), "--interval", interval,
             "--listen", f"127.0.0.1:{self.port}", "--audit-json", str(self.audit_path),
             "--duration", f"{max_seconds:.0f}s"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=tool_env(), start_new_session=True, preexec_fn=die_with_parent)
        self.pid = self.proc.pid
        self.rss_max_kib = 0

    def sample_rss(self) -> None:
        kib = proc_status_kib(self.pid, "VmRSS")
        if kib:
            self.rss_max_kib = max(self.rss_max_kib, kib)

    def wait_steady(self, rounds: int, min_seconds: float, timeout: float) -> dict[str, float]:
        """Until `rounds` rounds are done and min_seconds passed; returns that scrape."""
        t0 = time.monotonic()
        last_error = ""
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise TargetError(f"agent exited early (status {self.proc.returncode}); "
                                  f"log: {self.tail()}")
            self.sample_rss()
            try:
                m = scrape(self.port)
                if (m.get("stackaudit_snapshots_total", 0) >= rounds
                        and time.monotonic() - t0 >= min_seconds):
                    return m
            except (OSError, urllib.error.URLError) as e:
                last_error = str(e)
            time.sleep(0.2)
        raise TargetError(f"agent not steady after {timeout:.0f} s ({last_error}); "
                          f"log: {self.tail()}")

    def tail(self) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
            return " | ".join(lines[-3:])
        except OSError:
            return "?"

    def stop(self, timeout: float = 30) -> dict | None:
        """SIGTERM, wait, read the audit JSON (None if there is none)."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                print(f"warning: agent {self.pid} ignored SIGTERM for {timeout:.0f} s; killing",
                      file=sys.stderr)
        self.close()
        try:
            return json.loads(self.audit_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                print(f"warning: agent {self.pid} did not die", file=sys.stderr)
        self._log.close()


# --------------------------------------------------------------------------
# One window.


@dataclass
class Window:
    kind: str  # "baseline" or the agent's interval ("1s", "100ms")
    seconds: float = 0.0  # measured inside the target
    iterations: int = 0
    stats: dict = field(default_factory=dict)
    foreign_cpus: float = 0.0
    note: str = ""
    # agent windows only
    agent_cpu_s: float | None = None
    agent_sys_s: float | None = None  # the part of agent_cpu_s spent in the kernel
    agent_cpu_metric_s: float | None = None
    rss_max_kib: int | None = None
    hwm_kib: int | None = None
    metrics_delta: dict = field(default_factory=dict)
    cost: dict = field(default_factory=dict)  # audit JSON window.cost
    audit_rounds: int | None = None
    audit_seconds: float | None = None
    exit_code: int | None = None

    @property
    def rate(self) -> float:
        return self.iterations / self.seconds if self.seconds > 0 else 0.0

    @property
    def efficiency(self) -> float:
        """Units of work per worker CPU-second: blind to time off the CPU."""
        cpu = self.stats.get("worker_cpu_ns", 0) / 1e9
        return self.iterations / cpu if cpu > 0 else 0.0


def metric_delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    keys = [k for k in after if k.startswith("stackaudit_thread_stop_seconds_bucket")]
    keys += ["stackaudit_snapshots_total", "process_cpu_seconds_total",
            "stackaudit_snapshot_duration_seconds_sum", "stackaudit_snapshot_duration_seconds_count",
            "stackaudit_thread_stop_seconds_sum", "stackaudit_thread_stop_seconds_count"]
    keys += [f'stackaudit_thread_captures_total{{mode="{m}"}}'
             for m in ("stopped", "nonstop", "reused", "failed")]
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in keys}


def tick_loop(seconds: float, sample) -> None:
    """Sleep for `seconds`, calling sample() once a second (in every kind of window alike)."""
    end = time.monotonic() + seconds
    next_tick = time.monotonic() + 1
    while True:
        now = time.monotonic()
        if now >= end:
            return
        time.sleep(max(0.0, min(next_tick, end) - now))
        if time.monotonic() >= next_tick:
            sample()
            next_tick += 1


def baseline_window(target: AgentTarget, seconds: float) -> Window:
    w = Window("baseline")
    others = ForeignCpu([target.pid])
    target.reset()
    # The same once-a-second /proc read as in agent windows, here of the target.
    tick_loop(seconds, lambda: proc_status_kib(target.pid, "VmRSS"))
    st = target.stats()
    w.foreign_cpus = others.cores()
    w.stats = st
    w.iterations, w.seconds = int(st["iterations"]), st["elapsed_ns"] / 1e9
    return w


def agent_window(target: AgentTarget, binary: Path, interval: str, seconds: float,
                 warmup: float, workdir: Path) -> Window:
    w = Window(interval)
    agent = Agent(binary, target.pid, interval, max_seconds=warmup + seconds + 90,
                  workdir=workdir)
    try:
        before = agent.wait_steady(rounds=2, min_seconds=warmup, timeout=warmup + 60)
        others = ForeignCpu([target.pid, agent.pid])
        cpu0 = proc_cpu_split(agent.pid)
        target.reset()
        tick_loop(seconds, agent.sample_rss)
        st = target.stats()
        cpu1 = proc_cpu_split(agent.pid)
        w.foreign_cpus = others.cores()
        after = scrape(agent.port)
        agent.sample_rss()
        w.hwm_kib = proc_status_kib(agent.pid, "VmHWM")
        w.stats = st
        w.iterations, w.seconds = int(st["iterations"]), st["elapsed_ns"] / 1e9
        if cpu0 is not None and cpu1 is not None:
            w.agent_cpu_s = sum(cpu1) - sum(cpu0)
            w.agent_sys_s = cpu1[1] - cpu0[1]
        w.metrics_delta = metric_delta(after, before)
        w.agent_cpu_metric_s = w.metrics_delta["process_cpu_seconds_total"]
        audit = agent.stop()
        w.exit_code = agent.proc.returncode
        w.rss_max_kib = agent.rss_max_kib
        if audit and isinstance(audit.get("window"), dict):
            win = audit["window"]
            w.cost = win.get("cost", {})
            w.audit_rounds = win.get("rounds")
            w.audit_seconds = win.get("seconds")
        else:
            w.note = f"no audit JSON (agent exit {w.exit_code}; log: {agent.tail()})"
        if w.exit_code not in (0, 1):
            w.note = add_note(w.note, f"agent exit {w.exit_code}")
    finally:
        agent.close()
        if target.unfreeze_if_stopped():
            w.note = add_note(w.note, "target left stopped, sent SIGCONT")
    return w


# --------------------------------------------------------------------------
# Summary.


@dataclass
class Result:
    threads: int
    total_threads: int
    interval: str
    agent: Window
    before: Window
    after: Window

    @property
    def baseline_rate(self) -> float:
        return (self.before.rate + self.after.rate) / 2

    @property
    def loss(self) -> float:
        return 1 - self.agent.rate / self.baseline_rate

    @property
    def baseline_spread(self) -> float:
        """|difference of the two baselines| / their mean: the noise floor of `loss`."""
        return abs(self.before.rate - self.after.rate) / self.baseline_rate

    @property
    def efficiency_loss(self) -> float:
        base = (self.before.efficiency + self.after.efficiency) / 2
        return 1 - self.agent.efficiency / base if base > 0 else 0.0


def hz(interval: str) -> str:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)?", interval)
    if not m:
        return interval
    secs = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    return f"{1 / secs:g} Hz"


def pct(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v * 100:.{digits}f} %"


def tables(results: list[Result]) -> str:
    main = [
        "| threads | interval | agent CPU (% of one core) | agent RSS max (VmHWM) "
        "| stop p50 / p99 / max | reused share | throughput baseline → with agent "
        "| throughput loss | baseline spread |",
        "|---:|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    detail = [
        "| threads | interval | rounds in window | per round: stopped / nonstop / reused / failed "
        "| round duration, mean | stop, mean | stops over 1 ms | CPU (metric) | of which kernel "
        "| reused share in window | loss per worker CPU-second | worker stops/s | EINTR "
        "| others' CPU (agent window) |",
        "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        a = r.agent
        cpu = pct(a.agent_cpu_s / a.seconds) if a.agent_cpu_s is not None and a.seconds else "–"
        rss = (f"{a.rss_max_kib / 1024:.1f} MiB ({a.hwm_kib / 1024:.1f})"
               if a.rss_max_kib and a.hwm_kib else "–")
        c = a.cost
        stop = "–"
        share = "–"
        if c:
            s = c.get("stop_us", {})
            stop = f"{fmt_us(s.get('p50'))} / {fmt_us(s.get('p99'))} / {fmt_us(s.get('max'))}"
            total = sum(c.get(k, 0) for k in ("threads_stopped", "threads_not_stopped",
                                              "threads_reused"))
            if total:
                share = pct(c.get("threads_reused", 0) / total, 1)
        main.append(
            f"| {r.threads} | {a.kind} ({hz(a.kind)}) | {cpu} | {rss} | {stop} | {share} "
            f"| {r.baseline_rate / 1e6:.3f} → {a.rate / 1e6:.3f} M/s | {pct(r.loss)} "
            f"| {pct(r.baseline_spread)} |")
        d = a.metrics_delta
        rounds = d.get("stackaudit_snapshots_total", 0)
        modes = [d.get(f'stackaudit_thread_captures_total{{mode="{m}"}}', 0)
                 for m in ("stopped", "nonstop", "reused", "failed")]
        per_round = " / ".join(f"{m / rounds:.4g}" for m in modes) if rounds else "–"
        dur = (d["stackaudit_snapshot_duration_seconds_sum"]
               / d["stackaudit_snapshot_duration_seconds_count"] * 1e6
               if d.get("stackaudit_snapshot_duration_seconds_count") else None)
        stop_mean = (d["stackaudit_thread_stop_seconds_sum"]
                     / d["stackaudit_thread_stop_seconds_count"] * 1e6
                     if d.get("stackaudit_thread_stop_seconds_count") else None)
        metric_cpu = (pct(a.agent_cpu_metric_s / a.seconds)
                      if a.agent_cpu_metric_s is not None and a.seconds else "–")
        win_share = pct(modes[2] / sum(modes), 1) if sum(modes) else "–"
        over_1ms = "–"
        stop_count = d.get("stackaudit_thread_stop_seconds_count", 0)
        for k, v in d.items():
            m = re.search(r'le="([^"]+)"', k)
            if (k.startswith("stackaudit_thread_stop_seconds_bucket") and m
                    and m.group(1) != "+Inf" and abs(float(m.group(1)) - 0.001) < 1e-9
                    and stop_count):
                over_1ms = pct((stop_count - v) / stop_count, 1)
        kernel = (pct(a.agent_sys_s / a.agent_cpu_s, 0)
                  if a.agent_sys_s is not None and a.agent_cpu_s else "–")
        stops_per_s = a.stats.get("worker_stops", 0) / a.seconds if a.seconds else 0
        eintr = int(a.stats.get("eintr_epoll", 0) + a.stats.get("eintr_recv", 0))
        detail.append(
            f"| {r.threads} | {a.kind} | {rounds:.0f} | {per_round} | {fmt_us(dur)} "
            f"| {fmt_us(stop_mean)} | {over_1ms} | {metric_cpu} | {kernel} | {win_share} "
            f"| {pct(r.efficiency_loss)} "
            f"| {stops_per_s:.1f} | {eintr} | {a.foreign_cpus:.3f} |")
    return "\n".join(main) + "\n\n" + "\n".join(detail) + "\n"


def verdicts(results: list[Result], cpu_goal: float, loss_goal: float, rss_goal_mib: float,
             big: int) -> list[str]:
    out = []

    def one_hz(r: Result) -> bool:
        return hz(r.interval) == "1 Hz"

    cpu_rows = [r for r in results if r.threads == big and one_hz(r)]
    for r in cpu_rows:
        if r.agent.agent_cpu_s is None or not r.agent.seconds:
            out.append(f"- agent CPU at 1 Hz on {big} threads: not measured")
            continue
        v = r.agent.agent_cpu_s / r.agent.seconds * 100
        out.append(f"- agent CPU ≤ {cpu_goal:g} % of a core at 1 Hz on {big} threads: "
                   f"{'met' if v <= cpu_goal else 'NOT met'} ({v:.2f} %)")
    for r in (r for r in results if one_hz(r)):
        v = r.loss * 100
        out.append(f"- target throughput loss ≤ {loss_goal:g} % at 1 Hz, {r.threads} threads: "
                   f"{'met' if v <= loss_goal else 'NOT met'} ({v:+.2f} %, baseline spread "
                   f"{r.baseline_spread * 100:.2f} %)")
    rss = [r.agent.hwm_kib / 1024 for r in results if r.agent.hwm_kib]
    if rss:
        worst = max(max(rss), max((r.agent.rss_max_kib or 0) / 1024 for r in results))
        out.append(f"- agent RSS ≤ {rss_goal_mib:g} MiB: "
                   f"{'met' if worst <= rss_goal_mib else 'NOT met'} (worst {worst:.1f} MiB)")
    return out


# --------------------------------------------------------------------------
# Main.


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("threads", nargs="*", type=int, default=[100, 1000],
                    help="thread counts (default: 100 1000); each includes the 2 workers")
    ap.add_argument("--intervals", nargs="+", default=["1s", "100ms"],
                    help="agent --interval values (default: 1s 100ms)")
    ap.add_argument("--seconds", type=float, default=60, help="length of every window (60)")
    ap.add_argument("--workers", type=int, default=2,
                    help="busy worker threads in the target, part of each thread count (2)")
    ap.add_argument("--reps", type=int, default=1,
                    help="how many times each interval is measured per thread count (1)")
    ap.add_argument("--warmup", type=float, default=3,
                    help="seconds the agent runs (at least 2 rounds) before its window (3)")
    ap.add_argument("--stackaudit", default="build/stackaudit", help="stackaudit binary")
    ap.add_argument("--target", help="agent_target binary (default: compile "
                    "bench/agent_target.cpp into /tmp)")
    ap.add_argument("--max-foreign", type=float, default=0.05,
                    help="wait before each window until other processes use at most this many "
                         "CPUs (0.05)")
    ap.add_argument("--quiet-timeout", type=float, default=900,
                    help="give up waiting for a quiet machine after this many seconds (900)")
    ap.add_argument("--max-foreign-run", type=float, default=0.05,
                    help="measure a window again if other processes used more CPUs than this "
                         "during it (0.05)")
    ap.add_argument("--retries", type=int, default=3, help="re-measurements per window (3)")
    ap.add_argument("--cpu-goal", type=float, default=1.0, help="%% of a core (1)")
    ap.add_argument("--loss-goal", type=float, default=1.0, help="%% throughput (1)")
    ap.add_argument("--rss-goal", type=float, default=64, help="MiB (64)")
    ap.add_argument("--markdown", metavar="FILE", help="also write the tables to FILE")
    ap.add_argument("--json", metavar="FILE", help="also write every window as JSON to FILE")
    args = ap.parse_args()
    if args.seconds <= 0 or args.reps < 1 or any(n < 3 for n in args.threads):
        ap.error("--seconds and --reps must be positive, thread counts at least 3")

    if not 1 <= args.workers < min(args.threads):
        ap.error("--workers must be at least 1 and below every thread count")
    os.environ["AGENT_TARGET_WORKERS"] = str(args.workers)  # read by agent_target
    exit_on_sigterm()

    sa = resolve(args.stackaudit)
    if not is_executable(sa):
        sys.exit(f"error: no stackaudit at {sa}")
    sa = sa.resolve()
    target_path = build_target(args.target)
    sa_identity = file_identity(sa)
    workdir = Path(tempfile.mkdtemp(prefix="stackaudit-agent-bench-run-"))

    results: list[Result] = []
    raw: list[dict] = []
    kept_foreign: list[float] = []
    started = time.monotonic()
    for n in args.threads:
        print(f"== {n} threads", file=sys.stderr)
        target = None
        try:
            target = AgentTarget(target_path, n, start_timeout=120, cmd_timeout=30)
            if target.mix.get("worker") != args.workers:
                raise TargetError(f"target runs {target.mix.get('worker')} workers, "
                                  f"not {args.workers}")
            plan: list[str] = []
            for rep in range(args.reps):
                plan += rotated(args.intervals, rep)
            windows: list[Window] = []

            def measure(kind: str) -> Window:
                for attempt in range(args.retries + 1):
                    # Workers nap meanwhile: our target must not be what keeps
                    # someone else's measurement (or our own wait) from a quiet machine.
                    target.command_ok("pause")
                    used = wait_for_quiet(args.max_foreign, window=3, calm_windows=1,
                                          budget=args.quiet_timeout, live_pids=[target.pid])
                    if used > args.max_foreign:
                        print(f"warning: machine still busy ({used:.2f} CPUs used by other "
                              f"processes) after {args.quiet_timeout:.0f} s; measuring anyway",
                              file=sys.stderr)
                    target.command_ok("resume")
                    time.sleep(1)
                    if kind == "baseline":
                        w = baseline_window(target, args.seconds)
                    else:
                        w = agent_window(target, sa, kind, args.seconds, args.warmup, workdir)
                    line = (f"  {kind:8} {w.rate / 1e6:8.3f} M it/s over {w.seconds:5.1f} s"
                            f"  others={w.foreign_cpus:.3f}")
                    if w.agent_cpu_s is not None:
                        line += (f"  agent cpu={w.agent_cpu_s / w.seconds * 100:.2f} %"
                                 f" rss={w.rss_max_kib / 1024:.1f} MiB"
                                 f" stops={w.cost.get('threads_stopped')}"
                                 f" reused={w.cost.get('threads_reused')}")
                    if w.note:
                        line += f"  !! {w.note}"
                    if w.foreign_cpus <= args.max_foreign_run:
                        print(line, file=sys.stderr)
                        break
                    if attempt < args.retries:
                        print(line + "  disturbed, measuring again", file=sys.stderr)
                    else:
                        w.note = add_note(
                            w.note, f"disturbed: other processes used {w.foreign_cpus:.2f} CPUs")
                        print(line + "  disturbed, kept", file=sys.stderr)
                kept_foreign.append(w.foreign_cpus)
                raw.append({"threads": n, **w.__dict__})
                return w

            windows.append(measure("baseline"))
            for interval in plan:
                agent_w = measure(interval)
                after = measure("baseline")
                results.append(Result(n, target.mix["total"], interval, agent_w, windows[-1],
                                      after))
                windows += [agent_w, after]
        except TargetError as e:
            print(f"error at {n} threads: {e}", file=sys.stderr)
        finally:
            if target is not None:
                target.close()

    env = environment(target_path, {"stackaudit": first_line([str(sa), "--version"])})
    env.append(f"- stackaudit binary: {sa}, {sa_identity}")
    rebuilt = file_identity(sa) != sa_identity
    if rebuilt:
        env.append("- **the stackaudit binary changed during the run: figures mix two builds**")
    env.append(f"- fixture: {args.workers} busy worker thread(s), the rest parked; "
               f"{os.cpu_count()} CPUs")
    env.append(f"- window: {args.seconds:g} s each; agent warm-up before its window: "
               f"{args.warmup:g} s and at least 2 rounds; total run time "
               f"{(time.monotonic() - started) / 60:.1f} min")
    if kept_foreign:
        env.append(f"- CPU used by other processes during a kept window: median "
                   f"{statistics.median(kept_foreign):.3f}, worst {max(kept_foreign):.3f} CPUs")
    legend = ("Every agent window is compared with the mean of the baseline windows (no agent) "
              "just before and after it, on the same target process.")
    text = "\n".join(env) + "\n\n" + legend + "\n\n" + tables(results)
    big = max(args.threads)
    text += "\n" + "\n".join(verdicts(results, args.cpu_goal, args.loss_goal, args.rss_goal,
                                      big)) + "\n"
    disturbed = [f"{d['threads']} threads, {d['kind']}" for d in raw if "disturbed" in d["note"]]
    if disturbed:
        text += ("\n**Warning: other processes competed for CPU during " + "; ".join(disturbed)
                 + "; those figures are not representative.**\n")
    if rebuilt:
        print("warning: the stackaudit binary changed during the run", file=sys.stderr)
    write_results(text, args.markdown, args.json, {"environment": env, "windows": raw})
    shutil.rmtree(workdir, ignore_errors=True)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
