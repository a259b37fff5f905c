# Billing service image: build a release binary, run it as a non-root user.
#   docker build -t billing .
#   docker run --rm -p 8000:8000 -e DATABASE_URL=... -e AMQP_URL=... billing

# ---- builder ----------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder
# gcc/libc6-dev come with the image; cmake is a fallback for aws-lc-sys (jsonwebtoken's
# crypto backend) on targets where its cc-only build is not available.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# Build the dependencies first, against placeholder sources, so that a change to
# the service's own code does not rebuild every crate.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# The migrations in sql/ are embedded in the binary at compile time
# (refinery embed_migrations!), so they must be here for the real build.
COPY sql ./sql
# The fuzz targets (src/fuzzing.rs) start from the provider fixtures, embedded too.
COPY fixtures ./fixtures
COPY src ./src
# COPY keeps the sources' mtimes, which may be older than the placeholder build.
RUN touch src/lib.rs src/main.rs \
    && cargo build --release --locked \
    && cp target/release/billing /usr/local/bin/billing

# ---- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: TLS to the providers; curl: the container health check (/healthz).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /home/billing --shell /usr/sbin/nologin billing
COPY --from=builder /usr/local/bin/billing /usr/local/bin/billing
USER billing
WORKDIR /home/billing
ENV LISTEN_ADDR=0.0.0.0:8000
EXPOSE 8000
ENTRYPOINT ["billing"]
CMD ["serve"]
