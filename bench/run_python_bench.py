#!/usr/bin/env python3
"""Stack dumps of a live 100-thread CPython 3.11 service: stackaudit, austin, eu-stack.

The same method as run_dump_bench.py (and its helpers, from harness.py): one target,
here bench/python_service.py run by /usr/bin/python3.11; every tool dumps it
R times, the tools taking turns, the starting tool rotated each round. Around
each dump the service is reset and then reports its own view of the damage:

  * probe stall: the longest pause its spinning Python thread saw between two
    time.perf_counter_ns() reads (stopped, GIL hand-over, or preempted);
  * EINTRs the program saw: libc epoll_wait / recv(SO_RCVTIMEO) calls made
    through ctypes that came back with EINTR.

Python's own epoll.poll and socket.recv retry EINTR (PEP 475) so the service
cannot count those; the harness counts them in the kernel instead, from the
raw_syscalls:sys_exit tracepoint filtered on the service's threads (needs
root and tracefs; --no-kernel-count turns it off). The same count gives the
blocked calls that were interrupted and transparently restarted.

The harness measures wall time and checks whether each tool's output shows the
service's Python functions; for stackaudit it also compares every thread's
Python name and Python stack with what the service itself reports
(sys._current_frames()), and reads the figures it reports about itself.

Standard library only. See docs/benchmarks.md, section 2.
"""

from __future__ import annotations

import argparse
import collections
import errno
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, from any directory
from harness import (  # noqa: E402
    BASELINE,
    ForeignCpu,
    REPO_ROOT,
    Run,
    Target,
    TargetError,
    Tool,
    add_note,
    environment,
    eu_stack_tool,
    exit_on_sigterm,
    file_identity,
    first_line,
    fmt_range,
    fmt_us,
    idle_tool,
    is_executable,
    measure_undisturbed,
    parsed_values,
    resolve,
    rotated,
    run_tool,
    stackaudit_dump_argv,
    stackaudit_tool,
    tool_versions,
    wait_for_quiet,
    write_results,
)

SERVICE = REPO_ROOT / "bench" / "python_service.py"

# Functions defined in python_service.py, one per thread kind: the tool-neutral
# test for "shows Python frames" is whether these names appear in the output.
SERVICE_FUNCTIONS = [
    "park_sleep", "park_recv", "park_queue", "park_lock", "park_epoll",
    "park_recv_timeout", "park_c_epoll", "park_c_recv_timeout", "run_event_loop",
    "run_probe",
]

# What a reader of this service would call each kind's wait; compared with
# stackaudit's blocking.category (and idle) in the per-kind table.
EXPECTED_CATEGORY = {
    "pool": ("queue", True),
    "sleep": ("sleep", False),
    "recv": ("socket", False),
    "queue": ("queue", False),
    "lock": ("lock", False),
    "epoll": ("poll", True),  # rules.md: an epoll_wait is an event loop's, idle, wait
    "recv_tmo": ("socket", False),
    "c_epoll": ("poll", True),
    "c_recv_tmo": ("socket", False),
    "loop": ("poll", True),
    "main": ("condition", False),
    "probe": (None, False),
}

# Kinds parked in a call the kernel ends with EINTR after a stop.
KERNEL_EINTR_PRONE = ("epoll", "recv_tmo", "c_epoll", "c_recv_tmo", "loop")
PROGRAM_EINTR_PRONE = ("c_epoll", "c_recv_tmo")

SYSCALL_NAMES = {0: "read", 7: "poll", 23: "select", 35: "nanosleep", 45: "recvfrom",
                 47: "recvmsg", 202: "futex", 230: "clock_nanosleep", 232: "epoll_wait",
                 281: "epoll_pwait", 441: "epoll_pwait2"}
EINTR = -errno.EINTR
RESTARTS = (-512, -513, -514, -516)  # ERESTARTSYS, ..NOINTR, ..NOHAND, ..RESTARTBLOCK


# --------------------------------------------------------------------------
# The service.


class Service(Target):
    """python_service.py behind the same line protocol as bench_target."""

    def __init__(self, python: str, script: Path, threads: int, start_timeout: float,
                 cmd_timeout: float):
        # Run by the interpreter we name, not by the script's #! line.
        super().__init__([python, str(script), "--threads", str(threads)], "python_service",
                         start_timeout, cmd_timeout)

    def syscalls(self) -> dict[int, str]:
        """Each thread's current syscall number ("running" if none), from
        /proc/PID/task/TID/syscall: read without stopping anyone."""
        out = {}
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            try:
                text = Path(f"/proc/{self.pid}/task/{tid}/syscall").read_text()
            except OSError:
                continue
            out[int(tid)] = text.split(" ", 1)[0].strip()
        return out

    def threads(self) -> list[dict]:
        answer = self.command("threads")
        if not answer.startswith("threads "):
            raise TargetError(f"threads answered {answer[:80]!r}")
        return json.loads(answer[len("threads "):])


# --------------------------------------------------------------------------
# Kernel-side count of interrupted syscalls.


class KernelCount:
    """Counts the service's syscalls that a stop interrupted, from tracefs.

    A private tracing instance records raw_syscalls:sys_exit for the
    service's threads only (set_event_pid), filtered on the return values a
    stop produces: -EINTR (the caller sees it, unless it retries, as Python
    does) and the -ERESTART* codes (the kernel restarts the call unseen).
    """

    ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

    def __init__(self, kind_of: dict[int, str]):
        self.kind_of = kind_of  # tid -> thread kind, to split the counts by kind
        tids = sorted(kind_of)
        root = next((Path(r) for r in self.ROOTS
                     if Path(r, "events/raw_syscalls/sys_exit").is_dir()), None)
        if root is None:
            raise OSError("tracefs not mounted (mount -t tracefs nodev /sys/kernel/tracing)")
        self.dir = root / "instances" / f"stackaudit-pybench-{os.getpid()}"
        self.dir.mkdir()
        try:
            (self.dir / "set_event_pid").write_text(" ".join(map(str, tids)) + "\n")
            event = self.dir / "events/raw_syscalls/sys_exit"
            (event / "filter").write_text(
                " || ".join(f"ret == {v}" for v in (EINTR, *RESTARTS)) + "\n")
            (event / "enable").write_text("1\n")
        except OSError:
            self.close()
            raise

    def clear(self) -> None:
        with open(self.dir / "trace", "w"):
            pass

    _LINE = re.compile(r"-(\d+)\s+\[\d+\].*?sys_exit: NR (\d+) = (-?\d+)")

    def read(self) -> dict:
        eintr, restarted = collections.Counter(), collections.Counter()
        eintr_kind = collections.Counter()
        tids = set()
        text = (self.dir / "trace").read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            m = self._LINE.search(line)
            if not m:
                continue
            tid, nr, ret = (int(g) for g in m.groups())
            name = SYSCALL_NAMES.get(nr, str(nr))
            (eintr if ret == EINTR else restarted)[name] += 1
            if ret == EINTR:
                eintr_kind[self.kind_of.get(tid, "?")] += 1
            tids.add(tid)
        return {"k_eintr": sum(eintr.values()), "k_restarted": sum(restarted.values()),
                "k_threads": len(tids), "k_eintr_by": dict(eintr),
                "k_restarted_by": dict(restarted), "k_eintr_kind": dict(eintr_kind)}

    def close(self) -> None:
        try:
            (self.dir / "events/raw_syscalls/sys_exit/enable").write_text("0\n")
        except OSError:
            pass
        for _ in range(50):
            try:
                self.dir.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)  # EBUSY while a reader still has it open
        print(f"warning: could not remove tracing instance {self.dir}", file=sys.stderr)


# --------------------------------------------------------------------------
# The tools.


def functions_shown(out: str) -> list[str]:
    return [f for f in SERVICE_FUNCTIONS if re.search(rf"\b{f}\b", out)]


def parse_eu_stack(out: str, truth: list[dict]) -> dict:
    return {"captured": sum(1 for l in out.splitlines() if l.startswith("TID ")),
            "functions": functions_shown(out)}


def parse_austin(out: str, truth: list[dict]) -> dict:
    # austin 1.0: one collapsed stack per line, "Thread <id>[;frame...] <metric>";
    # later versions: "P<pid>;T<id>;frame... <metric>".
    threads = set()
    for line in out.splitlines():
        if line.startswith("Thread "):
            threads.add(line.split(";", 1)[0].split()[1])
        elif line.startswith("P") and ";T" in line:
            threads.add(line.split(";", 2)[1])
    return {"captured": len(threads), "functions": functions_shown(out)}


def expected_stack(row: dict) -> tuple[list[list], bool]:
    """The Python stack stackaudit should show for a thread, and whether the
    innermost line must match. The probe was serving `threads` when the truth
    was taken: from Probe.run outward, its line moves all the time."""
    stack = row["stack"]
    if row["kind"] == "probe":
        for i, fr in enumerate(stack):
            if fr[0] == "Probe.run":
                return stack[i:], False
    return stack, True


def parse_stackaudit(out: str, truth: list[dict]) -> dict:
    doc = json.loads(out)
    cap = doc.get("capture", {})
    stop = cap.get("stop_us", {})
    threads = doc.get("threads") or []
    by_tid = {t.get("tid"): t for t in threads}
    per_thread = []
    for row in truth:
        t = by_tid.get(row["tid"])
        rec = {"tid": row["tid"], "kind": row["kind"], "present": t is not None}
        if t is not None:
            py = t.get("python")
            frames = [[f.get("function"), os.path.basename(f.get("file") or ""), f.get("line")]
                      for f in t.get("frames", []) if f.get("kind") == "python"]
            want, exact_top = expected_stack(row)
            got = frames[max(0, len(frames) - len(want)):] if row["kind"] == "probe" else frames
            same = len(got) == len(want) and all(
                g[0] == w[0] and g[1] == w[1] and (g[2] == w[2] or (i == 0 and not exact_top))
                for i, (g, w) in enumerate(zip(got, want)))
            b = t.get("blocking") or {}
            site = b.get("site") or {}
            rec.update({
                "has_python": bool(py),
                "name_ok": bool(py) and py.get("thread_name") == row["name"],
                "name_seen": (py or {}).get("thread_name"),
                "stack_ok": same,
                "frames_seen": len(frames), "frames_want": len(want),
                "first_diff": None if same else {"got": got[:3], "want": want[:3]},
                "category": b.get("category"), "primitive": b.get("primitive"),
                "idle": b.get("idle"), "site": site.get("function"),
                "site_kind": site.get("kind"),
                "holds_gil": (py or {}).get("holds_gil"),
                "waits_for_gil": (py or {}).get("waits_for_gil"),
                "captured_how": t.get("captured"), "truncated": t.get("truncated"),
            })
        per_thread.append(rec)
    return {
        "captured": len(threads),
        "functions": functions_shown(out),
        "runtime": (doc.get("target") or {}).get("runtime"),
        "sa_duration_us": cap.get("duration_us"),
        "sa_stopped": cap.get("threads_stopped"),
        "sa_not_stopped": cap.get("threads_not_stopped"),
        "sa_eintr_inflicted": cap.get("eintr_inflicted"),
        "sa_eintr_restarted": cap.get("eintr_restarted"),
        "sa_stop_p50": stop.get("p50"),
        "sa_stop_p99": stop.get("p99"),
        "sa_stop_max": stop.get("max"),
        "sa_stop_total": stop.get("total"),
        "sa_warnings": doc.get("warnings") or [],
        "threads_checked": per_thread,
    }


def make_tools(args) -> tuple[list[Tool], list[str]]:
    tools: list[Tool] = []
    skipped: list[str] = []
    wanted = args.tools
    for name in wanted:
        if name == "stackaudit":
            sa = resolve(args.stackaudit)
            if is_executable(sa):
                tools.append(stackaudit_tool(sa.resolve(), parse_stackaudit))
            else:
                skipped.append(f"stackaudit (no executable at {sa})")
        elif name == "austin":
            au = shutil.which("austin")
            if au:
                # austin 1.0.1 has no "sample once" or exposure option: it samples
                # every -i microseconds until the target exits or it gets SIGINT.
                # With a 10 s interval its first sample is taken on attach, and
                # the harness interrupts it (--austin-window) before a second.
                tools.append(Tool("austin",
                                  lambda pid, au=au: [au, "-i", "10000000", "-p", str(pid)],
                                  (0,), parse_austin, first_line([au, "--version"]),
                                  window=args.austin_window))
            else:
                skipped.append("austin (not installed; apt-get install austin)")
        elif name == "eu-stack":
            eu = shutil.which("eu-stack")
            if eu:
                tools.append(eu_stack_tool(eu, parse_eu_stack))
            else:
                skipped.append("eu-stack (not installed; Debian package elfutils)")
        elif name == BASELINE:
            tools.append(idle_tool())
    return tools, skipped


# --------------------------------------------------------------------------
# One dump.


@dataclass
class ServiceRun(Run):
    exit: int | None = None
    kernel: dict = field(default_factory=dict)
    result: str = ""  # "exit 0", "exit 36", "timeout", "exit 0 at window", "idle"


def run_once(tool: Tool, svc: Service, kc: KernelCount | None, parked: dict[int, str],
             truth: list[dict], args) -> ServiceRun:
    time.sleep(args.settle)
    others = ForeignCpu([svc.pid])
    if kc:
        kc.clear()
    svc.reset()
    out = run_tool(tool, svc.pid, args.timeout, args.idle_window)
    note, ok, parsed, result = "", True, {}, "idle"
    if tool.name != BASELINE:
        if out.timed_out:
            ok, note, result = False, "timed out", "timeout"
        else:
            result = f"exit {out.exit}" + (" at window" if out.at_window else "")
            if not tool.accepts(out.exit):
                ok, note = False, f"exit {out.exit}: {out.error_line()[:100]}"
        try:
            parsed = tool.parse(out.stdout.decode(errors="replace"), truth)
        except (ValueError, KeyError, TypeError) as e:
            if ok:
                ok, note = False, f"unparsable output: {e}"
        parsed["stdout_head"] = out.stdout[:160].decode(errors="replace")
        parsed["stderr_tail"] = out.stderr[-240:].decode(errors="replace")
        if svc.unfreeze_if_stopped():
            note = add_note(note, "service left stopped, sent SIGCONT")
    # A thread whose wait a stop ended needs the GIL, held by the spinning
    # probe, before it can count its EINTR or retry. Ask until every blocked
    # thread is back in the syscall it was parked in, and the count the c_
    # threads keep matches what the kernel returned to them; or --after-max.
    t_end = time.monotonic()
    time.sleep(args.after)
    while True:
        rep = svc.report()
        kernel = kc.read() if kc else {}
        want = sum(kernel.get("k_eintr_kind", {}).get(k, 0) for k in PROGRAM_EINTR_PRONE)
        now = svc.syscalls()
        away = [tid for tid, nr in parked.items() if now.get(tid) != nr]
        if rep["eintr"] >= want and not away:
            break
        if time.monotonic() - t_end > args.after_max:
            note = add_note(
                note, f"after {args.after_max:g} s: {len(away)} threads not back in their wait, "
                f"c_ threads counted {rep['eintr']} of {want} EINTRs")
            break
        time.sleep(0.02)
    catch_up = time.monotonic() - t_end
    stats = svc.stats()
    stats["catch_up_s"] = catch_up
    return ServiceRun(tool.name, ok, out.wall_s, rep["eintr"], rep["max_stall_us"], stats,
                      parsed, note, others.cores(), exit=out.exit, kernel=kernel, result=result)


# --------------------------------------------------------------------------
# Tables.


def med(values: list[float]) -> float:
    return statistics.median(values)


def main_table(tools: list[Tool], runs: dict[str, list[ServiceRun]], mix: dict[str, int],
               kernel_on: bool) -> str:
    prog_prone = sum(mix.get(k, 0) for k in PROGRAM_EINTR_PRONE)
    kern_prone = sum(mix.get(k, 0) for k in KERNEL_EINTR_PRONE)
    blocked = mix["total"] - 1  # all but the probe
    lines = [
        "| tool | runs: result | wall median | wall max | probe stall median | probe stall max "
        f"| EINTR seen by the program ({prog_prone} prone) "
        f"| EINTR in the kernel ({kern_prone} prone) "
        f"| syscalls restarted ({blocked - kern_prone} others blocked) "
        "| threads shown | service's Python functions shown "
        "| stop p50 / p99 / max (tool's own) | stopped / not stopped / EINTR (tool's own) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for tool in tools:
        rs = [r for r in runs[tool.name] if "timed out" not in r.note]
        result = collections.Counter(r.result for r in runs[tool.name])
        n_dist = sum(1 for r in runs[tool.name] if "disturbed" in r.note)
        res = ", ".join(f"{n}× {k}" for k, n in result.items())
        if n_dist:
            res += f" ({n_dist} disturbed)"
        if not rs:
            lines.append(f"| {tool.name} | {res} |" + " – |" * 11)
            continue
        walls = [r.wall_s * 1e6 for r in rs]
        stalls = [r.max_stall_us for r in rs]
        wall_cells = ("–", "–") if tool.name == BASELINE else (fmt_us(med(walls)), fmt_us(max(walls)))
        k_eintr = fmt_range([r.kernel["k_eintr"] for r in rs]) if kernel_on else "not counted"
        k_rest = fmt_range([r.kernel["k_restarted"] for r in rs]) if kernel_on else "not counted"
        shown, funcs, stop, stopped = "–", "–", "–", "–"
        if tool.name != BASELINE:
            caps = parsed_values(rs, "captured")
            if caps:
                shown = f"{fmt_range(caps)}/{mix['total']}"
            fs = [len(r.parsed.get("functions", [])) for r in rs]
            funcs = f"{fmt_range(fs)}/{len(SERVICE_FUNCTIONS)}"
        if tool.name == "stackaudit":
            vals = {k: parsed_values(rs, k)
                    for k in ("sa_stop_p50", "sa_stop_p99", "sa_stop_max", "sa_stopped",
                              "sa_not_stopped", "sa_eintr_inflicted")}
            if vals["sa_stop_p50"]:
                stop = (f"{fmt_us(med(vals['sa_stop_p50']))} / {fmt_us(med(vals['sa_stop_p99']))}"
                        f" / {fmt_us(max(vals['sa_stop_max']))}")
            if vals["sa_stopped"]:
                stopped = (f"{fmt_range(vals['sa_stopped'])} / {fmt_range(vals['sa_not_stopped'])}"
                           f" / {fmt_range(vals['sa_eintr_inflicted']) if vals['sa_eintr_inflicted'] else '–'}")
        lines.append(
            f"| {tool.name} | {res} | {wall_cells[0]} | {wall_cells[1]} | {fmt_us(med(stalls))} "
            f"| {fmt_us(max(stalls))} | {fmt_range([r.eintr for r in rs])} | {k_eintr} "
            f"| {k_rest} | {shown} | {funcs} | {stop} | {stopped} |")
    return "\n".join(lines) + "\n"


def detail_table(tools: list[Tool], runs: dict[str, list[ServiceRun]]) -> str:
    lines = [
        "| tool | probe stopped or GIL wait, max | probe preempted, max | probe other, max "
        "| probe off-CPU waits per run | InterruptedError reaching Python | unexpected wakeups "
        "| probe loops per ms, median | all waits resumed after, max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for tool in tools:
        rs = [r for r in runs[tool.name] if "timed out" not in r.note]
        if not rs:
            continue
        st = [r.stats for r in rs]
        lines.append(
            f"| {tool.name} | {fmt_us(max(s['max_stopped_us'] for s in st))} "
            f"| {fmt_us(max(s['max_preempted_us'] for s in st))} "
            f"| {fmt_us(max(s['max_other_us'] for s in st))} "
            f"| {fmt_range([s['probe_stops'] for s in st])} "
            f"| {fmt_range([s['interrupted_py'] for s in st])} "
            f"| {fmt_range([s['unexpected'] for s in st])} "
            f"| {med([s['loops_per_ms'] for s in st]):.0f} "
            f"| {fmt_us(max(s['catch_up_s'] for s in st) * 1e6)} |")
    return "\n".join(lines) + "\n"


def kernel_detail(tools: list[Tool], runs: dict[str, list[ServiceRun]]) -> str:
    lines = ["| tool | EINTR returned, by syscall (per run, median) | EINTR, by thread kind "
             "| restarted, by syscall (per run, median) | service threads touched |",
             "|---|---|---|---|---:|"]
    for tool in tools:
        rs = [r for r in runs[tool.name] if r.kernel]
        if not rs:
            continue

        def by(key: str) -> str:
            names = sorted({n for r in rs for n in r.kernel[key]})
            cells = [f"{n} {med([r.kernel[key].get(n, 0) for r in rs]):g}" for n in names]
            return ", ".join(cells) or "none"

        lines.append(f"| {tool.name} | {by('k_eintr_by')} | {by('k_eintr_kind')} "
                     f"| {by('k_restarted_by')} "
                     f"| {fmt_range([r.kernel['k_threads'] for r in rs])} |")
    return "\n".join(lines) + "\n"


def stackaudit_table(runs: list[ServiceRun], truth: list[dict]) -> tuple[str, list[str]]:
    """Per thread kind: what stackaudit said, over every run, against the truth."""
    order = ["main", "pool", *[k for k in EXPECTED_CATEGORY if k not in ("main", "pool")]]
    recs: dict[str, list[dict]] = collections.defaultdict(list)
    for r in runs:
        for rec in r.parsed.get("threads_checked", []):
            recs[rec["kind"]].append(rec)
    n_runs = len(runs)
    lines = [
        "| thread kind | threads | Python name right | Python stack exact "
        "| blocking as reported: category (primitive) [idle] | expected | site "
        "| holds GIL | captured |",
        "|---|---:|---:|---:|---|---|---|---:|---|",
    ]
    problems: list[str] = []
    for kind in order:
        rs = recs.get(kind)
        if not rs:
            continue
        n = len(rs) // max(1, n_runs)
        seen = [x for x in rs if x["present"]]
        name_ok = sum(x["name_ok"] for x in seen)
        stack_ok = sum(x["stack_ok"] for x in seen)
        cats = collections.Counter(
            f"{x['category']} ({x['primitive']})" + (" [idle]" if x["idle"] else "")
            if x["category"] else "none" for x in seen)
        sites = collections.Counter(
            (f"{x['site']}" + (f" ({x['site_kind']})" if x["site_kind"] else "")) if x["site"]
            else "none" for x in seen)
        how = collections.Counter(x["captured_how"] for x in seen)
        gil = sum(1 for x in seen if x["holds_gil"])
        cat, idle = EXPECTED_CATEGORY.get(kind, (None, False))
        want = (cat or "none") + (" [idle]" if idle else "")
        lines.append(
            f"| {kind} | {n} | {name_ok}/{len(rs)} | {stack_ok}/{len(rs)} "
            f"| {'; '.join(f'{k} ×{v}' for k, v in cats.most_common())} | {want} "
            f"| {'; '.join(f'{k} ×{v}' for k, v in sites.most_common(2))} "
            f"| {gil}/{len(rs)} | {', '.join(f'{k} ×{v}' for k, v in how.most_common())} |")
        if len(seen) < len(rs):
            problems.append(f"{kind}: {len(rs) - len(seen)} thread-dumps missing from the output")
        if name_ok < len(seen):
            bad = collections.Counter(str(x["name_seen"]) for x in seen if not x["name_ok"])
            problems.append(f"{kind}: wrong Python thread name {dict(bad.most_common(3))}")
        if stack_ok < len(seen):
            ex = next(x for x in seen if not x["stack_ok"])
            problems.append(f"{kind}: Python stack differs ({len(seen) - stack_ok}×), e.g. "
                            f"{ex['frames_seen']} frames vs {ex['frames_want']} expected: "
                            f"{json.dumps(ex['first_diff'])}")
        got_cats = {(x["category"], bool(x["idle"])) for x in seen}
        if got_cats != {(cat, idle)}:
            problems.append(f"{kind}: classified {dict(cats)}, expected {want}")
    n_gil = collections.Counter(sum(1 for x in r.parsed.get("threads_checked", [])
                                    if x.get("holds_gil")) for r in runs)
    if set(n_gil) != {1}:
        problems.append(f"threads said to hold the GIL per dump: {dict(n_gil)} (expected 1)")
    return "\n".join(lines) + "\n", problems


# --------------------------------------------------------------------------
# Main.


def binary_id(path: Path) -> str:
    try:
        size = path.stat().st_size
    except OSError:
        return "missing"
    try:
        shown = path.relative_to(REPO_ROOT)
    except ValueError:
        shown = path
    return f"{shown}, {size} bytes, {file_identity(path)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=100,
                    help="threads of the service besides its main thread (100)")
    ap.add_argument("-r", "--reps", type=int, default=5, help="measured dumps per tool (5)")
    ap.add_argument("--warmup", type=int, default=1, help="unrecorded dumps per tool first (1)")
    ap.add_argument("--stackaudit", default="build/stackaudit", help="stackaudit binary")
    ap.add_argument("--python", default="/usr/bin/python3.11",
                    help="interpreter for the service (/usr/bin/python3.11)")
    ap.add_argument("--tools", nargs="+", default=["stackaudit", "austin", "eu-stack", BASELINE],
                    choices=["stackaudit", "austin", "eu-stack", BASELINE])
    ap.add_argument("--timeout", type=float, default=120, help="seconds allowed per dump (120)")
    ap.add_argument("--austin-window", type=float, default=2,
                    help="seconds austin may attach and sample before it is sent SIGINT (2)")
    ap.add_argument("--settle", type=float, default=0.3,
                    help="seconds to wait before each reset (0.3)")
    ap.add_argument("--after", type=float, default=0.02,
                    help="seconds to wait after a dump before asking for the figures (0.02)")
    ap.add_argument("--after-max", type=float, default=3,
                    help="seconds to wait at most for the interrupted threads to be back "
                         "in their waits (3)")
    ap.add_argument("--idle-window", type=float, default=2,
                    help="length of the 'none' baseline window; as long as austin's (2)")
    ap.add_argument("--no-snapshot", action="store_true",
                    help="run the stackaudit binary in place instead of a copy taken at start")
    ap.add_argument("--no-kernel-count", action="store_true",
                    help="do not count interrupted syscalls with tracefs")
    ap.add_argument("--quiet-wait", type=float, default=900,
                    help="seconds to wait at most for a quiet machine before starting (900)")
    ap.add_argument("--max-foreign", type=float, default=0.1,
                    help="'quiet' means other processes use at most this many CPUs (0.1)")
    ap.add_argument("--max-foreign-run", type=float, default=0.25,
                    help="repeat a dump if other processes used more CPUs than this (0.25)")
    ap.add_argument("--retries", type=int, default=5, help="repeats of a disturbed dump (5)")
    ap.add_argument("--retry-pause", type=float, default=10,
                    help="seconds to wait before repeating a disturbed dump (10)")
    ap.add_argument("--markdown", metavar="FILE", help="also write the tables to FILE")
    ap.add_argument("--json", metavar="FILE", help="also write every run as JSON to FILE")
    args = ap.parse_args()
    if args.reps < 1 or args.threads < 12:
        ap.error("reps must be positive and --threads at least 12")

    exit_on_sigterm()

    tools, skipped = make_tools(args)
    for s in skipped:
        print(f"skipping {s}", file=sys.stderr)
    if not [t for t in tools if t.name != BASELINE]:
        sys.exit("error: no tool to benchmark")
    if not os.access(args.python, os.X_OK):
        sys.exit(f"error: no interpreter at {args.python} (Debian package python3.11)")

    sa_id = ""
    snapshot_dir = None
    sa_tool = next((t for t in tools if t.name == "stackaudit"), None)
    if sa_tool is not None:
        # Dump with a private copy: the binary in the build tree may be rebuilt
        # while we measure, and the figures must come from one build.
        src = resolve(args.stackaudit).resolve()
        sa_id = binary_id(src)
        if not args.no_snapshot:
            snapshot_dir = Path(tempfile.mkdtemp(prefix="stackaudit-pybench-"))
            copy = snapshot_dir / "stackaudit"
            shutil.copy2(src, copy)
            if binary_id(copy).split(",", 1)[1] != sa_id.split(",", 1)[1]:
                sys.exit("error: the stackaudit binary changed while it was being copied")
            sa_tool.argv = stackaudit_dump_argv(copy)
    used = wait_for_quiet(args.max_foreign, window=2, calm_windows=3, budget=args.quiet_wait)
    if used > args.max_foreign:
        print(f"warning: other processes still use {used:.2f} CPUs; figures will be noisy",
              file=sys.stderr)

    runs: dict[str, list[ServiceRun]] = {t.name: [] for t in tools}
    raw: list[dict] = []
    svc = kc = None
    truth: list[dict] = []
    kernel_note = ""
    try:
        svc = Service(args.python, SERVICE, args.threads, start_timeout=120, cmd_timeout=30)
        truth = svc.threads()
        if len(truth) != svc.mix["total"]:
            raise TargetError(f"service lists {len(truth)} threads, mix says {svc.mix['total']}")
        # Where every blocked thread waits (syscall number), to know after a
        # dump when they all are back.
        probe_tids = {row["tid"] for row in truth if row["kind"] == "probe"}
        parked = {tid: nr for tid, nr in svc.syscalls().items()
                  if tid not in probe_tids and nr != "running"}
        if len(parked) != svc.mix["total"] - 1:
            raise TargetError(f"{len(parked)} threads in a syscall, expected "
                              f"{svc.mix['total'] - 1}")
        if not args.no_kernel_count:
            try:
                kc = KernelCount({row["tid"]: row["kind"] for row in truth})
            except OSError as e:
                kernel_note = f"kernel count off: {e}"
                print(f"note: {kernel_note}", file=sys.stderr)
        for rnd in range(-args.warmup, args.reps):
            for tool in rotated(tools, rnd):
                tag = "warmup" if rnd < 0 else f"rep {rnd + 1}"
                run = measure_undisturbed(
                    lambda: run_once(tool, svc, kc, parked, truth, args),
                    f"{tag:7} {tool.name:10}", args.max_foreign_run, args.retries,
                    args.retry_pause)
                kern = (f" k_eintr={run.kernel.get('k_eintr')} "
                        f"k_restarted={run.kernel.get('k_restarted')}") if kc else ""
                print(f"  {tag:7} {tool.name:10} wall={run.wall_s * 1000:8.1f} ms "
                      f"stall={run.max_stall_us:9.1f} µs (stopped/GIL "
                      f"{run.stats['max_stopped_us']:.1f}, preempted "
                      f"{run.stats['max_preempted_us']:.1f}) eintr={run.eintr}{kern} "
                      f"shown={run.parsed.get('captured', '-')} "
                      f"py_funcs={len(run.parsed.get('functions', []))} "
                      f"others={run.foreign_cpus:.2f}"
                      + (f"  !! {run.note}" if run.note else ""), file=sys.stderr)
                if rnd >= 0:
                    runs[tool.name].append(run)
                    raw.append({"round": rnd + 1, **run.__dict__})
    except TargetError as e:
        print(f"error: {e}", file=sys.stderr)
    finally:
        if kc is not None:
            kc.close()
        if svc is not None:
            svc.close()
        if snapshot_dir is not None:
            shutil.rmtree(snapshot_dir, ignore_errors=True)

    if not any(runs.values()):
        return 1
    mix = svc.mix
    kept = [r for rs in runs.values() for r in rs]
    worst = max(r.foreign_cpus for r in kept)
    env_lines = environment(SERVICE.relative_to(REPO_ROOT), tool_versions(tools))
    env_lines.insert(3, f"- interpreter: {args.python} ({first_line([args.python, '--version'])})")
    if sa_id:
        env_lines.append(f"- stackaudit binary: {sa_id}"
                         + (" (a copy taken at the start was measured)" if snapshot_dir else ""))
        if snapshot_dir is None and binary_id(resolve(args.stackaudit)) != sa_id:
            env_lines.append("- **the stackaudit binary changed during the run: its figures mix "
                             "two builds**")
    head = subprocess.run(["git", "-C", str(REPO_ROOT), "log", "-1", "--format=%h %s"],
                          capture_output=True, text=True).stdout.strip()
    if head:
        env_lines.append(f"- repository HEAD at the run: {head[:72]} (the build may include "
                         "uncommitted changes)")
    env_lines.append("- service mix: " + ", ".join(f"{k} {v}" for k, v in mix.items()))
    env_lines.append(f"- CPU used by unrelated processes during a recorded dump, worst case: "
                     f"{worst:.2f} CPUs")
    if kernel_note:
        env_lines.append(f"- {kernel_note}")
    text = "\n".join(env_lines) + "\n\n"
    text += (f"{args.reps} measured dumps per tool (after {args.warmup} warm-up), tools "
             "interleaved round-robin, one service process.\n\n")
    text += main_table(tools, runs, mix, kc is not None) + "\n"
    text += detail_table(tools, runs) + "\n"
    if kc is not None:
        text += kernel_detail(tools, runs) + "\n"
    if runs.get("stackaudit"):
        table, problems = stackaudit_table(runs["stackaudit"], truth)
        text += "stackaudit's reading of the service, all measured dumps:\n\n" + table + "\n"
        if problems:
            text += "Differences from the service's own view:\n\n" + "".join(
                f"- {p}\n" for p in problems) + "\n"
        warns = collections.Counter(w for r in runs["stackaudit"] for w in r.parsed.get("sa_warnings", []))
        if warns:
            text += "stackaudit warnings: " + "; ".join(f"{w} (×{n})" for w, n in warns.items()) + "\n\n"
    notes = collections.Counter(r.note for r in kept if r.note and "disturbed" not in r.note)
    if notes:
        text += "Notes: " + "; ".join(f"{t}: {n}×" for t, n in notes.items()) + "\n\n"
    if worst > args.max_foreign_run:
        text += (f"**Warning: other processes used up to {worst:.2f} CPUs during a recorded dump; "
                 "those figures are not representative.**\n\n")
    if skipped:
        text += "Skipped: " + "; ".join(skipped) + "\n"
    write_results(text, args.markdown, args.json,
                  {"environment": env_lines, "truth": truth, "runs": raw})
    return 0


if __name__ == "__main__":
    sys.exit(main())
