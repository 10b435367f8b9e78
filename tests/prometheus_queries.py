#!/usr/bin/env python3
"""Every query of dashboards/ runs on a real Prometheus scraping a real agent.

Starts tests/targets/py_service.py (a threaded service with an asyncio loop,
a bridge pool and threads blocked in several categories; its loop is made to
block), the HTTP fixture for two latency probes (one always answers, one
answers 404 and 503 in turn), `stackaudit agent` on the service, and
Prometheus (scrape and rule evaluation every second, the rules of
dashboards/prometheus loaded). Once Prometheus holds MIN_SCRAPES scrapes, it
runs through the HTTP API every PromQL expression of every Grafana dashboard
(panel targets and template variables, with Grafana's variables filled in
the way Grafana would) and every recording and alert rule. Each must parse;
each must return data unless EXPECTED_EMPTY lists it with the reason; every
metric name they use must exist in Prometheus. A metric renamed in the agent
fails here, not on a user's dashboard.

Usage: prometheus_queries.py STACKAUDIT_BIN SOURCE_DIR
Exit 0 pass, 1 fail, 77 skipped (prometheus, python3.11 or python3-yaml
missing).
"""
import glob
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

SKIP = 77
MIN_SCRAPES = 15
# What Grafana puts in place of its built-in variables at a 1 s scrape
# interval, and the baseline offset: short enough that the test's own
# data covers it.
BUILTINS = {"__rate_interval": "10s", "__interval": "5s", "__range": "1m", "baseline": "5s"}

# Expressions the fixture does not light up, by key, and why.
EXPECTED_EMPTY = {
    "stackaudit-agent-cost.json: Snapshot errors [A]":
        "stackaudit_snapshot_errors_total appears at the first error; every thread of the fixture is captured",
    "alert StackauditTargetDown": "the target is up",
    "alert StackauditAwaitCycle": "py_service's tasks await no task in a ring",
    "alert StackauditBlockingSiteHot": "no site of the fixture holds half of its threads' time",
    "alert StackauditThreadsGrowing": "compares with an hour ago, before the test's data",
    "alert StackauditMemoryGrowing": "compares with an hour ago, before the test's data",
    "alert StackauditProbeSlowerThanBaseline": "compares with a day ago, before the test's data",
    "alert StackauditStopsSlow": "stops last microseconds, not 5 ms (may fire on a starved machine)",
    "alert StackauditStopWatchdogFired": "the watchdog never fires on a healthy machine",
}
# Metric names the queries use that a healthy agent does not export.
ABSENT_NAMES = {
    "stackaudit_snapshot_errors_total": "appears at the first capture error",
}
# The values each variable's query must offer for the fixture.
FIXTURE_VALUES = {"job": {"stackaudit"}, "comm": {"python3.11"}, "probe": {"api", "mixed"},
                  "pool": {"legacy_bridge"}}


def skip(what):
    print(f"skipped: {what}")
    sys.exit(SKIP)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_until(proc, prefix, seconds):
    """The first line of proc's stdout starting with prefix, or None."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            return None
        if line.startswith(prefix):
            return line.strip()
    return None


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def wait_http(url, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            http_get(url, timeout=1)
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.2)
    raise SystemExit(f"FAIL: {what} did not answer at {url} within {seconds} s")


class Prometheus:
    def __init__(self, base):
        self.base = base

    def api(self, path, params):
        url = self.base + path + "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            body = http_get(url, timeout=10)
        except urllib.error.HTTPError as e:  # 400/422: a query that does not parse or run
            body = e.read().decode()
        return json.loads(body)

    def query(self, expr):
        return self.api("/api/v1/query", {"query": expr})


def has_data(result):
    """A query result holds at least one value that is a number."""
    data = result["data"]
    if data["resultType"] in ("scalar", "string"):
        return True
    for s in data["result"]:
        v = s["value"][1] if "value" in s else (s["values"][-1][1] if s.get("values") else "NaN")
        if not math.isnan(float(v)):
            return True
    return False


def regex_value(values):
    """Grafana's rendering of a multi-value variable in a Prometheus query."""
    esc = [re.sub(r"([\\.*+?^${}()|\[\]])", r"\\\\\1", v) for v in sorted(values)]
    return esc[0] if len(esc) == 1 else "(" + "|".join(esc) + ")"


VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(expr, values):
    def one(m):
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(name)
        return values[name]

    return VAR.sub(one, expr)


def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def dashboard_queries(path):
    """(key, expr) of every panel target, and the templating list."""
    with open(path) as f:
        dash = json.load(f)
    name = os.path.basename(path)
    out = []
    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if "expr" in t:
                out.append((f"{name}: {p.get('title')} [{t.get('refId')}]", t["expr"]))
    return name, out, dash.get("templating", {}).get("list", [])


def rule_queries(path, yaml):
    with open(path) as f:
        doc = yaml.safe_load(f)
    out = []
    for g in doc["groups"]:
        for r in g["rules"]:
            kind = "rule" if "record" in r else "alert"
            out.append((f"{kind} {r.get('record') or r.get('alert')}", r["expr"]))
    return out


LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*(\w+)\s*\)\s*$", re.S)


def resolve_variables(prom, dash_name, templating, failures):
    """Runs each variable's query as Grafana would and picks every value
    (Grafana's "All"), checking the fixture's values are among them."""
    values = dict(BUILTINS)
    for v in templating:
        name = v["name"]
        if v["type"] == "datasource":
            values[name] = "prometheus"
            continue
        if v["type"] == "custom":
            if name not in values:
                failures.append(f"{dash_name}: variable ${name}: the test has no value for this custom variable")
            continue
        if v["type"] != "query":
            failures.append(f"{dash_name}: variable ${name}: type {v['type']} is not checked by this test")
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = LABEL_VALUES.match(q)
        if not m:
            failures.append(f"{dash_name}: variable ${name}: {q!r} is not label_values(SELECTOR, LABEL)")
            continue
        selector = substitute(m.group(1), values)
        label = m.group(2)
        r = prom.api("/api/v1/series", {"match[]": selector, "start": time.time() - 3600})
        if r.get("status") != "success":
            failures.append(f"{dash_name}: variable ${name}: {selector}: {r.get('error')}")
            continue
        found = {s[label] for s in r["data"] if label in s}
        want = FIXTURE_VALUES.get(name, set())
        if not found or not want <= found:
            failures.append(f"{dash_name}: variable ${name}: {q} offers {sorted(found)}, "
                            f"expected {sorted(want) or 'some values'}")
            found |= want
        print(f"  ${name} = {sorted(found)}")
        values[name] = regex_value(found)
    return values


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    stackaudit, src = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    prometheus_bin = shutil.which("prometheus") or ("/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None)
    if not prometheus_bin:
        skip("prometheus is missing (Debian package prometheus)")
    if not os.access("/usr/bin/python3.11", os.X_OK):
        skip("/usr/bin/python3.11 is missing (Debian package python3.11), the fixture service's interpreter")
    try:
        import yaml
    except ImportError:
        skip("python3's yaml module is missing (Debian package python3-yaml)")

    rules = os.path.join(src, "dashboards", "prometheus", "stackaudit.rules.yml")
    dashboards = sorted(glob.glob(os.path.join(src, "dashboards", "grafana", "*.json")))
    if not dashboards:
        print("FAIL: no dashboards in dashboards/grafana")
        return 1

    tmp = tempfile.mkdtemp(prefix="stackaudit-promq-")
    procs = []

    def start(argv, **kw):
        p = subprocess.Popen(argv, **kw)
        procs.append(p)
        return p

    try:
        http = start([sys.executable, os.path.join(src, "tests", "targets", "http_fixture.py")],
                     stdout=subprocess.PIPE, text=True)
        port_line = read_until(http, "port ", 10)
        if not port_line:
            print("FAIL: the HTTP fixture did not start")
            return 1
        http_port = int(port_line.split()[1])

        service = start(["/usr/bin/python3.11", os.path.join(src, "tests", "targets", "py_service.py")],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = read_until(service, "ready ", 30)
        if not ready:
            print("FAIL: the fixture service did not get ready")
            return 1
        pid = ready.split()[1]
        service.stdin.write("block\n")
        service.stdin.flush()
        if not read_until(service, "blocking", 10):
            print("FAIL: the fixture service's loop did not block")
            return 1

        agent_port = free_port()
        agent = start([stackaudit, "agent", "--pid", pid, "--interval", "250ms",
                       "--listen", f"127.0.0.1:{agent_port}",
                       "--probe", f"api=http://127.0.0.1:{http_port}/delay/5",
                       "--probe", f"mixed=http://127.0.0.1:{http_port}/mixed",
                       "--probe-rate", "10/s", "--log-level", "warn"])
        wait_http(f"http://127.0.0.1:{agent_port}/metrics", 30, "stackaudit agent")

        prom_port = free_port()
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w") as f:
            yaml.safe_dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                            "rule_files": [rules],
                            "scrape_configs": [{"job_name": "stackaudit",
                                                "static_configs": [{"targets": [f"127.0.0.1:{agent_port}"]}]}]},
                           f)
        start([prometheus_bin, f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
               f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
              stdout=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{prom_port}"
        wait_http(base + "/-/ready", 30, "prometheus")
        prom = Prometheus(base)

        # Wait for enough scrapes (and rule evaluations) to be stored.
        scrapes = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if agent.poll() is not None:
                print(f"FAIL: the agent exited ({agent.returncode}) while Prometheus scraped it")
                return 1
            r = prom.query('count_over_time(up{job="stackaudit"}[5m])')
            res = r.get("data", {}).get("result", [])
            scrapes = int(float(res[0]["value"][1])) if res else 0
            if scrapes >= MIN_SCRAPES:
                break
            time.sleep(1)
        if scrapes < MIN_SCRAPES:
            print(f"FAIL: Prometheus stored {scrapes} scrapes in 60 s, expected {MIN_SCRAPES}")
            return 1
        up = prom.query('up{job="stackaudit"}')["data"]["result"]
        if not up or up[0]["value"][1] != "1":
            print(f"FAIL: Prometheus does not scrape the agent: {up}")
            return 1
        print(f"Prometheus holds {scrapes} scrapes of the agent on PID {pid}")

        # The rules file is loaded and each rule evaluates without an error.
        failures = []
        groups = prom.api("/api/v1/rules", {})["data"]["groups"]
        loaded = {r["name"]: r for g in groups for r in g["rules"]}
        for key, _ in rule_queries(rules, yaml):
            r = loaded.get(key.split(" ", 1)[1])
            if r is None:
                failures.append(f"{key}: not loaded by Prometheus")
            elif r.get("health") != "ok":
                failures.append(f"{key}: health {r.get('health')}: {r.get('lastError')}")

        queries = []
        for path in dashboards:
            name, qs, templating = dashboard_queries(path)
            print(f"{name}: {len(qs)} panel queries; variables:")
            values = resolve_variables(prom, name, templating, failures)
            for key, expr in qs:
                try:
                    queries.append((key, expr, substitute(expr, values)))
                except KeyError as e:
                    failures.append(f"{key}: unknown variable ${e.args[0]} in {expr}")
        for key, expr in rule_queries(rules, yaml):
            queries.append((key, expr, expr))

        keys = [k for k, _, _ in queries]
        for k in EXPECTED_EMPTY:
            if k not in keys:
                failures.append(f"EXPECTED_EMPTY names {k!r}, which is no query any more")

        empty_seen = 0
        for key, expr, q in queries:
            r = prom.query(q)
            if r.get("status") != "success":
                failures.append(f"{key}: does not run: {r.get('error')}\n    {q}")
                continue
            if has_data(r):
                if key in EXPECTED_EMPTY:
                    print(f"  note: {key} has data though listed as empty ({EXPECTED_EMPTY[key]})")
                continue
            if key in EXPECTED_EMPTY:
                empty_seen += 1
                continue
            failures.append(f"{key}: no data\n    {q}")

        names = set(prom.api("/api/v1/label/__name__/values", {})["data"])
        used = set()
        for _, expr, _ in queries:
            used |= set(re.findall(r"\b(?:stackaudit_\w+|process_\w+|[a-z_]+:stackaudit_\w+:\w+)\b", expr))
        for n in sorted(used - names):
            if n not in ABSENT_NAMES:
                failures.append(f"metric {n} is used by a query but not in Prometheus")

        print(f"{len(queries)} expressions: {len(queries) - empty_seen} with data, "
              f"{empty_seen} empty as expected; {len(used)} metric names used")
        if failures:
            print(f"FAIL: {len(failures)} problems:")
            for f in failures:
                print("  " + f)
            return 1
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
