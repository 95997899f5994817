# OllamaMax. `make test` is what CI runs; `make run` and `make demo` are the two ways to try it.
GO      ?= go
BIN     ?= bin
PKG     ?= ./...
T       ?=
TESTFLAGS ?= -race -timeout 15m

.PHONY: all build test run demo vet fmt clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# make test [PKG=./pkg/worker/...] [T=TestName]
test:
	$(GO) vet ./...
	$(GO) test $(TESTFLAGS) $(if $(T),-run '$(T)') $(PKG)

# Embedded NATS + dispatcher on 127.0.0.1:11435 + one worker for the Ollama at $OLLAMA_HOST.
run: build
	BIN=$(BIN) scripts/run.sh

# Everything against two simulated Ollamas: watch tokens stream through the queue.
demo: build
	BIN=$(BIN) scripts/demo.sh

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
