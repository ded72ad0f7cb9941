# licensd as a container: build with the Rust toolchain, run on a slim Debian.
# Build: docker build -t licensd .   Run: see docker-compose.yml and README "Operations".
FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when a manifest or Cargo.lock
# changes, so an edit to licensd's own code recompiles licensd alone. The workspace crates get
# empty sources here (their real ones come below).
COPY Cargo.toml Cargo.lock ./
COPY domain/Cargo.toml domain/
COPY store/Cargo.toml store/
COPY commands/Cargo.toml commands/
COPY projections/Cargo.toml projections/
COPY api/Cargo.toml api/
COPY workers/Cargo.toml workers/
COPY bench/Cargo.toml bench/
COPY blobs/Cargo.toml blobs/
RUN for crate in domain store commands projections api workers bench blobs; do \
        mkdir -p "$crate/src" && touch "$crate/src/lib.rs"; \
    done \
    && mkdir -p src bench/src/bin bench/benches \
    && for main in src/main.rs bench/src/main.rs bench/src/bin/heap.rs bench/src/bin/projections.rs bench/benches/hot_path.rs; do \
        echo 'fn main() {}' > "$main"; \
    done \
    && cargo build --release --locked --bin licensd \
    && rm -rf src domain store commands projections api workers bench blobs

# The real sources. Their timestamps may be older than the placeholders', so they are touched:
# cargo decides what to rebuild by modification time.
COPY . .
RUN find . -path ./target -prune -o -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --bin licensd

FROM debian:bookworm-slim
# A fixed numeric user, so the data volume's owner is the same on every host and in Kubernetes'
# runAsUser.
RUN useradd --system --uid 10001 --home /var/lib/licensd licensd \
    && mkdir -p /var/lib/licensd \
    && chown 10001 /var/lib/licensd
COPY --from=build /src/target/release/licensd /usr/local/bin/licensd
USER 10001
ENV LICENSD_DATA_DIR=/var/lib/licensd LICENSD_LISTEN=0.0.0.0:8080
# The SQLite database, the generated master key and the in-memory model's snapshot live here:
# mount a volume on it, or they are lost with the container.
VOLUME ["/var/lib/licensd"]
EXPOSE 8080
# The binary asks its own /healthz: the image has no curl, and its /bin/sh has no /dev/tcp.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["licensd", "healthcheck"]
ENTRYPOINT ["licensd"]
CMD ["serve"]
