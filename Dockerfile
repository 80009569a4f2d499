# reklama in a container: one binary, no other runtime dependencies than TLS roots and libssl.
#
#   docker build -t reklama .
#   docker run -p 8080:8080 -v reklama-data:/var/lib/reklama/data reklama
#
# Configuration: the defaults compiled into the binary (config/default.toml) apply; override any key
# with an environment variable REKLAMA__SECTION__KEY (double underscores), for example
#   -e REKLAMA__DATABASE__URL=postgres://reklama:secret@db:5432/reklama   (default: sqlite://data/reklama.db)
#   -e REKLAMA__CLOUD__URL=s3://bucket/prefix                             (default: the directory data/cloud)
#   -e REKLAMA__CLOUD__S3_ENDPOINT=https://minio.example:9000 -e REKLAMA__CLOUD__S3_ACCESS_KEY_ID=...
#   -e REKLAMA__CLOUD__S3_SECRET_ACCESS_KEY=...
#   -e REKLAMA__SERVER__PUBLIC_URL=https://ads.example.com   (base of every link handed out)
#   -e REKLAMA__LOG__FORMAT=json
# or mount a TOML file and pass `--config /etc/reklama/reklama.toml serve`.
# Relative paths (the SQLite file, the cloud directory) are relative to /var/lib/reklama, so mount a
# volume on /var/lib/reklama/data to keep them. Other commands run the same way, e.g.
#   docker run --rm -e REKLAMA__DATABASE__URL=... reklama customer add "Acme"
#   docker run --rm reklama check-config

############################ builder ############################
FROM rust:1-bookworm AS builder

# libpq and SQLite are compiled from source by the crates' `bundled` features; libpq links OpenSSL.
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build

# Dependencies first, against dummy sources, so this layer is cached until Cargo.toml/Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# Files the sources embed at compile time (embed_migrations!, include_str!), the build script
# that rebuilds the crate when a migration is added, then the sources.
COPY build.rs ./
COPY migrations ./migrations
COPY config ./config
COPY assets ./assets
COPY src ./src
# Newer mtimes than the dummy build's outputs, so the crate itself is rebuilt for real.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && install -m 0755 target/release/reklama /usr/local/bin/reklama

############################ runtime ############################
FROM debian:bookworm-slim

# ca-certificates: S3 and other outbound TLS; libssl3: linked by the bundled libpq; curl: HEALTHCHECK.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 reklama \
    && useradd --system --uid 10001 --gid reklama --home-dir /var/lib/reklama --shell /usr/sbin/nologin reklama \
    && install -d -o reklama -g reklama -m 0750 /var/lib/reklama /var/lib/reklama/data

COPY --from=builder /usr/local/bin/reklama /usr/local/bin/reklama

USER reklama:reklama
WORKDIR /var/lib/reklama

# The compiled-in default listens on 127.0.0.1 only; in a container it must listen on all interfaces.
ENV REKLAMA__SERVER__LISTEN=0.0.0.0:8080
EXPOSE 8080

# Plain HTTP only: if TLS is enabled (REKLAMA__TLS__CERT/KEY) override the health check accordingly.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:8080/healthz || exit 1

# SIGTERM drains in-flight requests for up to server.shutdown_timeout_secs (default 5 s; docker stop
# waits 10 s before SIGKILL).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/reklama"]
CMD ["serve"]
