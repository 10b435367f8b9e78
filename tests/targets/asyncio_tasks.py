"""Test fixture: an asyncio service whose tasks park in known places, for the
asyncio task audit (issue 12). Standard library only; CPython 3.11 and later.

Named tasks of the main loop (thread "event_loop"):
  sleeper          asyncio.sleep(3600)
  queue_getter     asyncio.Queue.get() on an empty queue
  lock_holder      holds an asyncio.Lock and waits on an Event never set
  lock_waiter      waits for that Lock
  stream_reader    StreamReader.read() from a local server that never sends
  executor_waiter  awaits run_in_executor(); its pool thread sleeps
  gather_parent    gather() of gather_child_1 and gather_child_2 (both sleep)
  taskgroup_parent a TaskGroup of tg_child_1 and tg_child_2 (both sleep)
  agen_consumer    async for over an async generator that sleeps
  cycle_a, cycle_b each awaits the other task: an await cycle, never ends
  eager_sleeper    (3.12+) started by eager_task_factory, then sleeps
  main             asyncio.run()'s task, waiting on a future never set

Options:
  --tasks N        N more tasks, idle_0 .. idle_N-1, waiting on one Event
  --churn          a task, churner, that creates and finishes 64 tasks at a
                   time without pause (the loop is never idle)
  --block          after "ready", task blocker calls time.sleep() directly:
                   the loop is blocked outside its selector
  --loop-thread    run the loop in a thread ("event_loop") that is not the
                   main thread; the main thread waits on stdin
  --second-loop    a second loop in thread "second_loop" with tasks
                   second_sleeper and second_queue_getter
  --no-cycle       without cycle_a and cycle_b (CPython 3.14's own
                   "python -m asyncio pstree" draws no tree with a cycle)
  --py-task        one more task, py_sleeper, made by the pure-Python Task
                   class (asyncio.tasks._PyTask) rather than _asyncio's C one
  --uvloop         the loops are uvloop's (Debian's python3-uvloop), which
                   stackaudit does not support: it must say so

Prints, before "ready":
  loop NAME TID             each loop thread (Linux thread id)
  executor TID              the pool thread that runs executor_waiter's job
  peer HOST:PORT            the silent server stream_reader is connected to
  task NAME STATE AWAITS FRAMES
                            what the interpreter itself says of each named
                            task: its state, the type of the future it waits
                            on (-: none), and its coroutine chain outermost
                            first as qualname:line, comma-separated (the
                            in-process truth an out-of-process reader must
                            match)
then "ready PID". End of input ends the process. Awaits sit on lines tagged
"@line:TAG".
"""

import argparse
import asyncio
import gc
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

parser = argparse.ArgumentParser()
parser.add_argument("--tasks", type=int, default=0)
parser.add_argument("--churn", action="store_true")
parser.add_argument("--block", action="store_true")
parser.add_argument("--loop-thread", action="store_true")
parser.add_argument("--second-loop", action="store_true")
parser.add_argument("--no-cycle", action="store_true")
parser.add_argument("--py-task", action="store_true")
parser.add_argument("--uvloop", action="store_true")
args = parser.parse_args()
if args.uvloop:
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

HOUR = 3600
loop_tids = {}  # loop thread name -> native id
executor_tid = []
pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blocking_pool")
# Listens, never accepts: the kernel completes the connection, nobody sends.
silent = socket.socket()
silent.bind(("127.0.0.1", 0))
silent.listen(8)


async def sleeper():
    await asyncio.sleep(HOUR)  # @line:sleep


async def queue_getter(jobs):
    return await jobs.get()  # @line:queue_get


async def lock_holder(lock, never):
    async with lock:
        await never.wait()  # @line:lock_hold


async def lock_waiter(lock):
    async with lock:  # @line:lock_wait
        pass


async def stream_reader():
    reader, writer = await asyncio.open_connection(*silent.getsockname())
    return await reader.read(100)  # @line:stream_read


def executor_job():
    executor_tid.append(threading.get_native_id())
    time.sleep(HOUR)  # @line:executor_sleep


async def executor_waiter():
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(pool, executor_job)  # @line:executor


async def gather_child():
    await asyncio.sleep(HOUR)  # @line:gather_child


async def gather_parent():
    children = [asyncio.create_task(gather_child(), name=f"gather_child_{i}") for i in (1, 2)]
    await asyncio.gather(*children)  # @line:gather


async def tg_child():
    await asyncio.sleep(HOUR)  # @line:tg_child


async def taskgroup_parent():
    async with asyncio.TaskGroup() as tg:  # @line:taskgroup
        tg.create_task(tg_child(), name="tg_child_1")
        tg.create_task(tg_child(), name="tg_child_2")


async def ticker():
    while True:
        await asyncio.sleep(HOUR)  # @line:agen_sleep
        yield 1


async def agen_consumer():
    async for _ in ticker():  # @line:agen_for
        pass


cycle = {}


async def cycle_a():
    await cycle["b"]  # @line:cycle_a


async def cycle_b():
    await cycle["a"]  # @line:cycle_b


async def eager_sleeper():
    await asyncio.sleep(HOUR)  # @line:eager


async def idle(event):
    await event.wait()  # @line:idle


async def tiny():
    await asyncio.sleep(0)


async def churner():
    while True:
        await asyncio.gather(*(asyncio.create_task(tiny()) for _ in range(64)))  # @line:churn


def blocking_call():
    time.sleep(HOUR)  # @line:block_sleep


async def blocker():
    blocking_call()  # @line:block_call


def describe(task):
    """STATE AWAITS FRAMES of a task, as the interpreter sees it."""
    state = "pending" if not task.done() else ("cancelled" if task.cancelled() else "done")
    waiter = getattr(task, "_fut_waiter", None)
    awaits = type(waiter).__name__ if waiter is not None else "-"
    frames = []
    coro = task.get_coro()
    for _ in range(64):
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        frames.append(f"{frame.f_code.co_qualname}:{frame.f_lineno}")
        nxt = getattr(coro, "cr_await", None)
        if nxt is None:
            nxt = getattr(coro, "ag_await", None)
        if type(nxt).__name__ == "async_generator_asend":
            # An async generator's __anext__: the generator is not reachable
            # from Python; the fixture knows which one it is.
            nxt = agens.get(id(task))
        coro = nxt
    return f"{state} {awaits} {','.join(frames) or '-'}"


agens = {}  # task id -> the async generator it iterates


async def settle(tasks):
    """Until every task is parked at its await (or the time is up)."""
    for _ in range(500):
        await asyncio.sleep(0.01)
        if executor_tid and all(not t.done() and getattr(t, "_fut_waiter", 1) is not None
                                for t in tasks):
            break
    await asyncio.sleep(0.1)


async def main_loop(report, done):
    asyncio.current_task().set_name("main")
    loop = asyncio.get_running_loop()
    lock = asyncio.Lock()
    never = asyncio.Event()
    jobs = asyncio.Queue()
    named = {}

    def start(name, coro):
        named[name] = asyncio.create_task(coro, name=name)
        return named[name]

    start("sleeper", sleeper())
    start("queue_getter", queue_getter(jobs))
    start("lock_holder", lock_holder(lock, never))
    await asyncio.sleep(0)  # the holder takes the lock first
    start("lock_waiter", lock_waiter(lock))
    start("stream_reader", stream_reader())
    start("executor_waiter", executor_waiter())
    start("gather_parent", gather_parent())
    start("taskgroup_parent", taskgroup_parent())
    consumer = start("agen_consumer", agen_consumer())
    if args.py_task:
        named["py_sleeper"] = asyncio.tasks._PyTask(sleeper(), loop=loop, name="py_sleeper")
    if not args.no_cycle:
        cycle["a"] = start("cycle_a", cycle_a())
        cycle["b"] = start("cycle_b", cycle_b())
    if sys.version_info >= (3, 12):
        loop.set_task_factory(asyncio.eager_task_factory)
        start("eager_sleeper", eager_sleeper())
        loop.set_task_factory(None)
    event = asyncio.Event()
    for i in range(args.tasks):
        asyncio.create_task(idle(event), name=f"idle_{i}")
    if args.churn:
        start("churner", churner())
    await asyncio.sleep(0)
    for t in asyncio.all_tasks():
        if t.get_name() in ("gather_child_1", "gather_child_2", "tg_child_1", "tg_child_2"):
            named[t.get_name()] = t
    await settle([t for n, t in named.items() if n != "churner"])
    agens[id(consumer)] = next(o for o in gc.get_objects()
                               if type(o).__name__ == "async_generator"
                               and o.ag_code is ticker.__code__)
    for name, task in sorted(named.items()):
        if name != "churner":
            report(f"task {name} {describe(task)}")
    main = asyncio.current_task()

    def finish():  # main is parked by now
        report(f"task main {describe(main)}")
        done.set()
        if args.block:
            start("blocker", blocker())

    loop.call_later(0.1, finish)
    await loop.create_future()  # @line:main_wait


async def second_main(report, done):
    asyncio.current_task().set_name("second_main")
    jobs = asyncio.Queue()
    named = [asyncio.create_task(sleeper(), name="second_sleeper"),
             asyncio.create_task(queue_getter(jobs), name="second_queue_getter")]
    await settle(named)
    for t in named:
        report(f"task {t.get_name()} {describe(t)}")
    asyncio.get_running_loop().call_later(0.1, done.set)
    await asyncio.get_running_loop().create_future()  # @line:second_wait


lines = []
lines_lock = threading.Lock()
reported = threading.Event()
second_done = threading.Event()


def run_loop(name, coro_fn, done):
    threading.current_thread().name = name
    loop_tids[name] = threading.get_native_id()

    def report(line):
        with lines_lock:
            lines.append(line)

    asyncio.run(coro_fn(report, done))


def exit_with_stdin():
    sys.stdin.read()
    os._exit(0)


threading.Thread(target=exit_with_stdin, name="stdin_watch", daemon=True).start()
threads = []
if args.second_loop:
    threads.append(threading.Thread(target=run_loop, args=("second_loop", second_main, second_done),
                                    name="second_loop", daemon=True))
else:
    second_done.set()
if args.loop_thread:
    threads.append(threading.Thread(target=run_loop, args=("event_loop", main_loop, reported),
                                    name="event_loop", daemon=True))
for t in threads:
    t.start()


def print_ready():
    reported.wait()
    second_done.wait()
    with lines_lock:
        for name, tid in sorted(loop_tids.items()):
            print("loop", name, tid)
        print("executor", executor_tid[0] if executor_tid else 0)
        print("peer %s:%d" % silent.getsockname())
        for line in lines:
            print(line)
    print("ready", os.getpid(), flush=True)


if args.loop_thread:
    print_ready()
    sys.stdin.read()  # @line:main_thread_wait
    os._exit(0)
else:
    threading.Thread(target=print_ready, name="reporter", daemon=True).start()
    run_loop("event_loop", main_loop, reported)
