#!/usr/bin/env python3
"""stackaudit dump on the same 100-thread Python service under several CPythons, side by side.

bench/python_service.py runs under each interpreter at once: Debian's
/usr/bin/python3.11 on the host, and Debian unstable's python3.13 and
python3.14 inside the rootfs setup.sh makes, started in their own mount and
PID namespaces (a container, as the tests do). Then `stackaudit dump --format
json` takes turns on them, the first one rotated each round, R rounds; each
dump's wall time is timed here and its stop figures read from its own JSON
(capture.duration_us, stop_us p50/p99/max, threads stopped). Medians are
shown with the ratio to 3.11 of the same round. The service's probe thread
spins holding the GIL, so each dump stops at least one running thread.

Standard library only. See docs/benchmarks.md, section 6.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, from any directory
from harness import (  # noqa: E402
    REPO_ROOT,
    Target,
    TargetError,
    environment,
    exit_on_sigterm,
    first_line,
    resolve,
    rotated,
    tool_env,
    wait_for_quiet,
    write_results,
)

SERVICE = REPO_ROOT / "bench" / "python_service.py"
DEFAULT_ROOTFS = os.environ.get("STACKAUDIT_SID_ROOTFS", "/var/cache/stackaudit/sid-rootfs")


class Service:
    """python_service.py under one interpreter, on the host or in the rootfs."""

    def __init__(self, label: str, interpreter: str, rootfs: str | None, threads: int):
        self.label = label
        self.copy_dir = None
        script = str(SERVICE)
        argv = [interpreter, script, "--threads", str(threads)]
        if rootfs:
            self.copy_dir = Path(rootfs) / "tmp" / f"stackaudit-bench-{os.getpid()}"
            self.copy_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(SERVICE, self.copy_dir / SERVICE.name)
            inside = f"/tmp/{self.copy_dir.name}/{SERVICE.name}"
            argv = ["unshare", "--mount", "--pid", "--fork", "--kill-child",
                    f"--mount-proc={rootfs}/proc", "chroot", rootfs,
                    interpreter, inside, "--threads", str(threads)]
        self.target = Target(argv, label, start_timeout=120, cmd_timeout=30)
        if rootfs:  # "ready PID" gave the container's PID: the host's is unshare's child
            kids = children_of(self.target.proc.pid)
            if not kids:
                raise TargetError(f"{label}: no interpreter under unshare")
            self.target.pid = kids[0]

    def close(self) -> None:
        self.target.close()
        if self.copy_dir:
            shutil.rmtree(self.copy_dir, ignore_errors=True)


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def dump_once(stackaudit: Path, pid: int, timeout: float) -> dict:
    t0 = time.monotonic()
    r = subprocess.run([str(stackaudit), "dump", "--pid", str(pid), "--format", "json"],
                       capture_output=True, timeout=timeout, env=tool_env())
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise TargetError(f"dump of {pid} exited {r.returncode}: {r.stderr.decode()[:300]}")
    audit = json.loads(r.stdout)
    cap = audit["capture"]
    py_threads = sum(1 for t in audit["threads"] if any(f["kind"] == "python" for f in t["frames"]))
    return {
        "wall_ms": wall * 1000,
        "capture_ms": cap["duration_us"] / 1000,
        "stopped": cap["threads_stopped"],
        "stop_p50_us": cap["stop_us"]["p50"],
        "stop_max_us": cap["stop_us"]["max"],
        "threads": len(audit["threads"]),
        "python_threads": py_threads,
        "version": audit["target"]["runtime"]["version"],
        "warnings": len(audit["warnings"]),
    }


def main() -> int:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=100, help="service threads (100)")
    ap.add_argument("-r", "--reps", type=int, default=9, help="measured rounds (9)")
    ap.add_argument("--warmup", type=int, default=1, help="unrecorded rounds first (1)")
    ap.add_argument("--stackaudit", default="build/stackaudit", help="stackaudit binary")
    ap.add_argument("--rootfs", default=DEFAULT_ROOTFS, help="the Debian unstable rootfs")
    ap.add_argument("--versions", nargs="+", default=["3.11", "3.13", "3.14"],
                    help="3.11 runs on the host (Debian's), the others in the rootfs")
    ap.add_argument("--timeout", type=float, default=120, help="seconds allowed per dump")
    ap.add_argument("--quiet-wait", type=float, default=300,
                    help="seconds to wait for a quiet machine before starting (300)")
    ap.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    ap.add_argument("--json", metavar="FILE", help="also write every run as JSON to FILE")
    args = ap.parse_args()
    stackaudit = resolve(args.stackaudit)
    if os.geteuid() != 0:
        print("run_python_versions_bench: needs root (unshare, chroot, ptrace)", file=sys.stderr)
        return 2
    services: list[Service] = []
    try:
        for v in args.versions:
            if v == "3.11":
                services.append(Service("3.11 (host)", "/usr/bin/python3.11", None, args.threads))
            else:
                if not Path(args.rootfs, "usr/bin", f"python{v}").exists():
                    print(f"run_python_versions_bench: no python{v} in {args.rootfs}; "
                          "run ./setup.sh test first", file=sys.stderr)
                    return 2
                services.append(Service(f"{v} (container)", f"/usr/bin/python{v}", args.rootfs,
                                        args.threads))
        wait_for_quiet(0.15, 2, 3, args.quiet_wait, [s.target.pid for s in services])
        runs: dict[str, list[dict]] = {s.label: [] for s in services}
        for rep in range(args.warmup + args.reps):
            for s in rotated(services, rep):
                run = dump_once(stackaudit, s.target.pid, args.timeout)
                if rep >= args.warmup:
                    runs[s.label].append(run)
                time.sleep(0.2)
    finally:
        for s in services:
            s.close()

    base = runs[services[0].label]
    keys = [("wall_ms", "dump wall, ms"), ("capture_ms", "capture, ms"),
            ("stop_p50_us", "stop p50, µs"), ("stop_max_us", "stop max, µs")]
    head = "| interpreter | version | threads (with Python frames) | stopped | " + \
        " | ".join(f"{name} (ratio to 3.11)" for _, name in keys) + " |"
    lines = [head, "|" + "---|" * (4 + len(keys))]
    for s in services:
        rs = runs[s.label]
        cells = []
        for key, _ in keys:
            med = statistics.median(r[key] for r in rs)
            ratio = statistics.median(r[key] / b[key] for r, b in zip(rs, base) if b[key] > 0) \
                if any(b[key] > 0 for b in base) else float("nan")
            cells.append(f"{med:.1f} ({ratio:.2f})" if "ms" in key else f"{med:.0f} ({ratio:.2f})")
        r0 = rs[-1]
        lines.append(f"| {s.label} | {r0['version']} | {r0['threads']} ({r0['python_threads']}) | "
                     f"{statistics.median(r['stopped'] for r in rs):.0f} | " + " | ".join(cells) + " |")
    env = environment(SERVICE, {"stackaudit": first_line([str(stackaudit), "--version"])})
    text = "\n".join(env + ["", f"medians of {args.reps} rounds; ratios are medians of "
                                 "per-round ratios to 3.11", ""] + lines)
    write_results(text, args.markdown, args.json, {"runs": runs, "environment": env})
    return 0


if __name__ == "__main__":
    sys.exit(main())
