"""What the benchmark scripts in bench/ share.

A target program behind its line protocol, compiling it, reading /proc, the
CPU other processes use meanwhile (and waiting for a quiet machine), running
one tool against the target, and the helpers the summaries print with.
Standard library only. The scripts import it from their own directory,
whatever the current one is.
"""

from __future__ import annotations

import ctypes
import hashlib
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
from typing import Callable, Iterable

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
COMMON_HEADER = BENCH_DIR / "target_common.h"  # included by both C++ targets
BASELINE = "none"  # pseudo-tool: reset, wait, report, to show the noise floor
TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# Processes and paths.


def die_with_parent() -> None:
    """Runs in the child before exec: if the harness is killed, so is the child."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that `finally` still kills the target."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def tool_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DEBUGINFOD_URLS", None)  # no network lookups, ever
    env["LC_ALL"] = "C"
    return env


def first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, encoding="utf-8",
                             errors="replace", timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def resolve(path: str) -> Path:
    """A path as given if it exists (or is absolute), else from the repository root."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return REPO_ROOT / p


def is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def file_identity(path: Path) -> str:
    """sha256 prefix and mtime of a file: tells whether a binary was rebuilt mid-run."""
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        mtime = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(path.stat().st_mtime))
        return f"sha256 {digest}…, built {mtime} UTC"
    except OSError as e:
        return f"unreadable ({e})"


# --------------------------------------------------------------------------
# /proc.


def proc_stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: [0] is the state, [11] and [12]
    utime and stime. The name may hold spaces or ')', so split after the last ')'."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()


def proc_cpu_split(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds of a process."""
    fields = proc_stat_fields(pid)
    if fields is None:
        return None
    try:
        return int(fields[11]) / TICKS, int(fields[12]) / TICKS
    except (IndexError, ValueError):
        return None


def proc_cpu_seconds(pid: int) -> float | None:
    split = proc_cpu_split(pid)
    return None if split is None else split[0] + split[1]


# --------------------------------------------------------------------------
# Target programs.


class TargetError(RuntimeError):
    pass


class Target:
    """A target program behind a line protocol on its stdin/stdout: it prints
    "ready PID" once its threads are parked, then answers one line a command
    (bench_target.cpp, agent_target.cpp and python_service.py describe theirs)."""

    def __init__(self, argv: list[str], name: str, start_timeout: float, cmd_timeout: float):
        self.name = name
        self.cmd_timeout = cmd_timeout
        self._buf = b""
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # let its complaints reach the terminal
            preexec_fn=die_with_parent,
        )
        line = self._readline(start_timeout)
        m = re.fullmatch(r"ready (\d+)", line)
        if not m:
            raise TargetError(f"{name} did not say ready (got {line!r})")
        self.pid = int(m.group(1))
        self.mix = {k: int(v) for k, v in
                    (kv.split("=", 1) for kv in self.command("mix").split()[1:])}

    def _readline(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TargetError(f"{self.name} silent for {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise TargetError(f"{self.name} exited (status {self.proc.poll()})")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode(errors="replace").strip()

    def command(self, cmd: str) -> str:
        if self.proc.poll() is not None:
            raise TargetError(f"{self.name} is gone (status {self.proc.returncode})")
        try:
            self.proc.stdin.write(cmd.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError as e:
            raise TargetError(f"{self.name} closed its stdin") from e
        return self._readline(self.cmd_timeout)

    def command_ok(self, cmd: str) -> None:
        answer = self.command(cmd)
        if answer != "ok":
            raise TargetError(f"{cmd} answered {answer!r}")

    def reset(self) -> None:
        self.command_ok("reset")

    def stats(self) -> dict[str, float]:
        answer = self.command("stats")
        if not answer.startswith("stats "):
            raise TargetError(f"stats answered {answer!r}")
        return {k: float(v) for k, v in (kv.split("=", 1) for kv in answer.split()[1:])}

    def report(self) -> dict[str, float]:
        """The stall probe's answer, as bench_target and python_service give it."""
        answer = self.command("report")
        m = re.fullmatch(r"eintr=(\d+) max_stall_us=([0-9.]+)", answer)
        if not m:
            raise TargetError(f"report answered {answer!r}")
        return {"eintr": int(m.group(1)), "max_stall_us": float(m.group(2))}

    def unfreeze_if_stopped(self) -> bool:
        """A tool killed mid-dump may leave the target in group stop; undo it."""
        fields = proc_stat_fields(self.pid)
        if fields and fields[0] in ("T", "t"):
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
                print(f"warning: {self.name} {self.proc.pid} did not die", file=sys.stderr)
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


class BenchTarget(Target):
    """bench_target (bench/bench_target.cpp), with --spinners S busy threads."""

    def __init__(self, path: Path, threads: int, start_timeout: float, cmd_timeout: float,
                 spinners: int = 0):
        super().__init__([str(path), "--threads", str(threads), "--spinners", str(spinners)],
                         "bench_target", start_timeout, cmd_timeout)


def compile_target(name: str, if_impossible: str, cache_prefix: str | None = None) -> Path:
    """bench/<name>.cpp built with the flags bench/CMakeLists.txt uses.

    With cache_prefix, into /tmp/<cache_prefix>-<hash of the sources>/, reused
    while the sources are unchanged; else into a fresh temporary directory.
    Exits with `if_impossible` when there is no g++ or no source."""
    src = BENCH_DIR / f"{name}.cpp"
    cxx = shutil.which("g++")
    if not (src.exists() and COMMON_HEADER.exists() and cxx):
        sys.exit(f"error: {if_impossible}")
    if cache_prefix is None:
        out = Path(tempfile.mkdtemp(prefix="stackaudit-bench-")) / name
    else:
        sources = hashlib.sha256(src.read_bytes() + COMMON_HEADER.read_bytes())
        out = Path(tempfile.gettempdir()) / f"{cache_prefix}-{sources.hexdigest()[:12]}" / name
        if out.exists():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
    print(f"compiling {src} -> {out}", file=sys.stderr)
    partial = out.with_suffix(".tmp")  # renamed once complete: an interrupted build is not reused
    subprocess.run([cxx, "-std=c++20", "-O2", "-g", "-pthread", "-Wall", "-Wextra",
                    "-o", str(partial), str(src)], check=True, timeout=300)
    partial.rename(out)
    return out


def build_target_if_missing(path: Path) -> Path:
    """bench_target at `path`, or compiled from its source if there is none."""
    if path.exists():
        return path
    print(f"note: {path} not found", file=sys.stderr)
    return compile_target("bench_target", f"no bench_target at {path}; build it with "
                          "`cmake --build build --target bench_target`")


# --------------------------------------------------------------------------
# Other processes' CPU: the noise in every figure.


class ForeignCpu:
    """CPU time the rest of the machine used while we measured.

    Machine-wide busy time from /proc/stat minus what this harness and its
    reaped children (target and tools) used: what is left is someone else's
    work competing with the tools and the probe, i.e. noise in the figures.
    """

    def __init__(self, live_pids: Iterable[int] = ()) -> None:
        # live_pids: children still running (target, agent) whose CPU is ours
        # too; os.times() only counts children once they are reaped.
        self.live_pids = list(live_pids)
        self.t0, self.busy0, self.own0 = time.monotonic(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float:
        try:
            fields = Path("/proc/stat").read_text(encoding="utf-8", errors="replace").split("\n", 1)[0].split()[1:]
        except OSError:
            return 0.0
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
        return (user + nice + system + irq + softirq) / TICKS

    def _own(self) -> float:
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        for pid in self.live_pids:
            own += proc_cpu_seconds(pid) or 0.0
        return own

    def cores(self) -> float:
        wall = time.monotonic() - self.t0
        foreign = (self._busy() - self.busy0) - (self._own() - self.own0)
        return max(0.0, foreign / wall) if wall > 0 else 0.0


def foreign_cpus_over(seconds: float, live_pids: Iterable[int] = ()) -> float:
    """CPUs other processes used during the next `seconds`."""
    sample = ForeignCpu(live_pids)
    time.sleep(seconds)
    return sample.cores()


def wait_for_quiet(limit: float, window: float, calm_windows: int, budget: float,
                   live_pids: Iterable[int] = ()) -> float:
    """Wait until other processes use at most `limit` CPUs over `calm_windows`
    windows of `window` seconds in a row, or `budget` seconds have passed;
    returns the last window's figure (above `limit` if we gave up)."""
    live_pids = list(live_pids)
    give_up = time.monotonic() + budget
    calm = 0
    while True:
        used = foreign_cpus_over(window, live_pids)
        calm = calm + 1 if used <= limit else 0
        if calm >= calm_windows or time.monotonic() >= give_up:
            return used
        if calm == 0:
            print(f"  waiting for a quiet machine (other processes use {used:.2f} CPUs)",
                  file=sys.stderr)


# --------------------------------------------------------------------------
# Tools and runs.


@dataclass
class Tool:
    name: str
    argv: Callable[[int], list[str]]
    ok_codes: tuple[int, ...]
    # stdout (and whatever else the script passes) -> {"captured": threads shown, ...}
    parse: Callable[..., dict]
    version: str = ""
    window: float | None = None  # stop it with SIGINT after this long (austin)

    def accepts(self, code: int | None) -> bool:
        # A tool stopped at the end of its window may die of that SIGINT.
        return code in self.ok_codes or (bool(self.window) and code == -signal.SIGINT)


def stackaudit_dump_argv(binary: Path) -> Callable[[int], list[str]]:
    return lambda pid: [str(binary), "dump", "--pid", str(pid), "--format", "json"]


def stackaudit_tool(binary: Path, parse: Callable[..., dict]) -> Tool:
    return Tool("stackaudit", stackaudit_dump_argv(binary), (0, 1), parse,
                first_line([str(binary), "--version"]))


def eu_stack_tool(binary: str, parse: Callable[..., dict]) -> Tool:
    # exit 1 means "some frames could not be unwound", still a dump
    return Tool("eu-stack", lambda pid: [binary, "-p", str(pid)], (0, 1), parse,
                first_line([binary, "--version"]))


def idle_tool() -> Tool:
    return Tool(BASELINE, lambda pid: [], (0,), lambda *_: {}, "no tool: idle window")


def tool_versions(tools: list[Tool]) -> dict[str, str]:
    return {t.name: t.version for t in tools if t.name != BASELINE}


@dataclass
class ToolOutput:
    wall_s: float
    exit: int | None = None  # None: the baseline, or killed at the timeout
    timed_out: bool = False
    at_window: bool = False  # sent SIGINT at the end of its window
    stdout: bytes = b""
    stderr: bytes = b""
    peak_rss_kib: int = 0  # with measure_rss: GNU time's %M, 0 when unknown
    cpu_s: float = 0.0  # with measure_rss: GNU time's %U + %S (the tool and its reaped children)


# GNU time (Debian package `time`) reports a tool's peak RSS: the largest of
# the tool's and of the children it reaped (stackaudit's stopper process), not
# their sum. A process forked from this script would carry the script's own
# RSS into its peak (the kernel keeps the high-water mark across exec); time
# forks the tool from its own small image. The death signal die_with_parent
# sets is time's, not the tool's: if this script is SIGKILLed, a one-shot dump
# runs to its end (any other end of the script kills the tool's session).
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
RSS_FILE = Path(tempfile.gettempdir()) / f"stackaudit-bench-rss-{os.getpid()}"


def read_time_file() -> tuple[int, float]:
    """GNU time's "%M %U %S" line: peak RSS in KiB, user + system CPU seconds."""
    try:
        rss, user, system = RSS_FILE.read_text().splitlines()[-1].split()
        return int(rss), float(user) + float(system)
    except (OSError, ValueError, IndexError):
        return 0, 0.0

    def error_line(self) -> str:
        """The last line the tool wrote to stderr, to note a failed run with."""
        tail = self.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return tail[0]


def run_tool(tool: Tool, pid: int, timeout: float, idle_window: float,
             measure_rss: bool = False) -> ToolOutput:
    """One dump of `pid` by `tool` (for the baseline, an idle window). The
    tool runs in a session of its own so that it is killed whole. With
    measure_rss (and GNU time installed) it runs under GNU time, whose own
    start (well under a millisecond) then counts in the wall time."""
    t0 = time.perf_counter()
    if tool.name == BASELINE:
        time.sleep(idle_window)
        return ToolOutput(time.perf_counter() - t0)
    argv = tool.argv(pid)
    if measure_rss and GNU_TIME:
        RSS_FILE.unlink(missing_ok=True)
        argv = [GNU_TIME, "-f", "%M %U %S", "-o", str(RSS_FILE)] + argv
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=tool_env(), start_new_session=True,
                            preexec_fn=die_with_parent)
    try:
        at_window = False
        try:
            out, err = proc.communicate(timeout=tool.window or timeout)
        except subprocess.TimeoutExpired:
            if tool.window is None:
                raise
            os.killpg(proc.pid, signal.SIGINT)  # the end of its window
            at_window = True
            out, err = proc.communicate(timeout=5)
        wall = time.perf_counter() - t0
        rss, cpu = read_time_file() if measure_rss and GNU_TIME else (0, 0.0)
        return ToolOutput(wall, proc.returncode, False, at_window, out, err, rss, cpu)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return ToolOutput(time.perf_counter() - t0, None, True, False, out, err)
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM): do not leave a tracer behind.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


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
    peak_rss_kib: int = 0  # the tool's (ToolOutput.peak_rss_kib)
    cpu_s: float = 0.0  # the tool's (ToolOutput.cpu_s)


def add_note(note: str, more: str) -> str:
    return f"{note}; {more}" if note else more


def measure_undisturbed(measure: Callable[[], Run], label: str, limit: float, retries: int,
                        pause: float) -> Run:
    """measure() again, up to `retries` times, while other processes used more
    than `limit` CPUs during it; a last disturbed run is kept, with a note."""
    for attempt in range(retries + 1):
        run = measure()
        if run.foreign_cpus <= limit:
            return run
        if attempt < retries:
            print(f"  {label} disturbed (other processes used {run.foreign_cpus:.2f} CPUs), "
                  "measuring again", file=sys.stderr)
            time.sleep(pause)
    run.note = add_note(run.note, f"disturbed: other processes used {run.foreign_cpus:.2f} CPUs")
    return run


def rotated(items: list, k: int) -> list:
    """items starting at index k (modulo): who goes first changes every round,
    so that drift on the machine hits every case alike."""
    k %= len(items)
    return items[k:] + items[:k]


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


def parsed_values(runs: list[Run], key: str) -> list:
    """parsed[key] of every run that has it."""
    return [r.parsed[key] for r in runs if r.parsed.get(key) is not None]


def environment(target_path: Path, versions: dict[str, str]) -> list[str]:
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
    lines += [f"- {name}: {version}" for name, version in versions.items()]
    return lines


def write_results(text: str, markdown: str | None, json_path: str | None, doc: dict) -> None:
    """The tables to stdout, and to the --markdown and --json files if asked."""
    print(text)
    if markdown:
        Path(markdown).write_text(text, encoding="utf-8")
    if json_path:
        Path(json_path).write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
