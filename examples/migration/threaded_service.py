#!/usr/bin/python3
"""The "before" service: a WSGI app built the way threaded Python services
are, served by gunicorn's threaded worker:

    UPSTREAM_URL=http://127.0.0.1:8081 SERVICE_DB=/tmp/threaded.sqlite \
        gunicorn -k gthread -w 1 --threads 16 -b 127.0.0.1:8080 threaded_service:app

GET /work?id=ID fans out FANOUT_CALLS calls to the upstream on a module-level
ThreadPoolExecutor (urllib, one blocking socket each), writes a row to SQLite
and runs a small external program (subprocess.run), then answers JSON:

    {"id": "ID", "values": [..], "total": N, "row": N, "stamp": "...", "path": "threaded"}

GET /health answers "ok". async_service.py imports handle_work() from here
as its legacy path: the same code, run on its bridge pool.
"""
import json
import os
import sqlite3
import subprocess
import threading
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

UPSTREAM_URL = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:8081")
SERVICE_DB = os.environ.get("SERVICE_DB", "threaded.sqlite")
FANOUT_CALLS = int(os.environ.get("FANOUT_CALLS", "4"))
UPSTREAM_TIMEOUT = 5.0

# The fan-out pool: every request's upstream calls run here, each one a
# thread parked in a blocking socket read for the upstream's whole delay.
FANOUT = ThreadPoolExecutor(max_workers=int(os.environ.get("FANOUT_WORKERS", "32")),
                            thread_name_prefix="fanout")

_connections = threading.local()  # one SQLite connection per thread, kept open


def configure(upstream_url=None, database=None):
    """Used by async_service.py, which passes its own settings."""
    global UPSTREAM_URL, SERVICE_DB
    if upstream_url:
        UPSTREAM_URL = upstream_url
    if database:
        SERVICE_DB = database


def connect_db():
    db = getattr(_connections, "db", None)
    if db is None:
        db = sqlite3.connect(SERVICE_DB, timeout=30)
        # WAL with synchronous=NORMAL, as services commonly run SQLite: a
        # commit does not wait for the disk (checkpoints do).
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS requests (id TEXT, total INTEGER, path TEXT)")
        _connections.db = db
    return db


def fetch_item(request_id, part):
    url = f"{UPSTREAM_URL}/item/{urllib.parse.quote(request_id)}/{part}"
    with urllib.request.urlopen(url, timeout=UPSTREAM_TIMEOUT) as answer:  # @line:fanout_urlopen
        return json.load(answer)["value"]


def store(request_id, total, path):
    db = connect_db()
    with db:
        cursor = db.execute("INSERT INTO requests (id, total, path) VALUES (?, ?, ?)",
                            (request_id, total, path))
    return cursor.lastrowid


def stamp():
    done = subprocess.run(["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"], capture_output=True, text=True,
                          check=True, timeout=5)
    return done.stdout.strip()


def handle_work(request_id, path="threaded"):
    """The whole request, synchronously: fan-out, SQLite, subprocess."""
    futures = [FANOUT.submit(fetch_item, request_id, part) for part in range(FANOUT_CALLS)]
    values = [f.result(timeout=UPSTREAM_TIMEOUT + 1) for f in futures]
    total = sum(values)
    row = store(request_id, total, path)
    return {"id": request_id, "values": values, "total": total, "row": row, "stamp": stamp(),
            "path": path}


def app(environ, start_response):
    """The WSGI entry point gunicorn serves."""
    route = environ.get("PATH_INFO", "")
    if route == "/health":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\n"]
    if route != "/work":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    request_id = query.get("id", ["anonymous"])[0][:64]
    try:
        body = json.dumps(handle_work(request_id)).encode()
    except Exception as error:  # an upstream or database failure is a 502 for the caller
        start_response("502 Bad Gateway", [("Content-Type", "text/plain")])
        return [f"upstream failed: {error}\n".encode()]
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
