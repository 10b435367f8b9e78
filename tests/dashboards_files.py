#!/usr/bin/env python3
"""The files of dashboards/ say what they should.

  dashboards_files.py files STACKAUDIT_BIN SOURCE_DIR
    Every YAML file parses (python3-yaml). The Grafana dashboards are JSON
    with a ${datasource} variable of type prometheus, job/comm/instance
    variables, their own stable uid and no other data source uid; the
    provisioning files name a Prometheus data source and a folder of
    dashboards. The Kubernetes manifests: the DaemonSet has hostPID, the
    sidecar's pod shares its process namespace and the sidecar adds
    SYS_PTRACE, the monitors scrape a port the agents expose, and every
    option the agents are given is one that `stackaudit agent --help` lists.
    The rules file turned into a PrometheusRule (dashboards/README.md) keeps
    its groups.
  dashboards_files.py systemd STACKAUDIT_BIN SOURCE_DIR
    `systemd-analyze verify` accepts the systemd unit without a warning, its
    ExecStart pointed at STACKAUDIT_BIN; its options exist.

Exit 0 pass, 1 fail, 77 skipped (python3-yaml, or systemd-analyze, missing).
"""
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

SKIP = 77
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
    return cond


def agent_options(stackaudit):
    out = subprocess.run([stackaudit, "agent", "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", out))


def used_options(args):
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def walk_panels(items):
    for p in items:
        yield p
        yield from walk_panels(p.get("panels", []))


def check_dashboard(path):
    name = os.path.relpath(path)
    with open(path) as f:
        try:
            d = json.load(f)
        except json.JSONDecodeError as e:
            check(False, f"{name}: not JSON: {e}")
            return None
    check(str(d.get("uid", "")).startswith("stackaudit-"), f"{name}: uid {d.get('uid')!r} is not stackaudit-...")
    check(d.get("id") is None, f"{name}: has a numeric id of someone's Grafana ({d.get('id')})")
    check(d.get("schemaVersion", 0) >= 36, f"{name}: schemaVersion {d.get('schemaVersion')} is older than Grafana 9/10's")
    check("__inputs" not in d, f"{name}: has __inputs (an export for sharing, not for provisioning)")
    variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    check(ds.get("type") == "datasource" and ds.get("query") == "prometheus",
          f"{name}: no datasource variable of type prometheus")
    for v in ("job", "comm", "instance"):
        var = variables.get(v, {})
        q = var.get("query", {})
        q = q.get("query", "") if isinstance(q, dict) else q
        check(var.get("type") == "query" and q.startswith("label_values("),
              f"{name}: no query variable {v} with label_values")
    for v in variables.values():
        if "datasource" in v:
            check(v["datasource"].get("uid") == "${datasource}", f"{name}: variable {v['name']}: data source is not ${{datasource}}")
    ids = set()
    for p in walk_panels(d.get("panels", [])):
        title = p.get("title")
        check(p.get("id") not in ids, f"{name}: panel id {p.get('id')} used twice")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        check(g.get("x", 0) + g.get("w", 0) <= 24, f"{name}: panel {title!r} is wider than the grid")
        if p.get("type") == "row":
            continue
        check(p.get("datasource", {}).get("uid") == "${datasource}", f"{name}: panel {title!r}: data source is not ${{datasource}}")
        check(bool(p.get("targets")), f"{name}: panel {title!r} has no query")
        for t in p.get("targets", []):
            check(t.get("datasource", {}).get("uid") == "${datasource}",
                  f"{name}: panel {title!r} [{t.get('refId')}]: data source is not ${{datasource}}")
            check(bool(t.get("expr")), f"{name}: panel {title!r} [{t.get('refId')}]: no expr")
    return d


def kinds(docs, kind):
    return [d for d in docs if isinstance(d, dict) and d.get("kind") == kind]


def pod_spec(doc):
    if doc.get("kind") == "Pod":
        return doc["spec"]
    return doc["spec"]["template"]["spec"]


def agent_containers(spec):
    return [c for c in spec.get("containers", []) if c.get("args", [None])[0] == "agent"
            or "stackaudit" in " ".join(c.get("command", []))]


def check_files(stackaudit, src):
    import yaml

    options = agent_options(stackaudit)
    check("--match" in options and "--listen" in options, f"`stackaudit agent --help` lists no --match/--listen: {sorted(options)}")
    root = os.path.join(src, "dashboards")

    docs = {}
    for path in sorted(glob.glob(os.path.join(root, "**", "*.y*ml"), recursive=True)):
        with open(path) as f:
            try:
                docs[path] = [d for d in yaml.safe_load_all(f) if d is not None]
            except yaml.YAMLError as e:
                check(False, f"{os.path.relpath(path, src)}: not YAML: {e}")
    print(f"{len(docs)} YAML files parse")

    dashboards = sorted(glob.glob(os.path.join(root, "grafana", "*.json")))
    check(len(dashboards) >= 3, f"expected the three dashboards in dashboards/grafana, found {len(dashboards)}")
    uids = [d.get("uid") for d in (check_dashboard(p) for p in dashboards) if d]
    check(len(uids) == len(set(uids)), f"dashboard uids repeat: {uids}")
    print(f"{len(dashboards)} dashboards checked: {uids}")

    prov = os.path.join(root, "grafana", "provisioning")
    ds = [d for p, ds_ in docs.items() if p.startswith(os.path.join(prov, "datasources")) for d in ds_]
    check(any(s.get("type") == "prometheus" for d in ds for s in d.get("datasources", [])),
          "grafana/provisioning/datasources: no prometheus data source")
    providers = [pr for p, ds_ in docs.items() if p.startswith(os.path.join(prov, "dashboards"))
                 for d in ds_ for pr in d.get("providers", [])]
    check(any(pr.get("type") == "file" and pr.get("options", {}).get("path") for pr in providers),
          "grafana/provisioning/dashboards: no file provider with a path")

    k8s = [d for p, ds_ in docs.items() if "/deploy/" in p for d in ds_]
    daemonsets = kinds(k8s, "DaemonSet")
    check(bool(daemonsets), "deploy: no DaemonSet")
    for d in daemonsets:
        check(pod_spec(d).get("hostPID") is True, f"DaemonSet {d['metadata']['name']}: no hostPID: true")
    sidecars = [d for d in k8s if d.get("kind") in ("Deployment", "StatefulSet", "Pod")
                and agent_containers(pod_spec(d))]
    check(bool(sidecars), "deploy: no workload with a stackaudit sidecar")
    for d in sidecars:
        spec = pod_spec(d)
        check(spec.get("shareProcessNamespace") is True, f"{d['kind']} {d['metadata']['name']}: no shareProcessNamespace: true")
        check(len(spec.get("containers", [])) > 1, f"{d['kind']} {d['metadata']['name']}: the agent is not beside an app container")
    exposed = set()
    for d in daemonsets + sidecars:
        for c in agent_containers(pod_spec(d)):
            where = f"{d['kind']} {d['metadata']['name']}, container {c['name']}"
            caps = c.get("securityContext", {}).get("capabilities", {}).get("add", [])
            check("SYS_PTRACE" in caps, f"{where}: does not add SYS_PTRACE")
            args = [str(a) for a in c.get("args", [])]
            for o in used_options(args):
                check(o in options, f"{where}: {o} is not an option of `stackaudit agent`")
            check("--listen" in args, f"{where}: no --listen (the default 127.0.0.1 cannot be scraped)")
            if "--listen" in args:
                port = int(args[args.index("--listen") + 1].rsplit(":", 1)[1])
                named = {p.get("name") for p in c.get("ports", []) if p.get("containerPort") == port}
                check(bool(named - {None}), f"{where}: no named containerPort {port} for --listen")
                exposed |= named
    monitors = kinds(k8s, "PodMonitor") + kinds(k8s, "ServiceMonitor")
    check(bool(monitors), "deploy: no PodMonitor or ServiceMonitor")
    for m in monitors:
        ends = m["spec"].get("podMetricsEndpoints", []) + m["spec"].get("endpoints", [])
        for e in ends:
            check(e.get("port") in exposed, f"{m['kind']} {m['metadata']['name']}: port {e.get('port')!r} is no agent's port")

    units = glob.glob(os.path.join(root, "deploy", "**", "*.service"), recursive=True)
    check(bool(units), "deploy: no systemd unit")
    for u in units:
        exec_start = [l for l in open(u) if l.startswith("ExecStart=")]
        check(len(exec_start) == 1, f"{u}: expected one ExecStart")
        for o in used_options(shlex.split(exec_start[0][len("ExecStart="):]) if exec_start else []):
            check(o in options, f"{os.path.relpath(u, src)}: {o} is not an option of `stackaudit agent`")

    # The Prometheus Operator recipe of dashboards/README.md: the rules file
    # indented under spec: of a PrometheusRule.
    rules = os.path.join(root, "prometheus", "stackaudit.rules.yml")
    with open(rules) as f:
        text = f.read()
    head = "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: stackaudit\nspec:\n"
    pr = yaml.safe_load(head + "".join("  " + l if l.strip() else l for l in text.splitlines(True)))
    check(pr["spec"]["groups"] == yaml.safe_load(text)["groups"], "the PrometheusRule recipe does not keep the rules' groups")


def check_systemd(stackaudit, src):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        print("skipped: systemd-analyze is missing (Debian package systemd)")
        sys.exit(SKIP)
    units = glob.glob(os.path.join(src, "dashboards", "deploy", "**", "*@.service"), recursive=True)
    if not check(bool(units), "no template unit stackaudit-agent@.service in dashboards/deploy"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        for u in units:
            text = open(u).read()
            # An instance of the template, running the binary under test.
            inst = os.path.join(tmp, os.path.basename(u).replace("@.", "@example."))
            with open(inst, "w") as f:
                f.write(re.sub(r"^ExecStart=\S+", "ExecStart=" + stackaudit, text, flags=re.M))
            r = subprocess.run([analyze, "verify", inst], capture_output=True, text=True)
            said = (r.stdout + r.stderr).strip()
            if "not been booted with systemd" in said or "Failed to initialize manager" in said:
                print(f"skipped: systemd-analyze verify cannot run here: {said}")
                sys.exit(SKIP)
            check(r.returncode == 0 and not said,
                  f"systemd-analyze verify {os.path.basename(u)}: exit {r.returncode}: {said}")
            print(f"systemd-analyze verify {os.path.basename(u)}: exit {r.returncode}{', ' + said if said else ''}")


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("files", "systemd"):
        print(__doc__)
        return 2
    mode, stackaudit, src = sys.argv[1], os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3])
    if mode == "files":
        try:
            import yaml  # noqa: F401
        except ImportError:
            print("skipped: python3's yaml module is missing (Debian package python3-yaml)")
            return SKIP
        check_files(stackaudit, src)
    else:
        check_systemd(stackaudit, src)
    if failures:
        print(f"FAIL: {len(failures)} problems:")
        for f in failures:
            print("  " + f)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
