#!/usr/bin/python3
"""Background traffic for the walkthrough: GET URL at a constant rate, from a
few keep-alive client threads, until stopped (SIGTERM/SIGINT) or --duration.

    load.py --url http://127.0.0.1:8080/work?id=load --rate 20 [--clients 8] [--duration 30]

Open loop: request i is due at start + i/rate whether or not earlier answers
came back, and its latency counts from that due time (a slow service does not
slow the load down). On exit it prints one line: requests, errors, and the
latency percentiles, to stderr.
"""
import argparse
import http.client
import queue
import signal
import sys
import threading
import time
import urllib.parse


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second (default 20)")
    parser.add_argument("--clients", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds (default: until stopped)")
    args = parser.parse_args()
    if args.rate <= 0 or args.clients < 1:
        parser.error("--rate must be above 0 and --clients at least 1")
    url = urllib.parse.urlsplit(args.url)
    target = url.path + ("?" + url.query if url.query else "")

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    due_times: "queue.Queue[float | None]" = queue.Queue()
    latencies, errors = [], [0]
    lock = threading.Lock()

    def client():
        conn = None
        while True:
            due = due_times.get()
            if due is None:
                return
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
                conn.request("GET", target)
                answer = conn.getresponse()
                answer.read()
                ok = answer.status < 400
            except (OSError, http.client.HTTPException):
                ok = False
                if conn is not None:
                    conn.close()
                conn = None
            with lock:
                latencies.append(time.monotonic() - due)
                errors[0] += not ok

    threads = [threading.Thread(target=client, name=f"load-{i}", daemon=True)
               for i in range(args.clients)]
    for t in threads:
        t.start()
    start = time.monotonic()
    sent = 0
    while not stop.is_set():
        due = start + sent / args.rate
        if args.duration and due - start >= args.duration:
            break
        if stop.wait(max(0.0, due - time.monotonic())):
            break
        due_times.put(due)
        sent += 1
    for _ in threads:
        due_times.put(None)
    for t in threads:
        t.join(timeout=12)
    with lock:
        done = sorted(latencies)
        print(f"load: {len(done)} requests, {errors[0]} errors, p50 {percentile(done, .5) * 1000:.1f} ms, "
              f"p95 {percentile(done, .95) * 1000:.1f} ms, p99 {percentile(done, .99) * 1000:.1f} ms",
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
