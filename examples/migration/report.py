#!/usr/bin/python3
"""Summaries of stackaudit's audit JSON for walkthrough.sh (standard library only).

    report.py blocking DUMP.json [DUMP.json ...]   the blocking calls found, by site
    report.py window AUDIT.json                     one window: probe latency, RSS, threads, pools, loops
"""
import json
import os
import sys
from collections import Counter


def processes(audit):
    """A dump or agent audit's per-process documents (one for a single process)."""
    return audit.get("processes") or [audit]


def site_label(site):
    if not site:
        return "?"
    where = os.path.basename(site.get("file") or "")
    if where and site.get("line"):
        where += f":{site['line']}"
    return f"{where} in {site.get('function', '?')}" if where else site.get("function", "?")


def blocking(paths):
    sites, dumps = Counter(), 0
    threads_seen, pools = Counter(), {}
    for path in paths:
        with open(path) as f:
            audit = json.load(f)
        dumps += 1
        for proc in processes(audit):
            for t in proc.get("threads", []):
                threads_seen[path] += 1
                b = t.get("blocking")
                if not b or b.get("idle"):
                    continue
                sites[(b["category"], b.get("primitive", ""), site_label(b.get("site")))] += 1
            for p in proc.get("summary", {}).get("pools", []):
                pools[p["name"]] = max(pools.get(p["name"], 0), p["threads"])
    print(f"  blocking calls in {dumps} dump(s) of the threaded service "
          f"({max(threads_seen.values(), default=0)} threads in the largest):")
    print(f"  {'category':<10} {'primitive':<28} {'site':<44} threads")
    for (category, primitive, site), n in sites.most_common(12):
        print(f"  {category:<10} {primitive[:28]:<28} {site[:44]:<44} {n}")
    if pools:
        print("  thread pools: " + ", ".join(f"{name} ({n} threads)" for name, n in sorted(pools.items())))
    print("  each of these is a call to move to an async client or to the legacy_bridge pool")


def fmt_ms(seconds):
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def window(path):
    with open(path) as f:
        audit = json.load(f)
    w = audit.get("window") or {}
    target = w.get("target", {})
    rss = target.get("rss_bytes", {}).get("avg")
    threads = target.get("threads", {})
    parts = [f"RSS avg {rss / 2**20:.1f} MiB" if rss is not None else "RSS -",
             f"threads avg {threads.get('avg', 0):.1f} (max {threads.get('max', 0):.0f})"]
    for p in w.get("probes", []):
        parts.append(f"probe {p['name']}: {p['requests']} requests, p50 {fmt_ms(p.get('p50'))}, "
                     f"p95 {fmt_ms(p.get('p95'))}, p99 {fmt_ms(p.get('p99'))}, "
                     f"errors {p.get('error_rate', 0) * 100:.1f} %")
    loops = w.get("event_loops")
    if loops and loops.get("thread_samples"):
        parts.append(f"event loop blocked in {loops.get('blocked_samples', 0)} of "
                     f"{loops['thread_samples']} samples")
    for p in w.get("pools", []):
        if p["name"] in ("legacy_bridge", "fanout"):
            parts.append(f"pool {p['name']}: {p['threads']['max']:.0f} threads max, "
                         f"{p.get('idle_share', 0) * 100:.0f} % idle")
    print("  " + "; ".join(parts))


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("blocking", "window"):
        sys.exit(__doc__)
    try:
        if sys.argv[1] == "blocking":
            blocking(sys.argv[2:])
        else:
            window(sys.argv[2])
    except (OSError, ValueError, KeyError) as error:
        sys.exit(f"report.py: {error}")


if __name__ == "__main__":
    main()
