"""Test fixture run by Debian's /usr/bin/python3.11: parks threads in common
blocking calls of a threaded Python service, prints "thread NAME TID" for
each, then "ready", and waits for stdin to close."""
import ctypes
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time

parked = []
lock = threading.Lock()
lock.acquire()  # held by the main thread for ever
jobs = queue.Queue()
a, b = socket.socketpair()  # b never sends
fifo_dir = tempfile.mkdtemp(prefix="py_park_")
fifo = os.path.join(fifo_dir, "fifo")
os.mkfifo(fifo)
libc = ctypes.CDLL(None)


def park(name, fn):
    def run():
        parked.append((name, threading.get_native_id()))
        fn()

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t


def die_with_parent():
    libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


def fifo_writer():
    with open(fifo, "wb"):  # opened for writing, never written
        time.sleep(3600)


park("py_sleep", lambda: time.sleep(3600))
park("py_lock", lambda: lock.acquire())
park("py_recv", lambda: a.recv(100))
park("py_queue", lambda: jobs.get())
park("py_subprocess", lambda: subprocess.run(["sleep", "3600"], preexec_fn=die_with_parent))
park("py_fifo_writer", fifo_writer)
park("py_fifo", lambda: os.read(os.open(fifo, os.O_RDONLY), 100))

while len(parked) < 7:
    time.sleep(0.01)
time.sleep(0.3)
for name, tid in parked:
    print("thread", name, tid)
print("ready", os.getpid(), flush=True)
sys.stdin.read()
