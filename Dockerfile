# ai-extproc container image: a static-ish Rust binary on debian-slim, run as a non-root user.
# Build: docker build -t ai-extproc:local .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Manifest first, so dependency builds are cached across source changes.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY tests tests
COPY benches benches
RUN cargo build --release --locked --bin ai-extproc

FROM debian:bookworm-slim
# CA certificates: the trace exporter's TLS to an https:// collector trusts the system's roots.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin ai-extproc
COPY --from=build /src/target/release/ai-extproc /usr/local/bin/ai-extproc
USER 10001
# 50051: ext_proc + usage export + grpc.health.v1; 9091: admin (/healthz, /readyz, /metrics).
EXPOSE 50051 9091
HEALTHCHECK --interval=5s --timeout=3s --retries=5 CMD ["ai-extproc", "healthcheck", "http://127.0.0.1:9091/readyz"]
ENTRYPOINT ["ai-extproc"]
CMD ["serve", "/etc/ai-extproc", "--listen", "0.0.0.0:50051", "--admin", "0.0.0.0:9091"]
