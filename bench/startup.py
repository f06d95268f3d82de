#!/usr/bin/env python3
"""Startup and memory benchmark for meshbox (issue: the scenario).

Measures, over several runs of the scenario's final state (step 5 with the egress
gateway), the time from starting `meshbox up` to the first successful answer of
`GET $GATEWAY_URL/service-a` that carries ServiceC's zone list, and the resident
memory of the running mesh (meshbox plus every process it started) when idle and
after 1000 requests.

Usage: bench/startup.py [--runs N]   (builds the release binary first)
"""
import argparse, os, re, signal, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
M = os.path.join(ROOT, "examples", "worldtime")
FILES = ["serviceA-v1-deployment.yml", "serviceA-srv.yml", "serviceA-gw.yml", "inbound-to-serviceA-vs.yml",
         "service-b-deployment.yml", "producer-internal-host.yml", "service-c-deployment.yml", "service-c-srv.yml",
         "producer-internal-host-100-c-vs.yml", "worldtime-host-se.yml", "worldtime-gw.yml",
         "outbound-srv-c-to-worldtime-vs.yml"]
SETS = ["meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY", "meshConfig.accessLogFile=/dev/stdout",
        "components.egressGateways[0].name=istio-egressgateway", "components.egressGateways[0].enabled=true"]


def tree_pids(root):
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except OSError:
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            m = re.search(r"VmRSS:\s+(\d+)", f.read())
            return int(m.group(1)) if m else 0
    except OSError:
        return 0


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except Exception:
        return 0, ""


def one_run(exe):
    home = tempfile.mkdtemp(prefix="meshbox-bench-")
    args = [exe, "up", "-n", "dev-service-mesh", "--stand-in", "worldtimeapi.org:80=worldtime"]
    for s in SETS:
        args += ["--set", s]
    args += [os.path.join(M, f) for f in FILES]
    env = dict(os.environ, MESHBOX_HOME=home)
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    url = None
    while url is None:
        line = p.stdout.readline()
        if not line:
            raise SystemExit("meshbox up exited")
        if line.startswith("export GATEWAY_URL="):
            url = "http://" + line.strip().split("=", 1)[1] + "/service-a"
    # Drain the access log so the pipe never fills.
    import threading
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    while True:
        status, body = get(url)
        if status == 200 and "Europe/Amsterdam" in body:
            break
        time.sleep(0.001)
    first = time.monotonic() - t0
    time.sleep(1.0)
    pids = tree_pids(p.pid)
    idle_total = sum(rss_kib(x) for x in pids)
    idle_meshbox = rss_kib(p.pid)
    for _ in range(1000):
        get(url)
    loaded_total = sum(rss_kib(x) for x in tree_pids(p.pid))
    loaded_meshbox = rss_kib(p.pid)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    return first, idle_meshbox, idle_total, loaded_meshbox, loaded_total, len(pids)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    exe = os.path.join(ROOT, "target", "release", "meshbox")
    rows = [one_run(exe) for _ in range(a.runs)]
    med = lambda i: statistics.median(r[i] for r in rows)
    print(f"runs: {a.runs}; processes in the mesh: {rows[0][5]} (meshbox + 3 workloads + stand-in)")
    print("| measure | median | min | max |")
    print("|---|---|---|---|")
    print(f"| `meshbox up` to first answer through ingress → A → C → egress gateway → stand-in | {med(0)*1000:.0f} ms | {min(r[0] for r in rows)*1000:.0f} ms | {max(r[0] for r in rows)*1000:.0f} ms |")
    for i, name in [(1, "meshbox process RSS, idle (control plane, 2 gateways, 3 sidecars)"), (2, "whole mesh RSS, idle (meshbox + workloads + stand-in)"),
                    (3, "meshbox process RSS after 1000 requests"), (4, "whole mesh RSS after 1000 requests")]:
        print(f"| {name} | {med(i)/1024:.1f} MiB | {min(r[i] for r in rows)/1024:.1f} MiB | {max(r[i] for r in rows)/1024:.1f} MiB |")


if __name__ == "__main__":
    main()
