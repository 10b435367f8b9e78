#!/usr/bin/python3
"""The slow upstream both services call: every GET waits --delay seconds, then
answers a small JSON document. Standard library only (ThreadingHTTPServer).

    upstream.py --port 0 --delay 0.1

prints "upstream listening on 127.0.0.1:PORT" once it accepts connections.
"""
import argparse
import json
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real upstream speaks
    # Headers and body are two writes; with Nagle's algorithm the body would
    # wait for the client's delayed ACK (40 ms) on a kept-alive connection.
    disable_nagle_algorithm = True
    delay = 0.1

    def do_GET(self):
        time.sleep(self.delay)
        body = json.dumps({"path": self.path, "value": len(self.path), "delay": self.delay}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # one line per request would drown the walkthrough
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # both services open many connections at once


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: pick a free one)")
    parser.add_argument("--delay", type=float, default=0.1, help="seconds each answer waits (default 0.1)")
    args = parser.parse_args()
    if args.delay < 0:
        parser.error("--delay must be 0 or more")
    Handler.delay = args.delay
    server = Server(("127.0.0.1", args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"upstream listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass


if __name__ == "__main__":
    main()
