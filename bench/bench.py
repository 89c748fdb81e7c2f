#!/usr/bin/env python3
"""Side-by-side benchmark: bare Envoy, Envoy + ai-extproc, LiteLLM (and what else is installed),
against the same mock upstream, in one run, on loopback. Prints a Markdown table with ratios
against bare Envoy and saves it under bench/results/. Bounded in time (~10 minutes on 2 cores)."""

import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/ai-extproc")
ENVOY = os.environ.get("ENVOY_BIN") or shutil.which("envoy") or os.path.join(ROOT, ".venv/bin/envoy")
LITELLM = os.path.join(ROOT, ".venv-bench/bin/litellm")
DURATION = int(os.environ.get("BENCH_SECONDS", "10"))
UPSTREAM = 18000
REDIS = 18093
OTLP = 18094
VENV_PY = os.path.join(ROOT, ".venv/bin/python")
STREAM_EVENTS, STREAM_INTERVAL_MS = 32, 10
STREAM_SAMPLES = 7
# A client's W3C trace context, sampled and not: the tracing row's two arms.
TRACE_SAMPLED = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
TRACE_UNSAMPLED = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}
BODY = json.dumps({"model": "bench-model", "messages": [
    {"role": "system", "content": "You are a helpful assistant. " * 12},
    {"role": "user", "content": "Tell me about the weather in Lisbon in spring, briefly. " * 10}]})
assert 900 < len(BODY) < 1300, len(BODY)  # ~1 KB POST, as ENVOY-NOTES measured

procs = []


def start(cmd, env=None, log=None):
    p = subprocess.Popen(cmd, stdout=log or subprocess.DEVNULL, stderr=log or subprocess.DEVNULL,
                         env={**os.environ, **(env or {})}, cwd=ROOT)
    procs.append(p)
    return p


def stop_all():
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()


def wait_http(url, headers=None, body=None, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        try:
            req = urllib.request.Request(url, data=body.encode() if body else None, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit(f"not ready: {url}")


def wait_tcp(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def metric(admin_port, line_prefix):
    """The value of the processor's metric line starting `line_prefix` (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(line_prefix + " "):
                return float(line.split()[-1])
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
    return int(m.group(1)) / 1024 if m else 0.0


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"VmRSS:\s+(\d+) kB", f.read())
    return int(m.group(1)) / 1024 if m else 0.0


def wrk(url, conns, seconds, headers):
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    hdrs = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(BODY)}\n'
                 f'wrk.headers["content-type"] = "application/json"\n{hdrs}')
    script.close()
    threads = min(conns, 2)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", script.name, url],
                         capture_output=True, text=True).stdout
    os.unlink(script.name)

    def lat(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        v, unit = float(m.group(1)), m.group(2)
        return v * {"us": 1e-3, "ms": 1.0, "s": 1000.0}[unit]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    return {"rps": rps, "p50": lat(50), "p99": lat(99), "requests": total, "errors": errors}


async def stream_timing(port, path, headers):
    """Time to first byte and mean gap between SSE events, as the client sees them."""
    body = json.dumps({**json.loads(BODY), "stream": True})
    r, w = await asyncio.open_connection("127.0.0.1", port)
    hdrs = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    w.write((f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n{hdrs}"
             f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}").encode())
    await w.drain()
    t0 = time.perf_counter()
    first, arrivals, buf = None, [], b""
    while True:
        chunk = await r.read(65536)
        if not chunk:
            break
        now = time.perf_counter()
        if first is None:
            first = now - t0
        buf += chunk
        arrivals.extend([now] * chunk.count(b"data: "))
    w.close()
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    return first * 1000, (sum(gaps) / len(gaps) * 1000 if gaps else float("nan")), len(arrivals)


def stream_median(port, path, headers):
    """One stream is one sample of a sub-millisecond figure: the median TTFB and event gap of
    several, and the fewest events any of them saw."""
    samples = [asyncio.run(stream_timing(port, path, headers)) for _ in range(STREAM_SAMPLES)]
    median = lambda xs: sorted(xs)[len(xs) // 2]
    return median([s[0] for s in samples]), median([s[1] for s in samples]), min(s[2] for s in samples)


def vision_ms(port, path, headers):
    image = "A" * (9 * 1024 * 1024)
    body = json.dumps({"model": json.loads(BODY)["model"], "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}}]}]}).encode()
    times = []
    for _ in range(3):
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                     headers={"content-type": "application/json", **headers})
        t = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                resp.read()
                ok = resp.status == 200
        except Exception:
            ok = False
        times.append((time.perf_counter() - t) * 1000 if ok else float("nan"))
    return sorted(times)[1]


async def open_streams(port, path, headers, n, hold_s):
    """n concurrent slow streams; returns how many completed."""
    async def one():
        try:
            _, _, events = await stream_timing(port, path, headers)
            return events > 0
        except Exception:
            return False
    results = await asyncio.gather(*[one() for _ in range(n)])
    return sum(results)


def measure(name, port, path, headers, pids, body=None):
    """One row. `body`: another request body (its model picks another rule) for every sample."""
    global BODY
    saved, BODY = BODY, body or BODY
    try:
        return measure_row(name, port, path, headers, pids)
    finally:
        BODY = saved


def measure_row(name, port, path, headers, pids):
    print(f"== {name}", file=sys.stderr)
    wrk(f"http://127.0.0.1:{port}{path}", 4, 2, headers)  # warm-up
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    r16 = wrk(f"http://127.0.0.1:{port}{path}", 16, DURATION, headers)
    cpu = {k: (cpu_seconds(p) - before[k]) / max(r16["requests"], 1) * 1e6 for k, p in pids.items()}
    r1 = wrk(f"http://127.0.0.1:{port}{path}", 1, max(DURATION // 2, 3), headers)
    ttfb, gap, events = stream_median(port, path, headers)
    vision = vision_ms(port, path, headers)
    rss = {k: peak_rss_mb(p) for k, p in pids.items()}
    return {"name": name, "r16": r16, "r1": r1, "cpu_us": cpu, "rss": rss, "ttfb": ttfb, "gap": gap,
            "events": events, "vision_ms": vision}


def main():
    for tool, hint in [("wrk", "apt-get install wrk"), (ENVOY, "make envoy")]:
        if not shutil.which(tool) and not os.path.exists(tool):
            raise SystemExit(f"missing {tool}: {hint}")
    tmp = tempfile.mkdtemp(prefix="ai-extproc-bench-")
    results, floors, profile, paired, paired_budget, paired_redis = [], [], "", None, None, None
    paired_trace = None
    try:
        up = start([BIN, "upstream", "test", "--listen", f"127.0.0.1:{UPSTREAM}",
                    "--stream-events", str(STREAM_EVENTS), "--stream-interval-ms", str(STREAM_INTERVAL_MS)])
        wait_http(f"http://127.0.0.1:{UPSTREAM}/health")
        direct_ttfb, direct_gap, _ = stream_median(UPSTREAM, "/v1/chat/completions", {})

        # 1. Bare Envoy.
        bare = start([ENVOY, "-c", "bench/bare-envoy.yaml", "--concurrency", "2", "--use-dynamic-base-id", "--log-level", "error"])
        h = {"x-ai-eg-model": "bench-model"}
        wait_http("http://127.0.0.1:18090/v1/chat/completions", h, BODY)
        results.append(measure("bare Envoy (static route)", 18090, "/v1/chat/completions", h, {"envoy": bare.pid}))
        bare.terminate()
        bare.wait()

        # 2. Envoy + ai-extproc, as `make run` configures it (Unix socket, one runtime worker,
        # usage extraction on), then profiled.
        envoy, proc = start_product(tmp, "product", {})
        r = measure("Envoy + ai-extproc", 18091, "/v1/chat/completions", {}, {"envoy": envoy.pid, "ai-extproc": proc.pid})
        results.append(r)
        profile = perf_profile(tmp, {"envoy": envoy.pid, "ai-extproc": proc.pid}, 18091, {})
        stop(envoy, proc)

        # Failover: a rule with two priorities whose first answers, and one whose first refuses
        # connections (one failed attempt per request). Same messages to the processor; Envoy
        # rewrites each attempt in-process.
        envoy, proc = start_product(tmp, "failover", {}, config="bench/gateway-failover.yaml")
        for label, model in [("two priorities, the first answers", "bench-model"),
                             ("two priorities, the first refuses connections", "bench-fail")]:
            h = {"x-ai-eg-model": model}
            results.append(measure(f"Envoy + ai-extproc, {label}", 18091, "/v1/chat/completions", h,
                                   {"envoy": envoy.pid, "ai-extproc": proc.pid}, body=model_body(model)))
        # The bound compares like with like: the one-backend and the two-priority rule in the
        # same Envoy and processor, in alternating slices (two Envoy processes differ by more
        # than the bound: how wrk's connections fall on Envoy's workers varies run to run).
        paired = paired_rps(18091, "/v1/chat/completions", ["bench-single", "bench-model"])
        stop(envoy, proc)

        # Budgets: the same rule with a per-user token budget (in memory; every request
        # admitted, reserved and settled), against one without, in the same Envoy.
        envoy, proc = start_product(tmp, "budget", {}, config="bench/gateway-budget.yaml")
        user = {"x-user-id": "bench-user"}
        results.append(measure("Envoy + ai-extproc, a per-user token budget (in memory)", 18091,
                               "/v1/chat/completions", user, {"envoy": envoy.pid, "ai-extproc": proc.pid}))
        paired_budget = paired_rps(18091, "/v1/chat/completions", ["bench-single", "bench-model"], headers=user)
        stop(envoy, proc)

        # The same, the counters in Redis on the loopback (one script call to admit, one in the
        # background to settle), as replicas sharing a budget run it.
        if shutil.which("redis-server"):
            redis = start(["redis-server", "--bind", "127.0.0.1", "--port", str(REDIS), "--save", "", "--appendonly", "no"])
            wait_tcp(REDIS)
            envoy, proc = start_product(tmp, "budget-redis", {}, config="bench/gateway-budget.yaml",
                                        serve_args=("--rate-limit-redis", f"redis://127.0.0.1:{REDIS}"))
            results.append(measure("Envoy + ai-extproc, a per-user token budget (Redis on loopback)", 18091,
                                   "/v1/chat/completions", user,
                                   {"envoy": envoy.pid, "ai-extproc": proc.pid, "redis": redis.pid}))
            paired_redis = paired_rps(18091, "/v1/chat/completions", ["bench-single", "bench-model"], headers=user)
            errors = metric(19092, 'ai_extproc_budget_store_errors_total{op="admit"}')
            if errors:
                raise SystemExit(f"Redis budget row: {errors} store errors (the row would measure fail-open)")
            stop(envoy, proc, redis)
        else:
            print("redis-server not installed (apt-get install redis-server); Redis budget row skipped", file=sys.stderr)

        # LLM spans exported (OpenInference, every request's body, answer and usage) to a local
        # collector. The bound compares like with like, in one Envoy and one processor exporting
        # to the collector: requests whose client `traceparent` is sampled (a span recorded and
        # exported) against requests whose `traceparent` is not (nothing recorded; the context is
        # handed on in both), in alternating slices. Two stacks side by side, one with tracing and
        # one without, differ by ±5 % between runs with nothing traced at all. What an unsampled
        # request still costs next to a processor without `--otlp-endpoint` is the second row's
        # CPU column against "Envoy + ai-extproc".
        if os.path.exists(VENV_PY):
            count = os.path.join(tmp, "spans")
            sink = start([VENV_PY, os.path.join(ROOT, "bench/otlp_sink.py"), str(OTLP), count])
            wait_tcp(OTLP)
            envoy, proc = start_product(tmp, "traced", {}, global_args=("--otlp-endpoint", f"http://127.0.0.1:{OTLP}"))
            pids = {"envoy": envoy.pid, "ai-extproc": proc.pid, "collector": sink.pid}
            results.append(measure("Envoy + ai-extproc, LLM spans exported (OpenInference, local collector)", 18091,
                                   "/v1/chat/completions", TRACE_SAMPLED, pids))
            results.append(measure("Envoy + ai-extproc, spans configured, the client's traceparent unsampled", 18091,
                                   "/v1/chat/completions", TRACE_UNSAMPLED, pids))
            before = spans_received(count)
            paired_trace = paired_targets({"off": (18091, TRACE_UNSAMPLED), "on": (18091, TRACE_SAMPLED)},
                                          "/v1/chat/completions")
            stop(envoy, proc)
            time.sleep(0.5)
            exports, size = spans_received(count)
            if exports - before[0] < 10:
                raise SystemExit(f"tracing row: the collector got {exports - before[0]} exports while paired "
                                 "(the row would measure nothing)")
            paired_trace["received"] = f"{exports} exports, {size / 1e6:.0f} MB received"
            stop(sink)
        else:
            print("no .venv (make sdk): tracing row skipped", file=sys.stderr)

        # What limits it: the same Envoy and processor with the ext_proc filter sending nothing,
        # then one message per request that the processor answers without a change (the client
        # names the route itself). No ext_proc design sends fewer than one message.
        h = {"x-ai-eg-model": "bench-model"}
        for label, modes in [("ext_proc filter, no message", FLOOR_NONE), ("ext_proc floor: 1 no-op message", FLOOR_ONE)]:
            envoy, proc = start_product(tmp, label, modes, h)
            floors.append(measure(label, 18091, "/v1/chat/completions", h, {"envoy": envoy.pid, "ai-extproc": proc.pid}))
            stop(envoy, proc)

        # 3. LiteLLM proxy, one worker.
        if os.path.exists(LITELLM) and not os.environ.get("BENCH_SKIP_LITELLM"):
            key = "sk-" + os.urandom(32).hex()
            env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR",
                   "LITELLM_MASTER_KEY": key}
            auth = {"authorization": f"Bearer {key}"}
            lite = start([LITELLM, "--config", "bench/litellm.yaml", "--host", "127.0.0.1", "--port", "18092",
                          "--num_workers", "1"], env=env)
            wait_http("http://127.0.0.1:18092/v1/chat/completions", {"content-type": "application/json", **auth}, BODY, timeout=120)
            results.append(measure("LiteLLM proxy (1 worker)", 18092, "/v1/chat/completions", auth, {"litellm": lite.pid}))
            lite.terminate()
        else:
            print("LiteLLM not installed (make bench installs it in .venv-bench); skipped", file=sys.stderr)
        streams = concurrent_streams(tmp) if not os.environ.get("BENCH_SKIP_STREAMS") else {"completed": 0, "rss_idle": 0.0, "rss_peak": 0.0}
    finally:
        stop_all()
    report(results, floors, direct_ttfb, direct_gap, streams, profile, paired, paired_budget, paired_redis,
           paired_trace)


def model_body(model, body=None):
    """The benchmark body (or `body`) asking for `model` instead of `bench-model`."""
    return (body or BODY).replace('"bench-model"', f'"{model}"')


def paired_rps(port, path, models, slices=8, headers=None):
    """Requests/s @16 conn of each model's rule, measured in alternating slices of DURATION/2
    seconds (at least 3) in one Envoy; returns {model: rps over all its slices}."""
    global BODY
    seconds = max(DURATION // 2, 3)
    total = {m: [0, 0.0] for m in models}
    saved = BODY
    try:
        for i in range(slices):
            for m in (models if i % 2 == 0 else list(reversed(models))):
                BODY = model_body(m, saved)
                r = wrk(f"http://127.0.0.1:{port}{path}", 16, seconds, {"x-ai-eg-model": m, **(headers or {})})
                total[m][0] += r["requests"]
                total[m][1] += seconds
    finally:
        BODY = saved
    return {m: n / s for m, (n, s) in total.items()}


def paired_targets(targets, path, slices=8):
    """Requests/s @16 conn of each labelled target (label: (port, headers)), in alternating
    slices of DURATION/2 seconds (at least 3); returns {label: rps over all its slices}."""
    seconds = max(DURATION // 2, 3)
    done = paired_slices(targets, path, slices, seconds)
    return {k: sum(d[k] for d in done) / (seconds * slices) for k in targets}


def paired_slices(targets, path, slices, seconds, pids=None, used=None):
    """Requests of each labelled target (label: (port, headers)) in each of `slices` pairs of
    `seconds`-long wrk runs, the order alternating from pair to pair; returns [{label: requests}, ...].
    `pids` ({label: {name: pid}}): each process's CPU seconds during its label's slices are
    added up in `used[label][name]`."""
    labels = list(targets)
    done = []
    for i in range(slices):
        pair = {}
        for k in (labels if i % 2 == 0 else list(reversed(labels))):
            port, headers = targets[k]
            watched = (pids or {}).get(k, {})
            before = {n: cpu_seconds(p) for n, p in watched.items()}
            pair[k] = wrk(f"http://127.0.0.1:{port}{path}", 16, seconds, headers)["requests"]
            for n, p in watched.items():
                spent = used.setdefault(k, {})
                spent[n] = spent.get(n, 0.0) + cpu_seconds(p) - before[n]
        done.append(pair)
    return done


def spans_received(count):
    """(exports, bytes) the bench's collector has received so far."""
    return tuple(map(int, open(count).read().split())) if os.path.exists(count) else (0, 0)


# Processing modes of the floor rows, replacing what `envoy-config` renders.
RENDERED_MODES = ("request_header_mode: SEND", "request_body_mode: BUFFERED",
                  "response_header_mode: SEND", "response_body_mode: BUFFERED")
FLOOR_NONE = dict(zip(RENDERED_MODES, ("request_header_mode: SKIP", "request_body_mode: NONE",
                                       "response_header_mode: SKIP", "response_body_mode: NONE")))
FLOOR_ONE = dict(zip(RENDERED_MODES, ("request_header_mode: SEND", "request_body_mode: NONE",
                                      "response_header_mode: SKIP", "response_body_mode: NONE")))


def start_product(tmp, name, modes, ready_headers=None, config="bench/gateway.yaml", port=18091, serve_args=(),
                  admin=19092, envoy_admin=19902, global_args=()):
    """ai-extproc serve (one worker, as `make run` starts it) and Envoy from `envoy-config`
    listening on `port`, with the processing modes replaced as `modes` says. As in `make run`,
    Envoy puts the backend key on requests (its credential injector), not the processor."""
    sock = os.path.join(tmp, f"{len(procs)}.sock")
    workers = os.environ.get("BENCH_WORKERS", "1")
    proc = start([BIN, "--log", "warn", "--workers", workers, *global_args, "serve", config, "--listen", f"unix:{sock}",
                  "--admin", f"127.0.0.1:{admin}", "--reload-interval", "0s", "--credentials", "envoy", *serve_args])
    cfg = os.path.join(tmp, f"envoy-{len(procs)}.yaml")
    subprocess.run([BIN, "envoy-config", config, "--processor-address", f"unix:{sock}",
                    "--listen-address", f"127.0.0.1:{port}", "--admin-address", f"127.0.0.1:{envoy_admin}",
                    "--access-log", "/dev/null", "-o", cfg], check=True)
    text = open(cfg).read()
    for old, new in modes.items():
        if text.count(old) != 1:
            raise SystemExit(f"{name}: the rendered bootstrap has no single {old!r}")
        text = text.replace(old, new)
    open(cfg, "w").write(text)
    envoy = start([ENVOY, "-c", cfg, "--concurrency", "2", "--use-dynamic-base-id", "--log-level", "error"],
                  env={"AI_EXTPROC_SECRET_BENCH_KEY": "sk-bench"})
    wait_http(f"http://127.0.0.1:{port}/v1/chat/completions", {"content-type": "application/json", **(ready_headers or {})}, BODY)
    return envoy, proc


def stop(*ps):
    for p in ps:
        p.terminate()
        p.wait()


def perf_profile(tmp, pids, port, headers, seconds=4):
    """Where the CPU goes under load (16 connections): each process's samples by binary, and the
    processor's hottest symbols. Needs `perf` (Linux); skipped without it."""
    if os.environ.get("BENCH_SKIP_PROFILE"):
        return "profile skipped (BENCH_SKIP_PROFILE)\n"
    if not shutil.which("perf"):
        return "perf not installed: no profile (apt-get install linux-perf)\n"
    recs = {}
    for name, pid in pids.items():
        out = os.path.join(tmp, f"{name}.perf")
        recs[name] = (out, subprocess.Popen(["perf", "record", "-F", "999", "-o", out, "-p", str(pid)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(0.5)
    wrk(f"http://127.0.0.1:{port}/v1/chat/completions", 16, seconds, headers)
    text = []
    for name, (out, rec) in recs.items():
        rec.send_signal(signal.SIGINT)
        rec.wait()
        for sort, top in [("dso", 6), ("symbol", 12 if name == "ai-extproc" else 8)]:
            rep = subprocess.run(["perf", "report", "-i", out, "--stdio", "--no-children", "--sort", sort, "-g", "none"],
                                 capture_output=True, text=True).stdout
            # perf pads each row with empty columns ("-  -"); keep share and name.
            rows = [re.sub(r"(\s+-)+\s*$", "", re.sub(r"\s+", " ", l)).strip()
                    for l in rep.splitlines() if l.strip() and not l.startswith("#")]
            text.append(f"{name}, by {sort}: " + "; ".join(rows[:top]))
    return "\n".join(f"- {t}" for t in text) + "\n"


def concurrent_streams(tmp):
    """ai-extproc's RSS with 1,000 streams open at once (slow upstream: 20 events, 150 ms apart)."""
    start([BIN, "upstream", "test", "--listen", "127.0.0.1:18001", "--stream-events", "20", "--stream-interval-ms", "150"])
    wait_http("http://127.0.0.1:18001/health")
    cfg_yaml = os.path.join(tmp, "slow.yaml")
    with open(os.path.join(ROOT, "bench/gateway.yaml")) as f:
        open(cfg_yaml, "w").write(f.read().replace("port: 18000", "port: 18001"))
    envoy, proc = start_product(tmp, "1,000 streams", {}, config=cfg_yaml, port=18093)
    base = rss_mb(proc.pid)

    async def run():
        task = asyncio.ensure_future(open_streams(18093, "/v1/chat/completions", {}, 1000, 3))
        peak = base
        while not task.done():
            peak = max(peak, rss_mb(proc.pid))
            await asyncio.sleep(0.1)
        return await task, peak
    done, peak = asyncio.run(run())
    stop(envoy, proc)
    return {"completed": done, "rss_idle": base, "rss_peak": peak}


def report(results, floors, direct_ttfb, direct_gap, streams, profile, paired=None, paired_budget=None,
           paired_redis=None, paired_trace=None):
    base = results[0]
    lines = [
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"{platform.system()} {platform.release()}; Envoy: `{subprocess.run([ENVOY, '--version'], capture_output=True, text=True).stdout.strip().split('version: ')[-1]}`; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; ~1 KB chat POST, {DURATION}s per load point, everything on loopback.",
        "",
        "| target | req/s @16 conn | ratio | p50 / p99 @1 conn (ms) | p50 / p99 @16 conn (ms) | CPU µs/req | peak RSS MB | stream TTFB (ms) | event gap (ms) | 9 MB vision (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results + floors:
        cpu = ", ".join(f"{k} {v:.0f}" for k, v in r["cpu_us"].items())
        rss = ", ".join(f"{k} {v:.0f}" for k, v in r["rss"].items())
        # A row whose requests failed measures failures: say so.
        name = r["name"] + (f" ({r['r16']['errors']} non-2xx!)" if r["r16"]["errors"] else "")
        lines.append(
            f"| {name} | {r['r16']['rps']:.0f} | {r['r16']['rps'] / base['r16']['rps']:.2f}× | "
            f"{r['r1']['p50']:.3f} / {r['r1']['p99']:.3f} | {r['r16']['p50']:.2f} / {r['r16']['p99']:.2f} | {cpu} | {rss} | "
            f"{r['ttfb']:.2f} | {r['gap']:.2f} | {r['vision_ms']:.0f} |")
    lines.append(f"| mock upstream direct | | | | | | | {direct_ttfb:.2f} | {direct_gap:.2f} (sent every {STREAM_INTERVAL_MS}) | |")
    lines.append("")
    ext = next((r for r in results if "ai-extproc" in r["name"]), None)
    lite = next((r for r in results if "LiteLLM" in r["name"]), None)
    if ext:
        lines.append("Targets (from the issue), measured in this run:")
        lines.append("")
        checks = [
            ("Envoy + ai-extproc ≥ 0.60× bare Envoy req/s", ext["r16"]["rps"] / base["r16"]["rps"], 0.60, ">="),
            ("added p50 latency @1 conn ≤ 0.150 ms", ext["r1"]["p50"] - base["r1"]["p50"], 0.150, "<="),
            ("added p99 latency @1 conn ≤ 0.300 ms", ext["r1"]["p99"] - base["r1"]["p99"], 0.300, "<="),
            ("ai-extproc CPU ≤ 60 µs/request", ext["cpu_us"]["ai-extproc"], 60, "<="),
            ("added stream TTFB ≤ 0.200 ms (vs bare Envoy)", ext["ttfb"] - base["ttfb"], 0.200, "<="),
        ]
        if streams["completed"]:
            checks.append(("ai-extproc RSS ≤ 50 MB with 1,000 streams open", streams["rss_peak"], 50, "<="))
        if paired:
            checks.append(("two priorities, the first answering: ≥ 0.90× the one-backend rule's req/s "
                           f"(same Envoy, alternating slices: {paired['bench-model']:.0f} vs {paired['bench-single']:.0f} req/s)",
                           paired["bench-model"] / paired["bench-single"], 0.90, ">="))
        if paired_budget:
            checks.append(("a per-user token budget (in memory): ≥ 0.90× the same rule without "
                           f"(same Envoy, alternating slices: {paired_budget['bench-model']:.0f} vs {paired_budget['bench-single']:.0f} req/s)",
                           paired_budget["bench-model"] / paired_budget["bench-single"], 0.90, ">="))
        if paired_redis:
            checks.append(("a per-user token budget (Redis on loopback): ≥ 0.90× the same rule without "
                           f"(same Envoy, alternating slices: {paired_redis['bench-model']:.0f} vs {paired_redis['bench-single']:.0f} req/s)",
                           paired_redis["bench-model"] / paired_redis["bench-single"], 0.90, ">="))
        if paired_trace:
            checks.append(("LLM spans exported (OpenInference, to a local collector): ≥ 0.90× requests not traced "
                           f"(same Envoy and processor, sampled vs unsampled traceparent in alternating slices: "
                           f"{paired_trace['on']:.0f} vs {paired_trace['off']:.0f} req/s, "
                           f"{paired_trace['received']})",
                           paired_trace["on"] / paired_trace["off"], 0.90, ">="))
        if lite:
            checks.append(("≥ 30× LiteLLM req/s", ext["r16"]["rps"] / lite["r16"]["rps"], 30, ">="))
            checks.append(("p99 @16 conn ≤ 1/30 of LiteLLM's", lite["r16"]["p99"] / ext["r16"]["p99"], 30, ">="))
        for label, value, limit, op in checks:
            ok = value >= limit if op == ">=" else value <= limit
            lines.append(f"- {'met' if ok else 'NOT met'}: {label}: measured {value:.3f}")
        lines.append(f"- 1,000 concurrent streams: {streams['completed']} completed; ai-extproc RSS {streams['rss_idle']:.1f} MB idle, {streams['rss_peak']:.1f} MB peak")
        lines.append(f"- every event reached the client as sent: gateway gap {ext['gap']:.2f} ms vs upstream {direct_gap:.2f} ms, {ext['events']} events")
    floor = next((r for r in floors if "floor" in r["name"]), None)
    none = next((r for r in floors if "no message" in r["name"]), None)
    if floor and none:
        lines += ["", "What limits it (measured in this run): one gRPC stream per request is Envoy's ext_proc design, "
                  "and no design sends fewer than one message. With the processor answering one message unchanged:", ""]
        bounds = [
            ("requests/s ratio", floor["r16"]["rps"] / base["r16"]["rps"], "×", 0.60, ">="),
            ("added p50 @1 conn", floor["r1"]["p50"] - base["r1"]["p50"], " ms", 0.150, "<="),
            ("added p99 @1 conn", floor["r1"]["p99"] - base["r1"]["p99"], " ms", 0.300, "<="),
            ("added stream TTFB", floor["ttfb"] - base["ttfb"], " ms", 0.200, "<="),
            ("ai-extproc CPU/request", floor["cpu_us"]["ai-extproc"], " µs", 60, "<="),
        ]
        for label, value, unit, limit, op in bounds:
            reachable = value >= limit if op == ">=" else value <= limit
            verdict = "within reach of an ext_proc design" if reachable else "out of reach of any ext_proc design"
            lines.append(f"- floor {label}: {value:.3f}{unit} (target {limit}{unit.strip() and unit}): {verdict}")
        lines.append(f"- the ext_proc filter alone (configured, sending nothing): {none['r16']['rps'] / base['r16']['rps']:.2f}× bare Envoy; "
                     f"Envoy CPU/request {none['cpu_us']['envoy']:.0f} µs, with one message {floor['cpu_us']['envoy']:.0f} µs, "
                     f"the product (4 messages) {ext['cpu_us']['envoy']:.0f} µs vs bare {base['cpu_us']['envoy']:.0f} µs")
    if profile:
        lines += ["", "Profile of the product under load (perf, cpu-clock, 16 connections):", "", profile.rstrip()]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    path = os.path.join(ROOT, "bench/results", time.strftime("%Y-%m-%d-%H%M.md", time.gmtime()))
    with open(path, "w") as f:
        f.write("# Benchmark run\n\n" + text)
    with open(os.path.join(ROOT, "bench/results/latest.md"), "w") as f:
        f.write("# Benchmark run\n\n" + text)
    print(f"saved {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
