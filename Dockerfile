# Build: docker build -t connect-keeper .
#
# Two build layers: the dependencies (rebuilt only when Cargo.toml or Cargo.lock change), then
# the crate itself (a change to src/ recompiles only connect-keeper). `.dockerignore` keeps
# target/ and local databases out of the build context.
FROM rust:1-bookworm AS build
WORKDIR /src

# 1. Dependencies only: the manifest with placeholder targets (cargo wants every declared
#    target to exist), built once and cached as a layer.
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/verify.rs && echo 'fn main() {}' > benches/marketplace_sync.rs \
    && cargo build --release --locked --bin connect-keeper \
    && rm -rf src benches target/release/.fingerprint/connect-keeper-* \
       target/release/deps/connect_keeper-* target/release/deps/libconnect_keeper-*

# 2. The crate.
COPY . .
RUN cargo build --release --locked --bin connect-keeper

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /var/lib/connect-keeper keeper \
    && mkdir -p /var/lib/connect-keeper && chown keeper /var/lib/connect-keeper
COPY --from=build /src/target/release/connect-keeper /usr/local/bin/connect-keeper
USER keeper
WORKDIR /var/lib/connect-keeper
ENV BIND_ADDR=0.0.0.0:8080 LOG_FORMAT=json
EXPOSE 8080
# The binary checks itself (GET /readyz on its own port, database reachable): the slim image
# has no curl, and its /bin/sh (dash) has no /dev/tcp.
HEALTHCHECK --interval=10s --timeout=6s --start-period=20s --retries=3 \
    CMD ["connect-keeper", "healthcheck"]
ENTRYPOINT ["connect-keeper"]
CMD ["serve"]
