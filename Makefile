# warehouse-monitor — two commands to get going:
#   make run    start the local stack (PostgreSQL, Redis, Tansu) and the service
#   make test   start the local stack and run the tests
# The stack is managed by scripts/stack.sh (installs what is missing, idempotent).

export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo

.DEFAULT_GOAL := help
.PHONY: help stack stack-down stack-status build run test api-check lint fuzz bench loadtest bench-ingest bench-growth bench-redis-faults freshness openapi migrate verify
.PHONY: produce monitor monitor-down compose-up compose-down

help: ## list targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

stack: ## install if missing and start PostgreSQL, Redis, Tansu; create the database
	scripts/stack.sh up

stack-down: ## stop Tansu (scripts/stack.sh down --all also stops PostgreSQL and Redis)
	scripts/stack.sh down

stack-status: ## show whether each service is up
	scripts/stack.sh status

build: ## release build
	$(CARGO) build --release --locked

run: stack ## start the stack, then run the service (serve)
	$(CARGO) run --release --locked -- serve

test: ## start the stack (while the tests build), then the API contract check and all tests
	scripts/test.sh

api-check: stack ## the API against its OpenAPI document: schemathesis --checks all on a running service
	scripts/api-check.sh

# rustdoc: a broken intra-doc link is an error (a renamed item leaves none behind).
lint: ## rustfmt check, clippy with warnings as errors, rustdoc without broken links
	$(CARGO) fmt --all --check && $(CARGO) clippy --workspace --all-targets --all-features --locked -- -D warnings
	RUSTDOCFLAGS="-D warnings -D rustdoc::broken_intra_doc_links" $(CARGO) doc --workspace --no-deps --all-features --locked

fuzz: ## fuzz the event and RESP decoders, FUZZ_SECS (600) seconds each (tests/fuzz, cargo-fuzz)
	scripts/fuzz.sh $(FUZZ_TARGETS)

bench: stack ## criterion: decoding, batch planning, store::apply of one batch on the local PostgreSQL
	$(CARGO) bench --locked --workspace

# The developer tools are the wm-bench crate (crates/wm-bench); the service
# runs as its own release process beside it. Extra options: ARGS=...
WM_BENCH = $(CARGO) build --release --locked -p warehouse-monitor -p wm-bench && \
	RUST_LOG=warn $(CARGO) run --release --locked -p wm-bench --

loadtest: stack ## HTTP load in steps of 10..1000 users while ingesting; CSV, table, charts in target/loadtest/
	$(WM_BENCH) loadtest $(ARGS)

bench-ingest: stack ## service ingest rate vs PostgreSQL's ceiling, batch 1000/5000/10000 x 3/6 partitions
	$(WM_BENCH) ingest $(ARGS)

bench-growth: stack ## ingest into a database prefilled with N movements vs an empty one (ARGS="--grown 0,5000000,20000000")
	$(WM_BENCH) growth $(ARGS)

bench-redis-faults: stack ## ingest rate with Redis down, read-only, a cluster node, out of memory or hung, each vs Redis up
	scripts/bench-redis-faults.sh

freshness: stack ## produce -> visible in the API of single events, idle and at 2 000 events/s; target/freshness/
	$(WM_BENCH) freshness $(ARGS)

openapi: ## regenerate docs/openapi.json from the code
	$(CARGO) run --locked --quiet -- openapi > docs/openapi.json

migrate: stack ## start the stack, then apply database migrations
	$(CARGO) run --release --locked -- migrate

verify: stack ## start the stack, then run the verify command
	$(CARGO) run --release --locked -- verify

produce: stack ## start the stack, then generate demo events into the topic (ARGS="--compression lz4" ...)
	$(CARGO) run --release --locked -p wm-bench -- produce $(ARGS)

monitor: ## start a local Prometheus (Debian package) on 127.0.0.1:9090 scraping 127.0.0.1:8080
	scripts/monitor.sh up

monitor-down: ## stop the local Prometheus
	scripts/monitor.sh down

compose-up: ## build and start the whole stack in Docker (service :8080, Prometheus :9090, Grafana :3000)
	docker compose up -d --build

compose-down: ## stop and remove the Docker stack (volumes kept)
	docker compose down
