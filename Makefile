# leasekeeper — make targets. `make run` starts a local 3-node cluster,
# `make test` runs every test CI runs.

GO          ?= go
BIN         := bin
GOBIN_DIR   := $(shell $(GO) env GOPATH)/bin
# Packages with shared state run under the race detector.
RACE_PKGS   := ./fsm/... ./leasing/... ./node/... ./transport/... ./client/... ./clock/... ./auth/... ./tlsutil/... ./k8sapi/...
OTHER_PKGS  := ./cmd/... ./internal/... ./fence/... ./examples/... ./jepsen-style-tests/...
# Lint tools are pinned in tools/go.mod (a module of its own, so they do not
# touch the service's dependencies); `make tools` fetches and builds them.
STATICCHECK := $(BIN)/staticcheck
KUBECTL     := $(BIN)/kubectl

# Build info stamped into both binaries (internal/buildinfo): the release
# tag (git describe; "devel" before the first tag or outside git) and the
# commit, "-dirty" when the tree has changes.
MODULE  := github.com/leasekeeper/leasekeeper
VERSION ?= $(shell git describe --tags --dirty 2>/dev/null || echo devel)
COMMIT  ?= $(shell c=$$(git rev-parse HEAD 2>/dev/null) && { git diff --quiet HEAD -- 2>/dev/null || c=$$c-dirty; echo $$c; })
LDFLAGS := -X $(MODULE)/internal/buildinfo.version=$(VERSION) -X $(MODULE)/internal/buildinfo.commit=$(COMMIT)
# make release: static binaries for these platforms, under dist/.
RELEASE_PLATFORMS := linux/amd64 linux/arm64
RELEASE_CMDS      := lease-node leasectl

.PHONY: all attack tools build release run cluster test print-test-steps race-build test-unit test-integration check-deploy bench bench-scale bench-smoke bench-go fuzz fuzz-build jepsen jepsen-short jepsen-controls jepsen-upgrade compose-chaos lint proto openapi clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

# Static (no cgo), path-free binaries of lease-node and leasectl for each
# of RELEASE_PLATFORMS, named <cmd>-<version>-<os>-<arch>, and their
# SHA-256 sums in dist/SHA256SUMS (check with: cd dist && sha256sum -c SHA256SUMS).
release:
	rm -rf dist && mkdir -p dist
	@set -e; for p in $(RELEASE_PLATFORMS); do os=$${p%/*}; arch=$${p#*/}; \
		for c in $(RELEASE_CMDS); do \
			echo "dist/$$c-$(VERSION)-$$os-$$arch"; \
			CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" \
				-o dist/$$c-$(VERSION)-$$os-$$arch ./cmd/$$c; \
		done; \
	done
	cd dist && sha256sum $(foreach c,$(RELEASE_CMDS),$(c)-*) > SHA256SUMS

# A local 3-node cluster on 127.0.0.1 (gRPC 7001-7003); Ctrl-C stops it.
run cluster: build
	./scripts/cluster.sh

TEST_STEPS := test-unit test-integration check-deploy bench-smoke jepsen-short
test: $(TEST_STEPS)

# The steps of `make test`, for CI (.ci/run), which times each.
print-test-steps:
	@echo $(TEST_STEPS)

test-unit:
	$(GO) vet ./...
	$(GO) test -race -count=1 -p 1 $(RACE_PKGS)
	$(GO) test -count=1 -p 2 $(OTHER_PKGS)

# Compiles the race-detector test binaries of RACE_PKGS with the go
# command's full parallelism and discards them: test-unit's -p 1, which
# keeps the tests from running at the same time, also builds one package
# at a time, which on an empty build cache is minutes. CI runs this first.
race-build:
	@d=$$(mktemp -d) && $(GO) test -race -c -o "$$d/" $(RACE_PKGS) >/dev/null; rc=$$?; rm -rf "$$d"; exit $$rc

# leasekeeper next to etcd (../shared/bench/etcdpeer when present), in the
# same session; about 6-7 minutes on 2 cores. Settings: see bench/README.md.
bench:
	./bench/run.sh

# Opt-in: 1M live leases (RSS, snapshot, restart catch-up, failover).
bench-scale:
	WORKLOADS=scale ./bench/run.sh

# The Go benchmarks, run once each so CI compiles and executes them; timing
# them is `make bench-go`.
bench-smoke:
	$(GO) test -run '^$$' -bench . -benchtime=1x ./fsm/ ./leasing/

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./fsm/ ./leasing/

# The chaos suite (jepsen-style-tests/README.md). Real lease-node processes
# in network namespaces (root) or behind fault-injecting proxies.
jepsen-short:
	LEASEKEEPER_JEPSEN=1 $(GO) test -count=1 -v -timeout 15m -run 'TestShort$$' ./jepsen-style-tests/

# The negative controls: servers and clients that break a safety rule on
# purpose, which the checkers must catch.
jepsen-controls:
	LEASEKEEPER_JEPSEN=1 $(GO) test -count=1 -v -timeout 20m -run 'TestNegative' ./jepsen-style-tests/

# The full run: 5 nodes, every fault kind, 10 minutes; then the rolling
# upgrade from the previous release.
jepsen:
	$(GO) run ./jepsen-style-tests/cmd/jepsen -nodes 5 -duration 10m
	$(MAKE) jepsen-upgrade

# A rolling upgrade from the previous release's tag to this tree, and back
# (about 75 s of faults, plus building the release).
jepsen-upgrade:
	LEASEKEEPER_JEPSEN=1 $(GO) test -count=1 -v -timeout 20m -run 'TestRollingUpgrade$$' ./jepsen-style-tests/

# The chaos suite against the docker-compose cluster (root: it installs
# Docker with apt-get and starts dockerd if none runs): the image built
# without a registry, faults through compose/partition.sh, the same
# checkers, everything torn down after. COMPOSE_DURATION sizes the
# workload (CI: 45s). Results in jepsen-style-tests/runs/compose/latest.
COMPOSE_DURATION ?= 45s
compose-chaos:
	LK_COMPOSE_DURATION=$(COMPOSE_DURATION) ./jepsen-style-tests/compose/chaos.sh

# Each fuzzer for FUZZTIME (CI: 30s each). FUZZERS lists package:Fuzzer.
FUZZTIME ?= 30s
FUZZERS  := ./fsm:FuzzApply ./fsm:FuzzRestore ./transport:FuzzValidation \
	./auth:FuzzParsePolicy ./auth:FuzzParseTokenFile ./auth:FuzzParseBearer ./auth:FuzzForwardedIdentity
fuzz:
	GO=$(GO) ./scripts/fuzz.sh $(FUZZTIME) $(FUZZERS)

# Compiles the fuzzers' packages with the fuzzing instrumentation, without
# fuzzing; `make fuzz` then finds them in the Go build cache.
fuzz-build:
	GO=$(GO) ./scripts/fuzz.sh build $(FUZZERS)

test-integration:
	$(GO) test -count=1 -p 1 ./integration/...

# The cancelled-acquire stress alone, at full size (test-integration runs it
# with 25 cancellations per acquire path): CANCELS per path, 0 leaks.
CANCELS ?= 400
stress-cancel:
	LEASEKEEPER_CANCEL_STRESS=$(CANCELS) $(GO) test -count=1 -v -run 'TestCancelledAcquiresLeaveNothing' ./integration/

# The attack suite alone (part of test-integration): bounded floods against
# one node on loopback, checked for memory and for answers to others.
attack:
	$(GO) test -count=1 -v -run 'TestAttack' ./integration/

# promtool comes with Debian's prometheus package, systemd-analyze with
# systemd; CI installs both. The deploy package's tests decode the
# Kubernetes manifests strictly and check their wiring, and check the
# systemd unit (systemd-analyze verify; skipped with a message where it is
# missing, except in CI). The StatefulSet's pods are started as processes
# by integration's TestStatefulSetStartsACluster (make test-integration).
check-deploy:
	@if command -v promtool >/dev/null; then promtool check rules deploy/prometheus/alerts.yml; \
	elif [ -n "$$CI" ]; then echo "promtool is missing"; exit 1; \
	else echo "promtool not installed (apt-get install prometheus): alert rules not checked"; fi
	@command -v systemd-analyze >/dev/null || echo "systemd-analyze not installed (apt-get install systemd): the unit is not verified"
	$(GO) test -count=1 ./deploy/...

tools: $(STATICCHECK) $(KUBECTL)

# kubectl for the Kubernetes Lease API tests (integration TestK8sKubectl),
# built from k8s.io/kubectl at the Kubernetes release of go.mod, in a module
# of its own (tools/kubectl), so that no machine needs a kubectl package.
$(KUBECTL): tools/kubectl/go.mod tools/kubectl/go.sum tools/kubectl/main.go
	@cd tools/kubectl && $(GO) mod download || { echo "tools: cannot fetch the modules in tools/kubectl/go.mod (k8s.io/kubectl)"; exit 1; }
	$(GO) build -C tools/kubectl -o ../../$(KUBECTL) .

$(STATICCHECK): tools/go.mod tools/go.sum
	@cd tools && $(GO) mod download || { echo "tools: cannot fetch the modules in tools/go.mod (honnef.co/go/tools, staticcheck)"; exit 1; }
	$(GO) build -C tools -o ../$(STATICCHECK) honnef.co/go/tools/cmd/staticcheck

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

proto:
	PATH="$(GOBIN_DIR):$$PATH" protoc -I api --go_out=paths=source_relative:api --go-grpc_out=paths=source_relative:api api/leasekeeper/v1/leasekeeper.proto
	PATH="$(GOBIN_DIR):$$PATH" protoc -I fsm/fsmpb --go_out=paths=source_relative:fsm/fsmpb fsm/fsmpb/command.proto

# The OpenAPI definitions of the Kubernetes types that k8sapi serves,
# generated from k8s.io/api and k8s.io/apimachinery (the versions in go.mod)
# by kube-openapi's openapi-gen (pinned in tools/go.mod). Run it after
# changing either module's version.
OPENAPI_PKGS := k8s.io/api/coordination/v1 k8s.io/apimachinery/pkg/apis/meta/v1 \
	k8s.io/apimachinery/pkg/runtime k8s.io/apimachinery/pkg/version
openapi:
	$(GO) build -C tools -o ../$(BIN)/openapi-gen k8s.io/kube-openapi/cmd/openapi-gen
	$(BIN)/openapi-gen --output-dir k8sapi/internal/openapi \
		--output-pkg github.com/leasekeeper/leasekeeper/k8sapi/internal/openapi \
		--output-file zz_generated.openapi.go --go-header-file /dev/null \
		--report-filename /dev/null $(OPENAPI_PKGS)

clean:
	rm -rf $(BIN) data dist
