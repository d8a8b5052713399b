#!/bin/sh
# deploy/build.sh builds the images docker-compose.yml runs, without pulling anything: every
# image is FROM scratch and holds a static Linux binary compiled here, on the host.
#
# 1. go build (CGO_ENABLED=0 GOOS=linux -trimpath -ldflags='-s -w') into the build contexts:
#      deploy/nats/nats-server   github.com/nats-io/nats-server/v2, the version go.mod pins
#      deploy/agent/agent        ./cmd/agent
#      deploy/replay/replay      ./cmd/replay
#    plus the empty folders the images need (deploy/nats/data, deploy/*/tmp).
# 2. docker-compose build, every profile included, which tags jetagent/nats:dev,
#    jetagent/agent:dev and jetagent/replay:dev.
#
# Go builds with -trimpath are reproducible, so an unchanged tree gives the same binaries and
# Docker's layer cache turns step 2 into a no-op. Environment: GO (go command, default go),
# DOCKER_COMPOSE (default docker-compose), GOARCH (default: the host's, which is the engine's).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
GO=${GO:-go}
DOCKER_COMPOSE=${DOCKER_COMPOSE:-docker-compose}

# build PACKAGE OUTPUT, written through a rename so that an image build running at the
# same time never sees half a file.
build() {
	tmp="$2.tmp.$$"
	if ! CGO_ENABLED=0 GOOS=linux "$GO" build -trimpath -ldflags='-s -w' -o "$tmp" "$1"; then
		rm -f "$tmp"
		exit 1
	fi
	mv -f "$tmp" "$2"
}

build github.com/nats-io/nats-server/v2 deploy/nats/nats-server
build ./cmd/agent deploy/agent/agent
build ./cmd/replay deploy/replay/replay
mkdir -p deploy/nats/data deploy/agent/tmp deploy/replay/tmp

# COMPOSE_DOCKER_CLI_BUILD=0: compose builds through the engine's API with the classic
# builder, which needs neither the docker CLI nor buildx (its default, the CLI, warns that
# the legacy builder is deprecated when buildx is missing).
COMPOSE_DOCKER_CLI_BUILD=0 "$DOCKER_COMPOSE" -f "$root/docker-compose.yml" --profile tools build -q
