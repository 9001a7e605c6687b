# syntax=docker/dockerfile:1
# Container image of warehouse-monitor, used by compose.yaml: a Rust builder
# stage, then a small Debian runtime that runs the binary as a non-root user.
# The image holds no configuration file: the defaults of config/default.toml
# are compiled into the binary, and WM_<SECTION>__<KEY> variables (or a file
# mounted and named with --config / WM_CONFIG_FILE) override them.

FROM rust:1-bookworm AS builder
# librdkafka is built from its crate: the image already has a C compiler,
# make, perl, pkg-config and the headers of OpenSSL and zlib it needs.
WORKDIR /src
# The whole context (see .dockerignore): the workspace names crates/, the
# service embeds sql/ and config/default.toml, and Cargo discovers targets
# from the tree. Only the service is built, without the test-only `faults`
# feature. Cache mounts keep rebuilds incremental.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p warehouse-monitor \
    && install -m 0755 target/release/warehouse-monitor /usr/local/bin/warehouse-monitor

FROM debian:bookworm-slim
# ca-certificates: the system roots that TLS to Kafka, PostgreSQL and Redis
# trusts when no CA file is configured; libssl3: librdkafka's TLS to Kafka.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin wm
WORKDIR /app
COPY --from=builder /usr/local/bin/warehouse-monitor /usr/local/bin/warehouse-monitor
ENV WM_HTTP__ADDR=0.0.0.0:8080
USER wm
EXPOSE 8080
CMD ["warehouse-monitor", "serve"]
