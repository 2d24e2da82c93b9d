# leasekeeper — make targets. `make run` starts a local 3-node cluster,
# `make test` runs every test CI runs.

GO          ?= go
BIN         := bin
GOBIN_DIR   := $(shell $(GO) env GOPATH)/bin
# Packages with shared state run under the race detector.
RACE_PKGS   := ./fsm/... ./leasing/... ./node/... ./transport/... ./client/... ./clock/...
OTHER_PKGS  := ./cmd/... ./internal/...
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@2025.1.1

.PHONY: all build run cluster test test-unit test-integration lint proto clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# A local 3-node cluster on 127.0.0.1 (gRPC 7001-7003); Ctrl-C stops it.
run cluster: build
	./scripts/cluster.sh

test: test-unit test-integration

test-unit:
	$(GO) vet ./...
	$(GO) test -race -count=1 -p 2 $(RACE_PKGS)
	$(GO) test -count=1 -p 2 $(OTHER_PKGS)

test-integration:
	$(GO) test -count=1 -p 1 ./integration/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

proto:
	PATH="$(GOBIN_DIR):$$PATH" protoc -I api --go_out=paths=source_relative:api --go-grpc_out=paths=source_relative:api api/leasekeeper/v1/leasekeeper.proto
	PATH="$(GOBIN_DIR):$$PATH" protoc -I fsm/fsmpb --go_out=paths=source_relative:fsm/fsmpb fsm/fsmpb/command.proto

clean:
	rm -rf $(BIN) data
