#!/usr/bin/python3.11
"""python_service: a threaded CPython 3.11 service to be dumped by the Python benchmark.

Run by Debian's /usr/bin/python3.11, standard library only. It starts N
threads (--threads, default 100) parked the way a Python service parks them,
then one stall probe, and answers commands on stdin so that
bench/run_python_bench.py can measure what a stack-dumping tool did to it.

The mix, as shares of N (the idle pool takes what the others leave):

  pool        ThreadPoolExecutor workers waiting for work (SimpleQueue.get)
  sleep       time.sleep(3600)
  recv        socket.recv on a socketpair whose peer never writes
  queue       queue.Queue.get on a queue nobody fills
  lock        threading.Lock.acquire on a lock the main thread never releases
  epoll       select.epoll().poll() with no timeout, on a silent eventfd
  recv_tmo    socket.recv on a blocking socket with SO_RCVTIMEO = 1 h
  c_epoll     libc epoll_wait(-1) called through ctypes
  c_recv_tmo  libc recv() with SO_RCVTIMEO = 1 h called through ctypes
  loop        exactly one: an asyncio event loop with nothing to do
  probe       exactly one: spins on time.perf_counter_ns(), never waits

plus the main thread, waiting on a threading.Event for shutdown.

Why two flavours of EINTR-prone waits. A ptrace stop makes epoll_wait, and a
recv on a socket with a receive timeout, return EINTR. Python's own wrappers
(select.epoll.poll, socket.recv, hence asyncio) retry EINTR themselves
(PEP 475), so the program never sees it: `epoll` and `recv_tmo` threads
count any InterruptedError that does reach them, and the count is expected to
stay 0. The `c_` threads make the same calls through ctypes, as a C extension
that does not retry would: they see every EINTR and count it. That count is
exact and is what `report` gives as eintr=. The EINTRs that Python swallows
are still real (each one costs the woken thread a trip through the GIL): the
harness counts them in the kernel, see run_python_bench.py.

The probe holds the GIL while it spins. Every other thread is blocked in a
call that released the GIL, so none of them needs it, until something wakes
one: then that thread waits for the GIL and the probe, once it hands the GIL
over, stalls until it is given back. A gap seen by the probe therefore is
either a stop of the probe itself, or a GIL hand-over to a thread that a tool
woke, or CPU contention; all three are a cost to the running Python code.

The probe also serves the protocol (it polls stdin every millisecond), so that
no other thread has to take the GIL for it while a tool is at work.
Protocol, one line each way:
  reset   -> "ok"       zero the probe's figures and the EINTR counts
  report  -> "eintr=<n> max_stall_us=<m>"
  stats   -> "stats key=value ..."
  mix     -> "mix key=value ... main=1 total=<threads in the process>"
  threads -> "threads <json>": for every thread its tid, kind, Python name and
             Python stack (innermost first), read with sys._current_frames()
  gaps    -> "gaps end:gap:vol:invol ...": the last 32 gaps over 1 ms (ns)
  quit / EOF -> exit
Prints "ready <pid>" once every thread is parked and the probe is running.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import errno
import json
import os
import queue
import resource
import select
import socket
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

# Shares of N per kind, in percent; "pool" takes the remainder, and "loop"
# and "probe" are one thread each.
SHARES = {
    "sleep": 10,
    "recv": 6,
    "queue": 6,
    "lock": 6,
    "epoll": 4,
    "recv_tmo": 4,
    "c_epoll": 5,
    "c_recv_tmo": 5,
}
KINDS = ["pool", *SHARES, "loop", "probe"]

# The function of this file each kind's stack must show (the pool's workers
# run the standard library's loop, concurrent.futures.thread._worker).
MARKER = {
    "pool": "_worker",
    "sleep": "park_sleep",
    "recv": "park_recv",
    "queue": "park_queue",
    "lock": "park_lock",
    "epoll": "park_epoll",
    "recv_tmo": "park_recv_timeout",
    "c_epoll": "park_c_epoll",
    "c_recv_tmo": "park_c_recv_timeout",
    "loop": "run_event_loop",
    "probe": "run_probe",
    "main": "main",
}

ONE_HOUR = struct.pack("ll", 3600, 0)  # struct timeval for SO_RCVTIMEO

libc = ctypes.CDLL(None, use_errno=True)  # CDLL calls release the GIL
libc.epoll_create1.argtypes = [ctypes.c_int]
libc.epoll_ctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
libc.epoll_wait.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
libc.recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.recv.restype = ctypes.c_ssize_t


def plan(n: int) -> dict[str, int]:
    mix = {k: n * pct // 100 for k, pct in SHARES.items()}
    mix["loop"] = 1
    mix["probe"] = 1
    mix["pool"] = max(0, n - sum(mix.values()))
    return {k: mix[k] for k in KINDS}


# --------------------------------------------------------------------------
# Shared state. Counters are plain ints in lists: every update happens with
# the GIL held, and the probe reads them with the GIL held.

held = threading.Lock()
held.acquire()  # by the main thread, never released
nobody_fills = queue.Queue()
shutdown = threading.Event()
kind_of: dict[int, str] = {}  # native thread id -> kind
parked_lock = threading.Lock()
counts = {
    "eintr_c_epoll": [0],
    "eintr_c_recv": [0],
    "interrupted_py": [0],  # InterruptedError reaching Python code: PEP 475 says 0
    "unexpected": [0],
}
keep_alive: list[object] = []  # sockets and fds the parked threads use


def announce(kind: str) -> None:
    with parked_lock:
        kind_of[threading.get_native_id()] = kind


def bump(name: str) -> None:
    counts[name][0] += 1


# --------------------------------------------------------------------------
# The parked threads. One function per kind, so that a stack names it.


def park_sleep() -> None:
    announce("sleep")
    while True:
        time.sleep(3600)


def park_recv(sock: socket.socket) -> None:
    announce("recv")
    sock.recv(1)  # the peer never writes
    bump("unexpected")


def park_queue() -> None:
    announce("queue")
    nobody_fills.get()
    bump("unexpected")


def park_lock() -> None:
    announce("lock")
    held.acquire()
    bump("unexpected")


def park_epoll(ep: select.epoll) -> None:
    announce("epoll")
    while True:
        try:
            ep.poll()  # timeout -1: forever
            bump("unexpected")
        except InterruptedError:
            bump("interrupted_py")


def park_recv_timeout(sock: socket.socket) -> None:
    announce("recv_tmo")
    while True:
        try:
            sock.recv(1)
            bump("unexpected")
        except InterruptedError:
            bump("interrupted_py")
        except BlockingIOError:
            pass  # the hour is up: SO_RCVTIMEO expired, wait again


def park_c_epoll(ep: int) -> None:
    announce("c_epoll")
    events = ctypes.create_string_buffer(12 * 4)  # 4 packed struct epoll_event
    while True:
        n = libc.epoll_wait(ep, events, 4, -1)
        if n < 0 and ctypes.get_errno() == errno.EINTR:
            bump("eintr_c_epoll")
        else:
            bump("unexpected")


def park_c_recv_timeout(fd: int) -> None:
    announce("c_recv_tmo")
    byte = ctypes.create_string_buffer(1)
    while True:
        n = libc.recv(fd, byte, 1, 0)
        err = ctypes.get_errno() if n < 0 else 0
        if err == errno.EINTR:
            bump("eintr_c_recv")
        elif err not in (errno.EAGAIN, errno.EWOULDBLOCK):
            bump("unexpected")


def run_event_loop() -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    announce("loop")
    loop.run_forever()  # nothing scheduled: idle in its selector
    bump("unexpected")


def warm_up(barrier: threading.Barrier) -> None:
    # Every job waits for all the others, so the executor has to start one
    # worker per job; afterwards they all go idle in _worker.
    barrier.wait()


# --------------------------------------------------------------------------
# The probe.

LOOK_NS = 5_000  # gaps longer than this are classified
LOG_NS = 1_000_000  # and those longer than this are kept for the "gaps" command
POLL_NS = 1_000_000  # stdin is polled this often


class Probe:
    def __init__(self, mix: dict[str, int]) -> None:
        self.mix = mix
        self.clear()

    def clear(self) -> None:
        self.max_gap = 0
        self.max_stopped = 0  # voluntary switch in the gap: stopped, or waited for the GIL
        self.max_preempted = 0  # involuntary switch only
        self.max_other = 0  # no switch: interrupts, hypervisor, or the interpreter itself
        self.stops = 0
        self.stopped_total = 0
        self.iterations = 0
        self.t_reset = time.perf_counter_ns()
        self.long_gaps: collections.deque = collections.deque(maxlen=32)

    def handle(self, line: str) -> str | None:
        if line == "reset":
            self.clear()
            for c in counts.values():
                c[0] = 0
            return "ok"
        if line == "report":
            eintr = counts["eintr_c_epoll"][0] + counts["eintr_c_recv"][0]
            return f"eintr={eintr} max_stall_us={self.max_gap / 1000:.1f}"
        if line == "stats":
            window = max(1, time.perf_counter_ns() - self.t_reset)
            fields = {
                "eintr_c_epoll": counts["eintr_c_epoll"][0],
                "eintr_c_recv": counts["eintr_c_recv"][0],
                "interrupted_py": counts["interrupted_py"][0],
                "unexpected": counts["unexpected"][0],
                "max_stall_us": f"{self.max_gap / 1000:.1f}",
                "max_stopped_us": f"{self.max_stopped / 1000:.1f}",
                "max_preempted_us": f"{self.max_preempted / 1000:.1f}",
                "max_other_us": f"{self.max_other / 1000:.1f}",
                "probe_stops": self.stops,
                "probe_stopped_total_us": f"{self.stopped_total / 1000:.1f}",
                "loops_per_ms": f"{self.iterations * 1e6 / window:.0f}",
            }
            return "stats " + " ".join(f"{k}={v}" for k, v in fields.items())
        if line == "gaps":
            # The last gaps longer than LOG_NS: when each ended (CLOCK_MONOTONIC,
            # ns, as time.perf_counter_ns on Linux), how long, and the probe's
            # voluntary / involuntary switch counts right after it.
            return "gaps " + " ".join(f"{end}:{gap}:{v}:{iv}"
                                      for end, gap, v, iv in self.long_gaps)
        if line == "mix":
            total = sum(self.mix.values()) + 1
            return ("mix " + " ".join(f"{k}={v}" for k, v in self.mix.items())
                    + f" main=1 total={total}")
        if line == "threads":
            return "threads " + json.dumps(thread_table(), separators=(",", ":"))
        if line == "quit":
            sys.stdout.flush()
            os._exit(0)
        if line:
            return f"error unknown command {line!r}"
        return None

    def run(self, ready_line: str) -> None:
        announce("probe")
        stdin = sys.stdin.fileno()
        os.set_blocking(stdin, False)
        write(ready_line)
        pending = b""
        clock = time.perf_counter_ns
        rusage = resource.getrusage
        me = resource.RUSAGE_THREAD
        ru = rusage(me)
        vol, invol = ru.ru_nvcsw, ru.ru_nivcsw
        prev = clock()
        next_poll = prev + POLL_NS
        while True:
            now = clock()
            gap = now - prev
            if gap > self.max_gap:
                self.max_gap = gap
            if gap > LOOK_NS:
                # A spinning thread never blocks by itself: a voluntary switch
                # in the gap means it was stopped (ptrace) or handed the GIL
                # to a thread that wanted it.
                ru = rusage(me)
                if ru.ru_nvcsw != vol:
                    self.max_stopped = max(self.max_stopped, gap)
                    self.stops += ru.ru_nvcsw - vol
                    self.stopped_total += gap
                elif ru.ru_nivcsw != invol:
                    self.max_preempted = max(self.max_preempted, gap)
                else:
                    self.max_other = max(self.max_other, gap)
                vol, invol = ru.ru_nvcsw, ru.ru_nivcsw
                if gap > LOG_NS:
                    self.long_gaps.append((now, gap, ru.ru_nvcsw, ru.ru_nivcsw))
                now = clock()  # the look itself is not a stall
            prev = now
            self.iterations += 1
            if now < next_poll:
                continue
            # Poll stdin. The read releases the GIL for a moment, like any
            # I/O the running code would do; its time stays in the next gap.
            try:
                chunk = os.read(stdin, 65536)
            except BlockingIOError:
                chunk = None
            if chunk == b"":
                os._exit(0)  # EOF: the harness is gone
            if chunk:
                pending += chunk
                while b"\n" in pending:
                    raw, pending = pending.split(b"\n", 1)
                    answer = self.handle(raw.decode(errors="replace").strip())
                    if answer is not None:
                        write(answer)
                # Serving the command is not a stall; reset() cleared the
                # figures already, the others must not count it either.
                ru = rusage(me)
                vol, invol = ru.ru_nvcsw, ru.ru_nivcsw
                now = clock()
                prev = now
            next_poll = now + POLL_NS


def write(line: str) -> None:
    data = (line + "\n").encode()
    fd = sys.stdout.fileno()
    while data:
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:
            select.select([], [fd], [])


def python_stack(frame) -> list[list]:
    out = []
    while frame is not None:
        code = frame.f_code
        out.append([code.co_qualname, os.path.basename(code.co_filename), frame.f_lineno])
        frame = frame.f_back
    return out


def thread_table() -> list[dict]:
    frames = sys._current_frames()
    rows = []
    for t in threading.enumerate():
        tid = t.native_id
        kind = "main" if t is threading.main_thread() else kind_of.get(tid, "?")
        frame = frames.get(t.ident)
        rows.append({
            "tid": tid,
            "ident": t.ident,
            "name": t.name,
            "kind": kind,
            "marker": MARKER.get(kind, ""),
            "stack": python_stack(frame) if frame is not None else [],
        })
    return rows


# --------------------------------------------------------------------------
# Start-up.


def task_state(tid: int) -> str:
    try:
        with open(f"/proc/self/task/{tid}/stat", encoding="utf-8", errors="replace") as f:
            stat = f.read()
    except OSError:
        return "?"
    return stat[stat.rfind(")") + 2]


def wait_until_parked(tids: list[int], want: int, deadline_s: float) -> bool:
    give_up = time.monotonic() + deadline_s
    calm = 0
    while time.monotonic() < give_up:
        ok = len(tids) >= want and all(task_state(t) == "S" for t in tids)
        calm = calm + 1 if ok else 0
        if calm >= 2:
            return True
        time.sleep(0.02)
    return False


def start(kind: str, i: int, target, *args) -> threading.Thread:
    t = threading.Thread(target=target, args=args, name=f"{kind}-{i}", daemon=True)
    t.start()
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=100,
                    help="threads besides the main one, probe included (100)")
    args = ap.parse_args()
    if not 12 <= args.threads <= 10000:
        ap.error("--threads must be between 12 and 10000")
    mix = plan(args.threads)

    pool = ThreadPoolExecutor(max_workers=mix["pool"], thread_name_prefix="pool")
    keep_alive.append(pool)
    if mix["pool"]:
        barrier = threading.Barrier(mix["pool"])
        jobs = [pool.submit(warm_up, barrier) for _ in range(mix["pool"])]
        for j in jobs:
            j.result(timeout=60)
    for t in pool._threads:  # the workers exist now; their kind is known
        kind_of[t.native_id] = "pool"

    for i in range(mix["sleep"]):
        start("sleep", i, park_sleep)
    for i in range(mix["recv"]):
        a, b = socket.socketpair()
        keep_alive.extend([a, b])
        start("recv", i, park_recv, a)
    for i in range(mix["queue"]):
        start("queue", i, park_queue)
    for i in range(mix["lock"]):
        start("lock", i, park_lock)
    for i in range(mix["epoll"]):
        ep = select.epoll()
        ev = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        ep.register(ev, select.EPOLLIN)
        keep_alive.extend([ep, ev])
        start("epoll", i, park_epoll, ep)
    for i in range(mix["recv_tmo"]):
        a, b = socket.socketpair()  # blocking: no settimeout(), which would poll
        a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, ONE_HOUR)
        keep_alive.extend([a, b])
        start("recv_tmo", i, park_recv_timeout, a)
    for i in range(mix["c_epoll"]):
        ep = libc.epoll_create1(os.O_CLOEXEC)
        ev = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        want = struct.pack("=IQ", select.EPOLLIN, ev)  # packed struct epoll_event
        if ep < 0 or libc.epoll_ctl(ep, 1, ev, want) != 0:  # EPOLL_CTL_ADD
            sys.exit(f"python_service: epoll setup failed: {os.strerror(ctypes.get_errno())}")
        keep_alive.extend([ep, ev])
        start("c_epoll", i, park_c_epoll, ep)
    for i in range(mix["c_recv_tmo"]):
        a, b = socket.socketpair()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, ONE_HOUR)
        keep_alive.extend([a, b])
        start("c_recv_tmo", i, park_c_recv_timeout, a.fileno())
    threading.Thread(target=run_event_loop, name="event-loop", daemon=True).start()

    parked_target = sum(mix.values()) - 1  # all but the probe
    deadline = time.monotonic() + 60
    while len(kind_of) < parked_target and time.monotonic() < deadline:
        time.sleep(0.01)
    if not wait_until_parked(list(kind_of), parked_target, 60):
        print("python_service: threads did not all park within 60 s", file=sys.stderr)
        return 4

    # The probe starts last: once it spins, a thread still on its way to its
    # wait would have to fight it for the GIL.
    probe = Probe(mix)
    main_tid = threading.get_native_id()

    def probe_main() -> None:
        # Say ready only once the main thread is parked too.
        deadline = time.monotonic() + 60
        while task_state(main_tid) != "S" and time.monotonic() < deadline:
            time.sleep(0.001)
        run_probe(probe, f"ready {os.getpid()}")

    threading.Thread(target=probe_main, name="probe", daemon=True).start()
    shutdown.wait()  # forever: the probe ends the process
    return 0


def run_probe(probe: Probe, ready_line: str) -> None:
    probe.run(ready_line)


if __name__ == "__main__":
    sys.exit(main())
