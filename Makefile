# jetagent: `make test` is the one command that checks everything, and the
# one CI runs (.ci/run). It needs Go and a Docker engine (integration/).

GO          ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME    ?= 20s

.PHONY: test fmt-check vet lint race fuzz bench run

test: fmt-check vet lint race fuzz

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

lint:
	$(GO) run $(STATICCHECK) ./...

# Every test, integration (Docker) included, with the race detector.
race:
	$(GO) test -race -count=1 -timeout 15m ./...

# A short, bounded run of the envelope decoder's fuzz target.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzUnmarshal$$' -fuzztime $(FUZZTIME) ./envelope

# Throughput and latency against raw nats.go, measured in the same run.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 5x ./runtime/

run:
	$(GO) run ./cmd/agent run
