# Build: docker build -t connect-keeper .
FROM rust:1-bookworm AS build
WORKDIR /src
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
HEALTHCHECK CMD ["/bin/sh", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q 200 <&3"]
ENTRYPOINT ["connect-keeper"]
CMD ["serve"]
