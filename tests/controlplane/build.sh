#!/usr/bin/env bash
# Builds kube-apiserver, kubectl and etcd from the Go modules pinned in this directory's go.mod
# into OUT_DIR. Go's build cache makes a rebuild after a fresh clone a matter of linking.
set -euo pipefail

version=${1:?usage: build.sh K8S_VERSION OUT_DIR}
out=${2:?usage: build.sh K8S_VERSION OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)

command -v go >/dev/null || { echo "build.sh: Go is needed to build the test control plane" >&2; exit 1; }

minor=${version#v1.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

mkdir -p "$out"
out=$(cd "$out" && pwd)
tmp=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$here"
GOFLAGS=-mod=readonly go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
  go.etcd.io/etcd/server/v3 \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kubectl
mv "$tmp/server" "$out/etcd"
mv "$tmp/kube-apiserver" "$tmp/kubectl" "$out/"
"$out/kube-apiserver" --version
