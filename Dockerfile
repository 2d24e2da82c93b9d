# leasekeeper node image: lease-node and leasectl, plus iproute2 and
# iptables so that jepsen-style-tests/compose/partition.sh can cut the
# network from inside a container (it needs the NET_ADMIN capability, which
# docker-compose.yml grants).
#
#   docker build --build-arg VERSION=$(git describe --tags --dirty) -t leasekeeper .
FROM golang:1.26 AS build
# The release the binaries report (lease-node --version, leasectl version).
ARG VERSION=devel
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath \
	-ldflags "-X github.com/leasekeeper/leasekeeper/internal/buildinfo.version=${VERSION}" \
	-o /out/ ./cmd/lease-node ./cmd/leasectl

FROM debian:bookworm-slim
RUN apt-get update \
	&& apt-get install -y --no-install-recommends iproute2 iptables ca-certificates \
	&& rm -rf /var/lib/apt/lists/*
COPY --from=build /out/lease-node /out/leasectl /usr/local/bin/
VOLUME /data
# gRPC, Raft, HTTP (/metrics, /healthz, /readyz)
EXPOSE 7000 8000 9000
ENTRYPOINT ["lease-node"]
