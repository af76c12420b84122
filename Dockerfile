# mp-auth: one image for every production role (`serve`, `gateway`, `migrate`, `decrypt`).
# Built with --no-default-features: no WeChat simulator, dev mode or `login` command inside.
#   docker build -t mp-auth:0.1.0 .
# The build needs only the Rust toolchain: protos compile with protox, MySQL/SQLite/TLS are pure Rust
# or bundled. The runtime is distroless (glibc, CA certificates for HTTPS to WeChat, no shell).

ARG RUST_VERSION=1.95

# 1. Planner: reduce the source tree to what dependency builds depend on: the manifests, build.rs,
#    the protos, and an empty stub for every .rs file (so every target cargo knows about exists),
#    for the root package and every workspace member under crates/.
#    The recipe changes only when dependencies, protos or the set of files change.
FROM rust:${RUST_VERSION}-bookworm AS planner
WORKDIR /src
COPY . .
RUN set -eu; mkdir -p /recipe; \
    cp -r Cargo.toml Cargo.lock build.rs proto /recipe/; \
    find crates -name Cargo.toml | while read -r m; do \
        mkdir -p "/recipe/$(dirname "$m")"; cp "$m" "/recipe/$m"; \
    done; \
    find . -path ./target -prune -o -name '*.rs' -print | while read -r f; do \
        mkdir -p "/recipe/$(dirname "$f")"; \
        case "$f" in ./build.rs) ;; ./src/lib.rs) : >"/recipe/$f" ;; *) echo 'fn main() {}' >"/recipe/$f" ;; esac; \
    done

# 2. Builder: compile the dependencies once (cached while the recipe is unchanged), then the crate.
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY --from=planner /recipe/ ./
RUN cargo build --release --locked --no-default-features -p mp-auth
COPY . .
# COPY keeps the context's timestamps, which may be older than the stub build: make cargo rebuild the crate.
RUN touch src/lib.rs src/main.rs \
    && cargo build --release --locked --no-default-features -p mp-auth \
    && install -D -m 0755 target/release/mp-auth /out/mp-auth

# 3. Runtime: non-root (uid/gid 65532), no shell, nothing writable needed.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/mp-auth /usr/local/bin/mp-auth
USER 65532:65532
# 50051 gRPC (serve), 8080 HTTP (gateway), 9090/9091 Prometheus metrics (serve/gateway).
EXPOSE 50051 8080 9090 9091
ENTRYPOINT ["/usr/local/bin/mp-auth"]
CMD ["--help"]
