# Switchboard: the two commands a newcomer needs are `make run` and `make test`.

CARGO ?= cargo
NPM ?= npm
GATEWAY_DEBUG := $(CURDIR)/target/debug/switchboard-gateway

.PHONY: run test test-rust test-compat lint build help bench

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

run: ## One gateway on 127.0.0.1:8000: in-memory broker and presence, config/dev.toml
	$(CARGO) run --release -p switchboard-gateway -- --config config/dev.toml

test: lint test-rust test-compat ## Every test: formatting, clippy, Rust tests, centrifuge-js compatibility

lint: ## cargo fmt --check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test-rust: ## Unit and integration tests of every crate
	$(CARGO) test --workspace

build:
	$(CARGO) build -p switchboard-gateway

test-compat: build ## The real centrifuge-js SDK (JSON and protobuf) against the gateway binary
	cd tests/compat && $(NPM) ci --no-audit --no-fund --loglevel=error
	cd tests/compat && SWITCHBOARD_GATEWAY_BIN=$(GATEWAY_DEBUG) $(NPM) test

bench: ## Release build, fresh standalone gateways, the standard load suite; updates BENCHMARKS.md
	CARGO=$(CARGO) loadtest/bench/run.sh
