#!/usr/bin/env bash
# Builds promtool and promql-names from the Go modules pinned in this directory's go.mod into
# OUT_DIR, and copies the prometheus-operator CRDs (PrometheusRule, ServiceMonitor) of a pinned
# release there, for the test that applies deploy/monitoring. Idempotent; Go's build cache makes
# a rebuild after a fresh clone a matter of linking.
set -euo pipefail

out=${1:?usage: build.sh OUT_DIR}
operator_version=v0.85.0
here=$(cd "$(dirname "$0")" && pwd)

command -v go >/dev/null || { echo "build.sh: Go is needed to build promtool" >&2; exit 1; }

mkdir -p "$out/crds"
out=$(cd "$out" && pwd)
cd "$here"
GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" -o "$out/" \
  github.com/prometheus/prometheus/cmd/promtool ./promql-names
# Outside any module, so this directory's go.sum is left as it is (the sum database checks it).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
operator=$(cd "$tmp" && go mod download -json \
  "github.com/prometheus-operator/prometheus-operator@$operator_version" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
for crd in prometheusrules servicemonitors; do
  install -m 0644 "$operator/example/prometheus-operator-crd/monitoring.coreos.com_$crd.yaml" "$out/crds/"
done
"$out/promtool" --version | head -1
