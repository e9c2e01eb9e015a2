#!/usr/bin/env bash
# Build the real kube-apiserver from the Go module proxy into the fraudstack
# cache, once. Prints the binary's path on the last line of stdout.
#
#   deploy/kube-apiserver/build.sh          # build if missing, print path
#
# Cache: ${FRAUDSTACK_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/fraudstack}/bin
# The first build compiles most of Kubernetes: about 9.5 minutes on 2 cores
# with the modules already downloaded, a few more to fetch them; later runs
# return at once.
set -euo pipefail

KUBE_VERSION="v1.34.4" # must match k8s.io/kubernetes in go.mod
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fail() { echo "kube-apiserver build failed: $*" >&2; exit 1; }
source "$here/../lib.sh"
target="$bin_dir/kube-apiserver-$KUBE_VERSION"

if [[ -x "$target" ]]; then
  echo "$target"
  exit 0
fi

mkdir -p "$bin_dir"
log="$bin_dir/kube-apiserver-$KUBE_VERSION.build.log"
: >"$log"
go_build_reporting "kube-apiserver $KUBE_VERSION" "$here" . "$(kube_ldflags "$KUBE_VERSION")" \
  "$target" "$log"
echo "$target"
