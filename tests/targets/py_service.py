"""Test fixture run by Debian's /usr/bin/python3.11: a threaded service in the
middle of its migration to asyncio. A ThreadPoolExecutor bridge pool runs
blocking calls; a second pool sits idle; two threads crunch numbers (one holds
the GIL, the other waits for it); the main thread runs an asyncio loop that is
idle in its selector until it reads "block" on stdin, after which a coroutine
calls time.sleep() and blocks the loop.

Prints "thread NAME TID TASK" per parked thread, then "ready PID"; "block" answers
"blocking" just before the loop blocks; end of input ends the process. Blocking calls sit on lines tagged
"@line:TAG" for the tests.
"""
import asyncio
import ctypes
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

libc = ctypes.CDLL(None)
held = threading.Lock()
held.acquire()  # never released
jobs = queue.Queue()
silent_peer, conn = socket.socketpair()
fifo = os.path.join(tempfile.mkdtemp(prefix="py_service_"), "fifo")
os.mkfifo(fifo)
parked = []
parked_lock = threading.Lock()


def report():
    task = sys._getframe(1).f_code.co_name
    with parked_lock:
        parked.append((threading.current_thread().name, threading.get_native_id(), task))


def fetch_quote():
    report()
    return conn.recv(1024)  # @line:recv


def next_job():
    report()
    return jobs.get()  # @line:queue


def update_cache():
    report()
    with held:  # @line:lock
        pass


def backoff():
    report()
    time.sleep(3600)  # @line:sleep


def die_with_parent():
    libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


def convert_document():
    report()
    subprocess.run(["sleep", "3600"], preexec_fn=die_with_parent)  # @line:subprocess


def tail_log():
    report()
    fd = os.open(fifo, os.O_RDONLY)
    return os.read(fd, 100)  # @line:fifo


def fifo_writer():
    with open(fifo, "wb"):
        time.sleep(3600)


def crunch():
    report()
    x = 0
    while True:
        x = (x * 31 + 7) % 1000003  # @line:crunch


def blocking_handler():
    time.sleep(600)  # @line:loop_sleep


async def handle_request():
    blocking_handler()  # @line:loop_call


async def serve():
    loop = asyncio.get_running_loop()
    blocked = asyncio.Event()

    def on_stdin():
        line = sys.stdin.readline()
        if not line:
            os._exit(0)  # the test is gone: so are we
        if line.strip() == "block":
            blocked.set()

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    report()
    await blocked.wait()
    print("blocking", flush=True)
    await handle_request()


bridge = ThreadPoolExecutor(max_workers=6, thread_name_prefix="legacy_bridge")
for task in (fetch_quote, next_job, update_cache, backoff, convert_document, tail_log):
    bridge.submit(task)
idle_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="idle_pool")
idle_pool.submit(lambda: None).result()  # its worker now waits for work
threading.Thread(target=fifo_writer, name="fifo_writer", daemon=True).start()
for i in range(2):
    threading.Thread(target=crunch, name=f"cruncher_{i}", daemon=True).start()

threading.current_thread().name = "event_loop"


async def main():
    serve_task = asyncio.ensure_future(serve())
    while len(parked) < 9:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    for name, tid, task in parked:
        print("thread", name, tid, task)
    idle = [t.native_id for t in threading.enumerate() if t.name == "idle_pool_0"][0]
    print("thread idle_pool_0", idle, "-")
    print("ready", os.getpid(), flush=True)
    await serve_task


asyncio.run(main())
