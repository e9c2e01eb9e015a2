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
cache_dir="${FRAUDSTACK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fraudstack}"
bin_dir="$cache_dir/bin"

fail() { echo "kubernetes build failed: $*" >&2; exit 1; }

missing=()
for name in "${COMMANDS[@]}"; do
  [[ -x "$bin_dir/$name-$KUBE_VERSION" ]] || missing+=("$name")
done
if (( ${#missing[@]} == 0 )); then
  echo "$bin_dir"
  exit 0
fi

go_bin="$(command -v go || true)"
[[ -n "$go_bin" ]] || go_bin=/usr/local/go/bin/go
[[ -x "$go_bin" ]] || fail "no Go toolchain found (looked on PATH and /usr/local/go/bin)"

mkdir -p "$bin_dir"
log="$bin_dir/kubernetes-$KUBE_VERSION.build.log"
minor="${KUBE_VERSION#v}"; major="${minor%%.*}"; minor="${minor#*.}"; minor="${minor%%.*}"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

: >"$log"
for name in "${missing[@]}"; do
  target="$bin_dir/$name-$KUBE_VERSION"
  echo "building $name $KUBE_VERSION into $bin_dir (first time only; log: $log)" >&2
  start=$(date +%s)
  (
    cd "$here"
    # Write to a temporary name so an interrupted build never looks finished.
    CGO_ENABLED=0 "$go_bin" build -trimpath -ldflags "$ldflags" -o "$target.partial" \
      "k8s.io/kubernetes/cmd/$name"
  ) >>"$log" 2>&1 &
  build_pid=$!
  # Poll often (so we return as soon as it is done), report every 30 s.
  last_report=$start
  while kill -0 "$build_pid" 2>/dev/null; do
    sleep 2
    now=$(date +%s)
    if (( now - last_report >= 30 )) && kill -0 "$build_pid" 2>/dev/null; then
      echo "  ... still compiling $name ($(( now - start ))s)" >&2
      last_report=$now
    fi
  done
  wait "$build_pid" || fail "go build of $name exited non-zero; last lines of $log: $(tail -n 3 "$log" | tr '\n' ' ')"
  mv "$target.partial" "$target"
  echo "built $target in $(( $(date +%s) - start ))s" >&2
done
echo "$bin_dir"
