# resource-controller: build, test and run. `make test` works on a fresh machine: it installs
# what the tests need first (Debian packages, the Go-built control plane, the moto venv).

SHELL := /bin/bash
.DEFAULT_GOAL := build

K8S_VERSION      := v1.35.4
CONTROLPLANE_DIR := target/controlplane/$(K8S_VERSION)
VENV             := target/venv
APT_PACKAGES     := protobuf-compiler libprotobuf-dev openssl python3-venv ca-certificates
SUDO             := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install apt-packages toolchain controlplane venv build image run test bench bench-latency bench-replicas bench-scale lint fmt crds docs clean

## install: everything the tests need; safe to run again
install: apt-packages controlplane venv

apt-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

ifdef KUBEBUILDER_ASSETS
controlplane:
	@echo "using kube-apiserver, etcd and kubectl from KUBEBUILDER_ASSETS=$(KUBEBUILDER_ASSETS)"
else
controlplane: $(CONTROLPLANE_DIR)/.built

$(CONTROLPLANE_DIR)/.built: tests/controlplane/go.mod tests/controlplane/go.sum tests/controlplane/build.sh
	tests/controlplane/build.sh $(K8S_VERSION) $(CONTROLPLANE_DIR)
	@touch $@
endif

venv: $(VENV)/.installed

$(VENV)/.installed: tests/moto-requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r tests/moto-requirements.txt
	@touch $@

## build: the controller binary
build:
	cargo build --locked --release

## image: the container image (Dockerfile: multi-stage, distroless, non-root); needs docker or
## podman and a registry to push to, neither of which the development machine has
IMAGE          ?= resource-controller:0.1.0
CONTAINER_TOOL ?= docker
image:
	$(CONTAINER_TOOL) build -t $(IMAGE) .

## run: a local control plane, the CRDs, the samples on the simulated provider, and the controller
run: apt-packages controlplane
	@echo "building; then watch with: KUBECONFIG=target/local/kubeconfig $(CONTROLPLANE_DIR)/kubectl get wk -w"
	cargo run --locked --example local -- $(ARGS)

## test: unit and integration tests against the real control plane
test: install
	cargo test --locked --all-targets

## bench: provider benchmark on the simulated cloud (results in README)
bench:
	cargo bench --locked --bench provider

## bench-latency: etcd put of new demand -> Worker created, over 100 events (results in README)
bench-latency: install
	cargo bench --locked --bench scale_up_latency

## bench-replicas: two replicas of the release binary with 100 workers: time to Running, idle CPU
## and RSS of leader and standby (results in README)
bench-replicas: install
	cargo bench --locked --bench replicas

## bench-scale: N Workers on a real API server, default and raised EC2 limits: time to Running,
## writes per worker, CPU, RSS, steady state, and the floors (SCALE_N=100,1000,10000)
bench-scale: install
	cargo bench --locked --bench scale

toolchain:
	@rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
	@rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt

## lint: formatting and clippy, warnings are errors
lint: toolchain
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings

fmt:
	cargo fmt --all

## docs: regenerate the flag table in docs/operations.md from the CLI definition
docs:
	UPDATE_DOCS=1 cargo test --locked --test docs the_flag_table

## crds: regenerate crds/*.yaml from the Rust types
crds:
	cargo run --quiet --locked -- crds --out-dir crds

clean:
	cargo clean
