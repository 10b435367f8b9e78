#!/usr/bin/env python3
"""The agent over a forked-worker service: its CPU at 1 Hz.

Starts Debian's gunicorn (`-k gthread -w WORKERS`) serving the Flask app of
tests/targets/gunicorn_app.py, mostly idle (one /ping a second so the
workers are not perfectly still), then `stackaudit agent --match` on it (the
master and its workers) at --interval. After a warm-up it measures, over
--seconds, the CPU the agent and its stopper process used, the target's
processes' CPU, and the CPU other processes used meanwhile (noise). Goal:
the agent at most 1 % of one core in total.

    python3 bench/run_workers_bench.py [--workers 4] [--interval 1s] [--seconds 60]
        [--stackaudit build/stackaudit] [--markdown FILE] [--json FILE]

Needs gunicorn and python3-flask (Debian packages; ./setup.sh installs them).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

APP_DIR = harness.REPO_ROOT / "tests" / "targets"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = harness.proc_stat_fields(int(entry.name))
            if fields and len(fields) > 1 and int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds of a process and its descendants (the live ones)."""
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += harness.proc_cpu_seconds(pid) or 0.0
        todo += children(pid)
    return total


def get(port: int, path: str) -> None:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read()
    except OSError:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--interval", default="1s")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--stackaudit", default=str(harness.REPO_ROOT / "build" / "stackaudit"))
    ap.add_argument("--markdown")
    ap.add_argument("--json")
    args = ap.parse_args()
    harness.exit_on_sigterm()
    binary = harness.resolve(args.stackaudit)
    gunicorn_bin = Path("/usr/bin/gunicorn")
    if not gunicorn_bin.exists():
        print("run_workers_bench: /usr/bin/gunicorn is missing (apt-get install gunicorn python3-flask)",
              file=sys.stderr)
        return 2

    port, metrics_port = free_port(), free_port()
    env = harness.tool_env()
    env.update(UPSTREAM_PORT="1", SQLITE_DB="/dev/null")  # handlers not used here
    service = subprocess.Popen(
        [str(gunicorn_bin), "-k", "gthread", "-w", str(args.workers), "--threads", "4",
         "--log-level", "warning", "--chdir", str(APP_DIR), "-b", f"127.0.0.1:{port}",
         "gunicorn_app:app"],
        env=env, preexec_fn=harness.die_with_parent, start_new_session=True)
    agent = None
    try:
        deadline = time.monotonic() + 60
        while len(children(service.pid)) < args.workers and time.monotonic() < deadline:
            time.sleep(0.2)
        get(port, "/ping")
        agent = subprocess.Popen(
            [str(binary), "agent", "--match", f"gunicorn .*127\\.0\\.0\\.1:{port}",
             "--interval", args.interval, "--listen", f"127.0.0.1:{metrics_port}",
             "--log-level", "warn"],
            env=harness.tool_env(), preexec_fn=harness.die_with_parent)
        end_warmup = time.monotonic() + args.warmup
        while time.monotonic() < end_warmup:
            get(port, "/ping")
            time.sleep(1)
        processes = len(children(service.pid)) + 1
        foreign = harness.ForeignCpu([service.pid, agent.pid])
        agent0, target0, t0 = tree_cpu(agent.pid), tree_cpu(service.pid), time.monotonic()
        end = t0 + args.seconds
        while time.monotonic() < end:
            get(port, "/ping")
            time.sleep(1)
        wall = time.monotonic() - t0
        agent_cpu = (tree_cpu(agent.pid) - agent0) / wall
        target_cpu = (tree_cpu(service.pid) - target0) / wall
        other = foreign.cores()
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        audited = next((float(line.split()[-1]) for line in metrics.splitlines()
                        if line.startswith("stackaudit_target_processes ")), 0.0)
        rounds = next((float(line.split()[-1]) for line in metrics.splitlines()
                       if line.startswith("stackaudit_snapshots_total ")), 0.0)
    finally:
        for p in (agent, service):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
    lines = [
        "| processes (master + workers) | audited | interval | seconds | agent CPU (agent + stopper) | goal | target CPU | other processes |",
        "|---|---|---|---|---|---|---|---|",
        f"| {processes} | {audited:.0f} | {args.interval} | {wall:.0f} | **{100 * agent_cpu:.2f} % of a core** "
        f"| ≤ 1 % | {100 * target_cpu:.2f} % | {other:.2f} CPUs |",
        "",
        f"rounds: {rounds:.0f}; " + ("goal met" if agent_cpu <= 0.01 else "GOAL MISSED"),
        "",
    ]
    lines += harness.environment(gunicorn_bin, {"stackaudit": harness.file_identity(binary)})
    harness.write_results("\n".join(lines) + "\n", args.markdown, args.json,
                          {"processes": processes, "audited": audited, "interval": args.interval,
                           "seconds": wall, "agent_cpu_cores": agent_cpu, "target_cpu_cores": target_cpu,
                           "other_cpus": other, "rounds": rounds})
    return 0 if agent_cpu <= 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
