# docexec — run `make help` for the targets.
SHELL := /usr/bin/env bash
GO ?= go

##@ General
.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-12s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development
.PHONY: build
build: ## Build bin/docexec.
	$(GO) build -o bin/docexec .

.PHONY: run-local
run-local: ## Run the local pipeline on the sample input.
	$(GO) run . local --input examples/updates.jsonl --output -

.PHONY: sample
sample: ## Regenerate examples/updates.jsonl.
	$(GO) run ./hack/gensample > examples/updates.jsonl

.PHONY: fmt
fmt: ## gofmt the tree.
	gofmt -w .

.PHONY: vet
vet: ## Check formatting and go vet.
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt needed: run make fmt"; exit 1; }
	$(GO) vet ./...

##@ Tests
.PHONY: test
test: vet ## Run every test against real redis-server and PostgreSQL (installed and started here).
	hack/with-services.sh $(GO) test -count=1 ./...

.PHONY: test-short
test-short: ## Unit tests only, no servers.
	$(GO) test -short ./...

.PHONY: fuzz
fuzz: ## Fuzz the decoders for a while (FUZZTIME, default 30s each).
	$(GO) test -run '^$$' -fuzz FuzzDecodeJSON -fuzztime $${FUZZTIME:-30s} ./executor/codec/
	$(GO) test -run '^$$' -fuzz FuzzDecodeProtobuf -fuzztime $${FUZZTIME:-30s} ./executor/codec/

##@ Benchmarks
.PHONY: bench
bench: build ## Measure executor throughput against its baselines (prints a table; see docs/benchmarks.md).
	hack/with-services.sh $(GO) run ./hack/bench -docexec bin/docexec $(BENCH_FLAGS)
