# OllamaMax. `make test` is what CI runs; `make run` and `make demo` are the two ways to try it.
GO      ?= go
BIN     ?= bin
PKG     ?= ./...
T       ?=
TESTFLAGS ?= -race -timeout 15m

.PHONY: all build test fuzz run demo vet fmt clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# make test [PKG=./pkg/worker/...] [T=TestName]
test:
	$(GO) vet ./...
	$(GO) test $(TESTFLAGS) $(if $(T),-run '$(T)') $(PKG)

# Every fuzz target for FUZZTIME each (CI: a few seconds; before a release: minutes).
FUZZTIME ?= 10s
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

# Embedded NATS + dispatcher on 127.0.0.1:11435 + one worker for the Ollama at $OLLAMA_HOST.
run: build
	BIN=$(BIN) scripts/run.sh

# Everything against two simulated Ollamas: watch tokens stream through the queue.
demo: build
	BIN=$(BIN) scripts/demo.sh

# The container image (docs/deploy.md): static binaries in IMAGE_BIN, then
# scripts/image.sh has buildah build Containerfile's final stage FROM scratch
# from them, with no builder image and no registry (docker build . compiles
# them in its own stage instead). IMAGE names it.
IMAGE     ?= localhost/ollamamax:latest
IMAGE_BIN ?= $(BIN)/static
.PHONY: image
image:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(IMAGE_BIN)/ ./cmd/dispatcher ./cmd/worker ./cmd/ollamaq
	BIN=$(IMAGE_BIN) IMAGE=$(IMAGE) scripts/image.sh

# Every benchmark scenario side by side with its baseline, in under ten minutes on
# two cores: prints a table, saves the results in docs/benchmarks.json and renders
# docs/benchmarks.md, docs/bench-scheduling.svg and README.md's summary table from them.
# The driver builds the binaries it runs. Uses nginx for the baselines if installed.
.PHONY: bench bench-docs bench-short
BENCH_DOCS = -out docs/benchmarks.md -svg docs/bench-scheduling.svg -readme README.md
bench:
	$(GO) run ./bench -command 'make bench' -json docs/benchmarks.json $(BENCH_DOCS)

# Renders the same files again from docs/benchmarks.json, running nothing: after a
# template change in bench/. make test fails while they differ from what it renders.
bench-docs:
	$(GO) run ./bench -from docs/benchmarks.json $(BENCH_DOCS)

# The same harness at tiny sizes, in about half a minute: checks it works, measures nothing.
bench-short:
	BENCH_SHORT=1 $(GO) run ./bench -command 'make bench-short'

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
