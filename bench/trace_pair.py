#!/usr/bin/env python3
"""The tracing row's pairing on its own: one Envoy and one processor exporting LLM spans to a
local collector (bench/otlp_sink.py), requests with a sampled client `traceparent` (recorded
and exported) against requests with an unsampled one (not recorded), in alternating slices of
5 s. Prints each pair's ratio (traced / untraced), their median, the ratio of the totals and
each process's CPU per request in each arm. `make bench` runs the same pairing after its other
rows; this is for looking at the tracing cost alone (~2 minutes). Needs `make build envoy sdk`.

usage: bench/trace_pair.py [SLICES]          (default 8)
  TRACE_PAIR_BOTH_OFF=1   both arms unsampled: how fair the pairing is
  TRACE_PAIR_RESIDUAL=1   what an unsampled request costs for being in a processor that exports:
                          two stacks, one without `--otlp-endpoint` ("off") and one with ("on"),
                          every request's traceparent unsampled"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as b  # noqa: E402


def main():
    slices = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    tmp = tempfile.mkdtemp(prefix="ai-extproc-trace-pair-")
    try:
        b.start([b.BIN, "upstream", "test", "--listen", f"127.0.0.1:{b.UPSTREAM}",
                 "--stream-events", str(b.STREAM_EVENTS), "--stream-interval-ms", str(b.STREAM_INTERVAL_MS)])
        b.wait_http(f"http://127.0.0.1:{b.UPSTREAM}/health")
        sink = b.start([b.VENV_PY, os.path.join(b.ROOT, "bench/otlp_sink.py"), str(b.OTLP), os.path.join(tmp, "spans")])
        b.wait_tcp(b.OTLP)
        exporting = ("--otlp-endpoint", f"http://127.0.0.1:{b.OTLP}")
        if os.environ.get("TRACE_PAIR_RESIDUAL"):
            off_envoy, off_proc = b.start_product(tmp, "plain", {})
            on_envoy, on_proc = b.start_product(tmp, "traced", {}, port=18095, admin=19093, envoy_admin=19903,
                                                global_args=exporting)
            targets = {"off": (18091, b.TRACE_UNSAMPLED), "on": (18095, b.TRACE_UNSAMPLED)}
        else:
            on_envoy, on_proc = off_envoy, off_proc = b.start_product(tmp, "traced", {}, global_args=exporting)
            on = b.TRACE_UNSAMPLED if os.environ.get("TRACE_PAIR_BOTH_OFF") else b.TRACE_SAMPLED
            targets = {"off": (18091, b.TRACE_UNSAMPLED), "on": (18091, on)}
        pids = {"off": {"envoy": off_envoy.pid, "ai-extproc": off_proc.pid, "collector": sink.pid},
                "on": {"envoy": on_envoy.pid, "ai-extproc": on_proc.pid, "collector": sink.pid}}
        used = {}
        done = b.paired_slices(targets, "/v1/chat/completions", slices, 5, pids=pids, used=used)
        totals = {k: sum(d[k] for d in done) for k in ("off", "on")}
        ratios = sorted(d["on"] / d["off"] for d in done)
        mid = len(ratios) // 2
        median = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
        print("pairs " + " ".join(f"{r:.3f}" for r in ratios))
        print(f"median {median:.3f}, totals {totals['on'] / totals['off']:.3f} "
              f"({totals['on'] / (5 * slices):.0f} vs {totals['off'] / (5 * slices):.0f} req/s, "
              f"collector: {b.spans_received(os.path.join(tmp, 'spans'))[0]} exports)")
        for k in ("off", "on"):
            per = ", ".join(f"{n} {used[k][n] / totals[k] * 1e6:.1f}" for n in pids[k])
            print(f"CPU µs/request, {k}: {per}")
    finally:
        b.stop_all()


if __name__ == "__main__":
    main()
