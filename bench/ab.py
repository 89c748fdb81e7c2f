"""Paired A/B of two ai-extproc binaries: the product row (Envoy + ai-extproc as `make run`
configures it, each binary rendering its own bootstrap) in alternating runs on this machine, so
a change's per-request cost is measured against the commit before it rather than against a run
on another day or machine. Usage: python3 bench/ab.py OLD_BIN NEW_BIN [rounds]."""
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
os.chdir(ROOT)
import bench  # noqa: E402


def main():
    old, new = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    bins = {"old": old, "new": new}
    bench.start([new, "upstream", "test", "--listen", f"127.0.0.1:{bench.UPSTREAM}",
                 "--stream-events", str(bench.STREAM_EVENTS), "--stream-interval-ms", str(bench.STREAM_INTERVAL_MS)])
    bench.wait_http(f"http://127.0.0.1:{bench.UPSTREAM}/health")
    tmp = tempfile.mkdtemp(prefix="ai-extproc-ab-")
    url = "http://127.0.0.1:18091/v1/chat/completions"
    seconds = max(bench.DURATION - 2, 3)
    res = {k: [] for k in bins}
    try:
        for rnd in range(rounds):
            for name in (["old", "new"] if rnd % 2 == 0 else ["new", "old"]):
                bench.BIN = bins[name]
                envoy, proc = bench.start_product(tmp, name, {})
                pids = {"envoy": envoy.pid, "ai-extproc": proc.pid}
                bench.wrk(url, 4, 2, {})
                before = {k: bench.cpu_seconds(p) for k, p in pids.items()}
                r = bench.wrk(url, 16, seconds, {})
                n = max(r["requests"], 1)
                cpu = {k: (bench.cpu_seconds(p) - before[k]) / n * 1e6 for k, p in pids.items()}
                res[name].append((r["requests"] / seconds, cpu))
                print(f"{name}: {r['requests'] / seconds:.0f} req/s, "
                      + ", ".join(f"{k} {v:.0f} µs" for k, v in cpu.items()), file=sys.stderr)
                bench.stop(envoy, proc)
    finally:
        bench.stop_all()
    mean = {k: sum(x[0] for x in v) / len(v) for k, v in res.items()}
    cpu = {k: {c: sum(x[1][c] for x in v) / len(v) for c in ("envoy", "ai-extproc")} for k, v in res.items()}
    print(f"| binary | req/s @16 conn ({rounds} runs each, alternating) | CPU µs/req |")
    print("|---|---|---|")
    for k in bins:
        print(f"| {k} (`{bins[k]}`) | {mean[k]:.0f} | envoy {cpu[k]['envoy']:.0f}, ai-extproc {cpu[k]['ai-extproc']:.0f} |")
    print(f"\nnew / old: {mean['new'] / mean['old']:.3f}×")


if __name__ == "__main__":
    main()
