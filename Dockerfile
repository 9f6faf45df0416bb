# The controller image: built in a full Rust image, run from a distroless one as a non-root user.
#   make image IMAGE=registry.example.com/resource-controller:0.1.0
#
# Base images are pinned by digest, so a rebuild uses the bytes that were reviewed; the tag
# beside each digest says what it was. To refresh (e.g. for a Debian security update), look up
# the tag's current digest and replace it, then rebuild and test:
#   docker buildx imagetools inspect docker.io/library/rust:1.95-bookworm --format '{{json .Manifest.Digest}}'
#   crane digest gcr.io/distroless/cc-debian12:nonroot
FROM docker.io/library/rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS build
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
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=build /resource-controller /usr/local/bin/resource-controller
USER 65532:65532
EXPOSE 8082
ENTRYPOINT ["/usr/local/bin/resource-controller"]
CMD ["run"]
