# jetagent: `make test` is the one command that checks everything, and the
# one CI runs (.ci/run). It needs Go and a Docker engine (integration/).

GO          ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME    ?= 20s
# The receive path's fuzz target runs a server, a runtime and its sidecars:
# a few thousand deliveries in this time.
RECEIVE_FUZZTIME ?= 5s

.PHONY: test fmt-check vet lint race fuzz bench run clean-images

test: fmt-check vet lint browser race fuzz

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

lint:
	$(GO) run $(STATICCHECK) ./...

# Every test, integration (Docker) included, with the race detector.
# -parallel 4: the tests that call t.Parallel (runtime, bus, dlq, snapshot)
# mostly wait on server timers, so four at a time on 2 cores; the ones that
# measure delays or heartbeats run alone (./runtime: 63 s -> 48 s).
race:
	$(GO) test -race -count=1 -parallel 4 -timeout 15m ./...

# Short, bounded runs of the envelope decoder's fuzz target and of the
# whole receive path's (parse, validate, dispatch, echo/http/exec handlers:
# every delivery settled exactly once, transient only when a handler said so).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzUnmarshal$$' -fuzztime $(FUZZTIME) ./envelope
	$(GO) test -run '^$$' -fuzz '^FuzzReceive$$' -fuzztime $(RECEIVE_FUZZTIME) ./runtime

# Throughput and latency against raw nats.go, measured in the same run;
# writes docs/benchmarks.md.
bench:
	$(GO) run ./cmd/bench

# Seeded fault schedules (integration/schedule, docs/chaos.md). make test runs
# the fixed CI seeds; these replay one seed, or run new ones for a while.
#   make schedule SEED=42 [MINIMIZE=1] [KEEP=dir]   replay seed 42 (minimised)
#   make schedule-long DURATION=2h                  new seeds until one fails (DURATION <= 24h)
SEED     ?=
DURATION ?= 2h
STEPS    ?= 8
KEEP     ?=

.PHONY: schedule schedule-long

schedule:
	@test -n "$(SEED)" || { echo "usage: make schedule SEED=n [MINIMIZE=1] [KEEP=dir]"; exit 2; }
	$(GO) test -count=1 -timeout 60m -run '^TestScheduleSeed$$' -v ./integration/schedule/ \
		-schedule.seed=$(SEED) -schedule.steps=$(STEPS) $(if $(MINIMIZE),-schedule.minimize) $(if $(KEEP),-schedule.keep=$(KEEP))

schedule-long:
	$(GO) test -count=1 -timeout 25h -run '^TestScheduleLong$$' -v ./integration/schedule/ \
		-schedule.duration=$(DURATION) -schedule.steps=$(STEPS) $(if $(KEEP),-schedule.keep=$(KEEP))

run:
	$(GO) run ./cmd/agent run

# Remove the images make test leaves in the Docker engine (the integration harness's
# FROM scratch images, labelled org.jetagent.integration, and the compose stack's
# jetagent/*:dev). The next make test builds them again.
clean-images:
	@ids=$$( { docker image ls -q --filter label=org.jetagent.integration; docker image ls -q --filter 'reference=jetagent/*'; } | sort -u); \
	if [ -n "$$ids" ]; then docker image rm -f $$ids; else echo "no jetagent images to remove"; fi

# docker-compose.yml: NATS, the echo agent (two replicas), the flaky chaos agent, and the
# replay one-off, all FROM scratch images of static binaries built here (deploy/build.sh).
# compose-down removes the containers, the network and the JetStream volume.
DOCKER_COMPOSE ?= docker-compose

.PHONY: compose-up compose-down

compose-up:
	DOCKER_COMPOSE=$(DOCKER_COMPOSE) GO=$(GO) sh deploy/build.sh
	$(DOCKER_COMPOSE) up -d
	@echo "NATS on nats://127.0.0.1:$${JETAGENT_NATS_PORT:-4222}, monitoring on http://127.0.0.1:$${JETAGENT_NATS_MONITOR_PORT:-8222}"
	@echo "try: go run ./cmd/agent send --to echo --payload '{\"hi\":1}'"

compose-down:
	$(DOCKER_COMPOSE) down -v --remove-orphans

# The console's browser tests (internal/console) drive Debian's chromium:
# installed here when missing (as root, e.g. in CI); elsewhere they skip,
# saying why. `make test` runs this first.
.PHONY: browser
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the console's browser tests (apt-get)"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "no chromium and not root: the console's browser tests will skip (install it: apt-get install chromium)"; \
	fi

# Rewrites the screenshots of docs/console/ from the browser test.
.PHONY: screenshots
screenshots: browser
	$(GO) test -count=1 -run TestConsoleInABrowser ./internal/console -screenshots
