# The controller image: built in a full Rust image, run from a distroless one as a non-root user.
#   make image IMAGE=registry.example.com/resource-controller:0.1.0
FROM docker.io/library/rust:1.95-bookworm AS build
# etcd-client generates its gRPC code with protoc at build time.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
# The product alone: without the `simulator` feature, `provider: simulated` is refused.
RUN cargo build --locked --release -p resource-controller --bin resource-controller \
 && cp target/release/resource-controller /resource-controller

# glibc and CA roots, no shell, no package manager; uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /resource-controller /usr/local/bin/resource-controller
USER 65532:65532
EXPOSE 8082
ENTRYPOINT ["/usr/local/bin/resource-controller"]
CMD ["run"]
