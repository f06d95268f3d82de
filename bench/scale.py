#!/usr/bin/env python3
"""Config scale (issue 5): called by bench/run after the load scenarios, or alone:

    bench/scale.py [--sizes 1000,10000] [--sidecars 100]

- compile: `meshbox up` with N VirtualServices plus N ServiceEntries (one VS per SE host,
  a prefix match and a route each), the bench Gateway and bench/mesh/app.yml (two
  workloads, so one gateway and two sidecars compile the tables). Reports wall time
  from start to `export GATEWAY_URL` (parse + validate + compile + listeners up),
  meshbox's own `mesh is ready in` figure, and meshbox's RSS and peak RSS (VmHWM) then.
- apply to 100 sidecars: `meshbox up` with a Deployment of 100 replicas (100 sidecars),
  then the wall time of one `meshbox apply -f` of a VirtualService (the command returns
  after the mesh reconciled: every proxy's tables recompiled and swapped).

Prints a Markdown table on stdout.
"""
import argparse, json, os, re, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXE = os.environ.get("MESHBOX_EXE") or os.path.join(ROOT, "target", "release", "meshbox")
MESH = os.path.join(ROOT, "bench", "mesh")


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(key + r":\s+(\d+)", f.read())
        return int(m.group(1)) if m else 0


def write_objects(path, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write(f"""apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: se-{i}
spec:
  hosts:
    - svc-{i}.scale.test
  ports:
    - number: 80
      name: http
      protocol: HTTP
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: vs-{i}
spec:
  hosts:
    - svc-{i}.scale.test
  http:
    - match:
        - uri:
            prefix: /v{i}
      route:
        - destination:
            host: svc-{i}.scale.test
            port:
              number: 80
---
""")


def up(files, home):
    env = dict(os.environ, MESHBOX_HOME=home)
    t0 = time.monotonic()
    p = subprocess.Popen([EXE, "up", "-n", "bench"] + files, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    ready = {}
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    while True:
        line = p.stdout.readline()
        if not line:
            raise SystemExit("meshbox up exited")
        m = re.search(r"mesh is ready in (\d+) ms", line)
        if m:
            ready["ms"] = int(m.group(1))
            break
    wall = time.monotonic() - t0
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    return p, env, wall, ready.get("ms")


def down(p):
    import signal
    os.killpg(p.pid, signal.SIGTERM)
    p.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--sidecars", type=int, default=100)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="meshbox-scale-")
    js = {}
    rows = ["| measure | wall time | meshbox `ready in` | meshbox RSS | meshbox peak RSS |", "|---|---|---|---|---|"]
    for n in [int(x) for x in a.sizes.split(",") if x]:
        print(f"scale: {n} VirtualServices + {n} ServiceEntries", file=sys.stderr, flush=True)
        objs = os.path.join(work, f"objects-{n}.yml")
        write_objects(objs, n)
        p, _, wall, ready = up([os.path.join(MESH, "gateway.yml"), os.path.join(MESH, "app.yml"), objs], os.path.join(work, f"h{n}"))
        rss, hwm = status_kib(p.pid, "VmRSS"), status_kib(p.pid, "VmHWM")
        down(p)
        js[f"compile_{n}_ms"] = wall * 1000
        rows.append(f"| `meshbox up` with {n} VS + {n} SE (+ Gateway, 2 Deployments, Service, VS) to ready | {wall*1000:.0f} ms | "
                    f"{ready if ready is not None else '?'} ms | {rss/1024:.1f} MiB | {hwm/1024:.1f} MiB |")
    # apply to N sidecars
    n = a.sidecars
    def fleet_file(n):
        fleet = os.path.join(work, f"fleet-{n}.yml")
        with open(fleet, "w") as f:
            f.write(f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: fleet
spec:
  replicas: {n}
  selector:
    matchLabels:
      app: fleet
  template:
    metadata:
      labels:
        app: fleet
    spec:
      containers:
        - name: static-1k
          image: meshbox/static-1k
          ports:
            - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: fleet
spec:
  selector:
    app: fleet
  ports:
    - name: http
      port: 80
      targetPort: 8080
""")
        return fleet
    # idle memory per sidecar: the meshbox process with 1 replica, then with N
    p, env, _, _ = up([os.path.join(MESH, "gateway.yml"), fleet_file(1)], os.path.join(work, "hfleet1"))
    time.sleep(2)
    rss1 = status_kib(p.pid, "VmRSS")
    down(p)
    fleet = fleet_file(n)
    vs = os.path.join(work, "fleet-vs.yml")
    with open(vs, "w") as f:
        f.write("""apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: fleet-vs
spec:
  hosts:
    - fleet
  http:
    - match:
        - uri:
            prefix: /a
      route:
        - destination:
            host: fleet
            port:
              number: 80
""")
    print(f"scale: apply to {n} sidecars", file=sys.stderr, flush=True)
    p, env, wall, ready = up([os.path.join(MESH, "gateway.yml"), fleet], os.path.join(work, "hfleet"))
    time.sleep(2)
    rss = status_kib(p.pid, "VmRSS")
    t0 = time.monotonic()
    r = subprocess.run([EXE, "apply", "-n", "bench", "-f", vs], env=env, capture_output=True, text=True)
    apply_s = time.monotonic() - t0
    rss2 = status_kib(p.pid, "VmRSS")
    down(p)
    ok = "" if r.returncode == 0 else f" (apply failed: {r.stderr.strip()[:200]})"
    rows.append(f"| `meshbox up` with 1 sidecar (1 Deployment × 1 replica), idle 2 s after ready | – | – | {rss1/1024:.1f} MiB | – |")
    rows.append(f"| `meshbox up` with {n} sidecars (1 Deployment × {n} replicas) to ready; RSS idle 2 s after | {wall*1000:.0f} ms | {ready} ms | {rss/1024:.1f} MiB | – |")
    rows.append(f"| idle RSS per additional sidecar, meshbox process ((RSS with {n} − RSS with 1) / {n - 1}) | – | – | {(rss - rss1)/1024/(n - 1):.2f} MiB | – |")
    js.update(sidecars=n, per_sidecar_idle_mib=(rss - rss1) / 1024 / (n - 1))
    if r.returncode == 0:
        js["apply_ms"] = apply_s * 1000
    rows.append(f"| one `meshbox apply -f` of a VirtualService, {n} sidecars, command wall time{ok} | {apply_s*1000:.0f} ms | – | {rss2/1024:.1f} MiB after | – |")
    print("\n".join(rows))
    print("JSON: " + json.dumps(js))


if __name__ == "__main__":
    main()
