# licensd as a container: build with the Rust toolchain, run on a slim Debian.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin licensd

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/licensd licensd && mkdir -p /var/lib/licensd && chown licensd /var/lib/licensd
COPY --from=build /src/target/release/licensd /usr/local/bin/licensd
USER licensd
ENV LICENSD_DATA_DIR=/var/lib/licensd LICENSD_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["licensd"]
CMD ["serve"]
