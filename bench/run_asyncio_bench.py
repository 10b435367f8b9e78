#!/usr/bin/env python3
"""What reading asyncio tasks adds to a dump: 100, 1,000 and 10,000 pending tasks.

tests/targets/asyncio_tasks.py (the tests' fixture: fifteen named tasks in
every kind of await, plus --tasks N idle ones waiting on an Event) runs under
each interpreter asked for: Debian's /usr/bin/python3.11 on the host, and
Debian unstable's python3.13/3.14/3.15 inside the rootfs setup.sh makes
(chrooted, in their own mount and PID namespaces, as the tests start them).
For each task count, `stackaudit dump --format json` runs R times with the
tasks and R times with --no-tasks (the floor: the same dump without them),
taking turns, the first one rotated each round. Each dump's wall time is
timed here; the stop the loop thread paid and the capture's figures are read
from the dump's own JSON.

Two states of the loop:
  idle   the loop waits in its selector (epoll_wait): its thread is blocked
         and read without a stop, like any blocked thread;
  busy   --churn: a task creates and finishes 64 tasks at a time without
         pause, so the loop thread runs Python and is stopped to be read.

On 3.14+ the same reading is also done by CPython's own
`python3.X -m asyncio ps PID`, timed the same way, in the rootfs.

Standard library only. See docs/benchmarks.md, section 7.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "targets" / "asyncio_tasks.py"
DEFAULT_ROOTFS = os.environ.get("STACKAUDIT_SID_ROOTFS", "/var/cache/stackaudit/sid-rootfs")


class Fixture:
    """The fixture under one interpreter, until closed."""

    def __init__(self, version: str, rootfs: str, args: list[str]):
        self.version = version
        self.rootfs = rootfs if version != "3.11" else ""
        if self.rootfs:
            # As the tests start it: new mount and PID namespaces, chrooted,
            # tests/targets at /mnt.
            argv = ["/usr/bin/unshare", "--mount", "--pid", "--kill-child", "/bin/sh", "-c",
                    'root=$1 dir=$2 ver=$3; shift 3; mount --bind "$dir" "$root/mnt" && '
                    'exec chroot "$root" "python$ver" /mnt/asyncio_tasks.py "$@"',
                    "sh", self.rootfs, str(FIXTURE.parent), version]
        else:
            argv = ["/usr/bin/python3.11", str(FIXTURE)]
        self.proc = subprocess.Popen(argv + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.pid = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("ready"):
                self.pid = self.host_pid()
                return
        self.close()
        raise RuntimeError(f"the fixture did not start under {version}")

    def host_pid(self) -> int:
        if not self.rootfs:
            return self.proc.pid
        # unshare -> chroot'ed python: the interpreter is unshare's child.
        for _ in range(100):
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            if kids:
                return int(kids[0])
            time.sleep(0.05)
        raise RuntimeError("no interpreter under unshare")

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def timed(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=120)
    wall = time.perf_counter() - start
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: {r.stdout.strip()[-500:]} {r.stderr.strip()}")
    return wall, r.stdout


def dump_figures(out: str, loop_tid: int) -> dict:
    audit = json.loads(out)
    loop_thread = next((t for t in audit["threads"] if t["tid"] == loop_tid), None)
    tasks = sum(len(loop["tasks"]) for loop in audit["event_loops"])
    return {
        "tasks": tasks,
        "loop_captured": loop_thread["captured"] if loop_thread else "?",
        "loop_stop_us": loop_thread["stop_us"] if loop_thread else 0,
        "stop_max_us": audit["capture"]["stop_us"]["max"],
        "capture_us": audit["capture"]["duration_us"],
    }


def loop_tid_of(binary: str, pid: int) -> int:
    _, out = timed([binary, "dump", "--pid", str(pid), "--format", "json", "--max-tasks", "1"])
    loops = json.loads(out)["event_loops"]
    main = next(l for l in loops if l["thread_name"] == "event_loop")
    return main["tid"]


def measure(binary: str, version: str, rootfs: str, count: int, busy: bool, reps: int) -> dict:
    args = ["--tasks", str(count)] + (["--churn"] if busy else [])
    fixture = Fixture(version, rootfs, args)
    try:
        loop_tid = loop_tid_of(binary, fixture.pid)
        kinds = {
            "tasks": [binary, "dump", "--pid", str(fixture.pid), "--format", "json"],
            "no-tasks": [binary, "dump", "--pid", str(fixture.pid), "--format", "json",
                         "--no-tasks"],
        }
        if fixture.rootfs and version >= "3.14":
            # In the fixture's own mount and PID namespaces (it is PID 1
            # there), with a /proc of that namespace, chrooted like it.
            kinds["cpython-ps"] = [
                "/usr/bin/nsenter", "--target", str(fixture.pid), "--mount", "--pid", "--",
                "/bin/sh", "-c",
                'mountpoint -q "$1/proc" || mount -t proc proc "$1/proc"; '
                'exec chroot "$1" "python$2" -m asyncio ps 1',
                "sh", fixture.rootfs, version]
        walls: dict[str, list[float]] = {k: [] for k in kinds}
        figures: list[dict] = []
        floor: list[dict] = []  # the --no-tasks dumps' own figures
        ratios: list[float] = []
        ps_failed = 0
        names = list(kinds)
        for rep in range(reps):
            order = names[rep % len(names):] + names[:rep % len(names)]
            round_wall = {}
            for kind in order:
                try:
                    wall, out = timed(kinds[kind])
                except RuntimeError:
                    if kind != "cpython-ps":
                        raise
                    ps_failed += 1  # 3.14's reader gives up when tasks change under it
                    continue
                walls[kind].append(wall)
                round_wall[kind] = wall
                if kind == "tasks":
                    figures.append(dump_figures(out, loop_tid))
                elif kind == "no-tasks":
                    floor.append(dump_figures(out, loop_tid))
            ratios.append(round_wall["tasks"] / round_wall["no-tasks"])
        row = {
            "version": version, "where": "container" if fixture.rootfs else "host",
            "pending": count, "loop": "busy" if busy else "idle", "reps": reps,
            "tasks_read": statistics.median(f["tasks"] for f in figures),
            "wall_ms": {k: statistics.median(v) * 1e3 for k, v in walls.items() if v},
            "cpython_ps_failed": ps_failed,
            "ratio_to_no_tasks": statistics.median(ratios),
            "loop_captured": sorted({f["loop_captured"] for f in figures}),
            "loop_stop_us_max": max(f["loop_stop_us"] for f in figures),
            "stop_max_us_median": statistics.median(f["stop_max_us"] for f in figures),
            "no_tasks_loop_stop_us_max": max(f["loop_stop_us"] for f in floor),
        }
        return row
    finally:
        fixture.close()


def markdown(rows: list[dict]) -> str:
    out = ["| interpreter | pending tasks | loop | tasks read | dump wall, ms | --no-tasks, ms | "
           "ratio | loop thread | its stop max, µs | the same, --no-tasks | any stop max, µs (median) | "
           "`python -m asyncio ps`, ms |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ps = r["wall_ms"].get("cpython-ps")
        out.append(
            f"| {r['version']} ({r['where']}) | {r['pending']:,} | {r['loop']} | "
            f"{r['tasks_read']:,.0f} | {r['wall_ms']['tasks']:.1f} | "
            f"{r['wall_ms']['no-tasks']:.1f} | {r['ratio_to_no_tasks']:.2f} | "
            f"{', '.join(r['loop_captured'])} | {r['loop_stop_us_max']} | "
            f"{r['no_tasks_loop_stop_us_max']} | "
            f"{r['stop_max_us_median']:.0f} | {f'{ps:.1f}' if ps else '—'}"
            f"{f' ({fails} failed)' if (fails := r['cpython_ps_failed']) else ''} |")
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stackaudit", default=str(REPO / "build" / "stackaudit"))
    p.add_argument("--versions", nargs="+", default=["3.11"],
                   help="3.11 runs on the host; 3.13, 3.14, 3.15 in the rootfs")
    p.add_argument("--counts", nargs="+", type=int, default=[100, 1000, 10000])
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--no-busy", action="store_true", help="only the idle loop")
    p.add_argument("--rootfs", default=DEFAULT_ROOTFS)
    p.add_argument("--markdown", help="write the table here too")
    p.add_argument("--json", help="write the rows here")
    a = p.parse_args()
    if os.geteuid() != 0:
        print("run_asyncio_bench.py: needs root (ptrace of a process that is not a child, "
              "namespaces)", file=sys.stderr)
        return 2
    if not os.access(a.stackaudit, os.X_OK):
        print(f"run_asyncio_bench.py: no stackaudit binary at {a.stackaudit} "
              "(./setup.sh build makes build/stackaudit)", file=sys.stderr)
        return 2
    rows = []
    for version in a.versions:
        if version != "3.11" and not Path(a.rootfs, "usr/bin", "python" + version).exists():
            print(f"run_asyncio_bench.py: python{version} is not in {a.rootfs}; skipped",
                  file=sys.stderr)
            continue
        for busy in [False] + ([] if a.no_busy else [True]):
            for count in a.counts:
                row = measure(a.stackaudit, version, a.rootfs, count, busy, a.reps)
                rows.append(row)
                print(json.dumps(row), flush=True)
    table = markdown(rows)
    header = (f"Machine: {platform.node()}, {os.cpu_count()} CPUs, Linux {platform.release()}; "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n")
    print(header + table)
    if a.markdown:
        Path(a.markdown).write_text(header + table)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
