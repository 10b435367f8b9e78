"""Test fixture for the wait-context tests (issue 13) on a Python service:

  python3 py_waits.py

Threads, each printed as "thread NAME TID" once started:
  sqlite_writer   an INSERT on a database another connection holds an
                  exclusive lock on (sqlite's busy handler sleeps and retries)
  urllib_call     urllib.request.urlopen(timeout=3600) to a silent upstream:
                  it waits in poll() on the connected socket
  rlock_holder    holds `held` (a threading.RLock) twice and sleeps
  rlock_waiter    `with held:`
  lock_waiter     plain.acquire(): a threading.Lock the main thread holds
  rl_dl_a, rl_dl_b  a deadlock: each holds one RLock and enters the other's
Then "upstream PORT" (the silent server's port) and "ready"; it runs until
stdin closes."""
import ctypes
import os
import socket
import sqlite3
import sys
import tempfile
import threading
import urllib.request

libc = ctypes.CDLL(None)
libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL: never outlive the test
started = threading.Barrier(8)
held = threading.RLock()
plain = threading.Lock()
plain.acquire()  # held by the main thread for ever
ring = [threading.RLock(), threading.RLock()]
ring_met = threading.Barrier(2)

db = os.path.join(tempfile.mkdtemp(prefix="py_waits_"), "app.db")
holder = sqlite3.connect(db, check_same_thread=False)
holder.execute("CREATE TABLE jobs (id INTEGER)")
holder.commit()
holder.execute("BEGIN EXCLUSIVE")  # held for ever by the main thread

# The silent upstream: accepts (in its backlog) and never answers.
upstream = socket.socket()
upstream.bind(("127.0.0.1", 0))
upstream.listen(8)


printing = threading.Lock()


def say(name):
    with printing:  # one line at a time: print() may interleave its pieces
        sys.stdout.write("thread %s %d\n" % (name, threading.get_native_id()))
        sys.stdout.flush()


def sqlite_writer():
    say("sqlite_writer")
    conn = sqlite3.connect(db, timeout=3600)
    started.wait()
    conn.execute("INSERT INTO jobs VALUES (1)")  # @line:sqlite_writer


def urllib_call():
    say("urllib_call")
    started.wait()
    url = "http://127.0.0.1:%d/slow" % upstream.getsockname()[1]
    urllib.request.urlopen(url, timeout=3600)  # @line:urllib_call


def rlock_holder():
    say("rlock_holder")
    held.acquire()
    held.acquire()
    started.wait()
    threading.Event().wait()


def rlock_waiter():
    say("rlock_waiter")
    started.wait()
    with held:  # @line:rlock_waiter
        pass


def lock_waiter():
    say("lock_waiter")
    started.wait()
    plain.acquire()  # @line:lock_waiter


def ring_member(i):
    def run():
        say(threading.current_thread().name)
        with ring[i]:
            started.wait()
            ring_met.wait()
            with ring[1 - i]:  # @line:rl_deadlock
                pass

    return run


for fn in (sqlite_writer, urllib_call, rlock_holder, rlock_waiter, lock_waiter):
    threading.Thread(target=fn, name=fn.__name__, daemon=True).start()
for i, name in enumerate(("rl_dl_a", "rl_dl_b")):
    threading.Thread(target=ring_member(i), name=name, daemon=True).start()
started.wait()
print("upstream", upstream.getsockname()[1], flush=True)
print("ready", flush=True)
sys.stdin.read()
