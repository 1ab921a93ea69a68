# syntax=docker/dockerfile:1
# Ward container image.
#
#   docker build -t ward .
#   docker run -d --name ward -p 25:25 -p 465:465 \
#       -v ward-data:/var/lib/ward -v /path/to/ward.toml:/etc/ward/ward.toml:ro \
#       --stop-timeout 45 ward
#
# --stop-timeout 45: Docker's default of 10 s is shorter than Ward's
# server.shutdown_timeout (30 s) for finishing sessions and deliveries.
#
# The process runs as the unprivileged user `ward`. Binding ports 25 and 465
# needs no capability inside a container: Docker (20.10+) sets
# net.ipv4.ip_unprivileged_port_start=0 in the container's network namespace.
# Give the listeners 0.0.0.0 (or [::]) addresses in the mounted config, or
# they are unreachable from outside the container.

# --- build -----------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src

# Dependency cache: compile every dependency against stub sources, so this
# layer is rebuilt only when Cargo.toml or Cargo.lock change. Cargo refuses a
# manifest whose explicit targets are missing, so the [[bench]] targets of
# Cargo.toml are stubbed too (tests/packaging.rs checks this list).
COPY Cargo.toml Cargo.lock ./
RUN mkdir src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/scan.rs \
    && cargo build --release --locked \
    && rm -rf src benches target/release/ward target/release/deps/ward-* \
        target/release/deps/libward-* target/release/.fingerprint/ward-*

# What the build reads: the sources, the portal's templates (compiled in by
# askama and include_str!), the benchmark targets the manifest names, and
# the configuration files.
COPY src ./src
COPY templates ./templates
COPY benches ./benches
COPY conf ./conf
RUN cargo build --release --locked \
    && install -m 0755 target/release/ward /usr/local/bin/ward

# --- runtime ---------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates: the system roots that delivery.tls_policy = "verify" uses.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system ward \
    && useradd --system --gid ward --home-dir /var/lib/ward --no-create-home \
        --shell /usr/sbin/nologin ward \
    && install -d -o ward -g ward -m 0700 /var/lib/ward \
    && install -d -o root -g ward -m 0750 /etc/ward

COPY --from=build /usr/local/bin/ward /usr/local/bin/ward
# The container default (relays for nobody until configured); mount your own
# configuration over it.
COPY --chown=root:ward --chmod=0640 conf/container.toml /etc/ward/ward.toml

# Queue, keys and generated certificates (server.data_dir). Relative paths in
# the configuration resolve here too.
VOLUME ["/var/lib/ward"]
WORKDIR /var/lib/ward

# 25: SMTP with STARTTLS; 465: implicit TLS; 2525: alternative SMTP port;
# 8443: the pickup portal (HTTPS, when [portal] is enabled); 9465: /metrics
# and the status API (publish only to the monitoring network).
EXPOSE 25 465 2525 8443 9465

USER ward:ward
STOPSIGNAL SIGTERM

# Healthy when the SMTP listener answers with its 220 greeting. Set
# WARD_HEALTHCHECK_PORT if the configuration listens elsewhere than port 25.
ENV WARD_HEALTHCHECK_PORT=25
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${WARD_HEALTHCHECK_PORT} && IFS= read -r -t 8 line <&3 && printf 'QUIT\\r\\n' >&3 && [[ $line == 220* ]]"]

ENTRYPOINT ["ward"]
CMD ["serve", "--config", "/etc/ward/ward.toml"]
