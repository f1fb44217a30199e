# idem — common tasks. `make help` lists them.
SHELL := /bin/bash
GO ?= go
# A count, not a duration: Go 1.26's fuzz coordinator can report its own
# -fuzztime deadline as a failure (go.dev/issue/75804); a count has no deadline.
FUZZTIME ?= 50000x
BUF := bin/buf
# The server-backed tests use the loopback servers that answer (override the
# URLs to point elsewhere); without one, its tests skip with a message —
# except under CI, where they fail.
up = $(shell (exec 3<>/dev/tcp/127.0.0.1/$(1)) 2>/dev/null && echo yes)
ifneq ($(CI)$(call up,5432),)
export IDEM_TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test?sslmode=disable
endif
ifneq ($(CI)$(call up,6379),)
export IDEM_TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
endif
ifneq ($(CI)$(call up,4222),)
export IDEM_TEST_NATS_URL ?= nats://127.0.0.1:4222
endif

.PHONY: help
help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

.PHONY: run
run: ## run idemd on the embedded pebble store in ./idem-data
	$(GO) run ./cmd/idemd

.PHONY: build
build: ## build idemd and idemctl into bin/
	CGO_ENABLED=0 $(GO) build -o bin/ ./cmd/...

$(BUF): tools/go.mod tools/go.sum
	$(GO) build -modfile=tools/go.mod -o $(BUF) github.com/bufbuild/buf/cmd/buf

bin/kustomize: tools/go.mod tools/go.sum
	$(GO) build -modfile=tools/go.mod -o bin/kustomize sigs.k8s.io/kustomize/kustomize/v5

.PHONY: generate
generate: $(BUF) ## regenerate Go code from the protos
	$(BUF) generate
	$(BUF) generate --template buf.gen.vtproto.yaml --path proto/idem/v1/idem.proto
	cd examples/payments && ../../$(BUF) generate

.PHONY: checkgenerate
checkgenerate: generate ## fail when committed generated code is stale
	@git diff --exit-code -- '*.pb.go' || (echo "generated code is stale: run make generate and commit" >&2; exit 1)
	@test -z "$$(git status --porcelain -- '*.pb.go')" || (echo "untracked generated files: run make generate and commit" >&2; git status --porcelain -- '*.pb.go'; exit 1)

# idem.v1 as first published (the repository's first commit); compare against
# the latest release tag once there is one.
BREAKING_AGAINST ?= .git\#ref=$(shell git rev-list --max-parents=0 HEAD | tail -1)

.PHONY: breaking
breaking: $(BUF) ## fail on a breaking change to idem.v1
	$(BUF) breaking --against '$(BREAKING_AGAINST)'

.PHONY: lint
lint: $(BUF) ## buf lint, gofmt, go vet
	$(BUF) lint
	$(BUF) lint examples/payments/proto
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed" >&2; exit 1)
	$(GO) vet ./...

.PHONY: test
test: ## run every test with the race detector (server-backed ones use the loopback servers)
	$(GO) test -race -count=1 ./...

.PHONY: reliability-long
reliability-long: ## long linearizability histories, 100 crash cycles, every fault 5 times
	$(GO) test -count=1 -timeout 30m ./reliability -reliability.long

.PHONY: fuzz
fuzz: ## a short run (FUZZTIME executions, default 50000x) of every fuzz target
	@set -e; for d in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -h '^func Fuzz' $$d/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    echo "fuzz $$d $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$d; \
	  done; \
	done

.PHONY: bench
bench: ## store and end-to-end benchmarks
	$(GO) test -run '^$$' -bench . -benchtime 2s ./storage/... ./server/...
