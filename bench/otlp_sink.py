#!/usr/bin/env python3
"""A minimal OTLP/gRPC trace collector for `make bench`'s tracing row: accepts every export
without decoding it (so the collector takes as little of the machine's CPU as it can), and
writes how many exports and bytes it got to a file (so the bench knows spans really left).
Runs with the tests' venv (`make sdk`: grpcio comes with Phoenix).

usage: otlp_sink.py PORT COUNT_FILE"""

import sys
from concurrent import futures

import grpc

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    seen = {"exports": 0, "bytes": 0}

    def export(request, context):
        seen["exports"] += 1
        seen["bytes"] += len(request)
        with open(path, "w") as f:
            f.write(f"{seen['exports']} {seen['bytes']}")
        return b""  # an empty ExportTraceServiceResponse

    handler = grpc.unary_unary_rpc_method_handler(export)  # raw bytes in and out
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
