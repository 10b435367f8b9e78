# A small Flask app for `gunicorn -k gthread -w 2 gunicorn_app:app`, whose
# handlers block where a test can find them (tests/test_workers.cpp): a sleep,
# a read from a silent upstream (UPSTREAM_PORT: the test's listening socket
# that accepts and never answers), and a write to a SQLite database that
# another connection holds locked (SQLITE_DB: the test holds BEGIN EXCLUSIVE).
import os
import socket
import sqlite3
import time

from flask import Flask

app = Flask(__name__)


@app.route("/ping")
def ping():
    return "pong\n"


@app.route("/sleep")
def sleep_handler():
    time.sleep(60)  # @line:app_sleep
    return "slept\n"


@app.route("/upstream")
def upstream_handler():
    with socket.create_connection(("127.0.0.1", int(os.environ["UPSTREAM_PORT"]))) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = s.recv(4096)  # @line:app_upstream
    return data or b"empty\n"


@app.route("/write")
def write_handler():
    # A long busy timeout: the writer waits for the lock, as a real service
    # with a generous timeout does.
    db = sqlite3.connect(os.environ["SQLITE_DB"], timeout=120)
    try:
        db.execute("INSERT INTO events (what) VALUES ('request')")  # @line:app_write
        db.commit()
    finally:
        db.close()
    return "written\n"
