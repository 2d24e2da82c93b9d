# leasekeeper node image: lease-node and leasectl, plus iproute2 and
# iptables so that jepsen-style-tests/compose/partition.sh can cut the
# network from inside a container (it needs the NET_ADMIN capability, which
# docker-compose.yml grants).
#
#   docker build --build-arg VERSION=$(git describe --tags --dirty) -t leasekeeper .
#
# The base images are build arguments (GO_IMAGE, BASE_IMAGE), e.g. a local
# mirror's copies. Without a registry, Dockerfile.prebuilt makes the same
# image from host-built binaries (jepsen-style-tests/compose/prepare.sh).
ARG GO_IMAGE=golang:1.26
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${GO_IMAGE} AS build
# The release the binaries report (lease-node --version, leasectl version).
ARG VERSION=devel
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath \
	-ldflags "-X github.com/leasekeeper/leasekeeper/internal/buildinfo.version=${VERSION}" \
	-o /out/ ./cmd/lease-node ./cmd/leasectl

FROM ${BASE_IMAGE}
RUN apt-get update \
	&& apt-get install -y --no-install-recommends iproute2 iptables ca-certificates \
	&& rm -rf /var/lib/apt/lists/*
COPY --from=build /out/lease-node /out/leasectl /usr/local/bin/
VOLUME /data
# gRPC, Raft, HTTP (/metrics, /healthz, /readyz)
EXPOSE 7000 8000 9000
ENTRYPOINT ["lease-node"]
