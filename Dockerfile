# Tributary's container image: `tributary serve` on port 5000 as a non-root user.
#
#   docker build -t tributary .        (BuildKit: the default builder of Docker 23+ and of `docker compose`;
#                                       docker-compose 1.29 needs DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1)
#   docker run -p 5000:5000 -v tributary-data:/var/lib/tributary tributary
#
# docker-compose.yml runs several replicas of it on shared stores (etcd + S3); see the README.

ARG RUST_VERSION=1

# ---------------------------------------------------------------------------------------------
# Build: the official Rust image (Debian bookworm) with protoc, which the etcd client crate's build
# script needs, and the well-known types protoc imports (google/protobuf/*.proto: libprotobuf-dev, only a
# recommendation of protobuf-compiler, so --no-install-recommends leaves it out). The cargo registry and the target directory are BuildKit cache mounts, so a rebuild
# after a source change recompiles only the workspace crates.
FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# `tributary version` shows it (.git is not in the build context): docker build --build-arg TRIBUTARY_GIT_COMMIT=$(git rev-parse --short=12 HEAD)
ARG TRIBUTARY_GIT_COMMIT=unknown
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tributary \
 && install -m 0755 target/release/tributary /usr/local/bin/tributary

# ---------------------------------------------------------------------------------------------
# Runtime: Debian slim, CA certificates (S3 over https, pull-through from public registries) and curl
# for the health check.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tributary \
 && useradd --system --uid 10001 --gid tributary --home-dir /var/lib/tributary --shell /usr/sbin/nologin tributary \
 && install -d -o tributary -g tributary -m 0750 /var/lib/tributary
COPY --from=build /usr/local/bin/tributary /usr/local/bin/tributary
COPY deploy/healthcheck.sh /usr/local/bin/tributary-healthcheck
ENV TRIBUTARY_LISTEN=0.0.0.0:5000 \
    TRIBUTARY_DATA_DIR=/var/lib/tributary
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
WORKDIR /var/lib/tributary
VOLUME ["/var/lib/tributary"]
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["tributary-healthcheck"]
# SIGTERM stops gracefully: new connections refused, in-flight requests get TRIBUTARY_SHUTDOWN_TIMEOUT (30 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["tributary"]
CMD ["serve"]
