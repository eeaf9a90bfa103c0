# Switchboard: the two commands a newcomer needs are `make run` and `make test`.

CARGO ?= cargo
NPM ?= npm
PYTHON ?= python3
# Where cargo puts binaries: $CARGO_TARGET_DIR when set, ./target otherwise.
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),$(CURDIR)/target)
GATEWAY_DEBUG := $(TARGET_DIR)/debug/switchboard-gateway
# Built together everywhere (debug and release), so that cargo resolves one set of
# dependency features and make cluster, bench-rolling and the tests share artifacts.
DEPLOY_BINS := -p switchboard-gateway -p switchboard-presence -p switchboard-loadtest
# make fuzz: seconds per target, and which targets (empty: every one in tests/fuzz).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
# No sanitizer: the code under test is safe Rust, whose failures (panics, overflows,
# caught by debug assertions) need none, and AddressSanitizer would halve the
# executions. `FUZZ_FLAGS=--debug-assertions` brings it back.
FUZZ_FLAGS ?= --sanitizer none --debug-assertions

.PHONY: run test test-rust test-compat test-deploy validate-deploy test-rolling test-faults \
	lint build build-deploy help bench bench-rolling bench-peers cluster cluster-down fuzz

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

run: ## One gateway on 127.0.0.1:8000: in-memory broker and presence, config/dev.toml
	$(CARGO) run --release -p switchboard-gateway -- --config config/dev.toml

test: lint test-rust test-compat test-deploy ## Every test: formatting, clippy, Rust tests, centrifuge-js and pusher-js compatibility, deployment

lint: ## cargo fmt --check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test-rust: ## Unit and integration tests of every crate
	$(CARGO) test --workspace

build:
	$(CARGO) build -p switchboard-gateway

test-compat: build ## The real centrifuge-js (JSON and protobuf), pusher-js, pusher and laravel-echo SDKs against the gateway binary
	cd tests/compat && $(NPM) ci --no-audit --no-fund --loglevel=error
	cd tests/compat && SWITCHBOARD_GATEWAY_BIN=$(GATEWAY_DEBUG) $(NPM) test

build-deploy:
	$(CARGO) build $(DEPLOY_BINS)

test-deploy: validate-deploy test-rolling test-faults ## Kubernetes manifests validated offline, a rolling restart and faults under load

validate-deploy: build-deploy ## kustomize build of every overlay, kubernetes-validate, manifests vs binaries
	CARGO_TARGET_DIR=$(TARGET_DIR) BIN_DIR=$(TARGET_DIR)/debug deploy/validate.sh

test-rolling: build-deploy ## 300 clients through HAProxy while 3 gateways restart (SIGTERM, then kill -9): 0 lost, all back
	BIN_DIR=$(TARGET_DIR)/debug deploy/local/rolling-restart.sh small

test-faults: build-deploy ## Faults under load through HAProxy (NATS leader killed, presence replica killed mid-sweep, gateway frozen past the TTL): 0 lost, presence exact
	[ -d tests/compat/node_modules/centrifuge ] || (cd tests/compat && $(NPM) ci --no-audit --no-fund --loglevel=error)
	BIN_DIR=$(TARGET_DIR)/debug deploy/local/faults.sh small

cluster: ## 3 NATS, 2 presence, 3 gateways and HAProxy on one port, as the manifests run them
	$(CARGO) build --release $(DEPLOY_BINS)
	SWITCHBOARD_BIN_DIR=$(TARGET_DIR)/release $(PYTHON) deploy/local/cluster.py up

cluster-down: ## Stop what `make cluster` started
	$(PYTHON) deploy/local/cluster.py down

bench-rolling: ## Release build; rolling restarts of 3 gateways and the fault runs under 6,000 clients; updates BENCHMARKS.md
	$(CARGO) build --release $(DEPLOY_BINS)
	[ -d tests/compat/node_modules/centrifuge ] || (cd tests/compat && $(NPM) ci --no-audit --no-fund --loglevel=error)
	BIN_DIR=$(TARGET_DIR)/release deploy/local/rolling-restart.sh large
	BIN_DIR=$(TARGET_DIR)/release deploy/local/faults.sh large

bench: ## Release build, fresh standalone gateways, the standard load suite; updates BENCHMARKS.md
	CARGO=$(CARGO) loadtest/bench/run.sh

bench-peers: ## sockudo 5.2 (built once from crates.io, ~20 min) and a fresh gateway under the same Pusher load; updates BENCHMARKS.md
	CARGO=$(CARGO) loadtest/bench/peers.sh

# libFuzzer's instrumentation needs nightly compiler flags; RUSTC_BOOTSTRAP=1 makes the
# stable toolchain accept them. Corpora grow in tests/fuzz/corpus/ (not committed) from
# the committed seeds; crashing inputs land in tests/fuzz/artifacts/.
fuzz: ## Every fuzz target for FUZZ_SECONDS (60) each from the committed seeds; not part of make test
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd tests/fuzz && targets="$(FUZZ_TARGETS)"; \
	targets="$${targets:-$$($(CARGO) fuzz list --fuzz-dir .)}"; \
	for t in $$targets; do \
		mkdir -p corpus/$$t && \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --fuzz-dir . --target-dir $(TARGET_DIR)/fuzz \
			$(FUZZ_FLAGS) $$t corpus/$$t seeds/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 || exit 1; \
	done
