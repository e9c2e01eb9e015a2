#!/usr/bin/env bash
# Build the node components of Kubernetes and kubectl from the Go module
# proxy into the fraudstack cache, once, at the API server's version:
# kubelet, kube-controller-manager, kube-scheduler, kube-proxy, kubectl.
# Prints the bin folder on the last line of stdout.
#
#   deploy/kubernetes/build.sh          # build what is missing, print the folder
#
# Cache: ${FRAUDSTACK_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/fraudstack}/bin/<name>-<version>
# With the Go build cache warm from deploy/kube-apiserver, on 2 cores:
# kubelet 132 s, kube-controller-manager 83 s, kube-proxy 17 s,
# kube-scheduler 9 s, kubectl about a minute; later runs return at once.
set -euo pipefail

KUBE_VERSION="v1.34.4" # must match k8s.io/kubernetes in go.mod and deploy/kube-apiserver
COMMANDS=(kubelet kube-controller-manager kube-scheduler kube-proxy kubectl)
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fail() { echo "kubernetes build failed: $*" >&2; exit 1; }
source "$here/../lib.sh"

missing=()
for name in "${COMMANDS[@]}"; do
  [[ -x "$bin_dir/$name-$KUBE_VERSION" ]] || missing+=("$name")
done
if (( ${#missing[@]} == 0 )); then
  echo "$bin_dir"
  exit 0
fi

mkdir -p "$bin_dir"
log="$bin_dir/kubernetes-$KUBE_VERSION.build.log"
ldflags="$(kube_ldflags "$KUBE_VERSION")"
: >"$log"
for name in "${missing[@]}"; do
  go_build_reporting "$name $KUBE_VERSION" "$here" "k8s.io/kubernetes/cmd/$name" "$ldflags" \
    "$bin_dir/$name-$KUBE_VERSION" "$log"
done
echo "$bin_dir"
