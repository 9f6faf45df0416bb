# resource-controller: build, test and run. `make test` works on a fresh machine: it installs
# what the tests need first (Debian packages, the Go-built control plane, the moto venv).

SHELL := /bin/bash
.DEFAULT_GOAL := build

K8S_VERSION      := v1.35.4
CONTROLPLANE_DIR := target/controlplane/$(K8S_VERSION)
VENV             := target/venv
TOOLS_DIR        := target/tools
APT_PACKAGES     := protobuf-compiler libprotobuf-dev openssl python3-venv ca-certificates
SUDO             := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install apt-packages toolchain cargo-deny controlplane monitoring-tools venv build image run test soak bench bench-latency bench-replicas bench-scale bench-simulate lint lint-shipped lint-doc fmt crds docs clean

## install: everything the tests need; safe to run again
install: apt-packages controlplane monitoring-tools venv

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

## monitoring-tools: promtool, promql-names and the Prometheus Operator CRDs, which check
## deploy/monitoring (built from the Go modules pinned in tests/monitoring)
monitoring-tools: $(TOOLS_DIR)/.built

$(TOOLS_DIR)/.built: tests/monitoring/go.mod tests/monitoring/go.sum tests/monitoring/build.sh tests/monitoring/promql-names/main.go
	tests/monitoring/build.sh $(TOOLS_DIR)
	@touch $@

venv: $(VENV)/.installed

$(VENV)/.installed: tests/moto-requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r tests/moto-requirements.txt
	@touch $@

## build: the controller binary as released (no simulated provider)
build:
	cargo build --locked --release -p resource-controller

## image: the container image (Dockerfile: multi-stage, distroless, non-root); needs docker or
## podman and a registry to push to, neither of which the development machine has
IMAGE          ?= resource-controller:0.1.0
CONTAINER_TOOL ?= docker
image:
	$(CONTAINER_TOOL) build -t $(IMAGE) .

## run: the dev environment (local control plane, CRDs, samples, etcd, a Control Plane API
## stand-in playing a lab schedule) and the real `resource-controller run` on the simulated
## provider, leader election and /metrics on :8082 included; Ctrl-C stops everything
run: apt-packages controlplane
	cargo build --locked -p resource-controller -p ccm-harness --features resource-controller/simulator --bins
	target/debug/dev-env $(ARGS)

## test: unit and integration tests of every crate against the real control plane, a 2-minute
## soak, and the benchmarks' smoke runs. The test binaries run in three streams side by side
## (tests/run-streams.sh): most of them wait on a control plane, not the CPU. The moto venv is
## installed while the tests build.
test: apt-packages controlplane monitoring-tools
	@mkdir -p target; ( $(MAKE) --no-print-directory venv >target/venv-install.log 2>&1; echo $$? >target/venv-install.rc ) & \
	cargo test --locked --workspace --all-targets --no-run; built=$$?; wait; \
	cat target/venv-install.log; test "$$(cat target/venv-install.rc)" = 0 && test "$$built" = 0
	tests/run-streams.sh

## soak: the soak on the release build for SOAK_MINUTES (default 10); SOAK_SEED replays a run
SOAK_MINUTES ?= 10
soak: install
	SOAK_MINUTES=$(SOAK_MINUTES) cargo test --locked --release -p resource-controller --test soak -- --nocapture

## bench: provider benchmark on the simulated cloud (results in README)
bench:
	cargo bench --locked -p resource-controller --bench provider

## bench-latency: etcd put of new demand -> Worker created, over 100 events (results in README)
bench-latency: install
	cargo bench --locked -p resource-controller --bench scale_up_latency

## bench-simulate: the reference week replayed through the planner with the sample templates:
## labs on time, instance-hours against the lower bound, replay speed (results in README)
bench-simulate:
	cargo bench --locked -p ccm-planning --bench replay_week

## bench-replicas: two replicas of the release binary with 100 workers: time to Running, idle CPU
## and RSS of leader and standby (results in README)
bench-replicas: install
	cargo bench --locked -p resource-controller --bench replicas

## bench-scale: N Workers on a real API server, default and raised EC2 limits: time to Running,
## writes per worker, CPU, RSS, steady state, and the floors (SCALE_N=100,1000,10000)
bench-scale: install
	cargo bench --locked -p resource-controller --bench scale

CARGO_DENY_VERSION := 0.20.2

toolchain:
	@rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
	@rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt

## cargo-deny: the supply-chain checker, built from crates.io once (about 4 minutes on 2 cores)
cargo-deny:
	@cargo deny --version 2>/dev/null | grep -qx 'cargo-deny $(CARGO_DENY_VERSION)' \
	  || cargo install --locked cargo-deny --version $(CARGO_DENY_VERSION)

## lint: formatting, clippy (warnings are errors; protoc first: etcd-client's build needs it),
## and deny.toml's rules on licenses, banned crates and sources (advisories need the network;
## cargo fetch first brings the crates of every platform, which cargo deny reads offline)
lint: toolchain apt-packages cargo-deny
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings
	$(MAKE) --no-print-directory lint-doc lint-shipped
	cargo fetch --locked --quiet
	cargo deny --locked --offline check --hide-inclusion-graph licenses bans sources

## lint-shipped: clippy (warnings are errors) on the controller as released, without the
## `simulator` feature: in a workspace build the harness turns it on, so this is the only build
## of the `cfg(not(feature = "simulator"))` code. Without the tests' dev-dependencies Cargo
## resolves other features for tokio and a few more, so most dependencies are checked again.
lint-shipped: toolchain apt-packages
	cargo clippy --locked -p resource-controller --lib --bins -- -D warnings

## lint-doc: the workspace's own API docs, warnings (broken intra-doc links) as errors. `--examples`
## (ccm-planning's) makes Cargo resolve features as for the tests, so the dependencies' check
## metadata from `cargo clippy --all-targets` is reused instead of built again.
lint-doc: apt-packages
	RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps --lib --examples

fmt:
	cargo fmt --all

## docs: regenerate the flag table in docs/operations.md from the CLI definition
docs:
	UPDATE_DOCS=1 cargo test --locked -p resource-controller --test docs the_flag_table

## crds: regenerate crds/*.yaml from the Rust types
crds:
	cargo run --quiet --locked -p resource-controller -- crds --out-dir crds

clean:
	cargo clean
