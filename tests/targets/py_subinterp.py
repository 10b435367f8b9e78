"""Test fixture: a thread that runs Python in two interpreters at once. The
thread "bridge" calls into a sub-interpreter (3.11-3.13: the private
_xxsubinterpreters/_interpreters module; 3.14+: concurrent.interpreters),
whose code parks in time.sleep; the main thread waits in the main interpreter.

Prints "thread NAME TID TASK" per parked thread (TASK "park" is the one inside
the sub-interpreter), then "ready PID"; end of input ends it. Lines are tagged
"@line:TAG".
"""
import os
import sys
import threading

here = os.path.dirname(os.path.abspath(__file__))
said_r, said_w = os.pipe()
CODE = (f"import sys; sys.path.insert(0, {here!r}); import py_subinterp_work; "
        f"py_subinterp_work.park({said_w})")


def run_in_subinterpreter(code):
    try:
        from concurrent import interpreters  # 3.14+
    except ImportError:
        interpreters = None
    if interpreters is not None:
        interpreters.create().exec(code)  # @line:exec_public
        return
    try:
        import _interpreters as low  # 3.13
    except ImportError:
        import _xxsubinterpreters as low  # 3.11, 3.12
    low.run_string(low.create(), code)  # @line:exec_private


def bridge():
    run_in_subinterpreter(CODE)  # @line:bridge


threading.Thread(target=bridge, name="bridge", daemon=True).start()
os.read(said_r, 1)  # the sub-interpreter has said its thread id
print("thread main", threading.get_native_id(), "main", flush=True)
print("ready", os.getpid(), flush=True)
sys.stdin.read()  # @line:main_wait
os._exit(0)  # leave the sub-interpreter parked: no finalization
