"""A small HTTP(S) server for the probe tests, standard library only.

Listens on 127.0.0.1, port 0, and prints "port N" once it listens.

  /delay/MS          200 after MS milliseconds
  /status/CODE       that status at once
  /mixed             200, 404, 503, 200, 404, 503, ... in arrival order
  /stall?ms=MS       200 at once; every request that arrives in the next MS
                     milliseconds gets no answer until they have passed
  /stats             JSON: answers sent by status, requests that arrived
                     during stalls, connections seen
  /metrics           Prometheus text: app_requests_total growing at
                     --counter-rate per second, split over two label sets

--tls CERT KEY serves HTTPS. --silent accepts connections and never reads or
answers (a hung service).
"""

import argparse
import json
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

lock = threading.Lock()
answers = {}
mixed_turn = 0
stall_until = 0.0
arrived_in_stall = 0
clients = set()  # (address, port) of every connection seen: keep-alive reuses them
started = time.monotonic()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def log_message(self, *args):
        pass

    def answer(self, code, body=b"ok\n", content_type="text/plain"):
        with lock:
            answers[str(code)] = answers.get(str(code), 0) + 1
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        global mixed_turn, stall_until, arrived_in_stall
        url = urlparse(self.path)
        with lock:
            clients.add(self.client_address)
        parts = url.path.strip("/").split("/")
        if parts[0] in ("stats", "stall", "metrics"):
            self.control(parts[0], parse_qs(url.query))
            return
        with lock:
            wait = stall_until - time.monotonic()
            if wait > 0:
                arrived_in_stall += 1
        if wait > 0:
            time.sleep(wait)
        if parts[0] == "delay" and len(parts) == 2:
            time.sleep(int(parts[1]) / 1000.0)
            self.answer(200)
        elif parts[0] == "status" and len(parts) == 2:
            self.answer(int(parts[1]))
        elif parts[0] == "mixed":
            with lock:
                turn = mixed_turn
                mixed_turn += 1
            self.answer((200, 404, 503)[turn % 3])
        else:
            self.answer(404)

    def control(self, what, query):
        global stall_until
        if what == "stall":
            with lock:
                stall_until = time.monotonic() + int(query["ms"][0]) / 1000.0
            body = b"stalled\n"
        elif what == "stats":
            with lock:
                body = json.dumps(
                    {
                        "answers": answers,
                        "arrived_in_stall": arrived_in_stall,
                        "connections": len(clients),
                    }
                ).encode()
        else:
            total = args.counter_rate * (time.monotonic() - started)
            body = (
                "# HELP app_requests_total Requests served.\n"
                "# TYPE app_requests_total counter\n"
                f'app_requests_total{{code="200",path="/a b}}"}} {total * 0.75:.3f}\n'
                f'app_requests_total{{code="500"}} {total * 0.25:.3f}\n'
                f"app_requests_created 1.7e9\n"
                f"app_requests_total_other 999\n"
            ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def silent(listener):
    held = []
    while True:
        conn, _ = listener.accept()
        held.append(conn)  # never read, never answered, never closed


parser = argparse.ArgumentParser()
parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
parser.add_argument("--silent", action="store_true")
parser.add_argument("--counter-rate", type=float, default=0.0)
args = parser.parse_args()

if args.silent:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    print("port", listener.getsockname()[1], flush=True)
    silent(listener)

class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a probe that gave up (a timeout) closed its end: expected here


server = Server(("127.0.0.1", 0), Handler)
if args.tls:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.tls[0], args.tls[1])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print("port", server.server_address[1], flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    sys.exit(0)
