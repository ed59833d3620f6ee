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

KUBECTL ?= kubectl
.PHONY: install
install: ## Install the DocExecutorPool CRD into the cluster of the current kubeconfig.
	$(KUBECTL) apply --server-side -f config/crd/bases

.PHONY: run
run: ## Run the operator from this machine against the current kubeconfig (after `make install`).
	$(GO) run . manager

.PHONY: run-local
run-local: ## Run the local pipeline on the sample input.
	$(GO) run . local --input examples/updates.jsonl --output -

.PHONY: sample
sample: ## Regenerate examples/updates.jsonl.
	$(GO) run ./hack/gensample > examples/updates.jsonl

REALISTIC_BYTES ?= 30000000
.PHONY: sample-realistic
sample-realistic: ## Write examples/realistic.jsonl: REALISTIC_BYTES (30 MB) of web-like updates, not committed.
	$(GO) run ./hack/gensample -realistic -bytes $(REALISTIC_BYTES) -bad-lines > examples/realistic.jsonl

.PHONY: fmt
fmt: ## gofmt the tree.
	gofmt -w .

.PHONY: vet
vet: ## Check formatting and go vet.
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt needed: run make fmt"; exit 1; }
	$(GO) vet ./...
	cd hack/image && $(GO) vet ./...

.PHONY: image
image: ## Build the docexec image without Docker: an OCI archive at bin/image/docexec.tar (imported into the local cluster when it runs).
	hack/build-image.sh

##@ Local cluster
.PHONY: cluster
cluster: ## Start a single-node Kubernetes cluster on this machine (root; see hack/cluster.sh) and print its kubeconfig.
	@hack/cluster.sh up

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and undo what it changed on the host.
	hack/cluster.sh down

##@ Generation
CONTROLLER_GEN_VERSION ?= v0.23.0
CONTROLLER_GEN := bin/controller-gen-$(CONTROLLER_GEN_VERSION)

$(CONTROLLER_GEN):
	GOBIN=$(abspath bin/.tmp) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
	mv bin/.tmp/controller-gen $@ && rmdir bin/.tmp

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRD and the operator's RBAC from markers (and the chart's copy of the CRD).
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:dir=config/crd/bases rbac:roleName=manager-role paths=./controllers/... output:rbac:dir=config/rbac
	cp config/crd/bases/docexec.io_docexecutorpools.yaml charts/docexec/files/crds/
	cp config/rbac/role.yaml charts/docexec/files/rbac/

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate the API's deepcopy functions.
	$(CONTROLLER_GEN) object paths=./api/...

.PHONY: docs
docs: manifests ## Generate docs/api.md, the DocExecutorPool field reference, from the CRD.
	$(GO) run ./hack/apidocs config/crd/bases/docexec.io_docexecutorpools.yaml api/v1alpha1/conditions.go > docs/api.md

.PHONY: verify-generated
verify-generated: manifests generate docs ## Fail if generated files differ from what is committed.
	@git diff --exit-code -- api config charts docs/api.md || { echo "generated files are stale: run make manifests generate docs"; exit 1; }

##@ Tests
.PHONY: k8s-binaries
k8s-binaries: ## Build (or reuse) the Kubernetes binaries (control plane, node, kubectl, helm) at bin/k8s, and kwok at bin/kwok.
	hack/k8s-binaries.sh >/dev/null

.PHONY: static-build
static-build: ## The Dockerfile's build step, short of the image (no Docker engine needed).
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o /dev/null .

.PHONY: test
test: vet verify-generated static-build k8s-binaries ## Run every test against real redis-server, PostgreSQL, kube-apiserver and a single-node cluster (all set up here, and torn down).
	KUBEBUILDER_ASSETS=$(abspath bin/k8s) hack/cluster.sh with hack/with-services.sh $(GO) test -count=1 -timeout 30m ./...
	# The data path's goroutines (merge, sync, publish) share a partition's state.
	hack/with-services.sh $(GO) test -race -count=1 ./executor/state/ ./executor/syncer/ ./executor/pipeline/ ./local/

.PHONY: test-short
test-short: ## Unit tests only, no servers.
	$(GO) test -short ./...

.PHONY: fuzz
fuzz: ## Fuzz the decoders for a while (FUZZTIME, default 30s each).
	$(GO) test -run '^$$' -fuzz FuzzDecodeJSON -fuzztime $${FUZZTIME:-30s} ./executor/codec/
	$(GO) test -run '^$$' -fuzz FuzzDecodeProtobuf -fuzztime $${FUZZTIME:-30s} ./executor/codec/

##@ Benchmarks
.PHONY: bench-failover
bench-failover: k8s-binaries ## Measure the failover gap after SIGKILL and SIGTERM of a partition's leader (5 runs each).
	KUBEBUILDER_ASSETS=$(abspath bin/k8s) hack/with-services.sh $(GO) test -run '^$$' -bench Failover -benchtime 5x ./e2e/

.PHONY: bench-scale
bench-scale: k8s-binaries ## Measure the operator on pools of 1,000 and 10,000 partitions with kube-controller-manager, kube-scheduler and kwok (prints a table per size; DOCEXEC_SCALE_PARTITIONS=1000 for one).
	KUBEBUILDER_ASSETS=$(abspath bin/k8s) $(GO) test -run '^$$' -bench Scale -benchtime 1x -timeout 2h ./e2e/

.PHONY: bench
bench: build ## Measure executor throughput against its baselines (prints a table; see docs/benchmarks.md).
	hack/with-services.sh $(GO) run ./hack/bench -docexec bin/docexec $(BENCH_FLAGS)
