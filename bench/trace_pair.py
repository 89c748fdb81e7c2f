#!/usr/bin/env python3
"""The tracing row's pairing on its own: the product without and with LLM spans exported to a
local collector (bench/otlp_sink.py), two stacks side by side, in alternating slices of 5 s.
Prints each pair's ratio (traced / untraced), their median and the ratio of the totals.
`make bench` runs the same pairing after its other rows; this is for looking at the tracing
cost alone (~2 minutes). Needs `make build envoy sdk`.

usage: bench/trace_pair.py [SLICES]          (default 8)
       TRACE_PAIR_BOTH_OFF=1 bench/trace_pair.py   (both stacks untraced: how fair the pairing is)"""

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
        b.start([b.VENV_PY, os.path.join(b.ROOT, "bench/otlp_sink.py"), str(b.OTLP), os.path.join(tmp, "spans")])
        b.wait_tcp(b.OTLP)
        traced = () if os.environ.get("TRACE_PAIR_BOTH_OFF") else ("--otlp-endpoint", f"http://127.0.0.1:{b.OTLP}")
        b.start_product(tmp, "untraced", {})
        b.start_product(tmp, "traced", {}, port=18095, admin=19093, envoy_admin=19903, global_args=traced)
        done = b.paired_slices({"off": 18091, "on": 18095}, "/v1/chat/completions", slices, 5)
        totals = {k: sum(d[k] for d in done) for k in ("off", "on")}
        ratios = sorted(d["on"] / d["off"] for d in done)
        mid = len(ratios) // 2
        median = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
        print("pairs " + " ".join(f"{r:.3f}" for r in ratios))
        print(f"median {median:.3f}, totals {totals['on'] / totals['off']:.3f} "
              f"({totals['on'] / (5 * slices):.0f} vs {totals['off'] / (5 * slices):.0f} req/s)")
    finally:
        b.stop_all()


if __name__ == "__main__":
    main()
