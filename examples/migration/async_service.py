#!/usr/bin/python3
"""The "after" service: threaded_service.py's API on asyncio (aiohttp), in
the middle of its migration.

    async_service.py --port 8080 --upstream http://127.0.0.1:8081 \
        --db /tmp/async.sqlite --flag /tmp/async_weight [--broken]

Each GET /work?id=ID goes through the dual-path Router: a share async_weight
of the requests (read from the --flag file, a number from 0.0 to 1.0, re-read
when the file changes) takes the new async-native path; the rest take the
legacy path, the old synchronous handle_work() of threaded_service.py run on
the named, bounded bridge pool "legacy_bridge". At 1.0 the legacy path is
drained and its fan-out pool retired (the cutover); a lower weight brings it
back (the rollback).

The new path: the upstream calls with aiohttp's client; the SQLite write
through the bridge (sqlite3 has no async driver in Debian); the external
program through the bridge too: asyncio.create_subprocess_exec forks and
execs on the loop's own thread, which waits until the child has exec'd
(vfork), and stackaudit caught that stall in 2 % of the loop's samples at
30 requests/s (README.md). --broken leaves one upstream call as a blocking
urllib call directly in the coroutine: the slip `stackaudit gate` must
catch.
"""
import argparse
import asyncio
import concurrent.futures
import json
import logging
import os
import signal
import threading
import urllib.request
from dataclasses import dataclass
from functools import partial
from typing import Any, Awaitable, Callable

import aiohttp
from aiohttp import web

import threaded_service as legacy

log = logging.getLogger("async_service")

# Dedicated, bounded executor for legacy blocking calls.
LEGACY_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=10,
                                                    thread_name_prefix="legacy_bridge")

BROKEN = False


def start_bridge_threads(pool: concurrent.futures.ThreadPoolExecutor) -> None:
    """Start every thread of the pool now, before the loop runs. Otherwise
    run_in_executor starts one when none is idle, on the loop's own thread,
    and Thread.start() waits there until the new thread runs: a short
    blocking call that stackaudit sees in about 1 sample in 100 at 10 %
    async. Each no-op task waits on a barrier of max_workers parties, so all
    of them run at once, each on a thread of its own."""
    barrier = threading.Barrier(pool._max_workers)
    for future in [pool.submit(barrier.wait, 10) for _ in range(pool._max_workers)]:
        future.result()


async def run_legacy(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Await a synchronous function on the bridge pool without blocking the loop."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(LEGACY_POOL, partial(fn, *args, **kwargs))
    except asyncio.CancelledError:
        # The coroutine is cancelled; the executor task runs to completion.
        log.warning("Bridge call cancelled; underlying thread finishes its work.")
        raise


class FlagFile:
    """async_weight from a file holding one number, 0.0 to 1.0. The file is
    looked at (one stat) at most every 100 ms and read again only when its
    modification time or size changed; a missing file means 0.0 (everything on
    the legacy path), an unreadable number keeps the last weight."""

    def __init__(self, path: str):
        self.path = path
        self.weight = 0.0
        self._seen = None
        self._checked = float("-inf")

    def read(self, now: float) -> float:
        if now - self._checked < 0.1:
            return self.weight
        self._checked = now
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        key = (st.st_mtime_ns, st.st_size) if st else None
        if key == self._seen:
            return self.weight
        self._seen = key
        if st is None:
            new = 0.0
        else:
            try:
                with open(self.path) as f:
                    new = min(1.0, max(0.0, float(f.read().strip())))
            except (OSError, ValueError) as error:
                log.warning("flag file %s: %s; async_weight stays %.2f", self.path, error, self.weight)
                return self.weight
        if new != self.weight:
            log.info("async_weight %.2f -> %.2f (%s)", self.weight, new, self.path)
        self.weight = new
        return new


@dataclass
class Router:
    async_weight: float  # 0.0 .. 1.0, sourced from a live config flag
    legacy: Callable[[dict], Awaitable[Any]]
    new: Callable[[dict], Awaitable[Any]]

    def __post_init__(self):
        self._inflight: dict[str, asyncio.Task] = {}

    async def handle(self, req_id: str, payload: dict) -> Any:
        loop = asyncio.get_running_loop()
        use_new = (loop.time() % 1.0) < self.async_weight
        coro = self.new(payload) if use_new else self.legacy(payload)
        task = asyncio.create_task(coro, name=f"route-{req_id}")
        self._inflight[req_id] = task
        try:
            return await task
        finally:
            self._inflight.pop(req_id, None)

    async def drain(self, timeout: float = 30.0) -> None:
        if not self._inflight:
            return
        done, _ = await asyncio.wait(list(self._inflight.values()), timeout=timeout)
        for t in done:
            if not t.cancelled() and t.exception():
                log.error("Drained task failed: %s", t.exception())


class FlaggedRouter(Router):
    """The Router, its weight following the flag file; at 1.0 it cuts over
    (drains the legacy path, retires its fan-out pool), below 1.0 again it
    brings the legacy pool back."""

    def __init__(self, flag: FlagFile, legacy, new):
        super().__init__(async_weight=0.0, legacy=legacy, new=new)
        self.flag = flag
        self._legacy_inflight = 0
        self._cutover: asyncio.Task | None = None
        self.legacy_retired = False

    async def handle(self, req_id: str, payload: dict) -> Any:
        loop = asyncio.get_running_loop()
        self.async_weight = self.flag.read(loop.time())
        if self.async_weight >= 1.0 and not self.legacy_retired and self._cutover is None:
            self._cutover = asyncio.create_task(self.cutover(), name="cutover")
        elif self.async_weight < 1.0 and self.legacy_retired:
            # Rollback: the legacy path needs its fan-out pool again.
            legacy.FANOUT = concurrent.futures.ThreadPoolExecutor(
                max_workers=legacy.FANOUT._max_workers, thread_name_prefix="fanout")
            self.legacy_retired = False
            log.info("rollback: legacy fan-out pool restored")
        return await super().handle(req_id, payload)

    async def cutover(self, timeout: float = 45.0) -> None:
        """Drain in-flight legacy requests, then retire the legacy fan-out pool."""
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while self._legacy_inflight and loop.time() < deadline:
                await asyncio.sleep(0.05)
            if self.async_weight < 1.0:
                return  # rolled back meanwhile
            pool = legacy.FANOUT
            # ThreadPoolExecutor.shutdown(wait=True) is blocking; offload it.
            await run_legacy(pool.shutdown, True)
            self.legacy_retired = True
            log.info("cutover complete: legacy fan-out pool retired")
        finally:
            self._cutover = None

    async def run_legacy_path(self, payload: dict) -> dict:
        self._legacy_inflight += 1
        try:
            return await run_legacy(legacy.handle_work, payload["id"], "legacy")
        finally:
            self._legacy_inflight -= 1


def item_url(request_id: str, part: int) -> str:
    return f"{legacy.UPSTREAM_URL}/item/{legacy.urllib.parse.quote(request_id)}/{part}"


async def fetch_item(session: aiohttp.ClientSession, request_id: str, part: int) -> int:
    async with session.get(item_url(request_id, part)) as answer:
        answer.raise_for_status()
        return (await answer.json())["value"]


async def new_path(session: aiohttp.ClientSession, payload: dict) -> dict:
    request_id = payload["id"]
    parts = range(legacy.FANOUT_CALLS)
    values = []
    if BROKEN:
        # --broken only: the slip the gate must catch. One upstream call left
        # as the old urllib call, directly in this coroutine: for the
        # upstream's whole delay it holds the event loop, and every request.
        with urllib.request.urlopen(item_url(request_id, 0), timeout=5) as answer:  # @line:broken_urllib
            values.append(json.load(answer)["value"])
        parts = parts[1:]
    values += await asyncio.gather(*(fetch_item(session, request_id, p) for p in parts))
    total = sum(values)
    row = await run_legacy(legacy.store, request_id, total, "async")
    return {"id": request_id, "values": values, "total": total, "row": row,
            "stamp": await run_legacy(legacy.stamp), "path": "async"}


def make_app(router: FlaggedRouter) -> web.Application:
    counter = 0

    async def work(request: web.Request) -> web.Response:
        nonlocal counter
        counter += 1
        request_id = request.query.get("id", "anonymous")[:64]
        try:
            body = await router.handle(f"{request_id}-{counter}", {"id": request_id})
        except Exception as error:  # an upstream or database failure is a 502 for the caller
            return web.Response(status=502, text=f"upstream failed: {error}\n")
        return web.json_response(body)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/work", work)
    app.router.add_get("/health", health)
    return app


async def serve(args) -> None:
    loop = asyncio.get_running_loop()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200),
                                    timeout=aiohttp.ClientTimeout(total=legacy.UPSTREAM_TIMEOUT))
    router = FlaggedRouter(FlagFile(args.flag), legacy=None, new=None)
    router.legacy = router.run_legacy_path
    router.new = partial(new_path, session)
    router.async_weight = router.flag.read(loop.time())
    runner = web.AppRunner(make_app(router), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=512)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    print(f"async service listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.shutdown()
    await router.drain(timeout=10)
    await runner.cleanup()
    await session.close()
    LEGACY_POOL.shutdown(wait=False)


def main():
    global BROKEN
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: pick a free one)")
    parser.add_argument("--upstream", required=True, help="the upstream's base URL")
    parser.add_argument("--db", required=True, help="the SQLite database file")
    parser.add_argument("--flag", required=True,
                        help="the file holding async_weight (0.0 to 1.0); missing = 0.0")
    parser.add_argument("--broken", action="store_true",
                        help="leave one blocking urllib call in a coroutine (for the gate to catch)")
    args = parser.parse_args()
    BROKEN = args.broken
    logging.basicConfig(level=logging.INFO, format="async_service: %(message)s")
    legacy.configure(upstream_url=args.upstream, database=args.db)
    start_bridge_threads(LEGACY_POOL)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
